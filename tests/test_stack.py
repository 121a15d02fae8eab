"""The local stack (deploy/local/stack.sh): up, no duplicates, a real job and a generation through the
`client` CLI, then down with nothing left running. Real redis-server, worker and gRPC server, on free
loopback ports, with everything under a temporary TEXTGEN_VAR_DIR (./var is never touched)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import corpus_text
from .redis_helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "deploy" / "local" / "stack.sh"
SERVICES = ("redis", "worker", "server", "web")

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (make install installs it)")


def stack_env(var_dir: Path, redis_port: int, grpc_port: int, web_port: int | None = None) -> dict[str, str]:
    web_port = web_port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXTGEN_", "REDIS_URL"))}
    env.update({
        "TEXTGEN_VAR_DIR": str(var_dir),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TEXTGEN_ADDR": f"127.0.0.1:{grpc_port}",
        "TEXTGEN_SERVER": f"127.0.0.1:{grpc_port}",
        "TEXTGEN_WEB_ADDR": f"127.0.0.1:{web_port}",
        "TEXTGEN_PYTHON": sys.executable,
        "TEXTGEN_UP_TIMEOUT": "90",
        "TEXTGEN_STOP_TIMEOUT": "20",
    })
    return env


def run(args, env, timeout=120, check=True):
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{args} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def stack(command: str, env, **kwargs):
    return run([str(STACK), command], env, **kwargs)


def client(args, env, **kwargs):
    return run([sys.executable, "-m", "client", *args], env, **kwargs)


def live(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pids(var_dir: Path) -> dict[str, int]:
    return {name: int((var_dir / "run" / f"{name}.pid").read_text()) for name in SERVICES}


def stack_processes(var_dir: Path, *ports: int) -> list[str]:
    """Live processes that belong to this stack: its var dir in their environment (the worker, its work
    horses, the server) or command line (redis-server's title names its config), or its ports."""
    marks = [str(var_dir)] + [f":{p}" for p in ports]
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid() or not live(int(proc.name)):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in marks) or f"TEXTGEN_VAR_DIR={var_dir}\0" in environ + "\0":
            found.append(f"{proc.name}: {cmdline.strip()}")
    return found


def leaders(var_dir: Path) -> list[int]:
    """Process group leaders of this stack (what `up` starts: one per service)."""
    out = []
    for line in stack_processes(var_dir):
        pid = int(line.split(":", 1)[0])
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:
            out.append(pid)
    return sorted(out)


def test_stack_up_train_generate_down(tmp_path):
    var_dir = tmp_path / "var"
    redis_port, grpc_port = free_port(), free_port()
    env = stack_env(var_dir, redis_port, grpc_port)
    corpus = tmp_path / "shake.txt"
    corpus.write_text(corpus_text("tinyshakespeare", 20_000), encoding="utf-8")
    try:
        up = stack("up", env)
        assert "textgen stack is up" in up.stdout, up.stdout
        first = pids(var_dir)
        assert all(live(pid) for pid in first.values()), first
        assert sorted(first.values()) == leaders(var_dir)
        for name in SERVICES:
            assert (var_dir / "log" / f"{name}.log").is_file()
        assert (var_dir / "redis" / "redis.conf").is_file() and (var_dir / "data").is_dir()

        # A second `up` starts nothing new.
        again = stack("up", env)
        assert again.stdout.count("already running") == 4, again.stdout
        assert pids(var_dir) == first
        assert sorted(first.values()) == leaders(var_dir)
        assert stack("status", env).returncode == 0

        # A tiny job through the client (the local file is uploaded), then a generation.
        trained = client(["submit-train", "--corpus", str(corpus), "--name", "stack-tiny", "--layers", "16",
                          "--sample-len", "10", "--epochs", "1", "--examples-per-epoch", "128", "--batch-size", "64",
                          "--display-length", "10", "--seed", "3", "--wait"], env)
        assert "finished" in trained.stdout + trained.stderr, trained.stdout + trained.stderr
        assert (var_dir / "data" / "models" / "stack-tiny" / "1" / "meta.json").is_file()
        generated = client(["generate", "stack-tiny", "--prompt", "the ", "--length", "57",
                            "--temperature", "0.5", "--seed", "11"], env)
        text = generated.stdout
        if len(text) == 58 and text.endswith("\n"):  # the CLI ends the stream with a newline
            text = text[:-1]
        assert len(text) == 57, repr(generated.stdout)
        assert "stack-tiny" in client(["models"], env).stdout
        # the web process serves the page and the same models over HTTP
        import json
        import urllib.request

        web = f"http://{env['TEXTGEN_WEB_ADDR']}"
        assert "Model Training" in urllib.request.urlopen(web + "/", timeout=10).read().decode()
        models = json.load(urllib.request.urlopen(web + "/api/v1/models", timeout=10))["models"]
        # and the shipped base model, which the worker installed when the stack started
        assert [m["name"] for m in models] == ["base-english", "stack-tiny"]
    finally:
        down = stack("down", env, check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "textgen stack is down" in down.stdout
    deadline = time.monotonic() + 5
    while stack_processes(var_dir, redis_port, grpc_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in first.values() if live(pid)]
    assert stack_processes(var_dir, redis_port, grpc_port) == []
    assert not list((var_dir / "run").glob("*.pid"))
    # Redis kept its data on disk (appendonly) under the var dir.
    assert list((var_dir / "redis").rglob("appendonly*"))
    # `down` again, `status` and `logs` on a stopped stack are fine.
    assert "not running" in stack("down", env).stdout
    assert stack("status", env, check=False).returncode != 0
    assert "Ready to accept connections" in stack("logs", env).stdout


def test_up_refuses_a_redis_that_is_not_its_own(tmp_path):
    var_dir = tmp_path / "var"
    redis_port, grpc_port = free_port(), free_port()
    env = stack_env(var_dir, redis_port, grpc_port)
    other = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", redis_port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        up = stack("up", env, check=False)
        assert up.returncode != 0
        assert f"127.0.0.1:{redis_port}" in up.stderr and "REDIS_URL=redis://localhost:" in up.stderr, up.stderr
        assert stack_processes(var_dir, grpc_port) == []
        assert "redis: not running" in stack("down", env).stdout
        assert other.poll() is None  # someone else's Redis is left alone
    finally:
        other.terminate()
        other.wait(timeout=10)
