"""One generation as its consumer sees it: a queue of text chunks, and how it ended.

The batch hands a stream its sampled ids (``_add``); the stream decodes them, holds back what may be
the start of a stop string, and queues the text for its consumer, at least every ``chunk``
characters or FLUSH_SECONDS. A stream's uniforms come from its own seed, one per generated
character and in order, so a seeded stream gets the same text whatever else shares its batch and
however the steps split it.
"""
from __future__ import annotations

import queue
import time
from typing import Callable, NamedTuple

import numpy as np

from server.errors import DecodeFailed
from server.params import SamplingParams
from server.store import ServedModel
from textgen.sampling import Uniforms

FLUSH_SECONDS = 1.0  # hand a stream what it has after this long, even when less than a chunk (a
# slow batch): more often would mean many small messages, which cost the whole server CPU

LENGTH = "length"  # produced every character asked for
STOP = "stop"  # generated one of the request's stop strings (not delivered)
SHUTDOWN = "shutdown"  # the engine was shut down first
CANCELLED = "cancelled"  # the consumer gave up (client cancelled, deadline passed)
FAILED = "failed"  # the model raised while decoding

_END = object()  # closes a stream's queue


class Chunk(NamedTuple):
    """The next text of a stream, and the natural-log probability under the model of each of its
    characters (empty unless the request asked for them); ``top``: for each character, the likeliest
    characters there and their log-probabilities, ``(chars, values)`` (empty unless asked for)."""

    text: str
    logprobs: tuple = ()
    top: tuple = ()


class Stream:
    """One generation of ``params`` (its seed drawn) after ``prompt`` (as used: the request's, or the
    seed slice chosen for an empty one) on ``model``; ``prompt_ids``: the window the model reads.
    Text is handed on every ``chunk`` characters; ``end(stream, reason)`` is the engine's: the stream
    calls it when it is done (LENGTH, STOP) or cancelled, and the engine sets ``stop_reason`` (the
    first reason wins), frees its slot and ``_close``s it.

    Iterate it for the text (or ``chunks()`` for text and log-probabilities); afterwards
    ``stop_reason`` and ``produced`` say how it ended. ``cancel()`` (from any thread) ends it and
    frees its slot."""

    def __init__(self, model: ServedModel, prompt: str, prompt_ids: np.ndarray, params: SamplingParams,
                 chunk: int, end: Callable[["Stream", str], None]):
        self.model = model
        self.prompt = prompt
        self.params = params
        self.generated = params.resume_offset  # characters sampled (a resumed stream starts where it broke)
        self.produced = 0  # characters handed to the consumer by this stream
        self.stop_reason: str | None = None
        self._chunk = chunk
        self._on_end = end
        self._window = prompt_ids  # int32 [<= sample_len]: the part of the prompt the model sees
        self._uniforms = Uniforms(params.seed, skip=params.resume_offset)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ids: list[np.ndarray] = []  # sampled, not yet decoded
        self._logprobs: list[np.ndarray] = []
        self._held = ""  # decoded, not yet delivered: may be the start of a stop string
        self._held_logprobs: list[float] = []
        self._top: list = []  # (top ids [n, T], top logprobs [n, T]) sampled, not yet decoded
        self._held_top: list[tuple] = []
        self._flushed_at = None  # when text was last handed on (None: never)
        # With penalties: each character's count in the text generated so far, and 1.0 for every character
        # of the prompt or that text, float32 [charset] (a resumed stream's prompt ends with the text the
        # broken stream delivered: it counts as generated); and the logit bias.
        self.penalty: dict | None = None
        if params.penalized:
            ids = model.encode(prompt)
            counts = np.bincount(ids[len(ids) - params.resume_offset:], minlength=len(model.charset))
            self.penalty = {"counts": counts.astype(np.float32),
                            "seen": (np.bincount(ids, minlength=len(model.charset)) > 0).astype(np.float32),
                            "bias": params.bias_vector(model.charset)}

    @property
    def seed(self) -> int:
        """The seed the stream's uniforms come from (the request's, or the one drawn for it)."""
        return self.params.seed

    @property
    def remaining(self) -> int:
        """Characters still to sample."""
        return self.params.length - self.generated

    def __iter__(self):
        """Text chunks until the stream ends; chunks that piled up are joined into one.

        Raises DecodeFailed when the model failed."""
        for chunk in self.chunks():
            yield chunk.text

    def chunks(self):
        """``Chunk``s (text, log-probabilities, alternatives) until the stream ends; those that piled up are
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
                yield Chunk("".join(p.text for p in parts), tuple(lp for p in parts for lp in p.logprobs),
                            tuple(top for p in parts for top in p.top))
            if item is _END:
                if self.stop_reason == FAILED:
                    raise DecodeFailed(
                        f"model {self.model.name!r} version {self.model.version} failed while generating; "
                        "the server log has the details"
                    )
                return

    def cancel(self) -> None:
        """End the stream now (no-op once it has ended); the engine drops its row by the next step."""
        self._on_end(self, CANCELLED)

    # -- called by the engine and its batch ---------------------------------------------------------
    def _close(self) -> None:
        """End the consumer's iteration once it has what was queued (the engine set ``stop_reason``)."""
        self._queue.put(_END)

    def _add(self, ids: np.ndarray, logprobs: np.ndarray | None, top: tuple | None = None) -> None:
        """Take the next sampled ids (and their log-probabilities, and the likeliest ids at each place
        with theirs: ``top``); hand text on when it is due."""
        self.generated += len(ids)
        if self.penalty is not None:
            np.add.at(self.penalty["counts"], ids, 1.0)
            self.penalty["seen"][ids] = 1.0
        self._ids.append(ids)
        if logprobs is not None and self.params.logprobs:
            self._logprobs.append(logprobs)
        if top is not None and self.params.top_logprobs:
            self._top.append(top)
        now = time.monotonic()
        pending = sum(len(part) for part in self._ids) + len(self._held)
        if (self.remaining == 0 or self._flushed_at is None or pending >= self._chunk
                or now - self._flushed_at >= FLUSH_SECONDS or self.params.stop):
            self._flush(now)

    def _flush(self, now: float) -> None:
        stops = self.params.stop
        text = self._held + self.model.decode(np.concatenate(self._ids))
        logprobs = self._held_logprobs + [float(x) for part in self._logprobs for x in part]
        count = self.params.top_logprobs
        top = self._held_top + [(self.model.decode(row_ids[:count]), tuple(float(x) for x in row_values[:count]))
                                for part_ids, part_values in self._top
                                for row_ids, row_values in zip(part_ids, part_values)]
        self._ids, self._logprobs, self._top = [], [], []
        stopped = self._find_stop(text)
        if stopped is not None:
            text, logprobs, top, keep = text[:stopped], logprobs[:stopped], top[:stopped], 0
        elif self.remaining == 0 or not stops:
            keep = 0
        else:  # the tail may be the start of a stop string that the next characters complete
            keep = min(len(text), max(map(len, stops)) - 1)
        cut = len(text) - keep
        self._held, self._held_logprobs = text[cut:], logprobs[cut:] if self.params.logprobs else []
        self._held_top = top[cut:]
        if cut:
            self.produced += cut
            self._flushed_at = now
            self._queue.put(Chunk(text[:cut], tuple(logprobs[:cut]), tuple(top[:cut])))
        if stopped is not None:
            self._on_end(self, STOP)
        elif self.remaining == 0:
            self._on_end(self, LENGTH)

    def _find_stop(self, text: str) -> int | None:
        """Where the first stop string starts in ``text`` (None: none does)."""
        found = [i for i in (text.find(s) for s in self.params.stop) if i >= 0]
        return min(found) if found else None
