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
