"""Training jobs end to end: a real redis-server, a real worker process, a real gRPC server on loopback.

Every job here is tiny (one LSTM(16) layer, windows of 10, 256 examples an epoch) so that the module
runs in well under a minute or two on two cores.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.conftest import SHARED_CORPORA, corpus_text
from tests.redis_helpers import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
TINY = {"lstm_layer_sizes": [16], "sample_len": 10, "examples_per_epoch": 256, "batch_size": 64, "epochs": 2,
        "display_length": 20, "seed": 1}
LIVENESS_TTL_S = 2  # how soon a dead worker's job is taken back, in these tests
EVENT_TIMEOUT_S = 120


class Stack:
    """Redis, a gRPC server and one training worker sharing one data directory."""

    def __init__(self, root: Path, reload_seconds: float = 0.2):
        self.root = root
        self.data_dir = root / "data"
        (self.data_dir / "corpora").mkdir(parents=True)
        # A built-in corpus is used as fetched: the npm file, whose sha256 textgen.corpus pins.
        shutil.copyfile(SHARED_CORPORA / "tfjs-code.txt", self.data_dir / "corpora" / "tfjs-code.txt")
        self.redis = RedisServer(root / "redis").start()
        self.env = {**os.environ, "REDIS_URL": self.redis.url, "TEXTGEN_DATA_DIR": str(self.data_dir),
                    "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "TEXTGEN_MAX_UPLOAD_BYTES": "2000000"}
        self.worker: subprocess.Popen | None = None
        self.worker_count = 0
        self.start_worker()
        self.patch = pytest.MonkeyPatch()
        for name in ("REDIS_URL", "TEXTGEN_DATA_DIR", "TEXTGEN_MAX_UPLOAD_BYTES"):
            self.patch.setenv(name, self.env[name])
        from client.api import Client
        from server.app import build_server
        from server.config import Settings

        self.server = build_server(Settings(addr="127.0.0.1:0", data_dir=self.data_dir, reload_seconds=reload_seconds,
                                             redis_url=self.redis.url, max_upload_bytes=2_000_000, xla=False)).start()
        self.address = f"127.0.0.1:{self.server.port}"
        self.client = Client(server=self.address)

    def start_worker(self) -> subprocess.Popen:
        self.worker_count += 1
        log = (self.root / f"worker-{self.worker_count}.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "trainer.worker", "--liveness-ttl", str(LIVENESS_TTL_S)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self.worker

    def close(self) -> None:
        self.client.close()
        self.server.stop(0)
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait()
        self.redis.stop()
        self.patch.undo()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("jobs"))
    yield s
    s.close()


def watch(stack, job_id: str) -> list:
    """Every event of the job, as (type, message), once it has ended."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    events = []
    for event in stack.client.watch_job(job_id):
        kind = event.WhichOneof("event")
        events.append((kind, getattr(event, kind)))
        assert time.monotonic() < deadline, f"job {job_id} still running after {EVENT_TIMEOUT_S} s: {events[-3:]}"
    return events


def kinds(events) -> list[str]:
    return [kind for kind, _ in events]


def wait_for_model(stack, name: str, version: int) -> None:
    """The store rescans models/ every 0.2 s: wait until it serves ``name`` ``version``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(m.name == name and version in m.versions for m in stack.client.list_models()):
            return
        time.sleep(0.1)
    raise AssertionError(f"model {name} version {version} never appeared in ListModels")


def wait_worker_idle(stack) -> None:
    """Until the stack's worker has registered with RQ and waits on the queue."""
    redis = stack.redis.client()
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not any(redis.hget(key, "state") == b"idle" for key in redis.keys("rq:worker:*")):
        assert stack.worker.poll() is None, f"the worker exited; see {stack.root}/worker-{stack.worker_count}.log"
        assert time.monotonic() < deadline, f"the worker was not idle after {EVENT_TIMEOUT_S} s"
        time.sleep(0.05)


def redis_events(stack, job_id: str) -> list[dict]:
    from textgen import jobs as record

    return [event for _id, event in record.read_events(stack.redis.client(), job_id)]


@pytest.fixture(scope="module")
def first_job(stack):
    """A tiny job on the built-in tfjs-code corpus, submitted to an idle worker and watched to its end."""
    wait_worker_idle(stack)  # its start-up is not what we measure
    began = time.time()
    job = stack.client.submit_train(corpus="tfjs-code", options=TINY, model_name="tiny-code")
    submitted = time.time() - began
    events = watch(stack, job.id)
    first = {kind: message for kind, message in reversed(events)}  # the first event of each kind
    raw = redis_events(stack, job.id)
    latency = {kind: next(e["time"] for e in raw if e["type"] == kind) - began for kind in ("queued", "started", "batch")}
    print(f"\nsubmit -> reply {submitted:.3f} s; -> queued {latency['queued']:.3f} s, started {latency['started']:.3f} s, "
          f"first batch {latency['batch']:.3f} s")
    return {"job": job, "events": events, "first": first, "latency": latency}


# ---- the happy path ----------------------------------------------------------------------------------


def test_submitted_job_is_watched_to_the_end_and_its_model_generates(stack, first_job):
    events = first_job["events"]
    assert kinds(events)[:2] == ["queued", "started"]
    assert kinds(events)[-1] == "finished"
    started = first_job["first"]["started"]
    assert (started.attempt, started.resumed_from_epoch, started.epochs, started.batches_per_epoch) == (1, 0, 2, 4)
    epochs = [e for kind, e in events if kind == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2]
    assert all(e.val_loss > 0 and e.bits_per_char > 0 and e.examples_per_second > 0 for e in epochs)
    assert [s.temperature for s in epochs[-1].samples] == [0, 0.25, 0.5, 0.75]
    assert all(len(s.text) == 20 for s in epochs[-1].samples)
    assert [e.epoch for kind, e in events if kind == "checkpoint"] == [1, 2]
    batches = [e for kind, e in events if kind == "batch"]
    assert {(b.epoch, b.batch) for b in batches} >= {(1, 4), (2, 4)}  # the last batch of each epoch is always told
    finished = first_job["first"]["finished"]
    assert (finished.model_name, finished.model_version) == ("tiny-code", 1)

    job = stack.client.get_job(first_job["job"].id)
    assert (job.state, job.epoch, job.epochs, job.model_version, job.attempts) == (3, 2, 2, 1, 1)  # FINISHED
    assert job.options.lstm_layer_sizes == [16] and job.options.sample_len == 10
    assert not (stack.data_dir / "checkpoints" / job.id).exists()  # deleted after publishing

    wait_for_model(stack, "tiny-code", 1)
    info = stack.client.get_model("tiny-code")
    assert (info.corpus, info.job_id, info.epochs, list(info.lstm_layer_sizes)) == ("tfjs-code", job.id, 2, [16])
    stream = stack.client.generate("tiny-code", prompt="function ", length=40, temperature=0.5, seed=3)
    assert len(stream.text) == 40 and stream.end.characters == 40


def test_watching_a_finished_job_replays_every_event(stack, first_job):
    again = watch(stack, first_job["job"].id)
    assert kinds(again) == kinds(first_job["events"])


def test_list_jobs_shows_the_newest_first(stack, first_job):
    jobs = stack.client.list_jobs()
    assert first_job["job"].id in [j.id for j in jobs]
    assert [j.enqueued_at for j in jobs] == sorted((j.enqueued_at for j in jobs), reverse=True)


def test_continuing_a_model_publishes_a_new_version(stack, first_job):
    job = stack.client.submit_train(corpus="tfjs-code", options=TINY, from_model="tiny-code")
    assert (job.model_name, job.from_model) == ("tiny-code", "tiny-code:1")  # the default name: the model's
    events = watch(stack, job.id)
    finished = events[-1][1]
    assert events[-1][0] == "finished" and finished.model_version == 2
    wait_for_model(stack, "tiny-code", 2)
    info = stack.client.get_model("tiny-code", 2)
    assert info.epochs == 4  # 2 of version 1, then 2 more


# ---- cancel and worker death ----------------------------------------------------------------------------


def test_cancelling_a_running_job_stops_it_and_publishes_nothing(stack, first_job):
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 10_000}, model_name="cancelled")
    for event in stack.client.watch_job(job.id):
        if event.WhichOneof("event") == "batch":
            break
    reply = stack.client.cancel_job(job.id)
    assert reply.state in (2, 5)  # STARTED (stops at its next batch) or already CANCELLED
    events = watch(stack, job.id)
    assert events[-1][0] == "cancelled"
    assert "finished" not in kinds(events)
    assert stack.client.get_job(job.id).state == 5  # CANCELLED
    assert not (stack.data_dir / "models" / "cancelled").exists()
    assert not (stack.data_dir / "checkpoints" / job.id).exists()
    assert stack.client.cancel_job(job.id).state == 5  # cancelling again changes nothing


def test_cancelling_a_finished_job_is_refused(stack, first_job):
    from client.api import TextgenError

    with pytest.raises(TextgenError) as err:
        stack.client.cancel_job(first_job["job"].id)
    assert err.value.code == "FAILED_PRECONDITION" and "already finished" in err.value.message


def test_a_job_whose_worker_is_killed_resumes_from_its_checkpoint_on_a_new_worker(stack, first_job):
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 6}, model_name="survivor")
    for event in stack.client.watch_job(job.id):
        if event.WhichOneof("event") == "checkpoint":
            break
    horse = next(e["pid"] for e in redis_events(stack, job.id) if e["type"] == "started")
    os.kill(stack.worker.pid, signal.SIGKILL)  # the worker only: its work horse must die with it
    killed = time.time()
    stack.worker.wait()
    _wait_until_gone(horse)
    stack.start_worker()

    events = watch(stack, job.id)
    resumed = next(e["time"] for e in redis_events(stack, job.id) if e["type"] == "started" and e["attempt"] == 2)
    print(f"\nworker killed -> attempt 2 started on a new worker: {resumed - killed:.2f} s")
    started = [e for kind, e in events if kind == "started"]
    assert [s.attempt for s in started] == [1, 2]
    assert started[0].resumed_from_epoch == 0 and started[1].resumed_from_epoch >= 1
    assert events[-1][0] == "finished" and events[-1][1].model_version == 1
    epochs_after_resume = [e.epoch for kind, e in events[kinds(events).index("started", 2):] if kind == "epoch"]
    assert epochs_after_resume[0] == started[1].resumed_from_epoch + 1 and epochs_after_resume[-1] == 6
    got = stack.client.get_job(job.id)
    assert (got.state, got.attempts) == (3, 2)
    assert sorted(p.name for p in (stack.data_dir / "models" / "survivor").iterdir() if not p.name.startswith(".")) == ["1"]  # published once
    assert not (stack.data_dir / "checkpoints" / job.id).exists()


def _wait_until_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as f:  # a zombie (dead, not yet reaped by init) is gone too
            if f.read().split(") ")[-1].startswith("Z"):
                return
        time.sleep(0.05)
    raise AssertionError(f"work horse {pid} still alive {timeout} s after its worker was killed")


def test_a_job_that_fails_says_why_and_is_not_retried(stack, first_job):
    path = stack.root / "short.txt"
    path.write_text(corpus_text("tinyshakespeare", 100), encoding="utf-8")
    upload = stack.client.upload_corpus(path).id
    # Accepted (the text is long enough for a window) but 95% of it is held out for validation: the
    # worker finds too little left to train on.
    job = stack.client.submit_train(corpus_id=upload, options={**TINY, "validation_split": 0.95})
    assert job.model_name == "short"  # named after the uploaded file
    events = watch(stack, job.id)
    assert kinds(events) == ["queued", "failed"]
    assert "5 are left to train on; sample length 10 needs at least 12" in events[-1][1].reason
    got = stack.client.get_job(job.id)
    assert (got.state, got.attempts) == (4, 1) and got.error == events[-1][1].reason  # FAILED, run once

    done = run_client(stack, "watch", job.id)
    assert done.returncode == 1 and done.stdout.splitlines() == ["queued: waiting for a worker"]
    assert done.stderr.startswith("error: the job failed: after holding out 95 characters") and done.stderr.count("\n") == 1


# ---- what the worker refuses -------------------------------------------------------------------------


class _Marker:
    """Unpickling this creates a file: the proof that a payload was unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _craft_job(redis, job_id: str, data: bytes) -> None:
    """What someone who can write to Redis could do: a job hash and a queue entry, by hand."""
    now = "2026-01-01T00:00:00.000000Z"
    redis.hset(f"rq:job:{job_id}", mapping={"data": data, "status": "queued", "origin": "training",
                                            "created_at": now, "enqueued_at": now, "description": "crafted"})
    redis.rpush("rq:queue:training", job_id)


def _wait_failed(redis, job_id: str):
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        if job.get_status() == JobStatus.FAILED:
            return job
        time.sleep(0.1)
    raise AssertionError(f"crafted job {job_id} was not failed by the worker")


def test_a_pickled_payload_is_refused_without_being_unpickled(stack, first_job, tmp_path):
    from textgen import jobs as record

    redis = stack.redis.client()
    marker = tmp_path / "unpickled"
    record.create_record(redis, "crafted-pickle", "tfjs-code", "evil", {}, None)  # so GetJob can tell
    payload = pickle.dumps(("trainer.job.run_training_job", None, [_Marker(marker)], {}))
    _craft_job(redis, "crafted-pickle", zlib.compress(payload))

    job = _wait_failed(redis, "crafted-pickle")
    assert not marker.exists()
    assert "refused" in job.latest_result().exc_string and "not JSON" in job.latest_result().exc_string
    reply = stack.client.get_job("crafted-pickle")
    assert reply.state == 4 and reply.error.startswith("refused: its data is not JSON job data")  # FAILED


def test_json_job_data_naming_another_function_is_refused(stack, first_job, tmp_path):
    from rq.serializers import JSONSerializer

    redis = stack.redis.client()
    marker = tmp_path / "ran"
    _craft_job(redis, "crafted-json", JSONSerializer.dumps(["os.system", None, [f"touch {marker}"], {}]))
    job = _wait_failed(redis, "crafted-json")
    assert "this worker runs only trainer.job.run_training_job" in job.latest_result().exc_string
    time.sleep(0.5)
    assert not marker.exists()


# ---- bad requests -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign_upload(stack):
    """An uploaded corpus with characters the tfjs-code model has never seen."""
    path = stack.root / "foreign.txt"
    path.write_text("Grüße aus Köln — naïve café. " * 40, encoding="utf-8")
    return stack.client.upload_corpus(path).id


@pytest.mark.parametrize("request_args, code, fragment", [
    ({"corpus": "tfjs-code", "options": {"lstm_layer_sizes": [0]}}, "INVALID_ARGUMENT", "lstm layer size"),
    ({"corpus": "tfjs-code", "options": {"epochs": 0}}, "INVALID_ARGUMENT", "epochs must be between 1"),
    ({"corpus": "tfjs-code", "options": {"learning_rate": float("nan")}}, "INVALID_ARGUMENT", "learning rate"),
    ({"corpus": "tfjs-code", "options": {"objective": "every"}}, "INVALID_ARGUMENT", "objective must be one of"),
    ({"corpus": "tfjs-code", "options": {"lstm_layer_sizes": [4096] * 8}}, "INVALID_ARGUMENT", "parameters"),
    ({"corpus": "tfjs-code", "options": {"recipe": "turbo"}}, "INVALID_ARGUMENT",
     "recipe must be one of original, fast, finetune, got 'turbo'"),
    ({"corpus": "tfjs-code", "options": {"optimizer": "sgd"}}, "INVALID_ARGUMENT",
     "optimizer must be one of rmsprop, adam, adamw, got 'sgd'"),
    ({"corpus": "tfjs-code", "model_name": "Bad Name"}, "INVALID_ARGUMENT", "invalid model name"),
    ({"corpus": "/etc/passwd"}, "INVALID_ARGUMENT", "looks like a file path"),
    ({"corpus": "homer"}, "INVALID_ARGUMENT", "built-in corpora are julesverne, nietzsche, shakespeare, tfjs-code"),
    ({}, "INVALID_ARGUMENT", "no corpus given"),
    ({"corpus_id": "upload-0123456789abcdef"}, "NOT_FOUND", "no uploaded corpus"),
    ({"corpus": "tfjs-code", "from_model": "no-such-model"}, "NOT_FOUND", "model 'no-such-model' not found"),
    ({"corpus": "tfjs-code", "from_model": "tiny-code", "from_version": 99}, "NOT_FOUND", "has no version 99"),
])
def test_bad_training_requests_are_refused_before_anything_is_enqueued(stack, first_job, request_args, code,
                                                                       fragment):
    from client.api import TextgenError

    queued = stack.redis.client().llen("rq:queue:training")
    with pytest.raises(TextgenError) as err:
        stack.client.submit_train(**request_args)
    assert err.value.code == code and fragment in err.value.message
    assert stack.redis.client().llen("rq:queue:training") == queued


def test_fine_tuning_a_model_on_characters_it_lacks_grows_its_charset(stack, first_job, foreign_upload):
    """Once refused (FAILED_PRECONDITION): the job adds the text's new characters to the model's charset,
    trains with the finetune recipe (--from and no recipe) and records where the model came from."""
    parent = stack.client.get_model("tiny-code")
    job = stack.client.submit_train(corpus_id=foreign_upload, options={"epochs": 1, "examples_per_epoch": 128,
                                                                      "display_length": 0, "seed": 2},
                                    from_model="tiny-code", model_name="tiny-grown")
    assert job.options.recipe == "finetune" and job.from_model == f"tiny-code:{parent.version}"
    assert watch(stack, job.id)[-1][0] == "finished"
    grown = stack.client.get_model("tiny-grown")
    assert set(grown.charset) == set(parent.charset) | set("Grüße aus Köln — naïve café. ")
    assert (list(grown.lstm_layer_sizes), grown.sample_len) == (list(parent.lstm_layer_sizes), parent.sample_len)
    meta = json.loads((stack.data_dir / "models" / "tiny-grown" / "1" / "meta.json").read_text(encoding="utf-8"))
    assert meta["parent"]["name"] == "tiny-code" and meta["parent"]["version"] == parent.version
    assert meta["parent"]["corpus_sha256"] == parent.corpus_sha256
    assert "ü" in meta["parent"]["characters_added"] and "—" in meta["parent"]["characters_added"]


def test_unknown_jobs_are_not_found(stack):
    from client.api import TextgenError

    for call in (stack.client.get_job, stack.client.cancel_job, lambda i: list(stack.client.watch_job(i))):
        with pytest.raises(TextgenError) as err:
            call("0b1e2c3d-no-such-job")
        assert err.value.code == "NOT_FOUND" and "0b1e2c3d-no-such-job" in err.value.message


def test_an_upload_over_the_size_limit_is_refused(stack, tmp_path):
    from client.api import TextgenError

    big = tmp_path / "big.txt"
    big.write_text("a" * 2_000_001)
    with pytest.raises(TextgenError) as err:
        stack.client.upload_corpus(big)
    assert err.value.code == "INVALID_ARGUMENT" and "upload limit of 2,000,000 bytes" in err.value.message


# ---- Redis down ---------------------------------------------------------------------------------------


def test_without_redis_generation_works_and_training_is_unavailable(stack, first_job):
    from client.api import Client, TextgenError
    from server.app import build_server
    from server.config import Settings

    port = free_port()  # nothing listens there: Redis is down
    url = f"redis://:s3cret-password@127.0.0.1:{port}/0"
    server = build_server(Settings(addr="127.0.0.1:0", data_dir=stack.data_dir, reload_seconds=0.2,
                                   redis_url=url, xla=False)).start()
    try:
        client = Client(server=f"127.0.0.1:{server.port}")
        text = client.generate("tiny-code", prompt="var ", length=30, temperature=0, seed=1).text
        assert len(text) == 30
        for call in (client.list_jobs, lambda: client.submit_train(corpus="tfjs-code", options=TINY),
                     lambda: client.get_job("x"), lambda: list(client.watch_job("x"))):
            with pytest.raises(TextgenError) as err:
                call()
            assert err.value.code == "UNAVAILABLE"
            assert f"127.0.0.1:{port}" in err.value.message and "s3cret" not in err.value.message
        assert any(c.id == "tfjs-code" for c in client.list_corpora())  # needs no Redis
        client.close()
    finally:
        server.stop(0)


# ---- the client command line ------------------------------------------------------------------------------


def run_client(stack, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("TEXTGEN_TOKEN", "TEXTGEN_CA_CERT")}
    return subprocess.run([sys.executable, "-m", "client", "--server", stack.address, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_uploads_a_local_file_trains_on_it_and_waits(stack, first_job):
    path = stack.root / "shakespeare.txt"
    path.write_text(corpus_text("tinyshakespeare", 20_000), encoding="utf-8")
    done = run_client(stack, "submit-train", "--corpus", str(path), "--layers", "16", "--sample-len", "10",
                      "--examples-per-epoch", "256", "--batch-size", "64", "--epochs", "2", "--display-length", "20",
                      "--seed", "1", "--name", "shake-cli", "--wait")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    assert "epoch 2/2: loss" in done.stdout and "finished: model shake-cli version 1" in done.stdout
    assert "uploaded" in done.stderr and "Traceback" not in done.stderr
    job = stack.client.get_job(job_id)
    assert job.state == 3 and job.corpus.startswith("upload-")
    assert any(c.id == job.corpus and c.name == "shakespeare.txt" for c in stack.client.list_corpora())


def test_a_recipe_and_time_budget_submitted_from_the_cli_are_what_the_model_was_trained_with(stack, first_job):
    done = run_client(stack, "submit-train", "--corpus", "tfjs-code", "--recipe", "fast", "--time-budget", "0.05",
                      "--layers", "16", "--sample-len", "10", "--examples-per-epoch", "256", "--batch-size", "64",
                      "--display-length", "20", "--seed", "1", "--name", "fast-code", "--wait")
    assert done.returncode == 0, done.stderr
    job = stack.client.get_job(done.stdout.splitlines()[0])
    assert (job.options.recipe, job.options.time_budget_minutes) == ("fast", 0.05)
    training = json.loads((stack.data_dir / "models/fast-code/1/meta.json").read_text())["training"]
    assert training["recipe"] == "fast" and training["time_budget_minutes"] == 0.05
    assert (training["optimizer"], training["lr_schedule"], training["objective"]) == ("rmsprop", "cosine", "all")
    assert training["lstm_layer_sizes"] == [16]  # given with the recipe, so it wins


def test_cli_generate_streams_text_to_stdout(stack, first_job):
    wait_for_model(stack, "tiny-code", 1)
    done = run_client(stack, "generate", "tiny-code", "--prompt", "function ", "--length", "60",
                      "--temperature", "0.5", "--seed", "7", "--version", "1")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 61 and done.stderr == ""  # 60 characters and a newline
    again = run_client(stack, "generate", "tiny-code", "--prompt", "function ", "--length", "60",
                       "--temperature", "0.5", "--seed", "7", "--version", "1")
    assert again.stdout == done.stdout


def test_cli_tables_list_models_jobs_and_corpora(stack, first_job):
    models = run_client(stack, "models")
    assert models.returncode == 0 and models.stdout.split("\n")[0].split() == [
        "NAME", "VERSIONS", "CORPUS", "LOSS", "BPC", "CREATED"]
    row = next(line.split() for line in models.stdout.splitlines()[1:] if line.startswith("tiny-code "))
    assert row[1].startswith("1") and row[2] == "tfjs-code"
    jobs = run_client(stack, "jobs")
    assert jobs.returncode == 0 and first_job["job"].id in jobs.stdout
    corpora = run_client(stack, "corpora")
    assert corpora.returncode == 0 and "tfjs-code" in corpora.stdout and "nietzsche" in corpora.stdout


@pytest.mark.parametrize("args, code, fragment", [
    (("submit-train", "--corpus", "tfjs-code", "--layers", "0", "--detach"), 1,
     "error: INVALID_ARGUMENT: bad training options: lstm layer size must be between 1"),
    (("generate", "no-such-model", "--length", "10"), 1, "error: NOT_FOUND: "),
    (("watch", "no-such-job"), 1, "error: NOT_FOUND: job 'no-such-job' not found"),
    (("generate", "tiny-code", "--length", "ten"), 2, "error: argument --length: invalid int value"),
    (("delete", "tiny-code"), 2, "error: one of the arguments --version --all is required"),
])
def test_cli_errors_are_one_line_on_stderr(stack, first_job, args, code, fragment):
    done = run_client(stack, *args)
    assert done.returncode == code
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(fragment), done.stderr
    assert "Traceback" not in done.stderr


def test_cli_says_which_server_it_cannot_reach(stack):
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "client", "--server", f"127.0.0.1:{port}", "jobs"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: UNAVAILABLE: cannot reach the textgen server at 127.0.0.1:{port}")


def test_client_package_imports_neither_trainer_nor_server():
    code = ("import sys, client.api, client.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trainer', 'server', 'tensorflow')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_job_of_a_dead_worker_is_retried_then_failed_once_no_retry_is_left(stack):
    """The reaper's part of the worker-death story, step by step, without processes to kill: a job
    started by a training worker whose liveness key has lapsed goes back to the queue while it has
    retries, then fails saying why."""
    from rq import Callback, Queue, Retry
    from rq.executions import Execution
    from rq.job import JobStatus
    from rq.serializers import JSONSerializer

    from textgen import jobs as record
    from trainer import worker

    redis = stack.redis.client()
    queue = Queue("reap-test", connection=redis, serializer=JSONSerializer)
    payload = record.make_payload("tfjs-code", {}, "ghost-model", None)
    job = queue.create_job(record.JOB_FUNCTION, args=[payload], retry=Retry(max=1),
                           on_failure=Callback(record.FAILURE_CALLBACK))
    record.create_record(redis, job.id, "tfjs-code", "ghost-model", {}, None)
    queue.enqueue_job(job)
    reaper = worker.Liveness(redis, "reaper", "reap-test", ttl=1)

    def started_by_a_worker_that_died():
        assert queue.pop_job_id() == job.id  # a worker took it
        redis.sadd(worker.workers_key("reap-test"), "ghost")  # a training worker that registered, and whose alive key is gone
        job.set_status(JobStatus.STARTED)
        with redis.pipeline() as pipe:
            Execution.create(job, ttl=600, pipeline=pipe, worker_name="ghost")
            pipe.execute()
        redis.delete(f"{record.KEY_PREFIX}:reaper-lock:reap-test")

    started_by_a_worker_that_died()
    assert reaper.reap() == [job.id]
    assert job.get_status() == JobStatus.QUEUED and queue.job_ids == [job.id]  # retried: back on the queue
    assert record.read_summary(redis, job.id)["state"] == "queued"

    started_by_a_worker_that_died()
    assert reaper.reap() == [job.id]
    assert job.get_status() == JobStatus.FAILED and queue.job_ids == []
    summary = record.read_summary(redis, job.id)
    assert summary["state"] == "failed" and "died and the job has no retries left" in summary["error"]


def test_a_live_worker_keeps_its_jobs(stack):
    from trainer import worker

    redis = stack.redis.client()
    reaper = worker.Liveness(redis, "reaper", "training", ttl=1)
    redis.delete("textgen:reaper-lock:training")
    # the stack's worker is alive and idle; nothing it started may be taken back
    assert reaper.reap() == []


def test_the_client_sends_its_token(stack, first_job, tmp_path):
    from client.api import Client, TextgenError
    from server.app import build_server
    from server.config import Settings

    tokens = tmp_path / "tokens"
    tokens.write_text("sesame\n")
    server = build_server(Settings(addr="127.0.0.1:0", data_dir=stack.data_dir, tokens_file=tokens,
                                   redis_url=stack.redis.url, xla=False)).start()
    try:
        address = f"127.0.0.1:{server.port}"
        with Client(server=address, token="sesame") as client:
            assert client.get_job(first_job["job"].id).state == 3
        with Client(server=address, token="wrong") as client, pytest.raises(TextgenError) as err:
            client.list_jobs()
        assert err.value.code == "UNAUTHENTICATED"
        env = {**os.environ, "TEXTGEN_TOKEN": "sesame", "TEXTGEN_SERVER": address}
        done = subprocess.run([sys.executable, "-m", "client", "jobs"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and first_job["job"].id in done.stdout
    finally:
        server.stop(0)
