"""Continuous batching: the active streams of one model version, their state, and the two threads
that step them.

- the stepper loops: join the streams that were admitted since its last step (their state rows go
  into the batch), free the rows of streams that ended (finished, cancelled), then ``advance`` every
  row ``chunk`` characters at once, each stream with its own temperature and its own next uniforms,
  and hand the text on;
- the admitter takes the streams that arrived, ``start``s them as one batch from their prompts (the
  prompt cache reads each window once), runs a short first ``advance`` (``first_chunk`` characters)
  and hands them that text at once, then leaves their state for the stepper to join at its next step.

So a stream that arrives while a long step runs does not wait for it: its prompt is read and its
first text sampled beside that step, and the batch keeps its long steps, whose fixed cost per call
is spread over ``chunk`` characters.

While the admitter starts a group of joiners larger than the batch, the stepper waits for it instead
of stepping the smaller batch alone beside it: both would share the CPU, and the joiners then join
the next step (a burst of arrivals at an idle server runs as one batch from its first step).

The state tensors (``state``, ``phase``, ``probs``) are opaque here: rows are joined, gathered and
passed back to ``advance``. The sampling rule lives in the bundle (``advance`` samples with it), and
each stream draws from its own uniforms (server/stream.py).
"""
from __future__ import annotations

import logging
import threading

import numpy as np
import tensorflow as tf

from server import metrics
from server.programs import Functions, row_capacity
from server.prompt_cache import PromptCache
from server.store import ServedModel
from server.stream import FAILED, SHUTDOWN, Stream

log = logging.getLogger(__name__)

Group = tuple[list[Stream], dict]  # started streams and their state rows, to join


class Batch:
    """The active streams of ``model`` in ``engine`` (the Engine that made it: its lock guards the
    batch's queues, and it ends streams), their decode state (from ``functions``, prompts through
    ``prompts``), and the threads that step them; ``start()`` starts the threads.

    Row ``i`` of every state tensor belongs to ``rows[i]``; a None row is free (its results are
    ignored). With XLA the number of rows is ``row_capacity`` of the streams, else exactly their number.
    A stream moves from ``pending`` (submitted) to ``admitting`` (being started) to ``ready`` (started,
    first text sent: waiting for the next step) to ``rows``; all but ``rows`` are guarded by the
    engine's lock, and only the stepper touches ``rows`` and ``state``.
    """

    def __init__(self, engine, model: ServedModel, functions: Functions, prompts: PromptCache):
        self.engine = engine
        self.model = model
        self.functions = functions
        self.prompts = prompts
        self.pending: list[Stream] = []  # submitted, not yet being admitted
        self.admitting: list[Stream] = []  # being started
        self.ready: list[Group] = []  # started, to join
        self.rows: list[Stream | None] = []  # one per state row
        self.state: dict[str, tf.Tensor] | None = None  # the model's state tensors, [rows, ...] each
        self.retired = False
        name = f"{model.name}-{model.version}"
        self.thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)
        self.admitter = threading.Thread(target=self._run_admitter, name=f"admit-{name}", daemon=True)

    def start(self) -> None:
        """Start the stepper and the admitter."""
        self.thread.start()
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
                self.rows, self.ready, self.pending = [], [], []
                engine._lock.notify_all()
            for stream in doomed:
                engine._end(stream, FAILED)
            self._forget(len(doomed))  # the admitter forgets its own

    def _step(self) -> bool:
        """One round: join, drop, advance. Returns False when the batch is empty and retired."""
        groups, stopping, unstarted = self._joiners()
        if stopping:
            for stream in self.streams + [s for group, _ in groups for s in group] + unstarted:
                self.engine._end(stream, SHUTDOWN)
            self._forget(len(unstarted))
        if groups:
            self._join(groups)
        self._drop_ended()
        if self.streams:
            self.state = self._advance(self.rows, self.state, self._step_size())
            return True
        return not self._retire()

    def _joiners(self) -> tuple[list[Group], bool, list[Stream]]:
        """What this step joins: ``(groups started since the last step, whether the engine is
        stopping, streams submitted but never started)``; the last only when stopping. Waits while
        there is nothing to step, or while a group larger than the batch is being started."""
        engine = self.engine
        with engine._lock:
            engine._lock.wait_for(lambda: (self.streams and len(self.admitting) <= len(self.streams))
                                  or self.ready or engine._stopping or not (self.pending or self.admitting))
            groups, self.ready = self.ready, []
            stopping, unstarted = engine._stopping, []
            if stopping:
                unstarted, self.pending = self.pending, []
        return groups, stopping, unstarted

    def _step_size(self) -> int:
        """``chunk`` characters, or without XLA fewer when every stream needs fewer. (With XLA a
        shorter step would be another shape to compile, and XLA's step of ``chunk`` costs little more.)"""
        if self.engine.xla:
            return self.engine.chunk
        return min(self.engine.chunk, max(s.remaining for s in self.streams))

    def _join(self, groups: list[Group]) -> None:
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
        state = self.prompts.start([stream._window for stream in joiners], self.functions)
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
                params = stream.params
                temperature[i], top_k[i], top_p[i] = params.temperature, params.top_k, params.top_p
        inputs = dict(state, temperature=tf.constant(temperature), uniforms=tf.constant(uniforms))
        if self.functions.controls:
            inputs.update(top_k=tf.constant(top_k), top_p=tf.constant(top_p))
        rich = [i for i, stream in enumerate(rows) if takes[i] and stream.params.rich]
        top_ids = top_logprobs = None
        with metrics.decode_step(sum(1 for stream in rows if stream is not None)):
            if rich:  # the whole batch through the rich sampler: neutral rows come out bit for bit
                penalized = [i for i in rich if rows[i].penalty is not None]
                out = self.functions.advance_penalized({**inputs, **self._penalties(rows, penalized)}, compiled)
                out.pop("counts"), out.pop("seen")  # the streams count their own characters (Stream._add)
                top_ids, top_logprobs = out.pop("top_ids").numpy(), out.pop("top_logprobs").numpy()
            else:
                out = self.functions.advance(inputs, compiled)
        ids = out.pop("ids").numpy()
        logprobs = out.pop("logprobs").numpy() if "logprobs" in out else None
        for i, stream in enumerate(rows):
            if takes[i] and stream.stop_reason is None:
                n = takes[i]
                stream._add(ids[i, :n], None if logprobs is None else logprobs[i, :n],
                            None if top_ids is None else (top_ids[i, :n], top_logprobs[i, :n]))
        return out

    def _penalties(self, rows: list[Stream | None], penalized: list[int]) -> dict:
        """advance_penalized's extra inputs: the ``penalized`` rows' counts, seen, penalties and bias;
        every other row neutral (zeros, repetition 1)."""
        count, size = len(rows), len(self.model.charset)
        arrays = {name: np.zeros([count, size], np.float32) for name in ("counts", "seen", "bias")}
        scalars = {"presence": np.zeros([count], np.float32), "frequency": np.zeros([count], np.float32),
                   "repetition": np.ones([count], np.float32)}
        for i in penalized:
            stream = rows[i]
            for name in arrays:
                arrays[name][i] = stream.penalty[name]
            params = stream.params
            scalars["presence"][i] = params.presence_penalty
            scalars["frequency"][i] = params.frequency_penalty
            scalars["repetition"][i] = params.repetition_penalty
        return {name: tf.constant(value) for name, value in {**arrays, **scalars}.items()}

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
