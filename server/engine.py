"""The decode engine: continuous batching of generation streams over a bundle's serving functions.

Plain Python, no gRPC (the service adapts it). Every model version with active streams has one
batch and two threads:

- the stepper loops: join the streams that were admitted since its last step (their state rows go
  into the batch), free the rows of streams that ended (finished, cancelled), then ``advance`` every
  row ``chunk`` characters at once, each stream with its own temperature and its own next uniforms,
  and hand the text on;
- the admitter takes the streams that arrived, ``start``s them as one batch from their prompts, runs a
  short first ``advance`` (``first_chunk`` characters) and hands them that text at once, then leaves
  their state for the stepper to join at its next step.

So a stream that arrives while a long step runs does not wait for it: its prompt is read and its
first text sampled beside that step, and the batch keeps its long steps, whose fixed cost per call
is spread over ``chunk`` characters.

With ``xla=True`` (the default) the bundle's ``advance`` is also compiled with XLA (``jit_compile``:
the same function, fused, about 1.3x faster per character on a quiet 2-core machine at 64 streams,
FINDINGS.md). XLA compiles one program per input shape, so the batch then keeps its rows in a few
fixed sizes (``row_capacity``; ended streams leave free rows until the batch fits a smaller size).
Programs are compiled on one background thread of the process and shared by its engines: a full
block's as soon as a model gets its first stream, the other shapes once they recur. Until a shape
is ready the step runs the bundle's own graph function, which computes the same thing.

Prompts are read once: the state rows ``start`` gives for a prompt window (its last ``sample_len``
characters, all that the model sees of it) are kept per model in a small LRU (``prompt_cache_bytes``),
and a group of joiners with the same window reads it once. Empty prompts use one of a model's few
seed slices, and clients often share a preamble, so many prompts are seen again; the rows are the
ones ``start`` computed, so the text is the same as without the cache.

While the admitter starts a group of joiners larger than the batch, the stepper waits for it instead
of stepping the smaller batch alone beside it: both would share the CPU, and the joiners then join
the next step (a burst of arrivals at an idle server runs as one batch from its first step).

``Engine.fixed_steps()`` is the engine as it was before: joining streams are admitted by the stepper
between its 16-character steps (a joiner's first step 4), rows packed exactly, no XLA, no prompt cache. The
benchmark's baseline.

The state tensors (``state``, ``phase``, ``probs``) are opaque here: rows are joined, gathered and
passed back to ``advance``. The sampling rule lives in the bundle (``advance`` samples with it), and a
stream's uniforms come from its own seed, one per generated character and in order, so a seeded
stream gets the same text whatever else shares its batch and however the steps split it.
"""
from __future__ import annotations

import logging
import math
import queue
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from server import metrics
from server.errors import BadRequest, DecodeFailed, RequestError, ShuttingDown, TooManyStreams, shown
from server.store import ServedModel
from textgen.charset import describe_chars
from textgen.sampling import Uniforms

log = logging.getLogger(__name__)

CHUNK = 16  # characters per step and per message to a stream
FIRST_CHUNK = 2  # a joining stream's first step, to cut its time to first text
FLUSH_SECONDS = 1.0  # hand a stream what it has after this long, even when less than CHUNK (a
# slow batch): more often would mean many small messages, which cost the whole server CPU
BLOCK_ROWS = 64  # with XLA, larger batches are stepped in blocks of this many rows (measured: 1.25x
# faster at 256 streams than one 256-row program, whose state no longer fits the caches)
PROMPT_CACHE_BYTES = 32 * 2**20  # per model version: the started state of ~270 prompts of a 128,128 model
MAX_SEED = 2**64 - 1
MAX_STOPS, MAX_STOP_CHARS = 4, 64

LENGTH = "length"  # produced every character asked for
STOP = "stop"  # generated one of the request's stop strings (not delivered)
SHUTDOWN = "shutdown"  # the engine was shut down first
CANCELLED = "cancelled"  # the consumer gave up (client cancelled, deadline passed)
FAILED = "failed"  # the model raised while decoding

_END = object()  # closes a stream's queue


def row_capacity(rows: int) -> int:
    """The batch size the state is kept at for ``rows`` streams (with XLA): whole blocks of
    BLOCK_ROWS, then the rest rounded up to 1, 2 or 4, or else to a multiple of 8. So every block is
    one of 11 sizes (XLA compiles few programs) and padding wastes at most 7 rows."""
    whole, rest = divmod(rows, BLOCK_ROWS)
    if rest == 0:
        return max(rows, 1)
    if rest <= 4:
        return whole * BLOCK_ROWS + (1 << (rest - 1).bit_length())
    return whole * BLOCK_ROWS + -(-rest // 8) * 8


def row_blocks(rows: int) -> list[tuple[int, int]]:
    """The ``(first, end)`` rows of each block XLA steps apart: BLOCK_ROWS each, the last the rest."""
    return [(first, min(first + BLOCK_ROWS, rows)) for first in range(0, rows, BLOCK_ROWS)]


class Chunk(NamedTuple):
    """The next text of a stream, and the natural-log probability under the model of each of its
    characters (empty unless the request asked for them)."""

    text: str
    logprobs: tuple = ()


class Stream:
    """One generation. Iterate it for the text (or ``chunks()`` for text and log-probabilities);
    afterwards ``stop_reason`` and ``produced`` say how it ended. ``cancel()`` (from any thread) ends
    it and frees its slot."""

    def __init__(self, engine: "Engine", model: ServedModel, prompt: str, prompt_ids: np.ndarray, length: int,
                 temperature: float, seed: int, top_k: int = 0, top_p: float = 1.0, stop: tuple = (),
                 logprobs: bool = False):
        self.model = model
        self.prompt = prompt  # as used: the request's, or the seed slice chosen for an empty one
        self.length = length
        self.temperature = temperature
        self.seed = seed
        self.top_k = top_k
        self.top_p = top_p
        self.stop = stop
        self.logprobs = logprobs
        self.generated = 0  # characters sampled
        self.produced = 0  # characters handed to the consumer
        self.stop_reason: str | None = None
        self._engine = engine
        self._window = prompt_ids  # int32 [<= sample_len]: the part of the prompt the model sees
        self._uniforms = Uniforms(seed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ids: list[np.ndarray] = []  # sampled, not yet decoded
        self._logprobs: list[np.ndarray] = []
        self._held = ""  # decoded, not yet delivered: may be the start of a stop string
        self._held_logprobs: list[float] = []
        self._flushed_at = None  # when text was last handed on (None: never)

    def __iter__(self):
        """Text chunks until the stream ends; chunks that piled up are joined into one.

        Raises DecodeFailed when the model failed."""
        for chunk in self.chunks():
            yield chunk.text

    def chunks(self):
        """``Chunk``s (text and log-probabilities) until the stream ends; those that piled up are
        joined into one. Raises DecodeFailed when the model failed."""
        while True:
            parts, item = [], self._queue.get()
            while item is not _END:
                parts.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if parts:
                yield Chunk("".join(p.text for p in parts), tuple(lp for p in parts for lp in p.logprobs))
            if item is _END:
                if self.stop_reason == FAILED:
                    raise DecodeFailed(
                        f"model {self.model.name!r} version {self.model.version} failed while generating; "
                        "the server log has the details"
                    )
                return

    def cancel(self) -> None:
        """End the stream now (no-op once it has ended); the engine drops its row by the next step."""
        self._engine._end(self, CANCELLED)

    @property
    def remaining(self) -> int:
        return self.length - self.generated

    # -- called by the decode thread ----------------------------------------------------------------
    def _add(self, ids: np.ndarray, logprobs: np.ndarray | None) -> None:
        """Take the next sampled ids (and their log-probabilities); hand text on when it is due."""
        self.generated += len(ids)
        self._ids.append(ids)
        if logprobs is not None and self.logprobs:
            self._logprobs.append(logprobs)
        now = time.monotonic()
        pending = sum(len(part) for part in self._ids) + len(self._held)
        if (self.remaining == 0 or self._flushed_at is None or pending >= self._engine.chunk
                or now - self._flushed_at >= FLUSH_SECONDS or self.stop):
            self._flush(now)

    def _flush(self, now: float) -> None:
        text = self._held + self.model.decode(np.concatenate(self._ids))
        logprobs = self._held_logprobs + [float(x) for part in self._logprobs for x in part]
        self._ids, self._logprobs = [], []
        stopped = self._find_stop(text)
        if stopped is not None:
            text, logprobs, keep = text[:stopped], logprobs[:stopped], 0
        elif self.remaining == 0 or not self.stop:
            keep = 0
        else:  # the tail may be the start of a stop string that the next characters complete
            keep = min(len(text), max(map(len, self.stop)) - 1)
        cut = len(text) - keep
        self._held, self._held_logprobs = text[cut:], logprobs[cut:] if self.logprobs else []
        if cut:
            self.produced += cut
            self._flushed_at = now
            self._queue.put(Chunk(text[:cut], tuple(logprobs[:cut])))
        if stopped is not None:
            self._engine._end(self, STOP)
        elif self.remaining == 0:
            self._engine._end(self, LENGTH)

    def _find_stop(self, text: str) -> int | None:
        """Where the first stop string starts in ``text`` (None: none does)."""
        found = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return min(found) if found else None


class Engine:
    """Runs every stream submitted to it; ``submit`` is safe from any thread.

    ``chunk``: characters per step; ``first_chunk``: a joining stream's first step; ``admit_aside``:
    admit joining streams on their own thread, beside the batch's step (else between steps, as
    ``fixed_steps()``); ``xla``: compile the bundle's ``advance`` with XLA; ``prompt_cache_bytes``:
    the started state of recent prompts kept per model version (0: none).
    """

    def __init__(self, max_streams: int = 256, max_length: int = 10_000, max_prompt: int = 10_000,
                 chunk: int = CHUNK, first_chunk: int = FIRST_CHUNK, admit_aside: bool = True, xla: bool = True,
                 prompt_cache_bytes: int = PROMPT_CACHE_BYTES):
        self.max_streams = max_streams
        self.max_length = max_length
        self.max_prompt = max_prompt
        self.chunk = chunk
        self.first_chunk = first_chunk
        self.admit_aside = admit_aside
        self.xla = xla
        self.prompt_cache_bytes = prompt_cache_bytes
        self._lock = threading.Condition()
        self._streams: set[Stream] = set()  # streams holding a slot: not yet ended
        self._held = 0  # streams submitted and not yet dropped from a batch
        self._batches: dict[ServedModel, _Batch] = {}
        self._functions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ServedModel -> _Functions
        self._prompts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ServedModel -> _PromptStates
        self._closing = False  # no new streams
        self._stopping = False  # end every stream at the next step

    @classmethod
    def fixed_steps(cls, *args, **kwargs) -> "Engine":
        """The engine before admission aside and XLA: every step 16 characters, joining streams
        admitted between steps (their first step 4), rows packed exactly, the bundle's graph
        functions, no prompt cache. The benchmark's baseline."""
        return cls(*args, **{**kwargs, "chunk": CHUNK, "first_chunk": 4, "admit_aside": False, "xla": False,
                             "prompt_cache_bytes": 0})

    def submit(self, model: ServedModel, prompt: str, length: int, temperature: float,
               seed: int | None = None, *, top_k: int = 0, top_p: float = 1.0, stop=(),
               logprobs: bool = False) -> Stream:
        """Start generating ``length`` characters after ``prompt`` (empty: one of the model's seed
        slices, picked by the seed) at ``temperature`` (0: greedy) from ``seed`` (None: a random one,
        reported as ``stream.seed``). ``top_k`` (0: off) and ``top_p`` (1: off) narrow each draw to
        the most likely characters after temperature; the stream ends before the first of the
        ``stop`` strings it generates; ``logprobs``: each chunk carries its characters' log-probabilities.

        Raises BadRequest (a value out of range), Unsupported (a control the model's bundle cannot do),
        TooManyStreams or ShuttingDown.
        """
        stop = tuple(stop)
        self._check(model, prompt, length, temperature, seed, top_k, top_p, stop)
        if (top_k or top_p < 1.0 or logprobs) and not model.controls:
            asked = [name for name, on in (("top_k", top_k), ("top_p", top_p < 1.0), ("logprobs", logprobs)) if on]
            raise Unsupported(
                f"model {model.name!r} version {model.version} was exported before {', '.join(asked)} existed "
                "and cannot do it; it serves temperature, seed and stop only. Retrain or continue training it "
                "to get a version that can"
            )
        if seed is None:
            seed = secrets.randbits(63)
        if not prompt:
            prompt = model.seed_slice(seed)
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
            stream = Stream(self, model, prompt, window, int(length), float(temperature), int(seed),
                            int(top_k), float(top_p), stop, bool(logprobs))
            self._streams.add(stream)
            self._held += 1
            batch = self._batches.get(model)
            if batch is None:
                batch = self._batches[model] = _Batch(self, model, self._functions_of(model), self._prompts_of(model))
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
    def _check(self, model: ServedModel, prompt: str, length: int, temperature: float, seed,
               top_k: int, top_p: float, stop: tuple) -> None:
        if not 1 <= length <= self.max_length:
            raise BadRequest(f"length must be between 1 and {self.max_length} characters, got {length}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise BadRequest(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise BadRequest(f"seed must be between 0 and 2**64 - 1, got {seed}")
        if not 0 <= top_k <= len(model.charset):
            raise BadRequest(f"top_k must be between 0 (off) and the model's {len(model.charset)} characters, "
                             f"got {top_k}")
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise BadRequest(f"top_p must be a number in (0, 1] (1 = off), got {top_p:.7g}")
        if len(stop) > MAX_STOPS:
            raise BadRequest(f"at most {MAX_STOPS} stop strings are allowed, got {len(stop)}")
        for text in stop:
            if not 1 <= len(text) <= MAX_STOP_CHARS:
                raise BadRequest(f"a stop string must have 1 to {MAX_STOP_CHARS} characters, got {shown(text)} "
                                 f"({len(text)} characters)")
        if len(prompt) > self.max_prompt:
            raise BadRequest(
                f"the prompt has {len(prompt)} characters, at most {self.max_prompt} are allowed "
                f"(only the last {model.sample_len} affect the text)"
            )
        missing = model.charset.missing(prompt)
        if missing:
            raise BadRequest(
                f"the prompt has characters that model {model.name!r} version {model.version} does not know: "
                f"{describe_chars(missing)}; its characters are {shown(model.charset.chars, 200)}"
            )

    def _functions_of(self, model: ServedModel) -> "_Functions":
        """The decode functions of ``model``, kept while it is loaded (XLA programs survive a batch).

        With XLA they are the process's, shared by its engines, and the program of a full block of
        this engine's steps is compiled at once (in the background): the shape a busy batch runs."""
        functions = self._functions.get(model)
        if functions is None:
            if self.xla:
                functions = _compiled_functions(model)
                functions.prepare_advance(BLOCK_ROWS, self.chunk)
            else:
                functions = _Functions(model, None)
            self._functions[model] = functions
        return functions

    def _prompts_of(self, model: ServedModel) -> "_PromptStates":
        prompts = self._prompts.get(model)
        if prompts is None:
            prompts = self._prompts[model] = _PromptStates(self.prompt_cache_bytes)
        return prompts

    def _end(self, stream: Stream, reason: str) -> None:
        """Mark ``stream`` ended (first reason wins), free its slot and close its queue."""
        with self._lock:
            if stream.stop_reason is not None:
                return
            stream.stop_reason = reason
            self._streams.discard(stream)
            self._lock.notify_all()
        stream._queue.put(_END)


class Unsupported(RequestError):
    """A control the model's bundle cannot do (gRPC FAILED_PRECONDITION): it was exported before it."""


class _Compiler:
    """One background thread that compiles XLA programs, so no step waits for a compile."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="xla-compile", daemon=True)
        self._thread.start()

    def submit(self, job) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # the graph function keeps serving that shape
                log.exception("compiling a decode step with XLA failed")


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ServedModel -> _Functions with XLA
_COMPILED_LOCK = threading.Lock()
_COMPILER: list[_Compiler] = []  # the process's one compile thread, once needed


def _compiled_functions(model: ServedModel) -> "_Functions":
    """The process's XLA-compiling decode functions of ``model`` (a program compiled once serves
    every engine; they go when the model is unloaded)."""
    with _COMPILED_LOCK:
        functions = _COMPILED.get(model)
        if functions is None:
            if not _COMPILER:
                _COMPILER.append(_Compiler())
            functions = _COMPILED[model] = _Functions(model, _COMPILER[0])
        return functions


class _Functions:
    """A model's ``start`` and ``advance``, also compiled with XLA for the shapes that recur.

    Each runs the XLA program when its input shape has one. Otherwise it runs the bundle's graph
    function, and once a shape has been used ``HOT`` times its program is compiled in the background
    (a compile costs a second or two of CPU: only for shapes worth it). ``start`` pads its rows to
    ``row_capacity``, so that prompts arriving in groups of any size need few programs.
    """

    HOT = {"advance": 4, "start": 4}

    def __init__(self, model: ServedModel, compiler: _Compiler | None):
        self.model = model
        self.controls = model.controls
        self._graph = {"advance": model.functions.advance, "start": model.functions.start}
        self._compiler = compiler
        self._lock = threading.Lock()
        self._compiled: set[tuple] = set()  # (function, shape) with an XLA program
        self._submitted: set[tuple] = set()  # (function, shape) sent to the compiler
        self._uses: dict[tuple, int] = {}  # graph calls by (function, shape)
        if compiler is not None:
            self._xla = {name: _jit(fn) for name, fn in self._graph.items()}

    def prepare_advance(self, rows: int, k: int) -> None:
        """Compile ``advance`` for ``rows`` streams and ``k`` characters now, in the background."""
        if self._compiler is not None:
            self._submit(("advance", (rows, k)), lambda: self._example_advance(rows, k))

    def _example_advance(self, rows: int, k: int) -> dict:
        """``advance``'s inputs for ``rows`` streams started from an empty prompt, ``k`` characters."""
        sample_len = self.model.sample_len
        state = self._graph["start"](prompt=tf.zeros([1, sample_len], tf.int32), lengths=tf.ones([1], tf.int32))
        inputs = {name: tf.repeat(value, rows, axis=0) for name, value in state.items()}
        inputs.update(temperature=tf.ones([rows]), uniforms=tf.zeros([rows, k]))
        if self.controls:
            inputs.update(top_k=tf.zeros([rows], tf.int32), top_p=tf.ones([rows]))
        return inputs

    def start_windows(self, windows: list[np.ndarray], prompts: "_PromptStates") -> dict:
        """State rows for prompt ``windows`` (int32 ids, each at most ``sample_len``): each distinct
        window is read once, and not at all when ``prompts`` has its rows (with no cache: each is read)."""
        if not prompts.capacity:
            return self.start(*_prompt_matrix(windows, self.model.sample_len))
        keys = [window.tobytes() for window in windows]
        unique = list(dict.fromkeys(keys))
        found = {key: prompts.get(key) for key in unique}
        missing = [key for key in unique if found[key] is None]
        metrics.observe_prompts(hits=len(keys) - len(missing), misses=len(missing))
        fresh = None
        if missing:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}
            fresh = self.start(*_prompt_matrix([windows[first[key]] for key in missing], self.model.sample_len))
            for i, key in enumerate(missing):
                found[key] = prompts.put(key, {name: value[i : i + 1] for name, value in fresh.items()})
            if len(missing) == len(keys):  # all distinct and new: the rows as started
                return fresh
        rows = {name: tf.concat([found[key][name] for key in unique], axis=0) for name in found[unique[0]]}
        position = {key: i for i, key in enumerate(unique)}
        return {name: tf.gather(value, [position[key] for key in keys]) for name, value in rows.items()}

    def start(self, prompt: np.ndarray, lengths: np.ndarray) -> dict:
        """The bundle's ``start``: state rows for ``prompt``'s rows."""
        rows = len(prompt)
        if self._compiler is not None and row_capacity(rows) > rows:  # a free row: the shortest prompt
            pad = row_capacity(rows) - rows
            prompt = np.concatenate([prompt, np.zeros([pad, prompt.shape[1]], np.int32)])
            lengths = np.concatenate([lengths, np.ones([pad], np.int32)])
        state = self._blocks("start", dict(prompt=tf.constant(prompt), lengths=tf.constant(lengths)), "prompt")
        return state if len(prompt) == rows else {key: value[:rows] for key, value in state.items()}

    def advance(self, inputs: dict, compiled: bool = True) -> dict:
        """The bundle's ``advance`` on ``inputs``; ``compiled``: XLA may run it (or be compiled for it)."""
        return self._blocks("advance", inputs, "uniforms", compiled)

    def _blocks(self, name: str, inputs: dict, shaped: str, compiled: bool = True) -> dict:
        """``name`` on ``inputs``; with XLA, in blocks of at most BLOCK_ROWS rows (``shaped``: the
        input whose shape names the program)."""
        rows = inputs[shaped].shape[0]
        if self._compiler is None or not compiled or rows <= BLOCK_ROWS:
            return self._call(name, inputs, tuple(inputs[shaped].shape), compiled)
        outs = []
        for first, end in row_blocks(rows):
            block = {key: value[first:end] for key, value in inputs.items()}
            outs.append(self._call(name, block, tuple(block[shaped].shape)))
        return {key: tf.concat([out[key] for out in outs], axis=0) for key in outs[0]}

    def _call(self, name: str, inputs: dict, shape: tuple, compiled: bool = True) -> dict:
        key = (name, shape)
        if key in self._compiled:
            return dict(self._xla[name](**inputs))
        if compiled and self._compiler is not None:
            with self._lock:
                uses = self._uses[key] = self._uses.get(key, 0) + 1
            if uses >= self.HOT[name]:
                self._submit(key, lambda: inputs)
        return dict(self._graph[name](**inputs))

    def _submit(self, key: tuple, inputs) -> None:
        """Compile ``key``'s program in the background (once), on what ``inputs()`` returns."""
        with self._lock:
            if key in self._submitted:
                return
            self._submitted.add(key)
        self._compiler.submit(lambda: self._compile(key, inputs()))

    def _compile(self, key: tuple, inputs: dict) -> None:
        began = time.perf_counter()
        self._xla[key[0]](**inputs)  # the first call with a shape compiles it
        metrics.COMPILE_SECONDS.labels(function=key[0]).observe(time.perf_counter() - began)
        self._compiled.add(key)


def _prompt_matrix(windows: list[np.ndarray], sample_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``start``'s inputs for prompt windows: int32 ``[len(windows), sample_len]``, each window
    right-aligned, and their lengths."""
    prompt = np.zeros([len(windows), sample_len], np.int32)
    for row, window in zip(prompt, windows):
        row[sample_len - len(window):] = window
    return prompt, np.array([len(window) for window in windows], np.int32)


class _PromptStates:
    """The started state rows of recent prompt windows of one model version, least recently used
    dropped first past ``capacity`` bytes (0: keep none)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._rows: OrderedDict[bytes, dict] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> dict | None:
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            return row

    def put(self, key: bytes, row: dict) -> dict:
        """Keep ``row`` (tensors with one row each) for ``key``; returns it."""
        size = _row_bytes(row)
        if size > self.capacity:
            return row
        with self._lock:
            if key not in self._rows:
                self._rows[key] = row
                self._bytes += size
            while self._bytes > self.capacity:
                _, dropped = self._rows.popitem(last=False)
                self._bytes -= _row_bytes(dropped)
        return row


def _row_bytes(row: dict) -> int:
    return sum(value.shape.num_elements() * value.dtype.size for value in row.values())


def _jit(fn):
    """``fn`` (a bundle's function) compiled with XLA, one program per input shape."""
    return tf.function(lambda **inputs: fn(**inputs), jit_compile=True, reduce_retracing=True)


class _Batch:
    """The active streams of one model version, their decode state, and the threads that step them.

    Row ``i`` of every state tensor belongs to ``rows[i]``; a None row is free (its results are
    ignored). With XLA the number of rows is ``row_capacity`` of the streams, else exactly their number.
    A stream moves from ``pending`` (submitted) to ``admitting`` (being started) to ``ready`` (started,
    first text sent: waiting for the next step) to ``rows``; all but ``rows`` are guarded by the
    engine's lock, and only the stepper touches ``rows`` and ``state``.
    """

    def __init__(self, engine: Engine, model: ServedModel, functions: _Functions, prompts: _PromptStates):
        self.engine = engine
        self.model = model
        self.functions = functions
        self.prompts = prompts
        self.pending: list[Stream] = []  # submitted, not yet being admitted
        self.admitting: list[Stream] = []  # being started
        self.ready: list[tuple[list[Stream], dict]] = []  # started streams and their state, to join
        self.rows: list[Stream | None] = []  # one per state row
        self.state: dict[str, tf.Tensor] | None = None  # the model's state tensors, [rows, ...] each
        self.retired = False
        name = f"{model.name}-{model.version}"
        self.thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)
        self.admitter = (threading.Thread(target=self._run_admitter, name=f"admit-{name}", daemon=True)
                         if engine.admit_aside else None)

    def start(self) -> None:
        self.thread.start()
        if self.admitter is not None:
            self.admitter.start()

    @property
    def streams(self) -> list[Stream]:
        return [s for s in self.rows if s is not None]

    def _capacity(self, rows: int) -> int:
        return row_capacity(rows) if self.engine.xla else rows

    # -- the stepper --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._step():
                pass
        except Exception:
            log.exception("decoding model %s version %d failed", self.model.name, self.model.version)
            engine = self.engine
            with engine._lock:
                if engine._batches.get(self.model) is self:
                    del engine._batches[self.model]  # a later stream starts a fresh batch
                self.retired = True
                doomed = self.streams + [s for group, _ in self.ready for s in group] + self.pending
                if self.admitter is None:
                    doomed += self.admitting
                self.rows, self.ready, self.pending = [], [], []
                engine._lock.notify_all()
            for stream in doomed:
                engine._end(stream, FAILED)
            self._forget(len(doomed))  # the admitter forgets its own

    def _step(self) -> bool:
        """One round: join, drop, advance. Returns False when the batch is empty and retired."""
        engine = self.engine
        with engine._lock:
            if self.admitter is not None:  # nothing to step: wait for admitted streams (or none to come);
                # a group being admitted that is larger than the batch joins first (module note)
                engine._lock.wait_for(lambda: (self.streams and len(self.admitting) <= len(self.streams))
                                      or self.ready or engine._stopping or not (self.pending or self.admitting))
            else:
                self.admitting, self.pending = self.pending, []
            groups, self.ready = self.ready, []
            stopping = engine._stopping
            unstarted = []
            if stopping and self.admitter is not None:
                unstarted, self.pending = self.pending, []
        if self.admitter is None:
            joiners = self._without_ended(self.admitting)
            if joiners:
                groups = [(joiners, self._start(joiners))]
            self.admitting = []
        if stopping:
            for stream in self.streams + [s for group, _ in groups for s in group] + unstarted:
                engine._end(stream, SHUTDOWN)
            self._forget(len(unstarted))
        if groups:
            self._join(groups)
        self._drop_ended()
        if self.streams:
            self.state = self._advance(self.rows, self.state, self._step_size())
            return True
        return not self._retire()

    def _step_size(self) -> int:
        """``chunk`` characters, or without XLA fewer when every stream needs fewer. (With XLA a
        shorter step would be another shape to compile, and XLA's step of ``chunk`` costs little more.)"""
        if self.engine.xla:
            return self.engine.chunk
        return min(self.engine.chunk, max(s.remaining for s in self.streams))

    def _join(self, groups: list[tuple[list[Stream], dict]]) -> None:
        """Put started streams' state rows after the running rows."""
        running = [i for i, s in enumerate(self.rows) if s is not None]
        order, joined, offset = list(running), [], len(self.rows)
        for streams, state in groups:
            order += range(offset, offset + len(streams))
            offset += len(streams)
            joined.append(state)
        capacity = self._gather(order, joined)
        rows = [self.rows[i] for i in running] + [s for streams, _ in groups for s in streams]
        self.rows = rows + [None] * (capacity - len(rows))

    # -- admission ----------------------------------------------------------------------------------
    def _run_admitter(self) -> None:
        engine = self.engine
        while True:
            with engine._lock:
                engine._lock.wait_for(lambda: self.pending or self.retired)
                if self.retired:
                    return
                self.admitting, self.pending = self.pending, []
            joiners, state = self._without_ended(self.admitting), None
            try:
                if joiners:
                    state = self._start(joiners)
            except Exception:
                log.exception("starting streams of model %s version %d failed", self.model.name, self.model.version)
                for stream in joiners:
                    engine._end(stream, FAILED)
                self._forget(len(joiners))
                joiners = []
            with engine._lock:
                if joiners:
                    if self.retired:  # the stepper failed meanwhile
                        for stream in joiners:
                            engine._end(stream, FAILED)
                        self._forget(len(joiners))
                    else:
                        self.ready.append((joiners, state))
                self.admitting = []
                engine._lock.notify_all()

    def _start(self, joiners: list[Stream]) -> dict:
        """Read the joiners' prompts and sample their first characters (handed on at once); their state."""
        state = self.functions.start_windows([stream._window for stream in joiners], self.prompts)
        first = min(self.engine.first_chunk, max(s.remaining for s in joiners))
        return self._advance(joiners, state, first, compiled=False)  # small and varied shapes: no XLA

    # -- both ---------------------------------------------------------------------------------------
    def _advance(self, rows: list[Stream | None], state: dict, k: int, compiled: bool = True) -> dict:
        """Sample and feed ``k`` characters for every row of ``state``; hand each stream its share.

        Each stream uses exactly as many uniforms as characters it still needs; the ids past that
        (when the step is longer than what it has left) are discarded, as are free rows' ids.
        """
        count = len(rows)
        uniforms = np.zeros([count, k], np.float32)
        temperature = np.zeros([count], np.float32)
        top_k = np.zeros([count], np.int32)
        top_p = np.ones([count], np.float32)
        takes = [0] * count
        for i, stream in enumerate(rows):
            if stream is not None and stream.stop_reason is None:
                takes[i] = n = min(k, stream.remaining)
                uniforms[i, :n] = stream._uniforms.take(n)
                temperature[i], top_k[i], top_p[i] = stream.temperature, stream.top_k, stream.top_p
        inputs = dict(state, temperature=tf.constant(temperature), uniforms=tf.constant(uniforms))
        if self.functions.controls:
            inputs.update(top_k=tf.constant(top_k), top_p=tf.constant(top_p))
        with metrics.decode_step(sum(1 for stream in rows if stream is not None)):
            out = self.functions.advance(inputs, compiled)
        ids = out.pop("ids").numpy()
        logprobs = out.pop("logprobs").numpy() if "logprobs" in out else None
        for i, stream in enumerate(rows):
            if takes[i] and stream.stop_reason is None:
                stream._add(ids[i, :takes[i]], None if logprobs is None else logprobs[i, :takes[i]])
        return out

    def _gather(self, order: list[int], joined: list[dict] = ()) -> int:
        """Rebuild the state from rows ``order`` of the current state followed by the ``joined``
        states' rows, padded with copies of a row (free rows) up to the capacity. Returns the number
        of rows."""
        if not order:
            self.state = None
            return 0
        parts = ([self.state] if self.state is not None else []) + list(joined)
        order = order + [order[0]] * (self._capacity(len(order)) - len(order))
        index = tf.constant(order, tf.int32)
        self.state = {key: tf.gather(tf.concat([part[key] for part in parts], axis=0) if len(parts) > 1
                                     else parts[0][key], index) for key in parts[0]}
        return len(order)

    def _drop_ended(self) -> None:
        """Free the rows of ended streams; pack the state when it fits fewer rows."""
        ended = [i for i, s in enumerate(self.rows) if s is not None and s.stop_reason is not None]
        if not ended:
            return
        for i in ended:
            self.rows[i] = None
        self._forget(len(ended))
        running = [i for i, s in enumerate(self.rows) if s is not None]
        if self._capacity(len(running)) < len(self.rows):
            capacity = self._gather(running)
            self.rows = [self.rows[i] for i in running]
            self.rows += [None] * (capacity - len(self.rows))

    def _without_ended(self, streams: list[Stream]) -> list[Stream]:
        """``streams`` less those that ended, which the engine then no longer holds."""
        running = [s for s in streams if s.stop_reason is None]
        self._forget(len(streams) - len(running))
        return running

    def _forget(self, count: int) -> None:
        if count:
            with self.engine._lock:
                self.engine._held -= count

    def _retire(self) -> bool:
        """Leave the engine if no stream is on its way in; returns whether it did."""
        with self.engine._lock:
            if self.pending or self.admitting or self.ready or self.streams:
                return False
            if self.engine._batches.get(self.model) is self:
                del self.engine._batches[self.model]
            self.retired = True
            self.engine._lock.notify_all()
            return True
