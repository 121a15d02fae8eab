#!/usr/bin/env bash
# The textgen stack without Docker: redis-server, the training worker, the gRPC server and the web page, run in the
# background from this checkout's .venv, with their data, logs and pid files under one folder.
#
#   deploy/local/stack.sh up        start what is not running; wait for Redis PING and gRPC health SERVING
#   deploy/local/stack.sh down      stop them all (SIGTERM, then SIGKILL after TEXTGEN_STOP_TIMEOUT s)
#   deploy/local/stack.sh status    what runs, and whether it answers (exit 0 only when all do)
#   deploy/local/stack.sh logs [-f] [redis|worker|server|web]   the logs' tails (-f: follow)
#
# Environment (the same names as the code; these defaults are for local use):
#   REDIS_URL          redis://localhost:6379/0   a loopback URL: this script runs redis-server on its
#                                                 port (password from the URL); another host: that Redis
#                                                 is used and not managed here
#   TEXTGEN_ADDR       127.0.0.1:50051            where the server listens
#   TEXTGEN_WEB_ADDR   127.0.0.1:8080             where the web process (page, HTTP API) listens
#   TEXTGEN_VAR_DIR    ./var                      data/, redis/, log/, run/ (for tests: a temporary dir)
#   TEXTGEN_DATA_DIR   $TEXTGEN_VAR_DIR/data      models/, corpora/, checkpoints/
#   TEXTGEN_UP_TIMEOUT 120                        seconds `up` waits for each process to be ready
#   TEXTGEN_STOP_TIMEOUT 20                       seconds `down` waits before SIGKILL
# Anything else the server or worker reads (TEXTGEN_MAX_*, TEXTGEN_TOKENS_FILE, TEXTGEN_TLS_*) is
# passed through from this environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PY=${TEXTGEN_PYTHON:-$ROOT/.venv/bin/python}
PROBE=$ROOT/deploy/probe.py
VAR_DIR=${TEXTGEN_VAR_DIR:-$ROOT/var}
mkdir -p "$VAR_DIR"
VAR_DIR=$(cd "$VAR_DIR" && pwd)
LOG_DIR=$VAR_DIR/log
RUN_DIR=$VAR_DIR/run
REDIS_DIR=$VAR_DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf

export TEXTGEN_VAR_DIR=$VAR_DIR
export REDIS_URL=${REDIS_URL:-redis://localhost:6379/0}
export TEXTGEN_ADDR=${TEXTGEN_ADDR:-127.0.0.1:50051}
export TEXTGEN_WEB_ADDR=${TEXTGEN_WEB_ADDR:-127.0.0.1:8080}
export TEXTGEN_DATA_DIR=${TEXTGEN_DATA_DIR:-$VAR_DIR/data}
export PYTHONUNBUFFERED=1
UP_TIMEOUT=${TEXTGEN_UP_TIMEOUT:-120}
STOP_TIMEOUT=${TEXTGEN_STOP_TIMEOUT:-20}

SERVICES=(redis worker server web)

say() { printf '%s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }
rel() { local p=$1; [[ $p == "$ROOT/"* ]] && p=${p#"$ROOT/"}; printf '%s' "$p"; }

# What a process of each service has in its command line (redis-server's process title includes
# its config file, see proc-title-template in the generated redis.conf).
pattern_of() {
    case $1 in
        redis) printf '%s' "redis-server" ;;
        worker) printf '%s' "-m trainer worker" ;;
        server) printf '%s' "-m server" ;;
        web) printf '%s' "-m web" ;;
    esac
}

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# state of a live process, or nothing (zombies count as dead)
proc_state() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    printf '%s' "${stat%% *}"
}

alive() {
    local state
    state=$(proc_state "$1") || return 1
    [[ $state != Z && $state != X ]]
}

# Is pid $2 the process this stack started for service $1? Alive, with the right command line, and
# started for this var dir: redis-server's process title names its config file (proc-title-template
# in the generated redis.conf; the title overwrites its environment), the others' environment has
# TEXTGEN_VAR_DIR.
is_ours() {
    local name=$1 pid=$2 cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$(pattern_of "$name")"* ]] || return 1
    if [[ $name == redis ]]; then
        [[ $cmdline == *" $REDIS_CONF"* ]]
    elif [[ -r /proc/$pid/environ ]]; then
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "TEXTGEN_VAR_DIR=$VAR_DIR"
    fi
}

# The pid of a running service of this stack, or nothing. The pid file says which; without one (or
# with a stale one) the process groups are searched, so that a lost pid file never leaves one running.
running_pid() {
    local name=$1 file pid
    file=$(pid_file "$name")
    pid=$(cat "$file" 2>/dev/null || true)
    if is_ours "$name" "$pid"; then
        printf '%s' "$pid"
        return 0
    fi
    rm -f "$file"
    if pid=$(find_leader "$name"); then
        if [[ -d $RUN_DIR ]]; then printf '%s\n' "$pid" >"$file"; fi
        printf '%s' "$pid"
        return 0
    fi
    return 1
}

find_leader() { # a process group leader that is_ours for service $1
    local name=$1 p stat fields pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        read -r -a fields <<<"${stat##*) }"
        [[ ${fields[2]} == "$pid" ]] || continue
        if is_ours "$name" "$pid"; then
            printf '%s' "$pid"
            return 0
        fi
    done
    return 1
}

# The live members of process group $1 (our services are session leaders: pgid == pid).
group_members() {
    local pgid=$1 p stat rest fields
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r -a fields <<<"$rest"
        if [[ ${fields[2]} == "$pgid" && ${fields[0]} != Z && ${fields[0]} != X ]]; then printf '%s ' "${p#/proc/}"; fi
    done
    return 0
}

log_tail() {
    local name=$1 file
    file=$(log_file "$name")
    [[ -s $file ]] || return 0
    printf -- '--- last lines of %s ---\n' "$(rel "$file")" >&2
    tail -n "${2:-30}" "$file" >&2
    printf -- '---\n' >&2
}

start_bg() {
    local name=$1
    shift
    local log
    log=$(log_file "$name")
    printf '\n==== %s: starting %s (pid follows) ====\n' "$(date '+%F %T')" "$name" >>"$log"
    # setsid: its own session and process group (Ctrl-C on the caller does not reach it; `down`
    # stops the whole group, work horses included). nohup: it survives the terminal.
    setsid nohup "$@" >>"$log" 2>&1 </dev/null 9>&- &
    local pid=$!
    printf '%s\n' "$pid" >"$(pid_file "$name")"
    printf '%s' "$pid"
}

wait_http() { # url pid: until the page answers 200 (up to UP_TIMEOUT s), or the process dies
    local deadline=$((SECONDS + UP_TIMEOUT))
    while ((SECONDS < deadline)); do
        alive "$2" || return 1
        if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.3
    done
    return 1
}

port_in_use() { # host port
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

STARTED=()
cleanup_started() {
    local name
    [[ ${#STARTED[@]} -gt 0 ]] || return 0
    say "stack: stopping what this 'up' started: ${STARTED[*]}" >&2
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do  # the reverse order: Redis last
        stop_and_wait "${STARTED[i]}" >/dev/null 2>&1 || true
    done
}

fail_up() {
    local name=$1 message=$2
    printf 'stack: %s\n' "$message" >&2
    if [[ -n $name ]]; then log_tail "$name" 40; fi
    cleanup_started
    exit 1
}

cmd_up() {
    [[ -x $PY ]] || die "no Python at $(rel "$PY"): run 'make install' first"
    mkdir -p "$LOG_DIR" "$RUN_DIR" "$REDIS_DIR" "$TEXTGEN_DATA_DIR"
    if [[ $TEXTGEN_ADDR == *:0 ]]; then
        die "TEXTGEN_ADDR=$TEXTGEN_ADDR: the local stack needs a fixed port, not 0"
    fi

    local mode redis_port="" pid
    mode=$("$PY" "$PROBE" redis-conf "$REDIS_DIR" "$REDIS_CONF") || die "cannot use REDIS_URL (see above)"
    if [[ $mode == local* ]]; then
        redis_port=${mode#local }
    fi

    # The server's address must be free unless our server holds it (checked before starting anything).
    if ! running_pid server >/dev/null; then
        local host=${TEXTGEN_ADDR%:*} port=${TEXTGEN_ADDR##*:}
        if [[ $host == 0.0.0.0 || $host == "[::]" || $host == "*" || -z $host ]]; then host=127.0.0.1; fi
        host=${host#[}
        host=${host%]}
        if port_in_use "$host" "$port"; then
            die "something is already listening on $TEXTGEN_ADDR (TEXTGEN_ADDR) and it is not this stack's server
       (var dir $(rel "$VAR_DIR")). Stop it, or choose another address, e.g.
         TEXTGEN_ADDR=127.0.0.1:$((port + 1)) TEXTGEN_SERVER=127.0.0.1:$((port + 1)) make up"
        fi
    fi

    # 1. Redis
    if [[ -z $redis_port ]]; then
        say "redis:  using the Redis at ${mode#remote } (not managed by this script)"
        "$PY" "$PROBE" redis --wait "$UP_TIMEOUT" || die "that Redis does not answer; check REDIS_URL"
    elif pid=$(running_pid redis); then
        if ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q ":$redis_port "; then
            die "this stack's redis-server (pid $pid) listens on another port than REDIS_URL=$REDIS_URL says;
       run 'stack.sh down' first to change the port"
        fi
        say "redis:  already running (pid $pid)"
    else
        command -v redis-server >/dev/null 2>&1 ||
            die "redis-server is not installed: run 'make install' (or ./deploy/local/install-redis.sh)"
        if port_in_use 127.0.0.1 "$redis_port"; then
            die "something is already listening on 127.0.0.1:$redis_port and it was not started by this stack
       (var dir $(rel "$VAR_DIR")): another Redis, or a stack with another TEXTGEN_VAR_DIR.
       Stop it, or give this stack another port, e.g.
         REDIS_URL=redis://localhost:$((redis_port + 1))/0 make up
       (use the same REDIS_URL for 'make demo' and the tests)."
        fi
        pid=$(start_bg redis redis-server "$REDIS_CONF")
        STARTED+=(redis)
        say "redis:  started (pid $pid)"
    fi
    if [[ -n $redis_port ]]; then
        pid=$(running_pid redis) || fail_up redis "redis-server exited at start"
        "$PY" "$PROBE" redis --wait "$UP_TIMEOUT" --pid "$pid" || fail_up redis "Redis did not come up"
    fi

    # 2. the worker and the server (they start side by side; both import TensorFlow)
    local worker_pid server_pid
    if worker_pid=$(running_pid worker); then
        say "worker: already running (pid $worker_pid)"
    else
        worker_pid=$(start_bg worker "$PY" -m trainer worker)
        STARTED+=(worker)
        say "worker: started (pid $worker_pid)"
    fi
    if server_pid=$(running_pid server); then
        say "server: already running (pid $server_pid)"
    else
        server_pid=$(start_bg server "$PY" -m server)
        STARTED+=(server)
        say "server: started (pid $server_pid)"
    fi

    say "waiting for the gRPC server's health check (SERVING) and the worker to register..."
    "$PY" "$PROBE" grpc --addr "$TEXTGEN_ADDR" --wait "$UP_TIMEOUT" --pid "$server_pid" ||
        fail_up server "the server did not become healthy"
    "$PY" "$PROBE" worker --wait "$UP_TIMEOUT" --pid "$worker_pid" ||
        fail_up worker "the worker did not register with Redis"

    # 3. the web process (the page and the HTTP API), a client of the server
    local dial=$TEXTGEN_ADDR redis_line web_pid web_url
    if [[ $dial == 0.0.0.0:* ]]; then dial=127.0.0.1:${dial##*:}; fi
    web_url=http://$TEXTGEN_WEB_ADDR/
    if [[ $TEXTGEN_WEB_ADDR == 0.0.0.0:* ]]; then web_url=http://127.0.0.1:${TEXTGEN_WEB_ADDR##*:}/; fi
    if web_pid=$(running_pid web); then
        say "web:    already running (pid $web_pid)"
    else
        local web_host=${TEXTGEN_WEB_ADDR%:*} web_port=${TEXTGEN_WEB_ADDR##*:}
        if [[ $web_host == 0.0.0.0 || -z $web_host ]]; then web_host=127.0.0.1; fi
        if port_in_use "$web_host" "$web_port"; then
            fail_up "" "something is already listening on $TEXTGEN_WEB_ADDR (TEXTGEN_WEB_ADDR) and it is not this stack's
       web process. Stop it, or choose another address, e.g. TEXTGEN_WEB_ADDR=127.0.0.1:$((web_port + 1)) make up"
        fi
        web_pid=$(TEXTGEN_SERVER=${TEXTGEN_SERVER:-$dial} start_bg web "$PY" -m web)
        STARTED+=(web)
        say "web:    started (pid $web_pid)"
    fi
    wait_http "$web_url" "$web_pid" || fail_up web "the web process did not answer on $web_url"
    redis_line="$(printf '%s' "$REDIS_URL" | sed -E 's#(//[^:/@]*:)[^@]*@#\1***@#')"
    if [[ -n $redis_port ]]; then
        redis_line="pid $(printf '%-7s' "$(running_pid redis)") $redis_line   data in $(rel "$REDIS_DIR")"
    else
        redis_line="(not managed here) $redis_line"
    fi
    say ""
    say "textgen stack is up:"
    say "  redis   $redis_line"
    say "  worker  pid $(printf '%-7s' "$worker_pid") queue 'training'"
    say "  server  pid $(printf '%-7s' "$server_pid") gRPC on $TEXTGEN_ADDR (health: SERVING)"
    say "  web     pid $(printf '%-7s' "$web_pid") the page and the HTTP API on $web_url"
    say "  data    $(rel "$TEXTGEN_DATA_DIR")  (models/, corpora/, checkpoints/)"
    say "  logs    $(rel "$LOG_DIR")/{redis,worker,server,web}.log   (make logs; make logs ARGS=-f)"
    say "client:   TEXTGEN_SERVER=$dial .venv/bin/client models"
    say "stop:     make down"
}

# SIGTERM to a service's process group (its work horses, npm... too); returns 1 when not running.
stop_service() {
    local name=$1 pid
    if ! pid=$(running_pid "$name"); then
        rm -f "$(pid_file "$name")"
        return 1
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    return 0
}

stop_and_wait() {
    local name=$1 pid
    pid=$(running_pid "$name") || return 0
    stop_service "$name" || return 0
    wait_stopped "$name" "$pid"
}

wait_stopped() { # name pid: wait for its whole group, then SIGKILL it
    local name=$1 pid=$2 deadline members
    deadline=$((SECONDS + STOP_TIMEOUT))
    while members=$(group_members "$pid") && [[ -n $members ]]; do
        if ((SECONDS >= deadline)); then
            say "$name: still running after ${STOP_TIMEOUT} s (pids $members): SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || true
            # shellcheck disable=SC2086
            kill -KILL $members 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$(pid_file "$name")"
}

cmd_down() {
    local name pid
    local -A pids=()
    # The web process, the server and the worker first (the worker reports to Redis as it stops), then Redis.
    for name in web server worker; do
        if pid=$(running_pid "$name"); then
            pids[$name]=$pid
            say "$name: stopping (pid $pid)"
            stop_service "$name" || true
        else
            say "$name: not running"
        fi
    done
    for name in web server worker; do
        if [[ -n ${pids[$name]:-} ]]; then wait_stopped "$name" "${pids[$name]}"; fi
    done
    if pid=$(running_pid redis); then
        say "redis: stopping (pid $pid)"
        stop_service redis || true
        wait_stopped redis "$pid"
    else
        say "redis: not running"
    fi
    local left=""
    for name in "${SERVICES[@]}"; do
        rm -f "$(pid_file "$name")"
    done
    for name in "${!pids[@]}"; do
        if [[ -n $(group_members "${pids[$name]}") ]]; then left+=" $name"; fi
    done
    [[ -z $left ]] || die "still running:$left"
    say "textgen stack is down."
}

cmd_status() {
    local name pid ok=0
    for name in "${SERVICES[@]}"; do
        if pid=$(running_pid "$name"); then
            say "$name: running (pid $pid)"
        else
            say "$name: not running"
            ok=3
        fi
    done
    if [[ -x $PY ]]; then
        PROBE_VERBOSE=1 "$PY" "$PROBE" redis 2>&1 | sed 's/^/  /' || ok=3
        PROBE_VERBOSE=1 "$PY" "$PROBE" grpc --addr "$TEXTGEN_ADDR" 2>&1 | sed 's/^/  /' || ok=3
    fi
    return $ok
}

cmd_logs() {
    local follow=0 names=() name files=()
    for arg in "$@"; do
        case $arg in
            -f | --follow) follow=1 ;;
            redis | worker | server | web) names+=("$arg") ;;
            *) die "logs: unknown argument '$arg' (use: logs [-f] [redis|worker|server|web])" ;;
        esac
    done
    [[ ${#names[@]} -gt 0 ]] || names=("${SERVICES[@]}")
    for name in "${names[@]}"; do
        if [[ -f $(log_file "$name") ]]; then files+=("$(log_file "$name")"); fi
    done
    [[ ${#files[@]} -gt 0 ]] || die "no logs in $(rel "$LOG_DIR") yet (make up starts the stack)"
    if ((follow)); then
        exec tail -n 20 -F "${files[@]}"
    fi
    tail -n 40 "${files[@]}"
}

# One `up` or `down` at a time per var dir (the lock's descriptor is closed in the started processes).
lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 300 9 || die "another 'up' or 'down' of this stack is still running"
    fi
}

case ${1:-} in
    up) lock; cmd_up ;;
    down) lock; cmd_down ;;
    status) cmd_status ;;
    logs) shift; cmd_logs "$@" ;;
    *)
        say "usage: $0 up|down|status|logs [-f] [redis|worker|server|web]" >&2
        exit 2
        ;;
esac
