"""Health probes for the textgen stack: the local stack (deploy/local/stack.sh) and the images' HEALTHCHECKs.

    python deploy/probe.py redis  [--url URL]   [--wait S] [--pid PID]   # Redis answers PING
    python deploy/probe.py grpc   [--addr ADDR] [--wait S] [--pid PID]   # gRPC health "" is SERVING
    python deploy/probe.py worker --pid PID [--url URL] [--wait S]       # an RQ worker with this pid is registered
    python deploy/probe.py redis-conf DIR CONF                           # (stack.sh) write redis.conf for REDIS_URL

Without --wait a probe tries once (a Docker HEALTHCHECK); with it, it retries until the deadline.
With --pid it gives up at once when that process has died. Exit 0: healthy; 1: not (one line on
stderr says why). Configuration is the stack's own environment variables: REDIS_URL; TEXTGEN_ADDR,
else TEXTGEN_SERVER (a wildcard host is dialled on loopback); TLS when TEXTGEN_TLS_CERT is set (trusting
TEXTGEN_CA_CERT, else that certificate itself). Only grpcio, grpcio-health-checking and redis-py are
imported: no TensorFlow, no textgen code.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_ADDR = "127.0.0.1:50051"
ATTEMPT_TIMEOUT = 3.0
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


class ProbeFailed(Exception):
    pass


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _retry(check, wait: float, pid: int | None, what: str) -> str:
    deadline = time.monotonic() + wait
    while True:
        if not _alive(pid):
            raise ProbeFailed(f"{what}: process {pid} has exited")
        try:
            return check()
        except ProbeFailed as exc:
            if time.monotonic() >= deadline:
                raise ProbeFailed(f"{what}: {exc}" + (f" (gave up after {wait:.0f} s)" if wait else "")) from None
        time.sleep(0.5)


# --- Redis ---------------------------------------------------------------------------------------

def redis_url(url: str | None) -> str:
    return url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def _redis(url: str):
    """A client for ``url``, with the password in REDIS_PASSWORD_FILE and the CA in REDIS_CA_CERT when
    they are set (as textgen.config.redis_options reads them; this script imports no textgen code)."""
    import redis

    options = {}
    if os.environ.get("REDIS_PASSWORD_FILE", "").strip():
        try:
            options["password"] = Path(os.environ["REDIS_PASSWORD_FILE"].strip()).read_text().strip()
        except OSError as exc:
            raise ProbeFailed(f"cannot read REDIS_PASSWORD_FILE: {exc}") from None
    if url.startswith("rediss://") and os.environ.get("REDIS_CA_CERT", "").strip():
        options["ssl_ca_certs"] = os.environ["REDIS_CA_CERT"].strip()
    return redis.Redis.from_url(url, socket_connect_timeout=ATTEMPT_TIMEOUT, socket_timeout=ATTEMPT_TIMEOUT,
                                **options)


def redis_address(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}:***@{netloc}").geturl()
    return url


def check_redis(url: str) -> str:
    import redis

    try:
        _redis(url).ping()
    except redis.exceptions.RedisError as exc:
        raise ProbeFailed(f"Redis at {redis_address(url)} does not answer PING: {exc}") from None
    return f"Redis at {redis_address(url)} answers PING"


def check_worker(url: str, pid: int) -> str:
    """An RQ worker with this pid has registered (it is connected and listening to its queues)."""
    import redis
    from rq import Worker

    try:
        pids = {w.pid for w in Worker.all(connection=_redis(url))}
    except redis.exceptions.RedisError as exc:
        raise ProbeFailed(f"cannot list workers in Redis at {redis_address(url)}: {exc}") from None
    if pid not in pids:
        raise ProbeFailed(f"no RQ worker with pid {pid} has registered in Redis yet")
    return f"worker pid {pid} is registered in Redis"


def write_redis_conf(directory: str, conf: str, url: str) -> str:
    """Write a redis.conf serving ``url`` on loopback; returns 'local PORT' or 'remote HOST:PORT'."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ProbeFailed(f"REDIS_URL {redis_address(url)}: scheme must be redis://, rediss:// or unix://")
    host, port = parts.hostname or "localhost", parts.port or 6379
    if parts.scheme != "redis" or host not in LOOPBACK_HOSTS and not host.startswith("127."):
        return f"remote {redis_address(url)}"
    lines = [
        "# Written by deploy/local/stack.sh from REDIS_URL on every `up`; edits are lost.",
        f"port {port}",
        f"bind {host if host.startswith('127.') else '127.0.0.1'} -::1",
        "protected-mode yes",
        "daemonize no",
        f'dir "{os.path.abspath(directory)}"',
        "appendonly yes",
        'logfile ""',
        f'proc-title-template "{{title}} {{listen-addr}} {{server-mode}} {{config-file}}"',
    ]
    password = unquote(parts.password) if parts.password else ""
    if password:
        if any(c in password for c in '"\\\n\r'):
            raise ProbeFailed("the password in REDIS_URL must not contain quotes, backslashes or newlines")
        if parts.username and unquote(parts.username) != "default":
            lines.append(f'user {unquote(parts.username)} on >{password} ~* &* +@all')
        lines.append(f'requirepass "{password}"')
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return f"local {port}"


# --- gRPC health ---------------------------------------------------------------------------------

def grpc_target(addr: str | None) -> str:
    """Where to dial: --addr, else the server's own TEXTGEN_ADDR, else TEXTGEN_SERVER (a client's);
    a wildcard listen host is dialled on loopback."""
    addr = addr or os.environ.get("TEXTGEN_ADDR") or os.environ.get("TEXTGEN_SERVER") or DEFAULT_ADDR
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def _channel(target: str):
    import grpc

    cert = os.environ.get("TEXTGEN_TLS_CERT", "").strip()
    ca = os.environ.get("TEXTGEN_CA_CERT", "").strip() or cert
    if not ca:
        return grpc.insecure_channel(target)
    with open(ca, "rb") as f:
        roots = f.read()
    options = []
    name = _cert_name(cert) if cert else None
    if name:  # we dial loopback; the certificate names the server's public host
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options=options)


def _cert_name(path: str) -> str | None:
    """A DNS name the server's certificate is issued for (best effort)."""
    try:
        import ssl

        decoded = ssl._ssl._test_decode_cert(path)  # noqa: SLF001 - stdlib, no extra dependency
    except Exception:  # noqa: BLE001
        return None
    for kind, value in decoded.get("subjectAltName", ()):
        if kind == "DNS":
            return value
    for rdn in decoded.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def check_grpc(target: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        channel = _channel(target)
    except OSError as exc:
        raise ProbeFailed(f"cannot read the TLS certificate: {exc}") from None
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=ATTEMPT_TIMEOUT)
        except grpc.RpcError as exc:
            raise ProbeFailed(f"gRPC health check at {target}: {exc.code().name}: {exc.details()}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise ProbeFailed(f"gRPC health at {target} is {status}")
    return f"gRPC server at {target} is SERVING"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("redis", "grpc", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--wait", type=float, default=0.0, help="keep trying for this many seconds")
        p.add_argument("--pid", type=int, default=None, help="give up when this process exits")
        if name == "grpc":
            p.add_argument("--addr", default=None)
        else:
            p.add_argument("--url", default=None)
    conf = sub.add_parser("redis-conf")
    conf.add_argument("dir")
    conf.add_argument("conf")
    conf.add_argument("--url", default=None)
    args = parser.parse_args(argv)
    try:
        if args.what == "redis-conf":
            print(write_redis_conf(args.dir, args.conf, redis_url(args.url)))
            return 0
        if args.what == "redis":
            url = redis_url(args.url)
            message = _retry(lambda: check_redis(url), args.wait, args.pid, "redis")
        elif args.what == "worker":
            if args.pid is None:
                parser.error("worker needs --pid")
            url = redis_url(args.url)
            message = _retry(lambda: check_worker(url, args.pid), args.wait, args.pid, "worker")
        else:
            target = grpc_target(args.addr)
            message = _retry(lambda: check_grpc(target), args.wait, args.pid, "server")
    except ProbeFailed as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if os.environ.get("PROBE_VERBOSE"):
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
