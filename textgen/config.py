"""Configuration from the environment, the same names in every process (ARCHITECTURE.md)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATA_DIR = "./var/data"
QUEUE_NAME = "training"


def redis_url() -> str:
    return os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)


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
