"""The models folder's rules (textgen.models_dir): what a version folder is, which versions are complete,
how numbers are claimed and never reused, deleting, sweeping leftovers, finding a job's version.

Real folders in tmp_path. A bundle here is ``meta.json`` and an empty ``saved_model/``: it satisfies
``textgen.bundle.is_bundle`` and no test loads it (real bundles are published in test_trainer.py and
tests/reliability/test_publish_crash.py).
"""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from textgen.bundle import BundleError
from textgen.models_dir import LAST_VERSION_FILE, ModelsDir, NoSuchModel, NoSuchVersion, version_number

NAME = "shake"


def fake_bundle(path, **meta):
    (path / "saved_model").mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"charset": "ab", "sample_len": 3, **meta}))
    return path


def publish(models: ModelsDir, name: str = NAME, **meta) -> int:
    """Stage a bundle where the folder says and publish it; returns its version."""
    _path, version = models.publish(name, fake_bundle(models.staging_path(name), **meta))
    return version


@pytest.mark.parametrize("name, version", [("1", 1), ("12", 12), ("1000", 1000)])
def test_a_canonical_decimal_from_1_names_a_version(name, version):
    assert version_number(name) == version


@pytest.mark.parametrize("name", ["0", "007", "01", "1a", "-1", "+1", " 1", "", "\u0661", ".tmp-staged-1"])
def test_anything_else_names_no_version(name):
    assert version_number(name) is None


def test_only_version_folders_are_versions(tmp_path):
    for entry in ["1", "12", "0", "007", "1a", "-1", ".tmp-staged-3"]:
        (tmp_path / NAME / entry).mkdir(parents=True)
    assert ModelsDir(tmp_path).versions(NAME) == [1, 12]


def test_a_claimed_version_is_listed_but_not_complete_and_not_the_latest(tmp_path):
    models = ModelsDir(tmp_path)
    fake_bundle(tmp_path / NAME / "1")
    (tmp_path / NAME / "2").mkdir()  # claimed by a publisher, not filled yet
    assert models.versions(NAME) == [1, 2]
    assert models.complete_versions(NAME) == [1]
    assert models.resolve(NAME) == (tmp_path / NAME / "1", 1)
    with pytest.raises(NoSuchVersion, match="model 'shake' has no version 2; it has 1") as caught:
        models.resolve(NAME, 2)
    assert caught.value.versions == [1]


def test_a_model_with_no_complete_version_is_no_model(tmp_path):
    (tmp_path / NAME / "1").mkdir(parents=True)
    with pytest.raises(NoSuchModel, match="no model named 'shake'") as caught:
        ModelsDir(tmp_path).resolve(NAME, 1)
    assert caught.value.versions == []
    with pytest.raises(NoSuchModel):
        ModelsDir(tmp_path).resolve("ghost")


def test_names_are_the_model_folders_with_valid_names(tmp_path):
    for entry in ["b-model", "a.model", ".tmp-x", "Upper"]:
        (tmp_path / entry).mkdir()
    (tmp_path / "a-file").write_text("")
    assert ModelsDir(tmp_path).names() == ["a.model", "b-model"]
    assert ModelsDir(tmp_path / "missing").names() == []


@pytest.mark.parametrize("name", ["../etc", "", "A", "a/b"])
def test_no_path_is_built_from_a_bad_name(tmp_path, name):
    with pytest.raises(BundleError, match="invalid model name"):
        ModelsDir(tmp_path).versions(name)


def test_publishing_numbers_versions_and_writes_the_number_into_meta(tmp_path):
    models = ModelsDir(tmp_path)
    assert [publish(models), publish(models)] == [1, 2]
    assert sorted(p.name for p in (tmp_path / NAME).iterdir()) == [LAST_VERSION_FILE, "1", "2"]
    assert json.loads((tmp_path / NAME / "2" / "meta.json").read_text())["version"] == 2
    assert (tmp_path / NAME / LAST_VERSION_FILE).read_text() == "2\n"


def test_a_claimed_number_is_skipped(tmp_path):
    (tmp_path / NAME / "1").mkdir(parents=True)  # another publisher's claim
    assert publish(ModelsDir(tmp_path)) == 2


def test_racing_publishers_get_distinct_numbers(tmp_path):
    models, count = ModelsDir(tmp_path), 8
    staged = [fake_bundle(models.staging_path(NAME), job_id=f"job-{i}") for i in range(count)]
    start, versions = threading.Barrier(count), []

    def publisher(path):
        start.wait()
        versions.append(models.publish(NAME, path)[1])

    threads = [threading.Thread(target=publisher, args=(path,)) for path in staged]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(1, count + 1))
    assert models.complete_versions(NAME) == list(range(1, count + 1))
    for version in versions:  # each folder's meta says its own number
        assert json.loads((tmp_path / NAME / str(version) / "meta.json").read_text())["version"] == version


def test_a_publish_that_fails_leaves_nothing_staged(tmp_path):
    models = ModelsDir(tmp_path)
    staged = models.staging_path(NAME)
    staged.mkdir()  # no meta.json: the number cannot be written into it
    with pytest.raises(FileNotFoundError):
        models.publish(NAME, staged)
    assert list((tmp_path / NAME).iterdir()) == []


def test_a_deleted_number_is_never_reused(tmp_path):
    models = ModelsDir(tmp_path)
    publish(models)
    publish(models)
    assert models.delete(NAME, 2) == [2]
    assert not (tmp_path / NAME / "2").exists()
    assert publish(models) == 3


def test_delete_takes_complete_versions_only_and_says_which_there_are(tmp_path):
    models = ModelsDir(tmp_path)
    publish(models)
    (tmp_path / NAME / "2").mkdir()  # claimed: a publish in progress
    with pytest.raises(NoSuchVersion) as caught:
        models.delete(NAME, 2)
    assert caught.value.versions == [1]
    with pytest.raises(NoSuchModel):
        models.delete("ghost")
    assert models.versions(NAME) == [1, 2]


def test_deleting_every_version_forgets_the_numbering_and_the_folder(tmp_path):
    models = ModelsDir(tmp_path)
    for _ in range(3):
        publish(models)
    models.delete(NAME, 3)
    assert models.delete(NAME) == [1, 2]
    assert not (tmp_path / NAME).exists()
    assert publish(models) == 1


def test_deleting_every_version_keeps_the_folder_of_a_publish_in_progress(tmp_path):
    models = ModelsDir(tmp_path)
    publish(models)
    staged = fake_bundle(models.staging_path(NAME))
    assert models.delete(NAME) == [1]
    assert sorted(p.name for p in (tmp_path / NAME).iterdir()) == [staged.name]  # no .last-version
    assert models.publish(NAME, staged)[1] == 1


def test_leftovers_of_killed_publishes_are_swept_once_old(tmp_path):
    parent = tmp_path / "m"
    (parent / "1").mkdir(parents=True)
    (parent / "1" / "meta.json").write_text("{}")  # a real version: kept
    (parent / "2").mkdir()  # claimed, never filled
    (parent / ".tmp-staged-abc").mkdir()
    (parent / ".tmp-deleted-3-abc").mkdir()  # a delete interrupted before its removal
    (parent / ".last-version").write_text("2\n")
    old = time.time() - 7200
    for entry in parent.iterdir():
        os.utime(entry, (old, old))
    assert sorted(p.name for p in ModelsDir(tmp_path).sweep(older_than=3600)) == [
        ".tmp-deleted-3-abc", ".tmp-staged-abc", "2"]
    assert sorted(p.name for p in parent.iterdir()) == [".last-version", "1"]
    (parent / ".tmp-fresh").mkdir()  # a publish in progress now: left alone
    (parent / "4").mkdir()  # claimed just now
    assert ModelsDir(tmp_path).sweep(older_than=3600) == []


def test_the_version_a_job_published_is_found_by_its_job_id(tmp_path):
    models = ModelsDir(tmp_path)
    publish(models, job_id="job-a")
    publish(models, job_id="job-b")
    publish(models)  # trained by `trainer train`, no job
    (tmp_path / NAME / "4").mkdir()  # claimed, not a version yet
    assert models.published_by(NAME, "job-b") == 2
    assert models.published_by(NAME, "job-c") is None
    assert models.published_by("ghost", "job-a") is None
