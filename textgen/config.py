"""Configuration from the environment, the same names in every process (ARCHITECTURE.md), and the
one way a process reads a number, a switch or a path from it (``env_int`` and friends: a bad value
raises ConfigError naming the variable)."""
from __future__ import annotations

import math
import os
from pathlib import Path

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATA_DIR = "./var/data"
QUEUE_NAME = "training"
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024


class ConfigError(ValueError):
    """An environment variable with a value the process cannot use; the message names it."""


def max_upload_bytes(env=os.environ) -> int:
    """TEXTGEN_MAX_UPLOAD_BYTES: the largest corpus an upload may have (the server's UploadCorpus and
    the web process's ``POST /api/v1/corpora`` both hold to it)."""
    return env_int(env, "TEXTGEN_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)


def env_int(env, name: str, default: int, least: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least:
        what = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ConfigError(f"{name} must be {what}, got {raw!r}")
    return value


def env_seconds(env, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def env_switch(env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw not in ("0", "1"):
        raise ConfigError(f"{name} must be 1 (on) or 0 (off), got {raw!r}")
    return raw == "1"


def env_path(env, name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def redis_url() -> str:
    return os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)


def redis_options(env=os.environ) -> dict:
    """What every process adds to REDIS_URL when it connects (keyword arguments of ``Redis.from_url``):

    - REDIS_PASSWORD_FILE: a file holding Redis' password (compose's generated one, a Kubernetes
      Secret), used when REDIS_URL carries none, so that the password is in no environment variable;
    - REDIS_CA_CERT: a PEM file of the CA that signed a ``rediss://`` Redis' certificate.

    ConfigError naming the variable when its file cannot be read."""
    options = {}
    path = env_path(env, "REDIS_PASSWORD_FILE")
    if path is not None:
        try:
            options["password"] = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read REDIS_PASSWORD_FILE {path}: {exc.strerror}") from None
    ca = env_path(env, "REDIS_CA_CERT")
    if ca is not None:
        if not ca.is_file():
            raise ConfigError(f"REDIS_CA_CERT {ca} is not a readable file (a PEM CA certificate for rediss://)")
        options["ssl_ca_certs"] = str(ca)
    return options


def redis_client(url: str | None = None, **kwargs):
    """A redis-py client for ``url`` (default REDIS_URL) with ``redis_options()`` and ``kwargs``."""
    import redis

    url = url or redis_url()
    options = redis_options()
    if not url.startswith("rediss://"):
        options.pop("ssl_ca_certs", None)
    return redis.Redis.from_url(url, **options, **kwargs)


def data_dir() -> Path:
    return Path(os.environ.get("TEXTGEN_DATA_DIR", DEFAULT_DATA_DIR))


def models_dir() -> Path:
    return data_dir() / "models"


def corpora_dir() -> Path:
    return data_dir() / "corpora"


def checkpoints_dir() -> Path:
    return data_dir() / "checkpoints"


def redis_address(url: str) -> str:
    """``host:port/db`` of a Redis URL, for messages: never the password it may carry."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        db = parts.path.lstrip("/") or "0"
        return f"{host}:{parts.port or 6379}/{db}" if parts.scheme != "unix" else f"unix:{parts.path}"
    except ValueError:
        return "(unparseable REDIS_URL)"
