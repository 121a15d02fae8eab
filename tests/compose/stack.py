"""docker-compose.yml in a real Docker engine, used as a user would: `make test-compose`.

tests/compose/run.sh provides the engine, a Compose and the base images, then runs this file (its
name keeps it out of plain `make test`). The steps run in order, each on the state the one before
left, and each prints its time:

  build       the project's images with BuildKit (what compose builds with), and again with the legacy builder
  up          `up -d`, every container healthy
  train       `client submit-train --corpus tfjs-code ... --wait` from the host, then `client generate`
  web         the page, when docker-compose.yml has a `web` service
  down/up     `down`, `up -d`: the model and the job are still there
  replicas    two server replicas behind the balancer (lb): calls from the host and from the web side
              reach both (their metrics); one is killed mid-stream and the client's text is unchanged;
              a version published meanwhile is what both serve as "latest" at once
  handover    two workers; `docker stop` the one running a job: it exits by itself (not killed at the
              end of its grace period) and the job resumes on the other from its checkpoint
  down -v     nothing of the project is left: no container, volume, network or built image
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "textgen-compose-test"
CLIENT = Path(sys.executable).parent / "client"
WORKER_TENSORFLOW = os.environ.get("TEXTGEN_TEST_WORKER_TENSORFLOW", "cpu")
TINY = ["--layers", "32", "--sample-len", "20", "--batch-size", "64", "--display-length", "0", "--seed", "3"]

if not os.environ.get("TEXTGEN_TEST_COMPOSE"):
    pytest.fail("run this through `make test-compose` (tests/compose/run.sh): it sets up the Docker engine",
                pytrace=False)
COMPOSE = shlex.split(os.environ["TEXTGEN_TEST_COMPOSE"])
COMPOSE_V1 = Path(COMPOSE[0]).name == "docker-compose" and \
    subprocess.run([*COMPOSE, "version", "--short"], capture_output=True, text=True).stdout.startswith("1.")
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
VOLUMES = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["volumes"]
RUNNING = {name: 1 for name, service in SERVICES.items() if service.get("restart") != "no"}  # not one-shots


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()
ENV = {**os.environ, "TEXTGEN_PORT": str(PORT), "TEXTGEN_WEB_PORT": str(free_port()), "TEXTGEN_WORKER_TENSORFLOW": WORKER_TENSORFLOW,
       "TEXTGEN_SERVER": f"127.0.0.1:{PORT}", "COMPOSE_PROJECT_NAME": PROJECT}
T0 = time.monotonic()
FOUND: dict = {}  # what a step leaves for the next ones


def say(message: str) -> None:
    print(f"[compose-test +{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def run(args: list[str], timeout: float = 600, check: bool = True, env: dict | None = None,
        quiet: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.fail(f"`{shlex.join(args)}` exited {done.returncode}:\n{output}", pytrace=False)
    return done


def compose(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run([*COMPOSE, "-p", PROJECT, "-f", "docker-compose.yml", *args], **kwargs)


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["docker", *args], **kwargs)


def client(*args: str, timeout: float = 600) -> str:
    return run([str(CLIENT), *args], timeout=timeout).stdout


@pytest.fixture
def step(request):
    """Prints the step's name and, at its end, its time (also for a failed step)."""
    name = request.node.name.removeprefix("test_")
    say(f"step {name} ...")
    start = time.monotonic()
    yield
    say(f"step {name}: {time.monotonic() - start:.1f} s")


def containers(service: str | None = None, all_states: bool = False) -> list[dict]:
    """`docker inspect` of the project's containers (of one service), sorted by name."""
    label = f"label=com.docker.compose.project={PROJECT}"
    args = ["ps", "-q", "--filter", label] + (["--filter", f"label=com.docker.compose.service={service}"] if service else [])
    ids = docker(*args, *(["-a"] if all_states else [])).stdout.split()
    if not ids:
        return []
    return sorted(json.loads(docker("inspect", *ids).stdout), key=lambda c: c["Name"])


def service_of(container: dict) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


def wait_healthy(expected: dict[str, int], timeout: float = 240) -> None:
    """Until the project runs exactly ``expected`` containers per service, all healthy."""
    deadline = time.monotonic() + timeout
    while True:
        running = containers()
        states = {}
        for c in running:
            states.setdefault(service_of(c), []).append(c["State"].get("Health", {}).get("Status", c["State"]["Status"]))
        if {s: len(v) for s, v in states.items()} == expected and \
                all(h == "healthy" for v in states.values() for h in v):
            return
        if time.monotonic() > deadline:
            logs = compose("logs", "--tail", "20", check=False).stdout[-4000:]
            pytest.fail(f"not healthy after {timeout:.0f} s: {states} (expected {expected})\n{logs}", pytrace=False)
        time.sleep(1)


def redis_cli(*args: str, password: bool = True) -> str:
    """redis-cli in the redis container, with the password redis-secret made (REDISCLI_AUTH)."""
    auth = 'REDISCLI_AUTH="$(cat /secrets/redis-password)" ' if password else ""
    return compose("exec", "-T", "redis", "sh", "-c", f'{auth}exec redis-cli "$@"', "redis-cli", *args).stdout.strip()


def job_events(job_id: str) -> list[dict]:
    """The job's events as the worker wrote them (from Redis, inside the compose network)."""
    raw = redis_cli("--raw", "XRANGE", f"textgen:job:{job_id}:events", "-", "+")
    return [json.loads(line) for line in raw.splitlines() if line.startswith("{")]


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def image_names() -> dict[str, str]:
    sep = "_" if COMPOSE_V1 else "-"
    return {name: f"{PROJECT}{sep}{name}" for name, spec in SERVICES.items() if "build" in spec}


@pytest.fixture(scope="module", autouse=True)
def teardown():
    """Whatever happens, the project leaves nothing behind (checked in test_down_v_leaves_nothing)."""
    yield
    if containers(all_states=True) or volumes():
        say("cleaning up after a failed step: down -v --rmi local")
        compose("down", "-v", "--remove-orphans", "--rmi", "local", "-t", "5", check=False)
    legacy = [f"{name}-legacy" for name in image_names().values()]
    docker("rmi", "-f", *legacy, *image_names().values(), check=False)


def volumes() -> list[str]:
    return docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()


# ---- the steps -------------------------------------------------------------------------------------------


def test_build_with_buildkit(step):
    env = {**ENV, "DOCKER_BUILDKIT": "1", "COMPOSE_DOCKER_CLI_BUILD": "1"}
    if COMPOSE_V1:  # Compose 1 builds through the docker CLI; the Debian CLI has BuildKit built in
        env["PATH"] = "/usr/bin:" + env["PATH"]
    compose("build", env=env, timeout=1200)
    for service, image in image_names().items():
        size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
        say(f"image {image} ({service}{', TENSORFLOW=' + WORKER_TENSORFLOW if service == 'worker' else ''}): "
            f"{size / 1e9:.2f} GB")


def test_build_with_legacy_builder(step):
    """The same Dockerfiles with the classic builder (no BuildKit frontend, nothing from Docker Hub),
    all at once as compose builds them."""
    env = {**ENV, "DOCKER_BUILDKIT": "0"}
    builds, seen = {}, set()
    for service, image in image_names().items():
        spec = SERVICES[service]["build"]
        args = ["--build-arg", f"TENSORFLOW={WORKER_TENSORFLOW}"] if service == "worker" else []
        if (spec["dockerfile"], *args) in seen:  # web runs the server's image: built once is enough
            continue
        seen.add((spec["dockerfile"], *args))
        builds[service] = subprocess.Popen(
            ["docker", "build", "-q", "-f", spec["dockerfile"], *args, "-t", f"{image}-legacy", spec["context"]],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.monotonic()
    for service, build in builds.items():
        output = build.communicate(timeout=1200)[0]
        assert build.returncode == 0, f"legacy build of {service} failed:\n{output[-4000:]}"
        say(f"legacy build of {service}: done after {time.monotonic() - start:.1f} s")
    docker("rmi", *(f"{image_names()[service]}-legacy" for service in builds))


def test_up_healthy(step):
    compose("up", "-d", timeout=300)
    wait_healthy(RUNNING)
    # Redis needs the password redis-secret made; the worker and server have it (they are healthy)
    assert redis_cli("PING", password=False).startswith("NOAUTH")
    assert redis_cli("PING") == "PONG"


def test_train_tfjs_code_and_generate(step):
    out = client("submit-train", "--corpus", "tfjs-code", *TINY, "--epochs", "2", "--examples-per-epoch", "1024",
                 "--name", "tfjs-tiny", "--wait")
    job_id = out.split()[0]
    assert redis_cli("HGET", f"textgen:job:{job_id}", "state") == "finished", out
    text = client("generate", "tfjs-tiny", "--length", "120", "--seed", "5", "--temperature", "0")
    assert len(text.rstrip("\n")) >= 120, text
    models = client("models")
    assert "tfjs-tiny" in models, models
    assert "base-english" in models, models  # the worker installed the shipped base model on the data volume
    FOUND['job_id'] = job_id


@pytest.mark.skipif("web" not in SERVICES, reason="docker-compose.yml has no web service (yet)")
def test_web_page(step):
    target = str(SERVICES["web"]["ports"][0]).rsplit(":", 1)[-1].split("/")[0]
    host_port = compose("port", "web", target).stdout.strip().rsplit(":", 1)[-1]
    with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=30) as response:
        page = response.read().decode("utf-8", "replace")
        assert response.status == 200
    assert "<html" in page.lower(), page[:500]


def test_down_up_keeps_models_and_jobs(step):
    compose("down", timeout=300)
    assert containers(all_states=True) == [] and len(volumes()) == len(VOLUMES)  # data, Redis, its password
    compose("up", "-d", timeout=300)
    wait_healthy(RUNNING)
    assert "tfjs-tiny" in client("models")
    jobs = client("jobs")
    assert FOUND['job_id'] in jobs and "finished" in jobs, jobs
    text = client("generate", "tfjs-tiny", "--length", "50", "--seed", "5", "--temperature", "0")
    assert len(text.rstrip("\n")) >= 50


def replica_addresses() -> dict[str, str]:
    """Each server replica's container name -> its address on the project's network."""
    return {c["Name"].lstrip("/"): next(iter(c["NetworkSettings"]["Networks"].values()))["IPAddress"]
            for c in containers("server")}


def metric(address: str, name: str, *labels: str) -> float:
    """The sum of a metric's samples (those whose labels include each of ``labels``) on a replica's /metrics."""
    port = environment_of("server")["TEXTGEN_METRICS_ADDR"].rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.split("{")[0].split(" ")[0] == name and all(label in line for label in labels))


def environment_of(service: str) -> dict:
    env = SERVICES[service].get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def generate_calls(address: str) -> float:
    return metric(address, "textgen_grpc_requests_total", 'method="Generate"')


def test_two_server_replicas_act_as_one_behind_the_balancer(step):
    from client.api import Client

    compose("up", "-d", "--scale", "server=2", timeout=300)
    wait_healthy({**RUNNING, "server": 2})
    replicas = replica_addresses()
    assert len(replicas) == 2, replicas

    # Calls through the host's port and through the web side spread over both replicas.
    before = {name: generate_calls(address) for name, address in replicas.items()}
    with Client(f"127.0.0.1:{PORT}") as c:
        for seed in range(16):
            assert len(c.generate("tfjs-tiny", length=20, seed=seed).text) == 20
    web_port = compose("port", "web", "8080").stdout.strip().rsplit(":", 1)[-1]
    for seed in range(8):
        body = json.dumps({"model": "tfjs-tiny", "prompt": "", "max_tokens": 20, "seed": seed}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{web_port}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.loads(response.read())["choices"][0]["text"]) == 20
    calls = {name: generate_calls(address) - before[name] for name, address in replicas.items()}
    say(f"24 Generate calls (16 over gRPC, 8 through the web side) served per replica: {calls}")
    assert sum(calls.values()) == 24 and min(calls.values()) > 0, calls

    # The replica serving a stream is killed mid-stream: the client's text equals an unbroken stream's.
    with Client(f"127.0.0.1:{PORT}") as c:
        began = time.monotonic()
        reference = c.generate("tfjs-tiny", prompt="function ", length=10000, seed=11, temperature=0.8).text
        unbroken_s = time.monotonic() - began
        stream = c.generate("tfjs-tiny", prompt="function ", length=10000, seed=11, temperature=0.8)
        chunks = iter(stream)
        received = [next(chunks)]
        serving = [name for name, address in replicas.items()
                   if metric(address, "textgen_active_streams") == 1]
        assert len(serving) == 1, serving
        docker("kill", serving[0])
        received.extend(chunks)
        text = "".join(received)
    say(f"killed {serving[0]} after the stream's first chunk ({len(received[0])} characters; an unbroken "
        f"stream took {unbroken_s:.2f} s): the client resumed {stream.resumes} time(s), "
        f"{len(text)} characters, equal to the unbroken stream: {text == reference}")
    assert stream.resumes >= 1 and text == reference and stream.end.characters == 10000

    # The killed replica comes back; a version published now is "latest" on both at once.
    compose("up", "-d", "--scale", "server=2", timeout=300)
    wait_healthy({**RUNNING, "server": 2})
    replicas = replica_addresses()
    with Client(f"127.0.0.1:{PORT}") as c:
        latest = c.get_model("tfjs-tiny").version
    client("submit-train", "--corpus", "tfjs-code", *TINY, "--epochs", "1", "--examples-per-epoch", "512",
           "--name", "tfjs-tiny", "--wait")
    served = {}
    for name, address in replicas.items():
        with Client(f"{address}:50051") as c:
            stream = c.generate("tfjs-tiny", length=5, seed=1)
            stream.text
            served[name] = stream.start.version
    say(f"published version {latest + 1} of tfjs-tiny; each replica serves as latest at once: {served}")
    assert set(served.values()) == {latest + 1}, served


def test_stopped_worker_hands_its_job_to_the_other(step):
    compose("up", "-d", "--scale", "worker=2", "--scale", "server=2", timeout=300)
    wait_healthy({**RUNNING, "worker": 2, "server": 2})
    job_id = client("submit-train", "--corpus", "tfjs-code", *TINY, "--epochs", "40", "--examples-per-epoch", "2048",
                    "--name", "tfjs-handover", "--detach").split()[0]
    wait_for("the job's first checkpoint", lambda: any(e["type"] == "checkpoint" for e in job_events(job_id)), 300)
    owner = redis_cli("HGET", f"rq:job:{job_id}", "worker_name")  # "<container hostname>.<pid>.<suffix>"
    busy = [c for c in containers("worker") if c["Config"]["Hostname"] == owner.split(".")[0]]
    assert len(busy) == 1, (owner, [c["Config"]["Hostname"] for c in containers("worker")])
    grace = 30
    say(f"docker stop {busy[0]['Name'].lstrip('/')} (running job {job_id}, grace period {grace} s)")
    stopped_at = time.monotonic()
    docker("stop", "-t", str(grace), busy[0]["Id"], timeout=grace + 30)
    stop_took = time.monotonic() - stopped_at
    state = json.loads(docker("inspect", busy[0]["Id"]).stdout)[0]["State"]
    say(f"the busy worker stopped in {stop_took:.1f} s, exit code {state['ExitCode']}")

    def resumed():
        return next((e for e in job_events(job_id) if e["type"] == "started" and e.get("attempt", 1) > 1), None)

    started = wait_for("the job to start again on the other worker", resumed, 120, interval=0.2)
    say(f"`docker stop` to the job's resumption: {time.monotonic() - stopped_at:.1f} s "
        f"(resumed from epoch {started.get('resumed_from_epoch')})")
    assert state["ExitCode"] == 0, f"the worker was killed (exit {state['ExitCode']}) instead of stopping by itself"
    assert started["resumed_from_epoch"] >= 1, started
    new_owner = redis_cli("HGET", f"rq:job:{job_id}", "worker_name")
    assert new_owner.split(".")[0] != owner.split(".")[0], (owner, new_owner)
    client("cancel", job_id)
    wait_for("the job to end", lambda: job_events(job_id)[-1]["type"] in ("cancelled", "finished"), 120)


def test_down_v_leaves_nothing(step):
    compose("down", "-v", "--remove-orphans", "--rmi", "local", "-t", "30", timeout=300)
    assert containers(all_states=True) == []
    assert volumes() == []
    networks = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}").stdout.split()
    assert networks == []
    left = [image for image in image_names().values()
            if docker("image", "inspect", image, check=False).returncode == 0]
    assert left == []
    say(f"total {time.monotonic() - T0:.1f} s")
