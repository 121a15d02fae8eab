"""The base model that ships with the project: what it is, what it was trained on, and installing it
as base-english without ever overwriting a user's model (issue 26)."""
from __future__ import annotations

import hashlib
import json
import shutil
import threading

import numpy as np
import pytest

from tests.conftest import SHARED_CORPORA
from textgen.charset import Charset
from textgen.models_dir import ModelsDir
from trainer import base_model, export
from trainer.worker import install_base_model

MAX_BYTES = 8 * 2**20


def test_the_shipped_base_model_is_small_and_records_its_recipe_and_texts():
    files = sorted(p.name for p in base_model.SHIPPED.iterdir())
    assert files == ["meta.json", "model.keras"]
    assert sum(p.stat().st_size for p in base_model.SHIPPED.iterdir()) <= MAX_BYTES
    meta = json.loads((base_model.SHIPPED / "meta.json").read_text(encoding="utf-8"))
    assert meta["lstm_layer_sizes"] == [224, 224] and meta["sample_len"] == 60
    assert meta["training"]["recipe"] == "fast" and meta["training"]["seed"] == 1
    assert meta["base"]["command"] == base_model.COMMAND and meta["base"]["options"] == base_model.OPTIONS
    assert [(t["file"], t["sha256"]) for t in meta["base"]["texts"]] == [(t.file, t.sha256) for t in base_model.TEXTS]
    texts = base_model.read_texts(SHARED_CORPORA)  # the texts it names are the shared corpora, byte for byte
    assert meta["corpus"]["sha256"] == hashlib.sha256(base_model.training_text(texts).encode()).hexdigest()
    assert meta["charset"] == Charset.of_text(base_model.training_text(texts)).chars


def test_the_base_model_knows_english_on_text_it_was_not_trained_on():
    """The held-out end of each of its texts (not trained on): far better than a model that knows
    only which characters are common (about 3.3 nats per character on these texts)."""
    model, meta = base_model.load()
    charset, n = Charset(meta["charset"]), meta["sample_len"]
    for t in base_model.TEXTS:
        held = base_model.split(base_model.read_texts(SHARED_CORPORA)[t.file])[1][:3000]
        x = np.stack([charset.encode(held[j - n : j]) for j in range(n, len(held))])
        y = charset.encode(held[n:])
        nats = -np.mean(np.log(model.predict(x, batch_size=512, verbose=0)[np.arange(len(y)), y]))
        assert nats < 1.75, (t.file, nats)


def test_the_recorded_texts_are_checked_before_training(tmp_path):
    with pytest.raises(base_model.BaseModelError, match=r"nietzsche.txt is missing: the base model trains on "
                                                        r"nietzsche.txt, tinyshakespeare.txt"):
        base_model.read_texts(tmp_path)
    for t in base_model.TEXTS:
        shutil.copyfile(SHARED_CORPORA / t.file, tmp_path / t.file)
    (tmp_path / "tinyshakespeare.txt").write_text("not Shakespeare", encoding="utf-8")
    with pytest.raises(base_model.BaseModelError, match=r"tinyshakespeare.txt has sha256 [0-9a-f]{64}, not the "
                                                        r"recorded 86c4e6aa"):
        base_model.read_texts(tmp_path)


def test_install_publishes_it_once_and_never_over_a_users_model(tmp_path, trained_bundles):
    models = tmp_path / "models"
    results = []
    threads = [threading.Thread(target=lambda: results.append(base_model.install(models))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=str) == [1, None]  # two workers starting at once: one installs it
    assert ModelsDir(models).complete_versions("base-english") == [1]
    served, meta = export.load_keras(models / "base-english" / "1")
    shipped, _ = base_model.load()
    for a, b in zip(served.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert meta["name"] == "base-english" and meta["version"] == 1
    # Deleted by its user, it stays deleted.
    ModelsDir(models).delete("base-english")
    assert base_model.install(models) is None and not (models / "base-english").exists()
    # A user's own model of that name is left as it is.
    users = tmp_path / "users-models"
    shutil.copytree(trained_bundles["one"], users / "base-english" / "1")
    before = (users / "base-english" / "1" / "meta.json").read_bytes()
    assert base_model.install(users) is None
    assert (users / "base-english" / "1" / "meta.json").read_bytes() == before
    assert ModelsDir(users).complete_versions("base-english") == [1]


def test_the_worker_installs_it_unless_told_not_to(tmp_path):
    assert install_base_model({"TEXTGEN_BASE_MODEL": "off"}) is None
    assert install_base_model({"TEXTGEN_BASE_MODEL": ""}) is None
    env = {"TEXTGEN_BASE_MODEL": "english-2", "TEXTGEN_DATA_DIR": str(tmp_path)}
    import os

    process = install_base_model({**os.environ, **env})
    assert process.wait(timeout=120) == 0
    assert ModelsDir(tmp_path / "models").complete_versions("english-2") == [1]
