"""Processes the reliability tests start, watch and kill: a server subprocess, a persistent Redis,
training workers. Everything listens on 127.0.0.1 only and is stopped (by its own pid) after use."""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from tests.redis_helpers import RedisServer
from tests.server_helpers import MODELS, wait_for

REPO = Path(__file__).resolve().parents[2]
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
SERVER_START_TIMEOUT_S = 90.0


def rss_kb(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_until(condition, timeout: float, interval: float = 0.05):
    """Poll ``condition()`` until it is truthy or ``timeout`` seconds pass; returns its last value."""
    return wait_for(condition, timeout, interval)


def copy_bundle(trained_bundles, key: str, models_dir: Path, name: str, version: int = 1) -> Path:
    """Copy the fixture's bundle ``key`` ("one"/"two") to ``models_dir/name/version``."""
    src = trained_bundles["models_dir"] / MODELS[key] / "1"
    dest = Path(models_dir) / name / str(version)
    shutil.copytree(src, dest)
    return dest


class LineReader:
    """Reads a subprocess's stdout lines on a thread, so a test can wait for one with a timeout."""

    def __init__(self, stream):
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream):
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.seen.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line starting with {prefix!r} within {timeout} s; got {self.seen[-5:]}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"the process ended before printing {prefix!r}; its last lines: {self.seen[-5:]}")
            if line.startswith(prefix):
                return line


class ServerProcess:
    """``python -m tests.reliability.serverproc``: the real server in its own process, so its RSS can
    be read and it can be SIGKILLed. Settings come from the environment, as in production."""

    def __init__(self, data_dir: Path, log_path: Path, **env):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.env = {**os.environ, **QUIET_TF, "TEXTGEN_ADDR": "127.0.0.1:0", "TEXTGEN_DATA_DIR": str(data_dir),
                    **{k: str(v) for k, v in env.items()}}
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._lock = threading.Lock()

    def start(self, wait: bool = True) -> "ServerProcess":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.serverproc"], cwd=REPO, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        self.reader = LineReader(self.process.stdout)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> "ServerProcess":
        self.port = int(self.reader.wait_for("PORT ", SERVER_START_TIMEOUT_S).split()[1])
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ask(self, command: str, timeout: float = 10.0) -> str:
        """Send a control command (``active``, ``rescan``) and return the value of its answer line."""
        with self._lock:
            self.process.stdin.write(f"{command}\n".encode())
            self.process.stdin.flush()
            return self.reader.wait_for(command.upper() + " ", timeout).split(" ", 1)[1]

    def active_streams(self) -> int:
        return int(self.ask("active"))

    def rss_kb(self) -> int:
        return rss_kb(self.process.pid)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.stdin.close()  # EOF: the server stops itself
            self.process.wait(15)
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            self.kill()


class PersistentRedis(RedisServer):
    """A redis-server with the append-only file on (``appendfsync always``), that can be killed and
    started again on the same port and directory."""

    appendonly = True

    def _ready(self) -> bool:
        if not self._answers():
            return False
        try:
            return self.client().ping()  # -LOADING while it replays the append-only file
        except Exception:  # noqa: BLE001
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (nothing is saved at exit)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None


class Workers:
    """``python -m trainer.worker`` processes sharing one environment; the newest is ``current``."""

    def __init__(self, root: Path, env: dict, liveness_ttl: float = 2.0):
        self.root, self.env, self.liveness_ttl = Path(root), env, liveness_ttl
        self.started: list[subprocess.Popen] = []

    @property
    def current(self) -> subprocess.Popen | None:
        return self.started[-1] if self.started else None

    def start(self) -> subprocess.Popen:
        log = (self.root / f"worker-{len(self.started) + 1}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "trainer.worker", "--liveness-ttl", str(self.liveness_ttl)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(process)
        return process

    def kill_current(self) -> None:
        """SIGKILL the worker process alone (its work horse must die with it)."""
        os.kill(self.current.pid, signal.SIGKILL)
        self.current.wait()

    def supervise(self, interval: float = 0.2) -> None:
        """Start a new worker whenever the current one has exited, as Docker Compose's
        ``restart: unless-stopped`` does; ``restarts`` counts them."""
        self.restarts = 0
        self.paused = False  # True: a worker that exits stays gone (no supervisor, as deploy/local/stack.sh)
        self._supervising = threading.Event()

        def run():
            while not self._supervising.wait(interval):
                if not self.paused and self.current is not None and self.current.poll() is not None:
                    self.restarts += 1
                    self.start()

        self._supervisor = threading.Thread(target=run, name="worker-supervisor", daemon=True)
        self._supervisor.start()

    def close(self) -> None:
        if getattr(self, "_supervisor", None) is not None:
            self._supervising.set()
            self._supervisor.join()
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the worker and its horse
                process.wait()


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].startswith("Z")
    except OSError:
        return True


def status_of(call) -> grpc.StatusCode:
    """Run ``call()``; its status code (OK when it returned)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
