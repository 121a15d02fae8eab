"""One real stack for the web tests: redis-server, `python -m server`, `python -m trainer worker` and
`python -m web`, each its own process on a free loopback port, sharing a temporary data directory.

The server needs a key (TEXTGEN_AUTH=keys, with TEXTGEN_TOKENS_FILE's token as an all-scopes key), so
every test also shows that the gateway passes the caller's token on. The stack is started once for the whole web test package (the three modules
share it) and stopped at the end of the session; `tiny_model` trains one tiny model through the
HTTP API, on the real worker, for the tests that generate.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import SHARED_CORPORA
from tests.redis_helpers import RedisServer, free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "web-tests-token-7f3a"
TINY = {"lstm_layer_sizes": [16], "sample_len": 10, "examples_per_epoch": 256, "batch_size": 64, "epochs": 2,
        "display_length": 20, "seed": 1}
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 180


class WebStack:
    """Redis, the gRPC server, a worker and the web process; ``url`` is the web process' address."""

    def __init__(self, root: Path):
        self.root = root
        self.data_dir = root / "data"
        (self.data_dir / "corpora").mkdir(parents=True)
        # A built-in corpus is used as fetched: the npm file, whose sha256 the catalog pins.
        shutil.copyfile(SHARED_CORPORA / "tfjs-code.txt", self.data_dir / "corpora" / "tfjs-code.txt")
        tokens = root / "tokens"
        tokens.write_text(f"# the web tests' token\n{TOKEN}\n", encoding="utf-8")
        self.redis = RedisServer(root / "redis").start()
        self.grpc_port, self.web_port = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTGEN_", "REDIS_URL"))}
        self.env.update({
            "REDIS_URL": self.redis.url, "TEXTGEN_DATA_DIR": str(self.data_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1", "TEXTGEN_ADDR": f"127.0.0.1:{self.grpc_port}",
            "TEXTGEN_SERVER": f"127.0.0.1:{self.grpc_port}", "TEXTGEN_WEB_ADDR": f"127.0.0.1:{self.web_port}",
            # keys in Redis (python -m server keys), and the tokens file's token as an all-scopes key
            "TEXTGEN_AUTH": "keys", "TEXTGEN_KEYS_REFRESH_SECONDS": "0.3",
            "TEXTGEN_TOKENS_FILE": str(tokens), "TEXTGEN_RELOAD_SECONDS": "0.2",
            # long streams for the stop and disconnect tests; few slots, so a leaked one shows
            "TEXTGEN_MAX_LENGTH": "4000000", "TEXTGEN_MAX_STREAMS": "4",
            # the bundle's graph functions, not XLA programs compiled for each batch size the tests make
            # (half the server's CPU here): the text is the same (tests/test_server_engine.py), and
            # tests/test_stack.py runs a stack with the default
            "TEXTGEN_XLA": "0",
            "TEXTGEN_KEY_CHARS_PER_MINUTE": "0",  # keys' default: no character limit (tests/web/test_keys_http.py sets one)
            "PYTHONPATH": str(REPO),
        })
        self.processes: dict[str, subprocess.Popen] = {}
        try:
            for name, args in (("server", ["-m", "server"]), ("worker", ["-m", "trainer", "worker"]),
                               ("web", ["-m", "web"])):
                self._start(name, args)
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def _start(self, name: str, args: list[str]) -> None:
        log = self.log(name).open("wb")
        self.processes[name] = subprocess.Popen([sys.executable, *args], cwd=REPO, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=_die_with_parent)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log(name).read_text()[-3000:]}")
            try:
                # the web process answers only once the server does (it asks the server)
                reply = httpx.get(f"http://127.0.0.1:{self.web_port}/api/v1/models", headers=headers, timeout=5)
                if reply.status_code == 200 and self._worker_registered():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web stack was not ready in {START_TIMEOUT_S} s")
            time.sleep(0.3)

    def _worker_registered(self) -> bool:
        return any(key.startswith(b"rq:worker:") for key in self.redis.client().keys("rq:worker:*"))

    def sse(self, method: str, path: str, **kwargs):
        """The Server-Sent Events of one request, as (event, data) pairs, read to the end."""
        with self.http.stream(method, path, **kwargs) as reply:
            assert reply.status_code == 200, reply.read().decode()
            return list(parse_sse(reply.iter_lines()))

    def close(self) -> None:
        for name, process in reversed(list(self.processes.items())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even by SIGKILL (Linux' PR_SET_PDEATHSIG), so
    that a killed test run leaves no server behind."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def parse_sse(lines):
    """(event, data) for each Server-Sent Event in ``lines`` (data parsed as JSON); comments skipped."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event, json.loads("\n".join(data))


@pytest.fixture(scope="package")  # stopped after tests/web's last test, not at the end of the whole run:
def web_stack(tmp_path_factory):  # its server's rescans and key refreshes cost 22 s of CPU idling to the end
    stack = WebStack(tmp_path_factory.mktemp("web"))
    yield stack
    stack.close()


@pytest.fixture(scope="package")
def tiny_model(web_stack):
    """A tiny model ``tiny-web`` trained on tfjs-code by the real worker, submitted and watched over
    HTTP; returns ``(job, events)``, the job's JSON when it was submitted and its events."""
    reply = web_stack.http.post("/api/v1/jobs", json={"corpus": "tfjs-code", "model_name": "tiny-web",
                                                     "options": TINY})
    assert reply.status_code == 201, reply.text
    job = reply.json()
    events = web_stack.sse("GET", f"/api/v1/jobs/{job['id']}/events", timeout=JOB_TIMEOUT_S)
    assert events[-1][0] == "finished", events[-3:]
    # the server loads the model before a watcher hears "finished" (the page relies on it too)
    assert web_stack.http.get("/api/v1/models/tiny-web").status_code == 200
    return job, events


def stop_case(prompt: str, text: str) -> tuple[str, str]:
    """A stop string taken from ``text`` (the text a seeded generation after ``prompt`` gives) and the
    text the same generation with that stop string must give: ``text`` up to the stop string's first occurrence. The stop string is 3 characters
    with no comma, backslash or edge blank (the page's field splits at commas), first found at least
    5 characters in, and not found across the prompt's end."""
    for i in range(5, len(text) - 3):
        stop = text[i:i + 3]
        if "," in stop or "\\" in stop or stop != stop.strip() or "\n" in stop:
            continue
        first = text.find(stop)
        if first >= 5 and (prompt + text).find(stop) == len(prompt) + first:
            return stop, text[:first]
    raise AssertionError(f"no usable stop string in {text!r}")
