"""The decode bench's baseline: the engine before admission aside, XLA and the prompt cache.

Every step is 16 characters (fewer when every stream needs fewer); streams that arrive join between
steps, admitted by the stepper itself (their first step 4 characters), so a joiner waits for the step
in progress; rows are packed exactly; the bundle's graph functions run; every prompt is read. The
product's batch admits on its own thread beside the step: ``BaselineBatch`` only changes where its
joiners come from (``_joiners``) and starts no admitter.

``BaselineEngine(...)`` takes what ``Engine`` takes, so the server can build it, and keeps only the
limits (``max_streams``, ``max_length``, ``max_prompt``).
"""
from __future__ import annotations

from server.batch import Batch, Group
from server.engine import CHUNK, Engine
from server.stream import FAILED, Stream

BASELINE_FIRST_CHUNK = 4  # a joining stream's first step in the engine before


class BaselineBatch(Batch):
    """A batch whose stepper admits the streams that arrived between its steps (no admitter thread)."""

    def start(self) -> None:
        """Start the stepper only."""
        self.thread.start()

    def _joiners(self) -> tuple[list[Group], bool, list[Stream]]:
        """Start every stream submitted since the last step, now, on the stepper: ``([(the streams,
        their state)] or [], whether the engine is stopping, [])``. If starting fails they end with
        FAILED and the error goes on to fail the batch."""
        engine = self.engine
        with engine._lock:
            self.admitting, self.pending = self.pending, []
            stopping = engine._stopping
        joiners = self._without_ended(self.admitting)
        groups = []
        try:
            if joiners:
                groups = [(joiners, self._start(joiners))]
        except Exception:
            for stream in joiners:
                engine._end(stream, FAILED)
            self._forget(len(joiners))
            raise
        finally:
            self.admitting = []
        return groups, stopping, []


class BaselineEngine(Engine):
    """``Engine`` as it was before: BaselineBatch, 16-character steps, a joiner's first step 4, no XLA,
    no prompt cache, whatever else is passed."""

    batch_class = BaselineBatch

    def __init__(self, max_streams: int = 256, max_length: int = 10_000, max_prompt: int = 10_000, **ignored):
        super().__init__(max_streams, max_length, max_prompt, chunk=CHUNK, first_chunk=BASELINE_FIRST_CHUNK,
                         xla=False, prompt_cache_bytes=0)
