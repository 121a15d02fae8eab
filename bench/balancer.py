"""nginx with deploy/lb/nginx.conf (the balancer docker-compose.yml runs) as a plain process in front of
server replicas on loopback ports: for bench/capacity.py and tests/test_replicas.py."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.decode_bench import free_address

LB_CONF = Path(__file__).resolve().parents[1] / "deploy" / "lb" / "nginx.conf"


def find_nginx() -> str | None:
    """nginx's path, or None (deploy/local/install-nginx.sh installs Debian's)."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip()


@contextlib.contextmanager
def balancer(nginx: str, folder: Path, replicas: list[str]):
    """nginx with deploy/lb/nginx.conf, passing to ``replicas`` (a fixed upstream group in place of
    Docker's DNS) on a free loopback port; yields its address."""
    folder.mkdir(parents=True)
    addr = free_address()
    conf = lb_config(LB_CONF.read_text(encoding="utf-8"), addr, replicas, folder)
    (folder / "nginx.conf").write_text(conf, encoding="utf-8")
    process = subprocess.Popen([nginx, "-p", str(folder), "-e", "stderr", "-c", str(folder / "nginx.conf"),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=open(folder / "error.log", "w"))
    try:
        deadline = time.monotonic() + 10
        while not _listening(addr):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(folder / 'error.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield addr
    finally:
        process.terminate()
        process.wait(timeout=10)


def lb_config(conf: str, addr: str, replicas: list[str], folder: Path) -> str:
    """deploy/lb/nginx.conf with its listen address, pid file and replicas replaced (each replacement
    checked, so a change of that file cannot silently leave the bench measuring something else)."""
    upstream = "    upstream replicas {\n" + "".join(f"        server {r};\n" for r in replicas) + "    }"
    for pattern, replacement in ((r"^pid .*;$", f"pid {folder}/nginx.pid;"),
                                 (r"^    resolver .*$", upstream),
                                 (r"set \$replicas server:\d+;", "set $replicas replicas;"),
                                 (r"listen \d+ http2;", f"listen {addr} http2;")):
        conf, found = re.subn(pattern, replacement, conf, flags=re.M)
        if found != 1:
            raise RuntimeError(f"{LB_CONF} no longer has one line matching {pattern!r}")
    return conf


def _listening(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0
