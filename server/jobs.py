"""Training jobs as plain Python: validate, enqueue on RQ, read and follow what the worker records.

``Jobs`` is what the Training gRPC service calls (server/training_service.py translates messages),
and what tests call directly. Jobs are dicts: the summary that the worker keeps in Redis (textgen.jobs)
(``id, state, corpus, model_name, options, from_model, model_version, error, enqueued_at,
started_at, ended_at, epoch, epochs, loss, val_loss, attempts``); events are the dicts of the job's
event stream (see textgen.jobs).

Redis is reached lazily: the server starts and generates text without it, and every call here that
needs it raises QueueUnavailable naming its address (never its password).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from server.errors import BadRequest, ModelNotFound, RequestError, StorageFailed, shown
from textgen import bundle, config, corpus
from textgen import jobs as record
from textgen.charset import Charset, describe_chars
from textgen.options import OptionError, TrainConfig

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_RETRIES = record.MAX_ATTEMPTS - 1  # runs again after its worker died, resuming from its checkpoint
JOB_TIMEOUT_SECONDS = 7 * 24 * 3600
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
WATCH_POLL_MS = 1000
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class JobNotFound(RequestError):
    """No such job (gRPC NOT_FOUND)."""


class CorpusMissing(RequestError):
    """No such uploaded corpus (gRPC NOT_FOUND)."""


class PreconditionFailed(RequestError):
    """A request that cannot apply to things as they are (gRPC FAILED_PRECONDITION)."""


class QueueUnavailable(RequestError):
    """Redis cannot be reached (gRPC UNAVAILABLE)."""


class Jobs:
    """Training jobs on the RQ queue ``textgen.config.QUEUE_NAME`` of the Redis at ``redis_url``."""

    def __init__(self, redis_url: str | None = None, models_dir: Path | None = None,
                 max_upload_bytes: int | None = None, on_published: Callable[[str, int], None] | None = None):
        """``on_published(name, version)`` runs before a watcher is told a job finished: the server
        loads the new version there, so whoever reads "finished" can use the model at once."""
        self.redis_url = redis_url or config.redis_url()
        self.on_published = on_published
        self.address = config.redis_address(self.redis_url)
        self.models_dir = Path(models_dir) if models_dir is not None else config.models_dir()
        self.max_upload_bytes = max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES
        self._redis = None

    # ---- Redis ---------------------------------------------------------------------------------

    @property
    def redis(self):
        """The client (created on first use; it connects on its first command)."""
        import redis

        if self._redis is None:
            try:
                self._redis = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2,
                                                   socket_timeout=WATCH_POLL_MS / 1000 + 5)
            except ValueError as exc:
                raise QueueUnavailable(f"REDIS_URL is not a usable Redis URL ({exc})") from None
        return self._redis

    def _unavailable(self, exc: Exception) -> QueueUnavailable:
        return QueueUnavailable(
            f"training is unavailable: cannot reach Redis at {self.address} ({type(exc).__name__}: {exc}); "
            "generation keeps working")

    def _queue(self):
        from rq import Queue
        from rq.serializers import JSONSerializer

        return Queue(config.QUEUE_NAME, connection=self.redis, serializer=JSONSerializer)

    def _redis_call(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise self._unavailable(exc) from None

    # ---- submit --------------------------------------------------------------------------------

    def submit(self, corpus: str = "", corpus_id: str = "", options: dict | None = None, model_name: str = "",
               from_model: str = "", from_version: int = 0) -> dict:
        """Validate a training request and enqueue it; returns the new job's summary.

        ``options``: TrainConfig fields (unset ones take the defaults). ``model_name`` defaults to
        ``from_model`` when continuing a model, else to the corpus's name (``_default_model_name``). Raises BadRequest, CorpusMissing,
        ModelNotFound, PreconditionFailed or QueueUnavailable.
        """
        spec = self._corpus_spec(corpus, corpus_id)
        try:
            cfg = TrainConfig.from_dict(dict(options or {})).validate()
        except (OptionError, TypeError) as exc:
            raise BadRequest(f"bad training options: {exc}") from None
        parent = self._parent_model(from_model, from_version)
        name = model_name or (parent[0] if parent else self._default_model_name(spec))
        try:
            bundle.validate_name(name)
        except bundle.BundleError as exc:
            raise BadRequest(str(exc)) from None
        self._check_against_text(spec, cfg, parent)
        payload = record.make_payload(spec, cfg.to_dict(), name, parent)
        return self._redis_call(self._enqueue, payload, spec, name, cfg.to_dict(), parent)

    def _enqueue(self, payload: dict, spec: str, name: str, options: dict, parent) -> dict:
        from rq import Callback, Retry

        queue = self._queue()
        job = queue.create_job(
            record.JOB_FUNCTION, args=[payload], timeout=JOB_TIMEOUT_SECONDS,
            result_ttl=record.RETENTION_SECONDS, failure_ttl=record.RETENTION_SECONDS,
            retry=Retry(max=MAX_RETRIES), on_failure=Callback(record.FAILURE_CALLBACK),
            description=f"train {name} on {spec}")
        record.create_record(self.redis, job.id, spec, name, options, parent)
        queue.enqueue_job(job)
        return record.read_summary(self.redis, job.id)

    def _corpus_spec(self, name: str, corpus_id: str) -> str:
        if name and corpus_id:
            raise BadRequest("give either corpus (a built-in name) or corpus_id (an upload id), not both")
        spec = name or corpus_id
        if not spec:
            raise BadRequest(f"no corpus given: name a built-in corpus ({', '.join(sorted(corpus.BUILTINS))}) "
                             "or an uploaded corpus id (see ListCorpora)")
        if spec in corpus.BUILTINS:
            return spec
        if corpus.UPLOAD_ID.fullmatch(spec):
            if not (config.corpora_dir() / "uploads" / f"{spec}.txt").is_file():
                raise CorpusMissing(f"no uploaded corpus {shown(spec)} (see ListCorpora; upload the text with UploadCorpus)")
            return spec
        if "/" in spec or "\\" in spec or spec.startswith("."):
            raise BadRequest(f"corpus {shown(spec)} looks like a file path; the server does not read its own files "
                             "for a request: upload the file (UploadCorpus, `client upload PATH`) and pass its id")
        raise BadRequest(f"unknown corpus {shown(spec)}: built-in corpora are {', '.join(sorted(corpus.BUILTINS))}; "
                         "an uploaded corpus is named by its id (upload-<16 hex digits>, see ListCorpora)")

    def _default_model_name(self, spec: str) -> str:
        """A built-in corpus's name; for an upload, its display name made a model name ("My Text.txt"
        -> "my-text"), or its id when nothing of the display name is left."""
        if not corpus.UPLOAD_ID.fullmatch(spec):
            return spec
        display = next((u.name for u in corpus.list_uploads() if u.corpus_id == spec), "")
        name = re.sub(r"[^a-z0-9._-]+", "-", Path(display).stem.lower()).strip("._-")[:64]
        return name if name and bundle.NAME_PATTERN.fullmatch(name) else spec

    def _parent_model(self, name: str, version: int) -> tuple[str, int] | None:
        """(name, version) of the model to continue, the latest complete one when version is 0."""
        if not name:
            if version:
                raise BadRequest(f"from_version {version} was given without from_model")
            return None
        try:
            bundle.validate_name(name)
        except bundle.BundleError as exc:
            raise BadRequest(f"from_model: {exc}") from None
        if version < 0:
            raise BadRequest(f"from_version must be 0 (latest) or a version number >= 1, got {version}")
        complete = [v for v in bundle.list_versions(self.models_dir / name)
                    if bundle.is_bundle(self.models_dir / name / str(v))]
        if not complete:
            raise ModelNotFound(f"model {shown(name)} not found: there is no model of that name to continue training")
        if version and version not in complete:
            raise ModelNotFound(f"model {shown(name)} has no version {version}; it has {', '.join(map(str, complete))}")
        return name, version or complete[-1]

    def _check_against_text(self, spec: str, cfg: TrainConfig, parent) -> None:
        """The checks that need the corpus text, when it is already on this machine (uploads, fetched
        built-ins); otherwise the worker makes them and fails the job with the same message."""
        text = self._local_text(spec)
        if parent is not None:
            path = self.models_dir / parent[0] / str(parent[1])
            try:
                meta = bundle.read_meta(path)
            except bundle.BundleError as exc:
                raise ModelNotFound(f"model {parent[0]!r} version {parent[1]} cannot be read: {exc}") from None
            charset = Charset(meta["charset"])
            sizes, sample_len = tuple(meta.get("lstm_layer_sizes") or cfg.lstm_layer_sizes), int(meta["sample_len"])
            if text is not None:
                missing = charset.missing(text)
                if missing:
                    raise PreconditionFailed(
                        f"corpus {shown(spec)} has {len(missing)} characters that model {parent[0]!r} version "
                        f"{parent[1]} was not trained on: {describe_chars(missing)}; continue on text made of "
                        "the model's characters, or train a new model")
            charset_size = len(charset)
        else:
            sizes, sample_len = cfg.lstm_layer_sizes, cfg.sample_len
            charset_size = len(set(text)) if text is not None else None
        try:
            TrainConfig(**{**cfg.to_dict(), "lstm_layer_sizes": sizes, "sample_len": sample_len}).validate(
                charset_size=charset_size)
        except OptionError as exc:
            raise BadRequest(f"bad training options: {exc}") from None
        if text is not None and len(text) < sample_len + 2:
            raise BadRequest(f"corpus {shown(spec)} has {len(text)} characters; training with sample length "
                             f"{sample_len} needs at least {sample_len + 2}")

    def _local_text(self, spec: str) -> str | None:
        try:
            if corpus.UPLOAD_ID.fullmatch(spec):
                return corpus.load_upload(spec).text
            cached = config.corpora_dir() / f"{spec}.txt"
            return corpus.load_file(cached).text if cached.is_file() else None  # never fetched here
        except corpus.CorpusNotFound as exc:
            raise CorpusMissing(str(exc)) from None
        except corpus.CorpusError as exc:
            raise BadRequest(f"corpus {shown(spec)} cannot be used: {exc}") from None

    # ---- read, cancel, watch -------------------------------------------------------------------

    def get(self, job_id: str) -> dict:
        """The job's summary; JobNotFound when there is none."""
        return self._redis_call(self._get, job_id)

    def _get(self, job_id: str) -> dict:
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
            raise BadRequest(f"job id must be 1-128 characters from A-Z, a-z, 0-9, '.', '_', '-', got {shown(job_id)}")
        summary = record.read_summary(self.redis, job_id)
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

    def list(self, limit: int = 0) -> list[dict]:
        """The newest ``limit`` jobs (0: DEFAULT_LIST_LIMIT), newest first."""
        if limit < 0 or limit > MAX_LIST_LIMIT:
            raise BadRequest(f"limit must be between 0 (= {DEFAULT_LIST_LIMIT}) and {MAX_LIST_LIMIT}, got {limit}")
        return self._redis_call(self._list, limit or DEFAULT_LIST_LIMIT)

    def _list(self, limit: int) -> list[dict]:
        jobs, gone = [], []
        for raw_id in self.redis.zrevrange(record.JOBS_INDEX, 0, limit - 1):
            job_id = raw_id.decode()
            summary = record.read_summary(self.redis, job_id)
            if summary is None:
                gone.append(job_id)  # its record expired
            else:
                jobs.append(self._reconcile(summary))
        if gone:
            self.redis.zrem(record.JOBS_INDEX, *gone)
        return jobs

    def cancel(self, job_id: str) -> dict:
        """Ask the job to stop: a queued job is cancelled now, a running one at its next batch."""
        return self._redis_call(self._cancel, job_id)

    def _cancel(self, job_id: str) -> dict:
        from rq.exceptions import InvalidJobOperation, NoSuchJobError
        from rq.job import Job, JobStatus
        from rq.serializers import JSONSerializer

        summary = self._get(job_id)
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

    def watch(self, job_id: str, is_active: Callable[[], bool] = lambda: True) -> Iterator[tuple[str, dict]]:
        """``(stream id, event)`` of every event of the job from the first, then live ones until the
        job ends (or ``is_active()`` turns false: the watcher went away)."""
        self.get(job_id)
        last = "0-0"
        while is_active():
            entries = self._redis_call(record.read_events, self.redis, job_id, after=last, block_ms=WATCH_POLL_MS)
            for entry_id, event in entries:
                last = entry_id
                if event["type"] == "finished" and self.on_published is not None:
                    self.on_published(event["model_name"], event["model_version"])
                yield entry_id, event
                if event["type"] in record.TERMINAL_STATES:
                    return
            if not entries:
                summary = self.get(job_id)  # may record a failure RQ saw and the worker could not say
                if summary["state"] in record.TERMINAL_STATES and not self._redis_call(
                        record.read_events, self.redis, job_id, after=last):
                    return

    # ---- corpora -------------------------------------------------------------------------------

    def list_corpora(self) -> list[dict]:
        """Built-in corpora (fetched or not) and uploads: ``id, name, builtin, size, sha256, available``."""
        out = [{"id": b.name, "name": b.name, "builtin": True, "size": b.size or 0, "sha256": b.sha256 or "",
                "available": b.cached} for b in corpus.list_builtin()]
        out += [{"id": u.corpus_id, "name": u.name, "builtin": False, "size": u.size, "sha256": u.sha256,
                 "available": True} for u in corpus.list_uploads()]
        return out

    def upload(self, chunks: Iterable[tuple[str, bytes]]) -> dict:
        """Store text sent as ``(name, data)`` chunks (the name counts in the first chunk only)."""
        name, parts, size = "", [], 0
        for index, (chunk_name, data) in enumerate(chunks):
            if index == 0:
                name = chunk_name
            size += len(data)
            if size > self.max_upload_bytes:
                raise BadRequest(f"the corpus is larger than the upload limit of {self.max_upload_bytes:,} bytes "
                                 "(TEXTGEN_MAX_UPLOAD_BYTES)")
            parts.append(data)
        try:
            stored = corpus.save_upload(b"".join(parts), name)
        except corpus.CorpusError as exc:
            raise BadRequest(f"upload refused: {exc}") from None
        except OSError as exc:
            raise StorageFailed(f"cannot store the corpus in {config.corpora_dir()}: {exc.strerror or exc}") from None
        return {"id": stored.name, "name": (name or "").strip()[:200] or stored.name, "builtin": False,
                "size": size, "sha256": stored.sha256, "available": True}

