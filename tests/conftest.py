"""Shared fixtures: real text from ../shared/corpora and small real models trained on it."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests import figures
from tests.model_cache import trained_once

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Workers started by tests do not install the shipped base model (tests/test_base_model.py turns it on).
os.environ["TEXTGEN_BASE_MODEL"] = "off"

SHARED_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
if not SHARED_CORPORA.is_dir():  # CI clones main next to shared/, as the work tree is
    SHARED_CORPORA = Path(os.environ.get("TEXTGEN_SHARED_CORPORA", "/work/shared/corpora"))


def corpus_text(name: str, chars: int | None = None) -> str:
    """The first ``chars`` characters of a shared reference corpus (``tinyshakespeare``, ...)."""
    text = (SHARED_CORPORA / f"{name}.txt").read_text(encoding="utf-8")
    return text if chars is None else text[:chars]


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    return corpus_text("tinyshakespeare", 60_000)


@pytest.fixture(scope="session")
def trained_bundles(tmp_path_factory, shakespeare_text):
    """Two small real models trained on Shakespeare and published in a models directory.

    Returns ``{"models_dir": Path, "one": Path, "two": Path}``: ``one`` is a one-layer LSTM(32)
    published as ``shake-one`` version 1, ``two`` a two-layer LSTM(32, 24) as ``shake-two`` version 1,
    both with sample_len 20 and a few epochs, so their predictions are far from uniform. They are
    trained once per run (tests/model_cache.py); each session gets its own copy of the folder.
    """
    from dataclasses import asdict

    from textgen.options import TrainConfig

    configs = {name: TrainConfig(lstm_layer_sizes=sizes, sample_len=20, epochs=3, examples_per_epoch=2048,
                                 batch_size=64, display_length=0, seed=7)
               for name, sizes in (("shake-one", (32,)), ("shake-two", (32, 24)))}

    def train_and_publish(models_dir: Path) -> None:
        from trainer import export
        from trainer.training import train

        for name, config in configs.items():
            result = train(shakespeare_text, config, corpus_name="tinyshakespeare")
            export.publish(result.model, result.meta, models_dir, name)

    key = {"text": ("tinyshakespeare", len(shakespeare_text)),
           "models": {name: asdict(config) for name, config in configs.items()}}
    models_dir = tmp_path_factory.mktemp("data") / "models"
    shutil.copytree(trained_once(tmp_path_factory, key, train_and_publish), models_dir)
    return {"models_dir": models_dir, "one": models_dir / "shake-one" / "1", "two": models_dir / "shake-two" / "1"}


# ---- running in parallel (tests/parallel.py) ---------------------------------------------------------

@pytest.fixture(scope="module")
def stub(server):
    """A TextGen stub on the module's ``server`` fixture (a started TextGenServer)."""
    from tests.server_helpers import connect

    channel, stub = connect(server)
    yield stub
    channel.close()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects the same, so sorts the same
        from tests.parallel import heaviest_first

        heaviest_first(items)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.parallel import ModuleScheduling

    return ModuleScheduling(config, log)


# ---- the reliability figures board (tests/figures.py) ------------------------------------------------

_SESSION_STARTED: list[float] = []


def pytest_sessionstart(session):
    _SESSION_STARTED.append(time.monotonic())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    figures._running.append(item)
    try:
        return (yield)
    finally:
        figures._running.pop()


def pytest_runtest_logreport(report):
    figures.take(report)  # under xdist, in the process that prints: the reports come from the workers


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not figures.FIGURES:
        return
    terminalreporter.section("reliability figures")
    for section, lines in figures.FIGURES.items():
        for line in lines:
            terminalreporter.write_line(f"{section}: {line}")
    terminalreporter.write_line(f"(session wall time so far: {time.monotonic() - _SESSION_STARTED[0]:.1f} s)")
