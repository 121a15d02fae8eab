"""The decode engine: continuous batching of generation streams over a bundle's serving functions.

Plain Python, no gRPC (the service adapts it). ``Engine.submit(model, prompt, params)`` returns a
``Stream`` to iterate. What a control's value can be is checked when its ``SamplingParams`` is made;
what depends on this server's limits or on the model (length, top_k, the prompt, controls an old
bundle cannot do) is checked at submit. Every model version with active streams has one batch and
two threads. The parts, one module each:

- server/params.py: ``SamplingParams``, one request's controls, checked when made;
- server/stream.py: ``Stream``, one generation as its consumer sees it, and its stop reasons;
- server/batch.py: ``Batch``, the streams of one model version and the stepper and admitter threads
  that step them (joining streams are started beside the step in progress);
- server/programs.py: a model's ``start`` and ``advance``, and their XLA programs (``xla``);
- server/prompt_cache.py: the started state of recent prompt windows (``prompt_cache_bytes``).

The benchmark's baseline, the engine before admission aside, XLA and the prompt cache, is a subclass
of ``Engine`` and ``Batch`` in bench/baseline_engine.py.
"""
from __future__ import annotations

import dataclasses
import secrets
import threading
import weakref

from server.batch import Batch
from server.errors import BadRequest, ShuttingDown, TooManyStreams, shown
from server.params import SamplingParams
from server.programs import BLOCK_ROWS, Functions, compiled_functions
from server.prompt_cache import PromptCache
from server.store import ServedModel
from server.stream import CANCELLED, FAILED, LENGTH, SHUTDOWN, STOP, Chunk, Stream
from textgen.charset import describe_chars

# What callers of the engine use, wherever it is defined.
__all__ = ["Engine", "SamplingParams", "Stream", "Chunk", "LENGTH", "STOP", "SHUTDOWN", "CANCELLED", "FAILED",
           "CHUNK", "FIRST_CHUNK", "PROMPT_CACHE_BYTES"]

CHUNK = 16  # characters per step and per message to a stream
FIRST_CHUNK = 2  # a joining stream's first step, to cut its time to first text
PROMPT_CACHE_BYTES = 32 * 2**20  # per model version: the started state of ~270 prompts of a 128,128 model


class Engine:
    """Runs every stream submitted to it; ``submit`` is safe from any thread.

    ``chunk``: characters per step; ``first_chunk``: a joining stream's first step; ``xla``: compile
    the bundle's ``advance`` with XLA; ``prompt_cache_bytes``: the started state of recent prompts kept
    per model version (0: none). ``batch_class`` makes each model version's batch.
    """

    batch_class: type[Batch] = Batch

    def __init__(self, max_streams: int = 256, max_length: int = 10_000, max_prompt: int = 10_000,
                 chunk: int = CHUNK, first_chunk: int = FIRST_CHUNK, xla: bool = True,
                 prompt_cache_bytes: int = PROMPT_CACHE_BYTES):
        self.max_streams = max_streams
        self.max_length = max_length
        self.max_prompt = max_prompt
        self.chunk = chunk
        self.first_chunk = first_chunk
        self.xla = xla
        self.prompt_cache_bytes = prompt_cache_bytes
        self._lock = threading.Condition()
        self._streams: set[Stream] = set()  # streams holding a slot: not yet ended
        self._held = 0  # streams submitted and not yet dropped from a batch
        self._batches: dict[ServedModel, Batch] = {}
        self._functions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ServedModel -> Functions
        self._prompts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ServedModel -> PromptCache
        self._closing = False  # no new streams
        self._stopping = False  # end every stream at the next step

    def submit(self, model: ServedModel, prompt: str, params: SamplingParams) -> Stream:
        """Start generating after ``prompt`` (empty: one of the model's seed slices, picked by the
        seed) on ``model`` with ``params``; with no seed in ``params`` a random one is drawn, reported
        as ``stream.seed``.

        Raises BadRequest (a value beyond the server's limits or the model's), Unsupported (a control
        the model's bundle cannot do), TooManyStreams or ShuttingDown.
        """
        params.check_limits(self.max_length, len(model.charset))
        self._check_prompt(model, prompt, params.resume_offset)
        params.check_supported(model)
        if params.seed is None:
            params = dataclasses.replace(params, seed=secrets.randbits(63))
        if not prompt:
            prompt = model.seed_slice(params.seed)
            if prompt is None:
                raise BadRequest(f"model {model.name!r} version {model.version} has no seed slices; give a prompt")
        window = model.encode(prompt[-model.sample_len:])
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down and starts no new streams; retry on another server")
            if len(self._streams) >= self.max_streams:
                raise TooManyStreams(
                    f"the server is running {len(self._streams)} streams, its limit of concurrent streams "
                    f"is {self.max_streams}; retry when one has finished"
                )
            stream = Stream(model, prompt, window, params, self.chunk, self._end)
            self._streams.add(stream)
            self._held += 1
            batch = self._batches.get(model)
            if batch is None:
                batch = self._batches[model] = self.batch_class(self, model, self._functions_of(model),
                                                                self._prompts_of(model))
                batch.start()
            batch.pending.append(stream)
            self._lock.notify_all()
        return stream

    def active_streams(self) -> int:
        """Streams the engine still holds (submitted and not yet dropped from their batch)."""
        with self._lock:
            return self._held

    def shutdown(self, timeout: float) -> None:
        """Take no new streams; wait up to ``timeout`` seconds for running ones to finish, then end
        the rest with stop reason SHUTDOWN (they get what was produced so far)."""
        with self._lock:
            self._closing = True
            self._lock.wait_for(lambda: not self._streams, timeout)
            self._stopping = True
            self._lock.notify_all()
            threads = [batch.thread for batch in self._batches.values()]
            self._lock.notify_all()
        for thread in threads:
            thread.join(timeout=5.0)

    # -- internals --------------------------------------------------------------------------------
    def _check_prompt(self, model: ServedModel, prompt: str, resumed: int = 0) -> None:
        """Raise BadRequest unless ``prompt`` is within ``max_prompt`` (plus the ``resumed`` characters
        a resumed stream's prompt ends with) and in ``model``'s charset."""
        if len(prompt) < resumed:
            raise BadRequest(
                f"resume_offset is {resumed} but the prompt has {len(prompt)} characters: a resumed stream's "
                "prompt is the first prompt followed by the characters already received"
            )
        if len(prompt) > self.max_prompt + resumed:
            raise BadRequest(
                f"the prompt has {len(prompt) - resumed} characters, at most {self.max_prompt} are allowed "
                f"(only the last {model.sample_len} affect the text)"
            )
        missing = model.charset.missing(prompt)
        if missing:
            raise BadRequest(
                f"the prompt has characters that model {model.name!r} version {model.version} does not know: "
                f"{describe_chars(missing)}; its characters are {shown(model.charset.chars, 200)}"
            )

    def _functions_of(self, model: ServedModel) -> Functions:
        """The decode functions of ``model``, kept while it is loaded (XLA programs survive a batch).

        With XLA they are the process's, shared by its engines, and the program of a full block of
        this engine's steps is compiled at once (in the background): the shape a busy batch runs."""
        functions = self._functions.get(model)
        if functions is None:
            if self.xla:
                functions = compiled_functions(model)
                functions.prepare_advance(BLOCK_ROWS, self.chunk)
            else:
                functions = Functions(model, None)
            self._functions[model] = functions
        return functions

    def _prompts_of(self, model: ServedModel) -> PromptCache:
        """The prompt cache of ``model`` in this engine, kept while it is loaded."""
        prompts = self._prompts.get(model)
        if prompts is None:
            prompts = self._prompts[model] = PromptCache(self.prompt_cache_bytes)
        return prompts

    def _end(self, stream: Stream, reason: str) -> None:
        """Mark ``stream`` ended (first reason wins), free its slot and close its queue."""
        with self._lock:
            if stream.stop_reason is not None:
                return
            stream.stop_reason = reason
            self._streams.discard(stream)
            self._lock.notify_all()
        stream._close()
