"""Stopping a training worker that runs a job: real worker processes, a real redis-server.

- SIGTERM (``docker stop``, compose ``down``, ``make down``): the job stops at its next batch, saves a
  checkpoint there, goes back on the queue at once without spending a retry, and the worker exits 0
  by itself; another worker (or a new one) resumes the job from that checkpoint.
- A second SIGTERM (cold shutdown) or a SIGKILL: the job is taken back by a live worker's liveness
  check within the liveness TTL plus one check, never left ``started``.

Each test prints the time from the signal to the job's resumption. Jobs are tiny (LSTM(16), windows
of 10, 64 batches an epoch).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_CORPORA
from textgen import jobs as record
from tests.redis_helpers import RedisServer

REPO = Path(__file__).resolve().parents[1]
# 64 batches an epoch: long enough on a quiet machine for batch events (at most 5 a second) inside an epoch.
TINY = {"lstm_layer_sizes": [16], "sample_len": 10, "examples_per_epoch": 4096, "batch_size": 64,
        "display_length": 0, "seed": 1}
LIVENESS_TTL_S = 2.0
GRACE_S = 30  # compose's stop_grace_period for the worker
TIMEOUT_S = 120


class Cluster:
    """A redis-server, a data directory with the tfjs-code corpus, and named worker processes."""

    def __init__(self, root: Path):
        self.root = root
        self.data_dir = root / "data"
        (self.data_dir / "corpora").mkdir(parents=True)
        shutil.copyfile(SHARED_CORPORA / "tfjs-code.txt", self.data_dir / "corpora" / "tfjs-code.txt")
        self.redis_server = RedisServer(root / "redis").start()
        self.redis = self.redis_server.client()
        self.env = {**os.environ, "REDIS_URL": self.redis_server.url, "TEXTGEN_DATA_DIR": str(self.data_dir),
                    "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.workers: dict[str, subprocess.Popen] = {}

    def start_worker(self, name: str) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("ab")
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "trainer.worker", "--name", name, "--liveness-ttl", str(LIVENESS_TTL_S)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self.workers[name]

    def wait_ready(self, name: str, timeout: float = TIMEOUT_S) -> None:
        """Until worker ``name`` has registered with RQ (it is listening on the queue)."""
        deadline = time.monotonic() + timeout
        while not self.redis.exists(f"rq:worker:{name}"):
            assert self.workers[name].poll() is None, f"worker {name} exited; see {self.root / name}.log"
            assert time.monotonic() < deadline, f"worker {name} did not start in {timeout:.0f} s"
            time.sleep(0.05)

    def submit(self, epochs: int, name: str) -> str:
        from server.jobs import Jobs

        jobs = Jobs(redis_url=self.redis_server.url, models_dir=self.data_dir / "models")
        return jobs.submit(corpus="tfjs-code", options={**TINY, "epochs": epochs}, model_name=name)["id"]

    def events(self, job_id: str) -> list[dict]:
        return [event for _id, event in record.read_events(self.redis, job_id)]

    def wait_event(self, job_id: str, what: str, test, timeout: float = TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((e for e in self.events(job_id) if test(e)), None)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"job {job_id}: no {what} after {timeout:.0f} s; events: "
                             f"{[e['type'] for e in self.events(job_id)][-12:]}; logs in {self.root}")

    def owner(self, job_id: str) -> str:
        return self.redis.hget(f"rq:job:{job_id}", "worker_name").decode()

    def retries_left(self, job_id: str) -> int:
        return int(self.redis.hget(f"rq:job:{job_id}", "retries_left"))

    def close(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis_server.stop()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def started_attempt(n: int):
    return lambda e: e["type"] == "started" and e.get("attempt") == n


def running_mid_epoch(e: dict) -> bool:
    """A batch event inside the second epoch or later: a checkpoint exists, and the epoch is under way."""
    return e["type"] == "batch" and e["epoch"] >= 2 and e["batch"] < e["batches"]


def two_workers_one_busy(cluster, epochs: int, name: str) -> tuple[str, str, str]:
    """Two idle workers, then a job: (job id, the worker running it, the other), once the job is in
    its second epoch."""
    for worker in ("a", "b"):
        cluster.start_worker(worker)
    for worker in ("a", "b"):
        cluster.wait_ready(worker)
    job_id = cluster.submit(epochs=epochs, name=name)
    cluster.wait_event(job_id, "a batch in epoch 2", running_mid_epoch)
    busy = cluster.owner(job_id)
    return job_id, busy, "b" if busy == "a" else "a"


def test_sigterm_hands_the_job_back_at_once_and_another_worker_resumes_it(cluster):
    job_id, busy, other = two_workers_one_busy(cluster, epochs=16, name="handed-over")
    retries = cluster.retries_left(job_id)

    signalled = time.time()
    cluster.workers[busy].send_signal(signal.SIGTERM)
    exit_code = cluster.workers[busy].wait(timeout=GRACE_S)  # by itself, inside compose's grace period
    exited = time.time()
    resumed = cluster.wait_event(job_id, "a second attempt", started_attempt(2))
    requeued = next(e for e in cluster.events(job_id) if e["type"] == "queued" and e.get("reason"))
    print(f"\nSIGTERM -> job back in the queue: {requeued['time'] - signalled:.2f} s, worker exited: "
          f"{exited - signalled:.2f} s, job resumed on the other worker (its 'started' event): "
          f"{resumed['time'] - signalled:.2f} s")

    assert exit_code == 0
    events = cluster.events(job_id)
    first_run = events[:events.index(resumed)]
    handed_back = [e for e in first_run if e["type"] == "queued"][-1]
    assert handed_back["reason"] == "handed back by a stopping worker"
    checkpoint = [e for e in first_run if e["type"] == "checkpoint"][-1]
    assert checkpoint.get("batch", 0) > 0  # saved where training stopped, inside the epoch
    assert resumed["resumed_from_epoch"] == checkpoint["epoch"] and resumed.get("resumed_from_batch") == checkpoint["batch"]
    assert cluster.owner(job_id) == other
    assert cluster.retries_left(job_id) == retries  # a hand-back is not a failure

    finished = cluster.wait_event(job_id, "the end", lambda e: e["type"] in ("finished", "failed", "cancelled"))
    assert finished["type"] == "finished" and finished["model_version"] == 1
    epochs_done = [e["epoch"] for e in cluster.events(job_id) if e["type"] == "epoch"]
    assert epochs_done == list(range(1, 17))  # each epoch once: the interrupted one finished after the resume
    assert not (cluster.data_dir / "checkpoints" / job_id).exists()


def test_with_no_other_worker_the_handed_back_job_waits_at_the_front_of_the_queue(cluster):
    cluster.start_worker("only")
    job_id = cluster.submit(epochs=40, name="waits")
    later = cluster.submit(epochs=1, name="later")
    cluster.wait_event(job_id, "a batch in epoch 2", running_mid_epoch)
    cluster.workers["only"].send_signal(signal.SIGTERM)
    assert cluster.workers["only"].wait(timeout=GRACE_S) == 0
    assert record.read_summary(cluster.redis, job_id)["state"] == "queued"
    assert cluster.redis.lrange("rq:queue:training", 0, -1) == [job_id.encode(), later.encode()]
    assert (cluster.data_dir / "checkpoints" / job_id / "checkpoint.keras").is_file()


@pytest.mark.parametrize("how", ["second SIGTERM", "SIGKILL"])
def test_a_worker_stopped_hard_never_leaves_its_job_started(cluster, how):
    job_id, busy, other = two_workers_one_busy(cluster, epochs=60, name="hard-stop")
    horse = next(e["pid"] for e in cluster.events(job_id) if e["type"] == "started")
    doomed = cluster.workers[busy]

    signalled = time.time()
    if how == "SIGKILL":
        doomed.kill()
    else:
        os.kill(horse, signal.SIGSTOP)  # the job cannot reach its next batch: only a cold shutdown ends it
        doomed.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # RQ ignores a second signal within 1 s of the first
        signalled = time.time()
        doomed.send_signal(signal.SIGTERM)
    doomed.wait(timeout=GRACE_S)
    resumed = cluster.wait_event(job_id, "a second attempt", started_attempt(2), timeout=8 * LIVENESS_TTL_S + 20)
    print(f"\n{how} -> job resumed on the other worker: {resumed['time'] - signalled:.2f} s "
          f"(liveness TTL {LIVENESS_TTL_S} s, checks every {LIVENESS_TTL_S / 3:.2f} s)")
    assert cluster.owner(job_id) == other
    assert resumed["resumed_from_epoch"] >= 1  # from the last epoch's checkpoint
    record.request_cancel(cluster.redis, job_id)
    cluster.wait_event(job_id, "the cancellation", lambda e: e["type"] == "cancelled")
