"""The decode engine: continuous batching of generation streams over a bundle's serving functions.

Plain Python, no gRPC (the service adapts it). Every model version with active streams has one
batch and one thread that loops:

1. admit the streams that joined since the last step: ``start`` them as one batch, run a short first
   ``advance`` (FIRST_CHUNK characters, so their first text comes soon), then concatenate their state
   rows to the batch;
2. drop the rows of streams that ended (finished, cancelled) by gathering the rest;
3. ``advance`` every stream CHUNK characters at once, each with its own temperature and its own next
   uniforms, and hand each stream its chunk of text.

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

import numpy as np
import tensorflow as tf

from server.errors import BadRequest, DecodeFailed, ShuttingDown, TooManyStreams, shown
from server.store import ServedModel
from textgen.charset import describe_chars
from textgen.sampling import Uniforms

log = logging.getLogger(__name__)

CHUNK = 16  # characters per step for running streams: amortises the per-call cost of advance
FIRST_CHUNK = 4  # a joining stream's first step, to cut its time to first text
MAX_SEED = 2**64 - 1

LENGTH = "length"  # produced every character asked for
SHUTDOWN = "shutdown"  # the engine was shut down first
CANCELLED = "cancelled"  # the consumer gave up (client cancelled, deadline passed)
FAILED = "failed"  # the model raised while decoding

_END = object()  # closes a stream's queue


class Stream:
    """One generation. Iterate it for the text, in chunks; afterwards ``stop_reason`` and
    ``produced`` say how it ended. ``cancel()`` (from any thread) ends it and frees its slot."""

    def __init__(self, engine: "Engine", model: ServedModel, prompt: str, prompt_ids: np.ndarray,
                 length: int, temperature: float, seed: int):
        self.model = model
        self.prompt = prompt  # as used: the request's, or the seed slice chosen for an empty one
        self.length = length
        self.temperature = temperature
        self.seed = seed
        self.produced = 0
        self.stop_reason: str | None = None
        self._engine = engine
        self._window = prompt_ids  # int32 [<= sample_len]: the part of the prompt the model sees
        self._uniforms = Uniforms(seed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def __iter__(self):
        """Text chunks until the stream ends; chunks that piled up are joined into one.

        Raises DecodeFailed when the model failed."""
        while True:
            parts, item = [], self._queue.get()
            while item is not _END:
                parts.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if parts:
                yield "".join(parts)
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
        return self.length - self.produced

    def _deliver(self, text: str) -> None:
        self.produced += len(text)
        self._queue.put(text)


class Engine:
    """Runs every stream submitted to it; ``submit`` is safe from any thread."""

    def __init__(self, max_streams: int = 256, max_length: int = 10_000, max_prompt: int = 10_000,
                 chunk: int = CHUNK, first_chunk: int = FIRST_CHUNK):
        self.max_streams = max_streams
        self.max_length = max_length
        self.max_prompt = max_prompt
        self.chunk = chunk
        self.first_chunk = first_chunk
        self._lock = threading.Condition()
        self._streams: set[Stream] = set()  # streams holding a slot: not yet ended
        self._held = 0  # streams submitted and not yet dropped from a batch
        self._batches: dict[ServedModel, _Batch] = {}
        self._closing = False  # no new streams
        self._stopping = False  # end every stream at the next step

    def submit(self, model: ServedModel, prompt: str, length: int, temperature: float,
               seed: int | None = None) -> Stream:
        """Start generating ``length`` characters after ``prompt`` (empty: one of the model's seed
        slices, picked by the seed) at ``temperature`` (0: greedy) from ``seed`` (None: a random one,
        reported as ``stream.seed``).

        Raises BadRequest (a value out of range), TooManyStreams or ShuttingDown.
        """
        self._check(model, prompt, length, temperature, seed)
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
            stream = Stream(self, model, prompt, window, int(length), float(temperature), int(seed))
            self._streams.add(stream)
            self._held += 1
            batch = self._batches.get(model)
            if batch is None:
                batch = self._batches[model] = _Batch(self, model)
                batch.thread.start()
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
        for thread in threads:
            thread.join(timeout=5.0)

    # -- internals --------------------------------------------------------------------------------
    def _check(self, model: ServedModel, prompt: str, length: int, temperature: float, seed) -> None:
        if not 1 <= length <= self.max_length:
            raise BadRequest(f"length must be between 1 and {self.max_length} characters, got {length}")
        if not (math.isfinite(temperature) and temperature >= 0):
            raise BadRequest(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise BadRequest(f"seed must be between 0 and 2**64 - 1, got {seed}")
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

    def _end(self, stream: Stream, reason: str) -> None:
        """Mark ``stream`` ended (first reason wins), free its slot and close its queue."""
        with self._lock:
            if stream.stop_reason is not None:
                return
            stream.stop_reason = reason
            self._streams.discard(stream)
            self._lock.notify_all()
        stream._queue.put(_END)


class _Batch:
    """The active streams of one model version, their decode state, and the thread that steps them."""

    def __init__(self, engine: Engine, model: ServedModel):
        self.engine = engine
        self.model = model
        self.pending: list[Stream] = []  # joined since the last step; guarded by engine._lock
        self.joining: list[Stream] = []  # being admitted in this step
        self.streams: list[Stream] = []  # one per state row, in row order
        self.state: dict[str, tf.Tensor] | None = None  # the model's state tensors, [batch, ...] each
        self.temperatures = np.zeros([0], np.float32)
        self.thread = threading.Thread(target=self._run, name=f"decode-{model.name}-{model.version}", daemon=True)

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
                doomed = self.streams + self.joining + self.pending
                self.streams, self.joining, self.pending = [], [], []
            for stream in doomed:
                engine._end(stream, FAILED)
            self._forget(len(doomed))

    def _step(self) -> bool:
        """One round: admit, drop, advance. Returns False when the batch is empty and retired."""
        engine = self.engine
        with engine._lock:
            self.joining, self.pending = self.pending, []
            stopping = engine._stopping
        if stopping:
            for stream in self.streams + self.joining:
                engine._end(stream, SHUTDOWN)
        self.joining = self._without_ended(self.joining)
        if self.joining:
            self._admit(self.joining)
        self._drop_ended()
        if self.streams:
            self.state = self._advance(self.streams, self.state, self.temperatures, engine.chunk)
            return True
        return not self._retire()

    def _admit(self, joiners: list[Stream]) -> None:
        fn, sample_len = self.model.functions, self.model.sample_len
        prompt = np.zeros([len(joiners), sample_len], np.int32)
        for row, stream in zip(prompt, joiners):
            row[sample_len - len(stream._window):] = stream._window  # right-aligned, as start wants
        lengths = np.array([len(s._window) for s in joiners], np.int32)
        state = fn.start(prompt=tf.constant(prompt), lengths=tf.constant(lengths))
        temperatures = np.array([s.temperature for s in joiners], np.float32)
        state = self._advance(joiners, state, temperatures, self.engine.first_chunk)
        if self.state is None:
            self.state = state
        else:
            self.state = {key: tf.concat([self.state[key], state[key]], axis=0) for key in self.state}
        self.temperatures = np.concatenate([self.temperatures, temperatures])
        with self.engine._lock:
            self.streams, self.joining = self.streams + joiners, []

    def _advance(self, streams: list[Stream], state: dict, temperatures: np.ndarray, chunk: int) -> dict:
        """Sample and feed up to ``chunk`` characters for every row of ``state``; deliver them.

        Each stream uses exactly as many uniforms as characters it still needs; the ids past that
        (when the step is longer than what it has left) are discarded.
        """
        k = min(chunk, max(s.remaining for s in streams))
        uniforms = np.zeros([len(streams), k], np.float32)
        takes = [min(k, s.remaining) for s in streams]
        for row, stream, n in zip(uniforms, streams, takes):
            row[:n] = stream._uniforms.take(n)
        out = dict(self.model.functions.advance(
            **state, temperature=tf.constant(temperatures), uniforms=tf.constant(uniforms)))
        ids = out.pop("ids").numpy()
        for stream, row, n in zip(streams, ids, takes):
            if stream.stop_reason is None:
                stream._deliver(self.model.decode(row[:n]))
                if stream.remaining == 0:
                    self.engine._end(stream, LENGTH)
        return out

    def _drop_ended(self) -> None:
        """Gather the state rows of the streams still running."""
        ended = [s.stop_reason is not None for s in self.streams]  # once: streams end concurrently
        if not any(ended):
            return
        keep = [i for i, gone in enumerate(ended) if not gone]
        if keep:
            rows = tf.constant(keep, tf.int32)
            self.state = {key: tf.gather(value, rows) for key, value in self.state.items()}
        else:
            self.state = None
        self.temperatures = self.temperatures[keep]
        with self.engine._lock:
            self.streams = [self.streams[i] for i in keep]
            self.engine._held -= len(ended) - len(keep)

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
        """Leave the engine if no stream joined meanwhile; returns whether it did."""
        with self.engine._lock:
            if self.pending or self.streams:
                return False
            if self.engine._batches.get(self.model) is self:
                del self.engine._batches[self.model]
            return True
