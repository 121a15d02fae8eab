"""The store's version policy (TF Serving's default): each model's latest version is loaded, an older
one only when a call asks for it by number, and at most TEXTGEN_OLDER_VERSIONS older ones stay loaded
(least recently used out); "all" loads every version. Every complete version is listed either way."""
from __future__ import annotations

import gc
import logging
import shutil
import time
import weakref

import pytest

from server.config import Settings, SettingsError
from server.engine import Engine, SamplingParams
from server.errors import ModelNotFound
from server.store import ModelStore, ServedModel


def publish_copies(trained_bundles, models_dir, versions):
    """Versions ``versions`` of model "m": odd ones a copy of shake-one, even ones of shake-two."""
    for version in versions:
        source = trained_bundles["one" if version % 2 else "two"]
        shutil.copytree(source, models_dir / "m" / str(version))


@pytest.fixture
def models_dir(trained_bundles, tmp_path):
    models_dir = tmp_path / "models"
    publish_copies(trained_bundles, models_dir, range(1, 6))
    return models_dir


def loaded_versions(store) -> list[int]:
    return sorted(v.version for _, versions in store.list_models() for v in versions if isinstance(v, ServedModel))


def test_only_the_latest_is_loaded_older_ones_on_request_and_at_most_n_stay(models_dir, caplog):
    store = ModelStore(models_dir, reload_seconds=3600, older_versions=2).start()
    try:
        [(name, versions)] = store.list_models()
        assert name == "m" and [v.version for v in versions] == [1, 2, 3, 4, 5]  # all listed
        assert loaded_versions(store) == [5] and store.loaded() == {"m": 1}
        assert store.get("m").version == 5

        with caplog.at_level(logging.INFO, logger="server.store"):
            for version in (2, 3, 4):  # asked for by number: loaded, and the oldest use goes past two
                model = store.get("m", version)
                assert model.version == version and model.path == models_dir / "m" / str(version)
                assert model.meta["lstm_layer_sizes"] == ([32] if version % 2 else [32, 24])
        assert loaded_versions(store) == [3, 4, 5] and store.loaded() == {"m": 3}
        assert "unloaded model m version 2 (the least recently used of the older versions loaded; " \
               "at most 2 stay loaded)" in caplog.text

        store.get("m", 3)  # a use: now 4 is the least recently used
        store.get("m", 1)
        assert loaded_versions(store) == [1, 3, 5]
        assert store.get("m", 2).version == 2  # unloaded is not gone: loaded again when asked
        assert loaded_versions(store) == [1, 2, 5]
    finally:
        store.close()


def test_a_new_version_becomes_latest_and_the_old_latest_an_older_one(trained_bundles, models_dir):
    store = ModelStore(models_dir, reload_seconds=3600, older_versions=1).start()
    try:
        publish_copies(trained_bundles, models_dir, [6])
        assert store.get("m", fresh=True).version == 6
        assert loaded_versions(store) == [5, 6]  # 5 stays loaded until a request needs the room

        assert store.delete("m", 6) == [6]
        assert store.get("m").version == 5 and loaded_versions(store) == [5]  # promoted, not reloaded
        assert store.delete("m", 5) == [5]
        assert store.get("m").version == 4 and loaded_versions(store) == [4]  # loaded at the delete

        shutil.rmtree(models_dir / "m" / "4")  # behind the store's back
        store.rescan()
        assert store.get("m").version == 3 and store.versions("m") == [1, 2, 3]
    finally:
        store.close()


def test_a_model_published_after_the_last_scan_can_be_deleted(trained_bundles, models_dir):
    store = ModelStore(models_dir, reload_seconds=3600).start()
    try:
        shutil.copytree(trained_bundles["one"], models_dir / "new" / "1")  # not scanned yet
        assert store.delete("new", all_versions=True) == [1]
        shutil.copytree(trained_bundles["one"], models_dir / "new" / "1")
        shutil.copytree(trained_bundles["one"], models_dir / "new" / "2")
        assert store.delete("new", 2) == [2]
        assert store.get("new").version == 1
    finally:
        store.close()


def test_zero_older_versions_serves_each_request_and_keeps_only_the_latest(models_dir):
    store = ModelStore(models_dir, reload_seconds=3600, older_versions=0).start()
    try:
        assert store.get("m", 2).version == 2
        assert loaded_versions(store) == [5]
    finally:
        store.close()


def test_the_all_policy_loads_every_version(trained_bundles, models_dir):
    store = ModelStore(models_dir, reload_seconds=3600, older_versions=None).start()
    try:
        assert loaded_versions(store) == [1, 2, 3, 4, 5] and store.loaded() == {"m": 5}
        publish_copies(trained_bundles, models_dir, [6])
        store.rescan()
        assert loaded_versions(store) == [1, 2, 3, 4, 5, 6]
    finally:
        store.close()


def test_an_older_version_that_does_not_load_is_refused_naming_the_others(models_dir, caplog):
    shutil.rmtree(models_dir / "m" / "2" / "saved_model")
    (models_dir / "m" / "2" / "saved_model").mkdir()  # complete in form, broken inside
    store = ModelStore(models_dir, reload_seconds=3600).start()
    try:
        assert store.versions("m") == [1, 2, 3, 4, 5]  # not loaded yet, so not known to be broken
        with caplog.at_level(logging.ERROR, logger="server.store"):
            with pytest.raises(ModelNotFound, match=r"^model 'm' has no version 2; available versions: 1, 3, 4, 5$"):
                store.get("m", 2)
        assert "skipping model m version 2" in caplog.text
        assert store.versions("m") == [1, 3, 4, 5]
        store.rescan()  # unchanged on disk: not listed again, not logged again
        assert caplog.text.count("skipping model m version 2") == 1
    finally:
        store.close()


def test_a_latest_that_does_not_load_leaves_the_one_below_it_latest(models_dir):
    shutil.rmtree(models_dir / "m" / "5" / "saved_model")
    (models_dir / "m" / "5" / "saved_model").mkdir()
    store = ModelStore(models_dir, reload_seconds=3600).start()
    try:
        assert store.get("m").version == 4 and store.versions("m") == [1, 2, 3, 4]
    finally:
        store.close()


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "graph"])
def test_an_unloaded_version_is_freed_after_serving_streams(models_dir, xla):
    """Nothing the engine keeps per model version (its decode functions and XLA programs, its prompt
    cache) holds an unloaded version in memory."""
    store = ModelStore(models_dir, reload_seconds=3600, older_versions=0).start()
    engine = Engine(xla=xla)
    try:
        model = store.get("m", 2)
        streams = [engine.submit(model, "ROMEO:", SamplingParams(40, 0.5, seed=seed)) for seed in range(3)]
        assert [len("".join(stream)) for stream in streams] == [40, 40, 40]
        unloaded = weakref.ref(model)
        del model, streams
        deadline = time.monotonic() + 10
        while unloaded() is not None and time.monotonic() < deadline:  # the batch retires on its own thread
            gc.collect()
            time.sleep(0.05)
        assert unloaded() is None, gc.get_referrers(unloaded())
    finally:
        engine.shutdown(1.0)
        store.close()


@pytest.mark.parametrize("raw, expected", [("", 2), ("0", 0), ("5", 5), ("all", None), ("ALL", None)])
def test_older_versions_setting(monkeypatch, raw, expected):
    monkeypatch.setenv("TEXTGEN_OLDER_VERSIONS", raw)
    assert Settings.from_env().older_versions == expected


@pytest.mark.parametrize("raw", ["-1", "two", "1.5"])
def test_a_bad_older_versions_setting_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("TEXTGEN_OLDER_VERSIONS", raw)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert str(caught.value) == f"TEXTGEN_OLDER_VERSIONS must be an integer >= 0 or 'all', got {raw!r}"
