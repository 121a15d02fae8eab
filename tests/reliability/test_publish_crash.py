"""Crashes while a model version is being published: the server and the publishing process SIGKILLed
at chosen and at random points of ``trainer.export.publish``. A restarted server (and a fresh model
store) serves the previous or the new version, never a broken one; no half bundle is ever a version."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import grpc

from tests.reliability.conftest import figure
from tests.reliability.helpers import QUIET_TF, REPO, LineReader, ServerProcess, copy_bundle, wait_until
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

SEED = 11
NAME = "pub"
RANDOM_KILL_WINDOW_S = 2.0  # publishes after the first take about 0.5 s here: the kill lands in one of them


class Publisher:
    def __init__(self, root, src, models_dir, count: int, hold: bool = False):
        args = [sys.executable, "-m", "tests.reliability.publisher", str(src), str(models_dir), NAME, str(count)]
        self.process = subprocess.Popen(args + (["--hold-at-claim"] if hold else []), cwd=REPO,
                                        env={**os.environ, **QUIET_TF}, stdout=subprocess.PIPE,
                                        stderr=(root / f"publisher-{os.getpid()}-{time.monotonic_ns()}.log").open("wb"),
                                        start_new_session=True)
        self.reader = LineReader(self.process.stdout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


def disk_state(models_dir) -> dict:
    """Each entry of the model's folder: a version folder is "bundle", "empty" (claimed, never filled)
    or "partial" (some but not all of a bundle: must never happen); "temporary" (``.tmp-*``, never a
    version), "bookkeeping" (another hidden entry, e.g. .last-version) or "other"."""
    from textgen.bundle import is_bundle
    from textgen.models_dir import TMP_PREFIX

    state = {}
    for path in sorted((models_dir / NAME).iterdir()):
        if path.name.startswith(TMP_PREFIX):
            state[path.name] = "temporary"
        elif path.name.startswith("."):
            state[path.name] = "bookkeeping"
        elif not path.name.isdigit() or not path.is_dir():
            state[path.name] = "other"
        elif is_bundle(path):
            state[path.name] = "bundle"
        else:
            state[path.name] = "empty" if not any(path.iterdir()) else "partial"
    return state


def served(address: str) -> tuple[list[int], int, str]:
    """(versions listed, latest version, text it generates) from the server at ``address``."""
    with grpc.insecure_channel(address) as channel:
        stub = textgen_pb2_grpc.TextGenStub(channel)
        listed = next((list(m.versions) for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models
                       if m.name == NAME), [])
        latest = stub.GetModel(pb.GetModelRequest(model=NAME), timeout=10).version
        text = "".join(r.text for r in stub.Generate(pb.GenerateRequest(model=NAME, prompt="KING ", length=10, seed=1),
                                                     timeout=10))
    return listed, latest, text


class Poller(threading.Thread):
    """Asks the server for the latest version and 5 characters from it, over and over, until stopped."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.address = address
        self.stopping = threading.Event()
        self.ok, self.versions, self.errors = 0, set(), []

    def run(self):
        with grpc.insecure_channel(self.address) as channel:
            stub = textgen_pb2_grpc.TextGenStub(channel)
            while not self.stopping.wait(0.05):
                try:
                    version = stub.GetModel(pb.GetModelRequest(model=NAME), timeout=10).version
                    start = next(iter(stub.Generate(pb.GenerateRequest(model=NAME, prompt="KING ", length=5),
                                                    timeout=10))).start
                    self.ok += 1
                    self.versions.update({version, start.version})
                except grpc.RpcError as exc:
                    self.errors.append(f"{exc.code().name}: {exc.details()}")

    def stop(self):
        self.stopping.set()
        self.join()


def test_sigkill_while_publishing_never_serves_a_broken_version(trained_bundles, tmp_path):
    from server.store import ModelStore

    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    models_dir = data_dir / "models"
    copy_bundle(trained_bundles, "one", models_dir, NAME)  # version 1, the previous version
    src = trained_bundles["models_dir"] / "shake-one" / "1"
    env = {"TEXTGEN_RELOAD_SECONDS": "0.2", "TEXTGEN_XLA": "0"}  # publishing is the subject (server_helpers)

    # 1. The server and a publisher that stops right after claiming version 2 (empty folder "2", the
    #    staged bundle complete, the rename not done): SIGKILL both there.
    server_a = ServerProcess(data_dir, tmp_path / "server-a.log", **env).start(wait=False)
    first = Publisher(tmp_path, src, models_dir, count=1, hold=True)
    server_a.wait_ready()
    first.reader.wait_for("CLAIMED ", 120)
    during_first = served(server_a.address)
    server_a.kill()
    first.kill()
    after_first = disk_state(models_dir)

    # 2. Restart the server; a second publisher publishes back to back and is SIGKILLed at a random
    #    moment (always inside some publish) while a client keeps asking for the latest version.
    server_b = ServerProcess(data_dir, tmp_path / "server-b.log", **env).start()
    second = None
    try:
        after_restart = served(server_b.address)  # before the second publisher can add a version
        second = Publisher(tmp_path, src, models_dir, count=100)
        poller = Poller(server_b.address)
        poller.start()
        published = int(second.reader.wait_for("PUBLISHED ", 120).split()[1])
        delay = rng.uniform(0, RANDOM_KILL_WINDOW_S)
        time.sleep(delay)
        second.kill()
        last_line = second.reader.seen[-1]
        after_second = disk_state(models_dir)
        complete = sorted(int(v) for v, kind in after_second.items() if kind == "bundle")
        caught_up = wait_until(lambda: served(server_b.address)[0] == complete, 10.0, interval=0.2)
        poller.stop()
        final_b = served(server_b.address)
    finally:
        if second is not None:
            second.kill()
        server_b.stop()

    # 3. A fresh model store over the same folder: what any restarted server loads.
    store = ModelStore(models_dir, reload_seconds=3600).start()
    try:
        fresh = store.versions(NAME)
    finally:
        store.close()

    figure("publish crash", f"kill 1: publisher and server SIGKILLed after claiming version 2 (before the rename): "
                            f"served then {during_first[0]}, on disk after {after_first}, restarted server serves "
                            f"{after_restart[0]} (latest {after_restart[1]})")
    figure("publish crash", f"kill 2: publisher SIGKILLed {delay:.2f} s after publishing version {published} "
                            f"(its last line: {last_line!r}): "
                            f"on disk {after_second}; {poller.ok} requests during the publish and kill, "
                            f"{len(poller.errors)} failed, versions seen {sorted(poller.versions)}; served after "
                            f"{final_b[0]}, fresh store loads {fresh}")
    assert during_first[0] == [1] and during_first[1] == 1 and len(during_first[2]) == 10
    assert after_first.get("2") == "empty" and after_first.get("1") == "bundle"
    assert after_restart[0] == [1] and after_restart[1] == 1 and len(after_restart[2]) == 10
    assert published == 3  # the claimed (empty) 2 is skipped, never reused
    assert not {"partial", "other"} & (set(after_first.values()) | set(after_second.values())), after_second
    assert not poller.errors, poller.errors[:5]
    assert poller.ok > 0 and poller.versions <= set(complete)
    assert caught_up is True and final_b[0] == complete and final_b[1] == complete[-1] and len(final_b[2]) == 10
    assert fresh == complete
