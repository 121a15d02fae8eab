"""Security: token auth on every RPC, path-like names that never reach the disk, pickled RQ payloads
that are never unpickled.

One server (in this process) with a tokens file, a real Redis and a real training worker (a worker
refuses foreign jobs in its own process, so no TensorFlow is loaded here)."""
from __future__ import annotations

import errno
import os
import pickle
import re
import threading
import time
import zlib
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import corpus_text
from tests.redis_helpers import RedisServer
from tests.reliability.conftest import figure
from tests.reliability.helpers import QUIET_TF, Workers, copy_bundle, wait_until
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

TOKEN = "s3cret-token-0123"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
BAD_CREDENTIALS = {
    "no metadata": None,
    "wrong token": (("authorization", "Bearer not-the-token"),),
    "token prefix": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "token with suffix": (("authorization", f"Bearer {TOKEN}x"),),
    "basic scheme": (("authorization", f"Basic {TOKEN}"),),
    "no scheme": (("authorization", TOKEN),),
    "empty bearer": (("authorization", "Bearer "),),
    "two headers, one good": (("authorization", "Bearer nope"), ("authorization", f"Bearer {TOKEN}")),
    "token in another header": (("x-authorization", f"Bearer {TOKEN}"),),
}
SERVICES = [pb.DESCRIPTOR.services_by_name[name] for name in ("TextGen", "Training", "Keys")]


class Secure:
    def __init__(self, root, trained_bundles):
        from server.app import build_server
        from server.config import Settings

        self.root = root
        self.data_dir = root / "data"
        self.models_dir = self.data_dir / "models"
        copy_bundle(trained_bundles, "one", self.models_dir, "shake-one")
        copy_bundle(trained_bundles, "two", self.models_dir, "shake-two")
        tokens = root / "tokens"
        tokens.write_text(f"# test token\n{TOKEN}\n")
        self.redis = RedisServer(root / "redis").start()
        self.env = {**os.environ, **QUIET_TF, "REDIS_URL": self.redis.url, "TEXTGEN_DATA_DIR": str(self.data_dir)}
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("TEXTGEN_DATA_DIR", str(self.data_dir))
        self.patch.setenv("REDIS_URL", self.redis.url)
        self.workers = Workers(root, self.env)
        self.workers.start()
        self.server = build_server(Settings(addr="127.0.0.1:0", data_dir=self.data_dir, tokens_file=tokens,
                                            reload_seconds=600, redis_url=self.redis.url, xla=False)).start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.textgen = textgen_pb2_grpc.TextGenStub(self.channel)
        self.training = textgen_pb2_grpc.TrainingStub(self.channel)

    def raw(self, method) -> tuple:
        """A callable for ``method`` (a MethodDescriptor) sending raw bytes, and how to call it."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        if method.client_streaming:
            call = self.channel.stream_unary(path, request_serializer=None, response_deserializer=None)
            return lambda data, **kw: call(iter([data]), **kw)
        if method.server_streaming:
            call = self.channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            return lambda data, **kw: list(call(data, **kw))
        call = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        return lambda data, **kw: call(data, **kw)

    def close(self):
        self.channel.close()
        self.server.stop(0)
        self.workers.close()
        self.redis.stop()
        self.patch.undo()


@pytest.fixture(scope="module")
def secure(trained_bundles, tmp_path_factory):
    s = Secure(tmp_path_factory.mktemp("secure"), trained_bundles)
    yield s
    s.close()


def _request_for(method) -> bytes:
    """A request that would act if it got through (delete a model, enqueue a job, store an upload)."""
    examples = {
        "Generate": pb.GenerateRequest(model="shake-one", length=5),
        "GetModel": pb.GetModelRequest(model="shake-one"),
        "DeleteModel": pb.DeleteModelRequest(model="shake-two", all_versions=True),
        "SubmitTrain": pb.SubmitTrainRequest(corpus="tfjs-code"),
        "CancelJob": pb.CancelJobRequest(job_id="x"),
        "WatchJob": pb.WatchJobRequest(job_id="x"),
        "GetJob": pb.GetJobRequest(job_id="x"),
        "UploadCorpus": pb.UploadCorpusChunk(name="sneaky", data=b"sneaky upload text " * 10),
    }
    message = examples.get(method.name)
    return message.SerializeToString() if message is not None else b""


def test_every_rpc_without_a_valid_token_is_unauthenticated_and_does_nothing(secure):
    queued = secure.redis.client().llen("rq:queue:training")
    tried = Counter()
    for service in SERVICES:
        for method in service.methods:
            call = secure.raw(method)
            for what, metadata in BAD_CREDENTIALS.items():
                try:
                    call(_request_for(method), metadata=metadata, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                tried[code.name] += 1
                assert code == grpc.StatusCode.UNAUTHENTICATED, f"{method.full_name} with {what}: {code}"
    # Nothing that the refused calls asked for happened.
    assert (secure.models_dir / "shake-two" / "1").is_dir()
    assert secure.redis.client().llen("rq:queue:training") == queued
    assert not (secure.data_dir / "corpora" / "uploads").exists() or not any(
        "sneaky" in p.read_text(errors="replace") for p in (secure.data_dir / "corpora" / "uploads").glob("*.json"))
    methods = sum(len(s.methods) for s in SERVICES)
    figure("security", f"{methods} RPCs x {len(BAD_CREDENTIALS)} bad credentials = {sum(tried.values())} calls: "
                       + ", ".join(f"{c} {n}" for c, n in tried.items()) + "; nothing deleted, queued or stored")


def test_every_rpc_with_the_token_gets_past_auth(secure):
    codes = {}
    for service in SERVICES:
        for method in service.methods:
            request = b"" if method.name in ("DeleteModel", "SubmitTrain", "UploadCorpus") else _request_for(method)
            try:
                secure.raw(method)(request, metadata=GOOD, timeout=10)
                codes[method.name] = "OK"
            except grpc.RpcError as exc:
                codes[method.name] = exc.code().name
    assert "UNAUTHENTICATED" not in codes.values(), codes
    assert codes["ListModels"] == codes["GetModel"] == codes["Generate"] == "OK"


def test_health_answers_without_a_token(secure):
    health = health_pb2_grpc.HealthStub(secure.channel)
    for service in ("", "textgen.v1.TextGen", "textgen.v1.Training"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()


# ---- path-like names ----------------------------------------------------------------------------------

class FifoCanaries:
    """Named pipes where a request's path would lead if the server built paths from it. Opening one for
    reading blocks until a writer comes: a thread keeps trying to open each for writing without
    blocking, which succeeds only while someone has it open for reading, and records that."""

    def __init__(self, paths):
        self.paths = list(paths)
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkfifo(path)
        self.opened: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    continue
                self.opened.append(str(path))
                os.close(fd)  # the reader sees EOF: empty content
            time.sleep(0.005)

    def stop(self):
        self._stop.set()
        self._thread.join()


def _path_values(outside) -> list[str]:
    return ["../../etc/passwd", "/etc/passwd", "..", "../..", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "shake-one/../../../etc/passwd", "shake-one/../shake-two", "shake-one\x00", "\x00../../etc/passwd",
            "../../outside/secret", str(outside / "secret"), str(outside / "secret.txt"), "../outside/secret",
            "file://" + str(outside / "secret.txt"), "~/.ssh/id_rsa", ".tmp-staged-x", "upload-0123456789abcdef/../x",
            "../corpora/uploads/upload-0123456789abcdef"]


def test_path_like_names_are_refused_and_never_read(secure):
    outside = secure.root / "outside"
    canaries = FifoCanaries([outside / "secret" / "1" / "meta.json", outside / "secret.txt", outside / "passwd",
                             outside / "secret" / "meta.json"])
    (outside / "secret" / "1" / "saved_model").mkdir(parents=True)
    tg, tr = secure.textgen, secure.training
    calls = {
        "Generate.model": lambda v: list(tg.Generate(pb.GenerateRequest(model=v, length=5), metadata=GOOD, timeout=10)),
        "GetModel.model": lambda v: tg.GetModel(pb.GetModelRequest(model=v), metadata=GOOD, timeout=10),
        "DeleteModel.model": lambda v: tg.DeleteModel(pb.DeleteModelRequest(model=v, all_versions=True),
                                                      metadata=GOOD, timeout=10),
        "SubmitTrain.corpus": lambda v: tr.SubmitTrain(pb.SubmitTrainRequest(corpus=v), metadata=GOOD, timeout=10),
        "SubmitTrain.corpus_id": lambda v: tr.SubmitTrain(pb.SubmitTrainRequest(corpus_id=v), metadata=GOOD, timeout=10),
        "SubmitTrain.model_name": lambda v: tr.SubmitTrain(pb.SubmitTrainRequest(corpus="tfjs-code", model_name=v),
                                                           metadata=GOOD, timeout=10),
        "SubmitTrain.from_model": lambda v: tr.SubmitTrain(pb.SubmitTrainRequest(corpus="tfjs-code", from_model=v),
                                                           metadata=GOOD, timeout=10),
        "GetJob.job_id": lambda v: tr.GetJob(pb.GetJobRequest(job_id=v), metadata=GOOD, timeout=10),
        "CancelJob.job_id": lambda v: tr.CancelJob(pb.CancelJobRequest(job_id=v), metadata=GOOD, timeout=10),
        "WatchJob.job_id": lambda v: list(tr.WatchJob(pb.WatchJobRequest(job_id=v), metadata=GOOD, timeout=10)),
    }
    refused, wrong, leaked = Counter(), [], []
    try:
        for field, call in calls.items():
            for value in _path_values(outside):
                try:
                    reply = call(value)
                    code, text = grpc.StatusCode.OK, str(reply)
                except grpc.RpcError as exc:
                    code, text = exc.code(), exc.details() or ""
                refused[code.name] += 1
                if code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    wrong.append(f"{field}={value!r}: {code.name} {text[:120]}")
                if "root:x:0:0" in text:
                    leaked.append(f"{field}={value!r}")
        # An upload's display name is only a label: the text is stored under its content id, inside uploads/.
        stored = []
        for value in _path_values(outside):
            corpus = tr.UploadCorpus(iter([pb.UploadCorpusChunk(name=value, data=corpus_text("tinyshakespeare", 200)
                                                                .encode())]), metadata=GOOD, timeout=10)
            stored.append(corpus.id)
        time.sleep(0.1)  # one more round of the canary watcher
    finally:
        canaries.stop()
    uploads = secure.data_dir / "corpora" / "uploads"
    assert all(re.fullmatch(r"upload-[0-9a-f]{16}", i) for i in stored)
    assert sorted(p.name for p in outside.rglob("*")) == sorted(["secret", "1", "meta.json", "saved_model",
                                                                  "secret.txt", "passwd", "meta.json"])
    assert all(p.parent == uploads for p in uploads.rglob("*"))
    figure("security", f"{sum(refused.values())} path-like names in {len(calls)} fields: "
                       + ", ".join(f"{c} {n}" for c, n in refused.items())
                       + f"; canary pipes opened: {len(canaries.opened)}; uploads with path-like names stored "
                         f"in uploads/ only: {len(stored)}")
    assert not wrong, wrong
    assert not leaked, leaked
    assert not canaries.opened, f"the server opened {canaries.opened}"


# ---- crafted RQ payloads --------------------------------------------------------------------------------

class _OpenMarker:
    """Unpickling this creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class _SystemMarker:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _craft(redis, job_id: str, fields: dict) -> None:
    """What someone who can write to Redis could do: a job hash and a queue entry, by hand."""
    now = "2026-01-01T00:00:00.000000Z"
    redis.hset(f"rq:job:{job_id}", mapping={"status": "queued", "origin": "training", "created_at": now,
                                            "enqueued_at": now, "description": "crafted", **fields})
    redis.rpush("rq:queue:training", job_id)


def test_crafted_pickle_payloads_are_never_executed(secure):
    from rq.serializers import JSONSerializer

    from textgen import jobs as record

    redis = secure.redis.client()
    markers = secure.root / "markers"
    markers.mkdir()
    m = {name: markers / name for name in ("open-z", "open-raw", "system-z", "system-args", "json-system",
                                           "meta", "path-corpus")}
    crafted = {
        "pickle-open-zlib": {"data": zlib.compress(pickle.dumps((record.JOB_FUNCTION, None, [_OpenMarker(m["open-z"])], {})))},
        "pickle-open-raw": {"data": pickle.dumps((record.JOB_FUNCTION, None, [_OpenMarker(m["open-raw"])], {}))},
        "pickle-system-zlib": {"data": zlib.compress(pickle.dumps(_SystemMarker(m["system-z"])))},
        "pickle-in-args": {"data": zlib.compress(JSONSerializer.dumps([record.JOB_FUNCTION, None, [
            pickle.dumps(_SystemMarker(m["system-args"])).hex()], {}]))},
        "json-os-system": {"data": zlib.compress(JSONSerializer.dumps(["os.system", None, [f"touch {m['json-system']}"], {}]))},
        "pickled-meta": {"data": zlib.compress(JSONSerializer.dumps(["os.system", None, ["true"], {}])),
                         "meta": pickle.dumps(_SystemMarker(m["meta"]))},
        "path-corpus": {"data": zlib.compress(JSONSerializer.dumps([record.JOB_FUNCTION, None, [{
            "format": record.PAYLOAD_FORMAT, "corpus": "../../etc/passwd", "options": {}, "model_name": "evil",
            "from_model": None}], {}]))},
    }
    for job_id in crafted:
        record.create_record(redis, job_id, "tfjs-code", "evil", {}, None)  # so the Training service can tell
    for job_id, fields in crafted.items():
        _craft(redis, job_id, fields)

    def settled():
        return all(redis.hget(f"rq:job:{j}", "status") in (b"failed", b"canceled") for j in crafted)

    done = wait_until(settled, 30.0, interval=0.1)
    # The server reads the same records: GetJob, ListJobs, WatchJob and CancelJob unpickle nothing either.
    codes = Counter()
    for job_id in crafted:
        for call in (lambda: secure.training.GetJob(pb.GetJobRequest(job_id=job_id), metadata=GOOD, timeout=10),
                     lambda: list(secure.training.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=GOOD, timeout=5)),
                     lambda: secure.training.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=GOOD, timeout=10)):
            try:
                call()
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
    secure.training.ListJobs(pb.ListJobsRequest(), metadata=GOOD, timeout=10)
    time.sleep(0.5)
    states = {j: (redis.hget(f"rq:job:{j}", "status") or b"?").decode() for j in crafted}
    errors = {j: (redis.hget(record.job_key(j), "error") or b"").decode() for j in crafted}
    created = sorted(p.name for p in markers.iterdir())
    figure("security", f"{len(crafted)} crafted RQ jobs (pickle zlib/raw, os.system via pickle and JSON, pickled meta, "
                       f"path corpus): states {states}; marker files created: {created or 'none'}; "
                       f"server calls on them: " + ", ".join(f"{c} {n}" for c, n in codes.items()))
    assert not created, f"a crafted payload ran: {created}"
    assert done, f"not every crafted job was refused: {states}"
    assert secure.workers.current.poll() is None, "the worker died on a crafted job"
    assert "INTERNAL" not in codes and "UNKNOWN" not in codes, codes
    assert all(errors[j].startswith("refused") for j in crafted), errors

