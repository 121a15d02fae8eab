"""Faults during training: a worker SIGKILLed mid-epoch, Redis killed and restarted mid-job (append-only
file on), and the model's folder made unwritable while the job saves its model.

One stack for the module: a redis-server with ``appendonly yes`` / ``appendfsync always``, the real
server (in this process) and real ``python -m trainer.worker`` processes, sharing a data directory.
Jobs are tiny (LSTM(16), windows of 10) but have enough batches per epoch to be killed mid-epoch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import SHARED_CORPORA
from tests.reliability.conftest import figure
from tests.reliability.helpers import QUIET_TF, PersistentRedis, Workers, copy_bundle, pid_gone, wait_until

TINY = {"lstm_layer_sizes": [16], "sample_len": 10, "examples_per_epoch": 4096, "batch_size": 64, "epochs": 4,
        "display_length": 0, "seed": 1}
JOB_TIMEOUT_S = 150
LIVENESS_TTL_S = 2


class Stack:
    def __init__(self, root):
        from client.api import Client
        from server.app import build_server
        from server.config import Settings

        self.root = root
        self.data_dir = root / "data"
        (self.data_dir / "corpora").mkdir(parents=True)
        # The built-in corpus as if fetched: the npm file, whose sha256 textgen.corpus pins.
        shutil.copyfile(SHARED_CORPORA / "tfjs-code.txt", self.data_dir / "corpora" / "tfjs-code.txt")
        self.redis = PersistentRedis(root / "redis").start()
        self.env = {**os.environ, **QUIET_TF, "REDIS_URL": self.redis.url, "TEXTGEN_DATA_DIR": str(self.data_dir)}
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("REDIS_URL", self.redis.url)
        self.patch.setenv("TEXTGEN_DATA_DIR", str(self.data_dir))
        self.workers = Workers(root, self.env, LIVENESS_TTL_S)
        self.workers.start()
        self.workers.supervise()  # a worker that exits is started again, as under Docker Compose
        self.server = build_server(Settings(addr="127.0.0.1:0", data_dir=self.data_dir, reload_seconds=0.2,
                                            redis_url=self.redis.url, xla=False)).start()
        self.client = Client(server=f"127.0.0.1:{self.server.port}")

    @property
    def models_dir(self):
        return self.data_dir / "models"

    def events(self, job_id: str) -> list[tuple[str, dict]]:
        """The job's events from Redis; waits out a Redis that is restarting."""
        import redis

        from textgen import jobs as record

        deadline = time.monotonic() + 30
        while True:
            try:
                return record.read_events(self.redis.client(), job_id)
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def wait_for_event(self, job_id: str, predicate, timeout: float = JOB_TIMEOUT_S, interval: float = 0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry_id, event in self.events(job_id):
                if predicate(event):
                    return entry_id, event
                if event["type"] in ("finished", "failed", "cancelled"):
                    raise AssertionError(f"job {job_id} ended ({event}) before the awaited event")
            time.sleep(interval)
        raise AssertionError(f"job {job_id}: the awaited event did not come in {timeout} s: {self.events(job_id)[-3:]}")

    def wait_for_end(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> dict:
        self.wait_for_event_or_end(job_id, timeout)
        return self.events(job_id)[-1][1]

    def wait_for_event_or_end(self, job_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events(job_id)
            if events and events[-1][1]["type"] in ("finished", "failed", "cancelled"):
                return
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not end in {timeout} s; last events {self.events(job_id)[-3:]}")

    def versions_on_disk(self, name: str) -> list[str]:
        """The model folder's entries but hidden ones (bookkeeping such as .last-version)."""
        folder = self.models_dir / name
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def temporaries(self, name: str) -> list[str]:
        """Temporary entries (``.tmp-*``) left in the model folder: half-written bundles, never versions."""
        from textgen.models_dir import TMP_PREFIX

        folder = self.models_dir / name
        return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)) if folder.is_dir() else []

    def served_versions(self, name: str) -> list[int]:
        return next((list(m.versions) for m in self.client.list_models() if m.name == name), [])

    def close(self):
        self.client.close()
        self.server.stop(0)
        self.workers.close()
        self.redis.stop()
        self.patch.undo()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("faults"))
    yield s
    s.close()


def _kinds(events) -> list[str]:
    return [e["type"] for _, e in events]


def test_worker_sigkilled_mid_epoch_resumes_from_its_checkpoint_and_publishes_once(stack):
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 5}, model_name="survivor")
    # Mid-epoch: a batch of epoch 2 or later, after epoch 1's checkpoint.
    stack.wait_for_event(job.id, lambda e: e["type"] == "checkpoint")
    stack.wait_for_event(job.id, lambda e: e["type"] == "batch" and e["epoch"] >= 2 and e["batch"] < e["batches"])
    before = stack.events(job.id)
    horse = next(e["pid"] for _, e in before if e["type"] == "started")
    restarts = stack.workers.restarts
    stack.workers.kill_current()  # the supervisor starts the next one
    killed = time.time()
    assert wait_until(lambda: pid_gone(horse), 10.0), "the work horse outlived its worker"
    last = before[-1][1]
    assert wait_until(lambda: stack.workers.restarts > restarts, 5.0)

    end = stack.wait_for_end(job.id)
    events = stack.events(job.id)
    started = [e for _, e in events if e["type"] == "started"]
    resumed = started[-1]
    second_start = [i for i, kind in enumerate(_kinds(events)) if kind == "started"][-1]
    epochs_after = [e["epoch"] for _, e in events[second_start:] if e["type"] == "epoch"]
    figure("faults", f"worker SIGKILLed mid-epoch (epoch {last['epoch']}, batch {last.get('batch')}/"
                     f"{last.get('batches')}): attempt 2 started {resumed['time'] - killed:.1f} s later, resumed from "
                     f"epoch {resumed['resumed_from_epoch']}, ended {end['type']}; versions on disk "
                     f"{stack.versions_on_disk('survivor')}; events before the kill kept: "
                     f"{[i for i, _ in events[:len(before)]] == [i for i, _ in before]}")
    assert [i for i, _ in events[:len(before)]] == [i for i, _ in before], "events from before the kill were lost"
    assert [s["attempt"] for s in started] == [1, 2]
    assert resumed["resumed_from_epoch"] >= 1
    assert epochs_after[0] == resumed["resumed_from_epoch"] + 1 and epochs_after[-1] == 5
    assert end["type"] == "finished" and end["model_version"] == 1
    assert _kinds(events).count("finished") == 1
    assert stack.versions_on_disk("survivor") == ["1"]  # exactly one new version
    assert stack.temporaries("survivor") == []  # and no half bundle left behind
    assert wait_until(lambda: stack.served_versions("survivor") == [1], 10.0)
    assert len(stack.client.generate("survivor", prompt="function ", length=30, temperature=0.5, seed=1).text) == 30
    assert not (stack.data_dir / "checkpoints" / job.id).exists()


def test_redis_killed_and_restarted_mid_job_loses_neither_job_nor_events(stack):
    restarts = stack.workers.restarts
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 5}, model_name="steady")
    stack.wait_for_event(job.id, lambda e: e["type"] == "batch" and e["epoch"] >= 2)
    before = stack.events(job.id)
    stack.redis.kill()  # a crash: only what the append-only file holds survives
    down_at = time.monotonic()
    time.sleep(1.0)
    stack.redis.start()  # same port, same directory: replays the append-only file
    down_s = time.monotonic() - down_at
    after_restart = stack.events(job.id)

    end = stack.wait_for_end(job.id)
    events = stack.events(job.id)
    kept = [i for i, _ in after_restart[:len(before)]] == [i for i, _ in before]
    attempts = [e["attempt"] for _, e in events if e["type"] == "started"]
    figure("faults", f"Redis SIGKILLed at epoch {before[-1][1].get('epoch')} and restarted ({down_s:.1f} s down): "
                     f"{len(before)} events before the crash, {len(after_restart)} right after the restart "
                     f"(all kept: {kept}); job ended {end['type']}"
                     + (f" ({end.get('reason')})" if end["type"] == "failed" else "")
                     + f" after attempts {attempts}; worker restarts {stack.workers.restarts - restarts}; "
                       f"versions on disk {stack.versions_on_disk('steady')}")
    assert kept, "events written before the Redis crash are gone"
    assert end["type"] == "finished", f"the job did not survive the Redis restart: {end}"
    assert _kinds(events).count("finished") == 1 and stack.versions_on_disk("steady") == ["1"]
    assert wait_until(lambda: stack.served_versions("steady") == [1], 10.0)


def test_redis_dropping_every_connection_mid_job_does_not_fail_the_job(stack):
    """What clients see of a Redis restart or failover with no downtime: their connections close."""
    restarts = stack.workers.restarts
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 4}, model_name="blip")
    stack.wait_for_event(job.id, lambda e: e["type"] == "batch" and e["epoch"] >= 2)
    dropped = stack.redis.client().client_kill_filter(_type="normal", skipme=True)
    end = stack.wait_for_end(job.id)
    events = stack.events(job.id)
    attempts = [e["attempt"] for _, e in events if e["type"] == "started"]
    figure("faults", f"Redis dropped all {dropped} client connections at epoch 2: job ended {end['type']}"
                     + (f" ({end.get('reason')})" if end["type"] == "failed" else "")
                     + f" after attempts {attempts}; worker restarts {stack.workers.restarts - restarts}")
    assert end["type"] == "finished", f"the job did not survive its Redis connections closing: {end}"


def _can_make_immutable(path) -> bool:
    """Whether ``chattr +i`` works here (ext4 and friends, CAP_LINUX_IMMUTABLE) and stops root."""
    probe = path / "probe"
    probe.mkdir()
    try:
        if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
            return False
        try:
            (probe / "x").mkdir()
        except OSError:
            return True
        return False
    except FileNotFoundError:
        return False
    finally:
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        shutil.rmtree(probe, ignore_errors=True)


def test_unwritable_model_folder_during_the_save_fails_the_job_and_keeps_the_previous_version(stack, trained_bundles):
    # Root ignores permission bits, so chmod alone would not stop the save. The immutable attribute
    # (chattr +i) stops root too: no entry may be created in, renamed into or removed from the folder.
    # Where it is not available a non-root run falls back to chmod.
    folder = stack.models_dir / "keeper"
    if _can_make_immutable(stack.root):
        lock, unlock, how = ["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)], "chattr +i"
    elif os.geteuid() != 0:
        lock, unlock, how = ["chmod", "0555", str(folder)], ["chmod", "0755", str(folder)], "chmod 0555"
    else:
        pytest.skip("running as root without chattr +i support: nothing here can make a folder unwritable for root")
    copy_bundle(trained_bundles, "one", stack.models_dir, "keeper")  # the previous version, 1
    assert wait_until(lambda: stack.served_versions("keeper") == [1], 10.0)
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 2}, model_name="keeper")
    try:
        # The last epoch is done: the job is about to write (or writing) its bundle.
        stack.wait_for_event(job.id, lambda e: e["type"] == "epoch" and e["epoch"] == 2, interval=0.01)
        subprocess.run(lock, check=True)
        end = stack.wait_for_end(job.id)
        on_disk = stack.versions_on_disk("keeper")
    finally:
        subprocess.run(unlock, check=True)
    summary = stack.client.get_job(job.id)
    served = stack.served_versions("keeper")
    text = stack.client.generate("keeper", prompt="KING ", length=20, seed=1).text
    figure("faults", f"model folder made unwritable ({how}) while the job saved: job ended {end['type']} "
                     f"after {summary.attempts} attempt(s), reason {end.get('reason')!r}; served versions {served}; "
                     f"folder holds {on_disk} and temporaries {stack.temporaries('keeper')}")
    assert end["type"] == "failed" and summary.state == 4 and summary.attempts == 1
    assert str(folder) in end["reason"] and any(w in end["reason"] for w in ("not permitted", "denied", "read-only"))
    assert served == [1] and len(text) == 20
    assert on_disk == ["1"]


def test_a_worker_survives_a_redis_restart_without_being_restarted(stack):
    """Last in the module: when it fails, the worker is gone and its job is left to the teardown."""
    stack.workers.paused = True  # no supervisor: as deploy/local/stack.sh runs the worker
    worker = stack.workers.current
    job = stack.client.submit_train(corpus="tfjs-code", options={**TINY, "epochs": 4}, model_name="alone")
    stack.wait_for_event(job.id, lambda e: e["type"] == "batch" and e["epoch"] >= 2)
    stack.redis.kill()
    time.sleep(1.0)
    stack.redis.start()

    def worker_gone_or_job_ended():
        events = stack.events(job.id)
        return worker.poll() is not None or events[-1][1]["type"] in ("finished", "failed", "cancelled")

    wait_until(worker_gone_or_job_ended, JOB_TIMEOUT_S, interval=0.2)
    events = stack.events(job.id)
    figure("faults", f"Redis SIGKILLed and restarted under an unsupervised worker: worker "
                     f"{'exited with ' + str(worker.returncode) if worker.poll() is not None else 'alive'}; "
                     f"job state {events[-1][1]['type']} after attempts "
                     f"{[e['attempt'] for _, e in events if e['type'] == 'started']}")
    assert worker.poll() is None, "the worker process exited when Redis restarted"
    assert events[-1][1]["type"] == "finished"
