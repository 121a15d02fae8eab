"""The server in a process of its own for the reliability tests: ``python -m tests.reliability.serverproc``.

Settings come from the environment (``Settings.from_env``, TEXTGEN_ADDR=127.0.0.1:0 picks a free
port). It prints ``PORT <n>`` once serving, then answers control lines on stdin:
``active`` -> ``ACTIVE <engine streams held>``, ``rescan`` -> ``RESCAN done``. EOF on stdin stops it.
"""
from __future__ import annotations

import logging
import sys

from server.app import build_server
from server.config import Settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = build_server(Settings.from_env()).start()
    print(f"PORT {server.port}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "active":
            print(f"ACTIVE {server.engine.active_streams()}", flush=True)
        elif command == "rescan":
            server.store.rescan()
            print("RESCAN done", flush=True)
    server.stop(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
