"""Training jobs as plain Python: check a request at the door, enqueue it on RQ, read and follow
what the worker records.

``Jobs`` is what the Training gRPC service calls (server/training_service.py translates messages),
and what tests call directly. Calls take the caller's key (``viewer``, a textgen.keys.Key; None: no
check): a key without the admin scope sees, watches and cancels only the jobs it submitted, and
another's job is "not found" to it. Jobs are dicts: the summary that the worker keeps in Redis (textgen.jobs)
(``id, state, corpus, model_name, options, from_model, model_version, error, enqueued_at,
started_at, ended_at, epoch, epochs, loss, val_loss, attempts, owner``); events are the dicts of the job's
event stream (see textgen.jobs). Redis is reached lazily (server.redis_link); corpora are
server.corpora's; the model folder's rules are textgen.models_dir's.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from server.corpora import Corpora
from server.errors import BadRequest, JobNotFound, ModelNotFound, PreconditionFailed, shown
from server.redis_link import RedisLink
from textgen import bundle, config
from textgen import jobs as record
from textgen.keys import ADMIN, Key
from textgen.models_dir import ModelsDir, NoSuchModel, NoSuchVersion
from textgen.options import OptionError, TextTooShort, TrainConfig, run_config

MAX_RETRIES = record.MAX_ATTEMPTS - 1  # runs again after its worker died, resuming from its checkpoint
JOB_TIMEOUT_SECONDS = 7 * 24 * 3600
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
WATCH_POLL_MS = 1000
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class Jobs:
    """Training jobs on the RQ queue ``textgen.config.QUEUE_NAME`` of the Redis at ``redis_url``."""

    def __init__(self, redis_url: str | None = None, models_dir: Path | None = None,
                 on_published: Callable[[str, int], None] | None = None, corpora: Corpora | None = None):
        """``on_published(name, version)`` runs before a watcher is told a job finished: the server
        loads the new version there, so whoever reads "finished" can use the model at once."""
        self.link = RedisLink(redis_url)
        self.on_published = on_published
        self.models = ModelsDir(Path(models_dir) if models_dir is not None else config.models_dir())
        self.corpora = corpora or Corpora()

    @property
    def redis(self):
        return self.link.client

    # ---- submit --------------------------------------------------------------------------------

    def submit(self, corpus: str = "", corpus_id: str = "", options: dict | None = None, model_name: str = "",
               from_model: str = "", from_version: int = 0, owner: str = "", admission=None) -> dict:
        """Check a training request and enqueue it; returns the new job's summary.

        ``options``: TrainConfig fields (unset ones take the defaults). ``model_name`` defaults to
        ``from_model`` when continuing a model, else to the corpus's (``Corpora.model_name``). The
        options are checked here with ``textgen.options.run_config``, with the text when this machine
        has it; the job checks them again when it runs. Raises BadRequest, CorpusMissing,
        ModelNotFound, PreconditionFailed or QueueUnavailable. ``owner``: the submitting key's id;
        ``admission``: a context manager entered around the enqueueing (server.limits' job slot).
        """
        spec = self.corpora.spec(corpus, corpus_id)
        try:
            cfg = TrainConfig.from_dict(dict(options or {}), continuing=bool(from_model))
        except (OptionError, TypeError) as exc:
            raise BadRequest(f"bad training options: {exc}") from None
        parent = self._parent_model(from_model, from_version)
        name = model_name or (parent[0] if parent else self.corpora.model_name(spec))
        try:
            bundle.validate_name(name)
        except bundle.BundleError as exc:
            raise BadRequest(str(exc)) from None
        cfg = self._checked(cfg, spec, parent)
        payload = record.make_payload(spec, cfg.to_dict(), name, parent)
        with admission if admission is not None else contextlib.nullcontext():
            return self.link.call(self._enqueue, payload, spec, name, cfg.to_dict(), parent, owner)

    def _enqueue(self, payload: dict, spec: str, name: str, options: dict, parent, owner: str) -> dict:
        from rq import Callback, Retry

        queue = self.link.queue()
        job = queue.create_job(
            record.JOB_FUNCTION, args=[payload], timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=record.RETENTION_SECONDS, failure_ttl=record.RETENTION_SECONDS,
            retry=Retry(max=MAX_RETRIES), on_failure=Callback(record.FAILURE_CALLBACK),
            description=f"train {name} on {spec}")
        record.create_record(self.redis, job.id, spec, name, options, parent, owner)
        queue.enqueue_job(job)
        return record.read_summary(self.redis, job.id)

    def _parent_model(self, name: str, version: int) -> tuple[str, int] | None:
        """(name, version) of the model to continue, the latest complete one when version is 0."""
        if not name:
            if version:
                raise BadRequest(f"from_version {version} was given without from_model")
            return None
        if version < 0:
            raise BadRequest(f"from_version must be 0 (latest) or a version number >= 1, got {version}")
        try:
            name, version = bundle.parse_reference(name, version)
        except bundle.BundleError as exc:
            raise BadRequest(f"from_model: {exc}") from None
        try:
            _path, version = self.models.resolve(name, version)
        except NoSuchModel:
            raise ModelNotFound(
                f"model {shown(name)} not found: there is no model of that name to continue training") from None
        except NoSuchVersion as exc:
            raise ModelNotFound(
                f"model {shown(name)} has no version {version}; it has {', '.join(map(str, exc.versions))}") from None
        return name, version

    def _checked(self, cfg: TrainConfig, spec: str, parent) -> TrainConfig:
        """``cfg`` as the job will train with it, checked (``run_config``) against the parent model and
        against the text when it is already on this machine (uploads, fetched built-ins); otherwise the
        worker makes the text's checks and fails the job with the same message."""
        meta = None
        if parent is not None:
            try:
                meta = bundle.read_meta(self.models.model_dir(parent[0]) / str(parent[1]))
            except bundle.BundleError as exc:
                raise ModelNotFound(f"model {parent[0]!r} version {parent[1]} cannot be read: {exc}") from None
        try:
            return run_config(cfg, self.corpora.local_text(spec), meta, corpus=f"corpus {shown(spec)}")
        except TextTooShort as exc:
            raise BadRequest(str(exc)) from None
        except OptionError as exc:
            raise BadRequest(f"bad training options: {exc}") from None

    # ---- read, cancel, watch -------------------------------------------------------------------

    def get(self, job_id: str, viewer: Key | None = None) -> dict:
        """The job's summary; JobNotFound when there is none (or it is another key's)."""
        return self.link.call(self._get, job_id, viewer)

    def _get(self, job_id: str, viewer: Key | None = None) -> dict:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise BadRequest(f"job id must be 1-128 characters from A-Z, a-z, 0-9, '.', '_', '-', got {shown(job_id)}")
        summary = record.read_summary(self.redis, job_id)
        if summary is not None and not _sees(viewer, summary):
            summary = None
        if summary is None:
            raise JobNotFound(f"job {shown(job_id)} not found (jobs are kept {record.RETENTION_SECONDS // 86400} days "
                              "after they end; see ListJobs)")
        return self._reconcile(summary)

    def _reconcile(self, summary: dict) -> dict:
        """A job RQ gave up on without the worker saying so (a horse killed with no retry left, a job
        cancelled with RQ's own tools...) ends here, as failed with RQ's reason or as cancelled."""
        if summary["state"] in record.TERMINAL_STATES:
            return summary
        from rq.exceptions import NoSuchJobError
        from rq.job import Job, JobStatus
        from rq.serializers import JSONSerializer

        try:
            job = Job.fetch(summary["id"], connection=self.redis, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
        except NoSuchJobError:
            return summary
        if status not in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return summary
        if status == JobStatus.CANCELED:
            record.record_event(self.redis, summary["id"], {"type": "cancelled"})
        else:
            result = job.latest_result()
            lines = [line for line in (result.exc_string if result else "").splitlines() if line.strip()]
            reason = lines[-1] if lines else f"RQ marked the job {status.value}"
            record.record_event(self.redis, summary["id"], {"type": "failed", "reason": reason})
        return record.read_summary(self.redis, summary["id"]) or summary

    def list(self, limit: int = 0, viewer: Key | None = None) -> list[dict]:
        """The newest ``limit`` jobs (0: DEFAULT_LIST_LIMIT) that ``viewer`` may see, newest first."""
        if limit < 0 or limit > MAX_LIST_LIMIT:
            raise BadRequest(f"limit must be between 0 (= {DEFAULT_LIST_LIMIT}) and {MAX_LIST_LIMIT}, got {limit}")
        index = record.JOBS_INDEX if _sees_all(viewer) else record.owner_index(viewer.id)
        return self.link.call(self._list, limit or DEFAULT_LIST_LIMIT, index)

    def _list(self, limit: int, index: str = record.JOBS_INDEX) -> list[dict]:
        jobs, gone = [], []
        for raw_id in self.redis.zrevrange(index, 0, limit - 1):
            job_id = raw_id.decode()
            summary = record.read_summary(self.redis, job_id)
            if summary is None:
                gone.append(job_id)  # its record expired
            else:
                jobs.append(self._reconcile(summary))
        if gone:
            self.redis.zrem(index, *gone)
        return jobs

    def count_active(self, key_id: str) -> int:
        """How many of the key's jobs are queued or running (ended ones leave its active set here)."""
        return self.link.call(self._count_active, key_id)

    def _count_active(self, key_id: str) -> int:
        active, ended = 0, []
        for raw_id in self.redis.smembers(record.owner_active(key_id)):
            summary = record.read_summary(self.redis, raw_id.decode())
            if summary is None or self._reconcile(summary)["state"] in record.TERMINAL_STATES:
                ended.append(raw_id)
            else:
                active += 1
        if ended:
            self.redis.srem(record.owner_active(key_id), *ended)
        return active

    def cancel(self, job_id: str, viewer: Key | None = None) -> dict:
        """Ask the job to stop: a queued job is cancelled now, a running one at its next batch."""
        return self.link.call(self._cancel, job_id, viewer)

    def _cancel(self, job_id: str, viewer: Key | None = None) -> dict:
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job, JobStatus
        from rq.serializers import JSONSerializer

        summary = self._get(job_id, viewer)
        if summary["state"] == "cancelled":
            return summary
        if summary["state"] in record.TERMINAL_STATES:
            raise PreconditionFailed(f"job {job_id} has already {summary['state']}; there is nothing to cancel")
        record.request_cancel(self.redis, job_id)
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
                record.record_event(self.redis, job_id, {"type": "cancelled"})
                job.cancel()
        except (NoSuchJobError, InvalidJobOperation):
            pass  # a worker took it meanwhile: it sees the cancel flag before training
        return record.read_summary(self.redis, job_id)

    def watch(self, job_id: str, is_active: Callable[[], bool] = lambda: True,
              viewer: Key | None = None) -> Iterator[tuple[str, dict]]:
        """``(stream id, event)`` of every event of the job from the first, then live ones until the
        job ends (or ``is_active()`` turns false: the watcher went away)."""
        self.get(job_id, viewer)
        last = "0-0"
        while is_active():
            entries = self.link.call(record.read_events, self.redis, job_id, after=last, block_ms=WATCH_POLL_MS)
            for entry_id, event in entries:
                last = entry_id
                if event["type"] == "finished" and self.on_published is not None:
                    self.on_published(event["model_name"], event["model_version"])
                yield entry_id, event
                if event["type"] in record.TERMINAL_STATES:
                    return
            if not entries:
                summary = self.get(job_id)  # may record a failure RQ saw and the worker could not say
                if summary["state"] in record.TERMINAL_STATES and not self.link.call(
                        record.read_events, self.redis, job_id, after=last):
                    return


def _sees_all(viewer: Key | None) -> bool:
    """Whether ``viewer`` sees every job: no check (None), auth off (no key id), or an admin key."""
    return viewer is None or not viewer.id or viewer.has(ADMIN)


def _sees(viewer: Key | None, summary: dict) -> bool:
    return _sees_all(viewer) or summary.get("owner") == viewer.id
