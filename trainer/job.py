"""The RQ training job: ``run_training_job(payload)`` trains, publishes and records every step.

The payload, the job's record and its events in Redis are the shared contract in ``textgen.jobs``;
this module is the worker's side of it and imports the training code.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

from textgen import config, keys
from textgen.jobs import (BATCH_EVENTS_PER_SECOND, MAX_ATTEMPTS, STOP_CHECK_SECONDS, PayloadError, cancel_key, job_key,
                          parse_payload, record_event)
from textgen.models_dir import ModelsDir, NoSuchModel, NoSuchVersion

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job ended without a model; the message is the reason recorded in its events."""


EXIT_SUPERVISOR_GONE = 75  # the horse's exit code when its worker is gone (or took it for dead)
EXIT_HANDED_BACK = 76  # the horse's exit code when it stopped for its worker's shutdown, checkpoint saved


@dataclasses.dataclass
class Supervision:
    """What a training worker and the job in its work horse tell each other (trainer.worker makes one
    in the horse and hands it to the job on the RQ job object; a job run without a worker has none).

    ``supervisor_pid``: the worker's process, which the job checks is still its parent.
    ``handback_requested``: the worker is stopping (SIGTERM in the horse, ``request_handback``): stop
    at the next batch, checkpoint there, and exit with EXIT_HANDED_BACK, so that the worker puts the
    job back on the queue.
    """

    supervisor_pid: int
    handback_requested: bool = False

    def request_handback(self, signum=None, frame=None) -> None:
        """The work horse's SIGTERM handler: hand the job back at the next batch."""
        self.handback_requested = True

    def worker_gone(self) -> bool:
        return os.getppid() != self.supervisor_pid


def run_training_job(payload: dict) -> dict:
    """The RQ job: train as the payload says, publish the model, record every step as an event.

    Runs inside an RQ work horse; returns ``{"model_name", "model_version"}`` (or
    ``{"cancelled": True}``). A failure is recorded as a ``failed`` event and raised as JobFailed,
    and is never retried: only a worker that died makes RQ run a job again (see trainer.worker).
    """
    import rq

    job = rq.get_current_job()
    return TrainingRun(job.connection, job.id, rq_job=job, supervision=getattr(job, "supervision", None)).run(payload)


def on_job_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ failure callback. For a job whose worker died (AbandonedJobError) RQ calls it before it
    decides to retry; the job ends here only when no retry is left."""
    if exc_type is not None and exc_type.__name__ == "AbandonedJobError":
        if job.retries_left:
            return
        reason = (f"the worker running this job died and the job has no retries left "
                  f"(after {MAX_ATTEMPTS} attempts)")
    else:
        reason = str(exc_value) or (exc_type.__name__ if exc_type else "unknown error")
    record_event(connection, job.id, {"type": "failed", "reason": reason})


class TrainingRun:
    """One attempt at one job: ``run(payload)`` does the work, writing events as it goes."""

    def __init__(self, redis, job_id: str, rq_job=None, supervision: Supervision | None = None):
        self.redis, self.job_id, self.rq_job, self.supervision = redis, job_id, rq_job, supervision
        self.attempt = 0
        self._last_batch_event = 0.0
        self._last_stop_check = 0.0
        self._cancelled = False

    def run(self, payload) -> dict:
        began = time.monotonic()
        try:
            return self._run(payload)
        finally:  # this attempt's time, counted to the key that submitted the job (textgen.keys usage)
            try:
                keys.add_training_seconds(self.redis, self._owner(), time.monotonic() - began)
            except Exception:  # noqa: BLE001  (usage must not fail the job)
                log.warning("job %s: could not record its training seconds", self.job_id, exc_info=True)

    def _owner(self) -> str:
        owner = self.redis.hget(job_key(self.job_id), "owner")
        return owner.decode() if owner else ""

    def _run(self, payload) -> dict:
        checkpoint_dir = config.checkpoints_dir() / self.job_id
        try:
            spec = parse_payload(payload)
            self.attempt = int(self.redis.hincrby(job_key(self.job_id), "attempts", 1))
            published = self._already_published(spec["model_name"])
            if published:  # a worker died between publishing and saying so
                return self._finish(spec["model_name"], published, checkpoint_dir)
            if self._cancel_requested():
                return self._cancel(checkpoint_dir)
            return self._train(spec, checkpoint_dir)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's recorded reason
            reason, expected = _failure_reason(exc)
            log.warning("job %s failed: %s", self.job_id, reason)
            shutil.rmtree(checkpoint_dir, ignore_errors=True)  # it will not be resumed
            record_event(self.redis, self.job_id, {"type": "failed", "reason": reason})
            if self.rq_job is not None:
                self.rq_job.retries_left = 0  # a job that failed by itself fails again: no retry
            if expected:
                raise JobFailed(reason) from None
            raise

    def _train(self, spec: dict, checkpoint_dir) -> dict:
        from textgen import bundle, corpus
        from textgen.options import TrainConfig
        from trainer import export, training

        cfg = TrainConfig.from_dict(spec["options"])  # checked by training.train, with the text
        training.use_threads_for(cfg)  # this work horse's own TensorFlow, before its first op
        text = corpus.load_corpus(spec["corpus"])
        init_from = None
        if spec["from_model"]:
            parent = spec["from_model"]
            try:
                init_from, _version = ModelsDir(config.models_dir()).resolve(parent["name"], parent["version"])
            except (NoSuchModel, NoSuchVersion):
                raise bundle.BundleError(f"model {parent['name']} version {parent['version']} does not exist "
                                         "(deleted after the job was submitted?)") from None
        result = training.train(text.text, cfg, corpus_name=text.name, corpus_sha256=text.sha256,
                                on_event=self._on_event, should_stop=self._should_stop,
                                init_from=init_from, checkpoint_dir=checkpoint_dir,
                                checkpoint_on_stop=lambda: self._handing_back() and not self._cancelled)
        self._check_still_ours()
        if result.stopped and self._handing_back() and not self._cancelled:
            log.info("job %s: stopped for the worker's shutdown; handing it back", self.job_id)
            os._exit(EXIT_HANDED_BACK)  # the checkpoint is written; trainer.worker requeues the job
        if result.stopped or self._cancel_requested():
            return self._cancel(checkpoint_dir)
        meta = {**result.meta, "job_id": self.job_id}
        owner = self._owner()
        if owner:
            meta["trained_by"] = owner  # the API key that submitted the job
        _path, version = export.publish(result.model, meta, config.models_dir(), spec["model_name"])
        return self._finish(spec["model_name"], version, checkpoint_dir)

    def _finish(self, model_name: str, version: int, checkpoint_dir) -> dict:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # first: the event tells watchers all is done
        record_event(self.redis, self.job_id, {"type": "finished", "model_name": model_name, "model_version": version})
        return {"model_name": model_name, "model_version": version}

    def _cancel(self, checkpoint_dir) -> dict:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        record_event(self.redis, self.job_id, {"type": "cancelled"})
        return {"cancelled": True}

    def _on_event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "batch":
            now = time.monotonic()
            last_of_epoch = event["batch"] >= event["batches"]
            if not last_of_epoch and now - self._last_batch_event < 1.0 / BATCH_EVENTS_PER_SECOND:
                return
            self._last_batch_event = now
        elif kind == "started":
            event = {**event, "attempt": self.attempt, "pid": os.getpid()}
        elif kind == "checkpoint":
            event = {k: v for k, v in event.items() if k != "path"}  # a server path: not for clients
        record_event(self.redis, self.job_id, event)

    def _should_stop(self) -> bool:
        """Called at every batch boundary: is the worker stopping, or has someone cancelled the job
        (checked every 0.2 s)?"""
        if self.supervision is not None and self.supervision.worker_gone():
            os._exit(EXIT_SUPERVISOR_GONE)  # our worker died: the job will be run again elsewhere
        if self._handing_back():
            return True
        now = time.monotonic()
        if now - self._last_stop_check >= STOP_CHECK_SECONDS:
            self._last_stop_check = now
            self._check_still_ours()
            self._cancelled = self._cancel_requested()
        return self._cancelled

    def _handing_back(self) -> bool:
        return self.supervision is not None and self.supervision.handback_requested

    def _cancel_requested(self) -> bool:
        return bool(self.redis.exists(cancel_key(self.job_id)))

    def _check_still_ours(self) -> None:
        """A later attempt took the job over (this worker was taken for dead): stop, say nothing."""
        if self.supervision is None:
            return
        current = self.redis.hget(job_key(self.job_id), "attempts")
        if current is not None and int(current) > self.attempt:
            log.warning("job %s: attempt %d superseded by attempt %s; exiting", self.job_id, self.attempt, current.decode())
            os._exit(EXIT_SUPERVISOR_GONE)

    def _already_published(self, model_name: str) -> int | None:
        """The version this job already published, if an earlier attempt got that far."""
        return ModelsDir(config.models_dir()).published_by(model_name, self.job_id)


def _failure_reason(exc: Exception) -> tuple[str, bool]:
    """(reason for the user, whether it is an expected failure rather than a bug)."""
    from trainer import training

    if isinstance(exc, PayloadError):
        return str(exc), True
    reason = training.describe_failure(exc)
    if reason is not None:
        return reason, True
    return f"internal error: {type(exc).__name__}: {exc}", False
