"""The web process's settings from the environment, read once (``python -m web`` reads them before it
serves; ``create_app`` keeps them on ``app.state.settings``).

    TEXTGEN_WEB_ADDR          where to listen, host:port (default 127.0.0.1:8080)
    TEXTGEN_MAX_UPLOAD_BYTES  the largest text ``POST /api/v1/corpora`` takes (the server's limit too)

TEXTGEN_SERVER, TEXTGEN_TOKEN and TEXTGEN_CA_CERT are the client's: ``client.Client()`` reads them.
"""
from __future__ import annotations

import dataclasses
import os

from textgen import config
from textgen.config import ConfigError

DEFAULT_WEB_ADDR = "127.0.0.1:8080"


@dataclasses.dataclass(frozen=True)
class Settings:
    addr: str = DEFAULT_WEB_ADDR  # as given, for messages; ``host_port`` is what to bind
    max_upload_bytes: int = config.DEFAULT_MAX_UPLOAD_BYTES

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_addr(self.addr)

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        """Settings from ``env``; raises ConfigError naming a variable with a bad value."""
        addr = env.get("TEXTGEN_WEB_ADDR", DEFAULT_WEB_ADDR)
        parse_addr(addr)
        return cls(addr=addr, max_upload_bytes=config.max_upload_bytes(env))


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` (``[::1]:8080`` for IPv6) -> (host, port); ConfigError naming TEXTGEN_WEB_ADDR otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"TEXTGEN_WEB_ADDR={addr!r}: give host:port, like 127.0.0.1:8080 or 0.0.0.0:8080")
    return host.strip("[]") or "0.0.0.0", int(port)
