"""Small models trained once per test run, however many modules and xdist workers ask for them.

Each model folder is built by the first process that asks, under a file lock, in a cache folder that
every worker of the run shares; the others wait on the lock and then read the finished folder. The
cache lives under the run's own temporary directory, so a run never sees another run's models.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def cache_dir(tmp_path_factory) -> Path:
    """The run's shared cache folder: under the run's base temporary directory, which an xdist
    worker's own base temporary directory (``.../popen-gwN``) sits in."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / "trained-once"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def trained_once(tmp_path_factory, key: dict, build: Callable[[Path], None]) -> Path:
    """The folder that ``build(folder)`` fills for ``key`` (everything the models depend on: their
    training configs and text), built once per run; treat it as read-only and copy from it."""
    folder = cache_dir(tmp_path_factory)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    done = folder / digest
    with FileLock(str(folder / f"{digest}.lock")):
        if not done.is_dir():
            partial = folder / f"{digest}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(done)  # whole or not at all: a build that failed is done again by the next caller
    return done
