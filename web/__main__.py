"""``python -m web``: serve the page, /api/v1 and /v1 on $TEXTGEN_WEB_ADDR (default 127.0.0.1:8080).

The textgen server it talks to is $TEXTGEN_SERVER (default 127.0.0.1:50051); $TEXTGEN_TOKEN and
$TEXTGEN_CA_CERT are used as the client uses them; web/settings.py lists the rest. A setting it
cannot use is one line on stderr and exit status 2. Request headers (so callers' tokens) are never
logged: the access log has the method, path and status only.
"""
from __future__ import annotations

import socket
import sys

from textgen.config import ConfigError
from web.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from client.api import TextgenError
    from web.app import create_app

    try:
        app = create_app(settings=settings)
    except TextgenError as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 2
    # Bind here, so that a port in use is one line on stderr rather than uvicorn's log of it.
    host, port = settings.host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # the port is taken, or the host is not an address here
        sock.close()
        print(f"web: cannot listen on {settings.addr} (TEXTGEN_WEB_ADDR): {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"web: the page and the HTTP API on http://{settings.addr}/ (gRPC server {app.state.client.server})",
          flush=True)
    config = uvicorn.Config(app, log_level="info", access_log=True, timeout_graceful_shutdown=5, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
