"""The Training gRPC service: a thin adapter from requests to server.jobs.Jobs and server.corpora.Corpora."""
from __future__ import annotations

import contextlib

from server import tfjs_models
from server.auth import caller_of
from server.corpora import Corpora
from server.errors import request_errors
from server.jobs import Jobs
from server.limits import Quota
from server.usage import Usage
from textgen import schema
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

JOB_STATES = {"queued": pb.JOB_STATE_QUEUED, "started": pb.JOB_STATE_STARTED, "finished": pb.JOB_STATE_FINISHED,
              "failed": pb.JOB_STATE_FAILED, "cancelled": pb.JOB_STATE_CANCELLED}


def register(grpc_server, settings, store=None, quota: Quota | None = None, usage: Usage | None = None):
    """Add the Training service to ``grpc_server``; returns the servicer. With ``store`` (the
    TextGen service's ModelStore), a finished job's model is loaded before watchers hear "finished";
    ``quota`` and ``usage``: the keys' limits and usage (none when not given)."""
    on_published = (lambda name, _version: store.rescan(names=[name])) if store is not None else None
    corpora = Corpora(settings.max_upload_bytes)
    jobs = Jobs(redis_url=settings.redis_url, models_dir=settings.models_dir, on_published=on_published,
                corpora=corpora)
    servicer = TrainingServicer(jobs, corpora, on_published, quota, usage)
    textgen_pb2_grpc.add_TrainingServicer_to_server(servicer, grpc_server)
    return servicer


class TrainingServicer(textgen_pb2_grpc.TrainingServicer):
    def __init__(self, jobs: Jobs, corpora: Corpora, on_published=None, quota: Quota | None = None,
                 usage: Usage | None = None):
        self.jobs, self.corpora, self.on_published = jobs, corpora, on_published
        self.quota = quota or Quota(None, Quota.NO_LIMITS)
        self.usage = usage or Usage(None)

    def SubmitTrain(self, request, context):
        caller = caller_of(context)
        with request_errors(context):
            return job_message(self.jobs.submit(
                corpus=request.corpus, corpus_id=request.corpus_id, options=schema.to_dict(request.options),
                model_name=request.model_name, from_model=request.from_model, from_version=request.from_version,
                owner=caller.id, admission=self.quota.job_slot(caller, lambda: self.jobs.count_active(caller.id))))

    def GetJob(self, request, context):
        with request_errors(context):
            return job_message(self.jobs.get(request.job_id, caller_of(context)))

    def ListJobs(self, request, context):
        with request_errors(context):
            return pb.ListJobsResponse(jobs=[job_message(j) for j in self.jobs.list(request.limit, caller_of(context))])

    def CancelJob(self, request, context):
        with request_errors(context):
            return job_message(self.jobs.cancel(request.job_id, caller_of(context)))

    def WatchJob(self, request, context):
        with request_errors(context):
            for event_id, event in self.jobs.watch(request.job_id, is_active=context.is_active,
                                                   viewer=caller_of(context)):
                message = event_message(request.job_id, event_id, event)
                if message is not None:
                    yield message

    def ListCorpora(self, request, context):
        with request_errors(context):
            return pb.ListCorporaResponse(corpora=[pb.Corpus(**c) for c in self.corpora.list()])

    def UploadCorpus(self, request_iterator, context):
        with request_errors(context), self._counted(context, request_iterator, lambda c: len(c.data)) as chunks:
            return pb.Corpus(**self.corpora.upload((chunk.name, chunk.data) for chunk in chunks))

    def ImportTfjs(self, request_iterator, context):
        size = lambda c: len(c.weights) + len(c.model_json.encode("utf-8"))  # noqa: E731
        with request_errors(context), self._counted(context, request_iterator, size) as chunks:
            return pb.ImportTfjsResponse(**tfjs_models.import_tfjs(
                chunks, self.corpora, self.jobs.models.root, self.corpora.max_upload_bytes, self.on_published))

    @contextlib.contextmanager
    def _counted(self, context, chunks, size):
        """``chunks`` counted against the caller's upload bytes per day (given back if the upload fails),
        and added to its usage when it succeeds."""
        caller = caller_of(context)
        counted, giveback = self.quota.counted_upload(caller, chunks, size)
        total = [0]

        def tally():
            for chunk in counted:
                total[0] += size(chunk)
                yield chunk

        try:
            yield tally()
        except BaseException:
            giveback()
            raise
        self.usage.uploaded(caller.id, total[0])

    def close(self) -> None:
        """Nothing to release: the Redis pool closes with the process."""


def job_message(job: dict) -> pb.Job:
    return pb.Job(
        id=job["id"], state=JOB_STATES.get(job["state"], pb.JOB_STATE_UNSPECIFIED), corpus=job["corpus"],
        model_name=job["model_name"], options=schema.to_message(job["options"], strict=False),
        model_version=job["model_version"], error=job["error"], enqueued_at=job["enqueued_at"] or 0.0,
        started_at=job["started_at"] or 0.0, ended_at=job["ended_at"] or 0.0, epoch=job["epoch"],
        epochs=job["epochs"] or job["options"].get("epochs", 0), loss=job["loss"] or 0.0,
        val_loss=job["val_loss"] or 0.0, attempts=job["attempts"], from_model=job["from_model"],
        owner=job.get("owner", ""))


def event_message(job_id: str, event_id: str, event: dict) -> pb.JobEvent | None:
    """The JobEvent for one event dict of the job's stream (None for a type this proto lacks)."""
    kind, e = event["type"], event
    base = {"job_id": job_id, "id": event_id, "time": e.get("time", 0.0)}
    if kind == "queued":
        return pb.JobEvent(**base, queued=pb.Queued())
    if kind == "started":
        return pb.JobEvent(**base, started=pb.Started(
            attempt=e.get("attempt", 1), resumed_from_epoch=e.get("resumed_from_epoch", 0),
            epochs=e.get("epochs", 0), batches_per_epoch=e.get("batches_per_epoch", 0)))
    if kind == "batch":
        return pb.JobEvent(**base, batch=pb.BatchProgress(epoch=e["epoch"], batch=e["batch"], batches=e["batches"],
                                                          loss=_number(e.get("loss"))))
    if kind == "epoch":
        return pb.JobEvent(**base, epoch=pb.EpochEnd(
            epoch=e["epoch"], epochs=e["epochs"], loss=_number(e.get("loss")), val_loss=_number(e.get("val_loss")),
            bits_per_char=_number(e.get("bits_per_char")), examples_per_second=_number(e.get("examples_per_second")),
            samples=[pb.TemperatureSample(temperature=s["temperature"], text=s["text"]) for s in e.get("samples", [])]))
    if kind == "checkpoint":
        return pb.JobEvent(**base, checkpoint=pb.CheckpointSaved(epoch=e["epoch"]))
    if kind == "finished":
        return pb.JobEvent(**base, finished=pb.Finished(model_name=e["model_name"], model_version=e["model_version"]))
    if kind == "failed":
        return pb.JobEvent(**base, failed=pb.Failed(reason=e["reason"]))
    if kind == "cancelled":
        return pb.JobEvent(**base, cancelled=pb.Cancelled())
    return None


def _number(value) -> float:
    return float(value) if value is not None else 0.0
