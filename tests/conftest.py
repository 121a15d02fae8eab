"""Shared fixtures: real text from ../shared/corpora and small real models trained on it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    both with sample_len 20 and a few epochs, so their predictions are far from uniform.
    """
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    models_dir = tmp_path_factory.mktemp("data") / "models"
    out = {"models_dir": models_dir}
    for key, name, sizes in (("one", "shake-one", (32,)), ("two", "shake-two", (32, 24))):
        config = TrainConfig(lstm_layer_sizes=sizes, sample_len=20, epochs=3, examples_per_epoch=2048,
                             batch_size=64, display_length=0, seed=7)
        result = train(shakespeare_text, config, corpus_name="tinyshakespeare")
        out[key], _version = export.publish(result.model, result.meta, models_dir, name)
    return out
