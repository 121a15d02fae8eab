"""The model bundle: what the trainer writes and the server reads (ARCHITECTURE.md).

``<bundle>/`` holds
- ``saved_model/``: a TensorFlow SavedModel with the functions
    ``predict(ids int32 [batch, time]) -> probs float32 [batch, charset]`` (the original's),
    ``start(prompt int32 [batch, sample_len], lengths int32 [batch]) -> state, phase, probs``,
    ``advance(state, phase, probs, temperature float32 [batch], uniforms float32 [batch, k])
        -> state, phase, probs, ids int32 [batch, k]``,
    ``score(state, phase, probs, ids int32 [batch, k]) -> state, phase, probs, logprobs float32 [batch, k]``
        (feeds GIVEN ids, reading each one's log-probability first: server/scoring.py),
    ``sample(probs, temperature, uniform) -> ids`` (the sampling rule) and ``charset() -> string``;
- ``model.keras``: the Keras model, for continued training (loads with safe mode on);
- ``meta.json``: charset, sample_len, layer sizes, corpus, training config, losses, seed slices...

A bundle is written under a temporary name beside its destination and published with one
``rename``, so a reader never sees half a bundle.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from trainer.dataset import Charset

# The server reads bundles with this module; the model, decoder and Keras imports stay inside the
# functions that write or load Keras models, so reading a bundle never loads training code.

FORMAT = "textgen-bundle/1"
SAVED_MODEL = "saved_model"
KERAS_FILE = "model.keras"
META_FILE = "meta.json"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TMP_PREFIX = ".tmp-"
LAST_VERSION_FILE = ".last-version"  # numbers are never reused, even after a version is deleted


class BundleError(ValueError):
    """A path that is not a readable bundle, or a bundle that cannot be written."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BundleError(
            f"invalid model name {_short(name)}: use 1-64 characters from a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def export_saved_model(model, sample_len: int, charset: Charset, path: Path) -> None:
    """Write ``model`` (either objective) as a SavedModel with the serving functions at ``path``."""
    import keras
    import tensorflow as tf

    from trainer.decode import PipelinedDecoder
    from trainer.model import with_objective
    from trainer.sampling import sample_ids

    model = with_objective(model, all_positions=False)
    decoder = PipelinedDecoder(model, sample_len)
    state_spec = tf.TensorSpec([None, sample_len, decoder.state_size], tf.float32, name="state")
    phase_spec = tf.TensorSpec([None], tf.int32, name="phase")
    probs_spec = tf.TensorSpec([None, decoder.charset_size], tf.float32, name="probs")
    batch_float = tf.TensorSpec([None], tf.float32)
    chars = tf.constant(charset.chars)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "predict",
        lambda ids: {"probs": model(ids, training=False)},
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")],
    )
    archive.add_endpoint(
        "start",
        lambda prompt, lengths: dict(zip(("state", "phase", "probs"), decoder.start(prompt, lengths))),
        input_signature=[
            tf.TensorSpec([None, sample_len], tf.int32, name="prompt"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
        ],
    )
    archive.add_endpoint(
        "advance",
        lambda state, phase, probs, temperature, uniforms: dict(
            zip(("state", "phase", "probs", "ids"), decoder.advance(state, phase, probs, temperature, uniforms))
        ),
        input_signature=[
            state_spec, phase_spec, probs_spec,
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None, None], tf.float32, name="uniforms"),
        ],
    )
    archive.add_endpoint(
        "score",
        lambda state, phase, probs, ids: dict(
            zip(("state", "phase", "probs", "logprobs"), decoder.score(state, phase, probs, ids))
        ),
        input_signature=[state_spec, phase_spec, probs_spec, tf.TensorSpec([None, None], tf.int32, name="ids")],
    )
    archive.add_endpoint(
        "sample",
        lambda probs, temperature, uniform: {"ids": sample_ids(probs, temperature, uniform)},
        input_signature=[probs_spec, batch_float, batch_float],
    )
    archive.add_endpoint("charset", lambda: {"charset": chars}, input_signature=[])
    archive.write_out(str(path), verbose=False)


def write_bundle(model, meta: dict, dest: Path) -> Path:
    """Write a complete bundle into ``dest`` (which must not exist yet) via a temporary sibling.

    ``meta`` must hold at least ``charset`` and ``sample_len``. Returns ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{TMP_PREFIX}{dest.name.removeprefix(TMP_PREFIX)}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        from trainer.model import with_objective

        charset = Charset(meta["charset"])
        export_saved_model(model, meta["sample_len"], charset, tmp / SAVED_MODEL)
        with_objective(model, all_positions=False).save(tmp / KERAS_FILE)
        meta = {"format": FORMAT, "created": time.time(), **meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        os.rename(tmp, dest)
    except OSError as exc:  # a full disk, a read-only volume: say where, keep nothing half-written
        shutil.rmtree(tmp, ignore_errors=True)
        raise BundleError(f"cannot write the model bundle in {dest.parent}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def save_to_path(model, meta: dict, path: Path) -> Path:
    """``--save-path``: write the bundle at ``path``, replacing a bundle already there (never a
    directory that holds something else)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or is_bundle(path))):
        raise BundleError(f"{path} exists and is not a model bundle; refusing to overwrite it")
    if not path.exists():
        return write_bundle(model, meta, path)
    staged = write_bundle(model, meta, path.parent / f"{TMP_PREFIX}{path.name}-new")
    old = path.parent / f"{TMP_PREFIX}{path.name}-old-{uuid.uuid4().hex[:8]}"
    os.rename(path, old)
    os.rename(staged, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def publish(model, meta: dict, models_dir: Path, name: str) -> tuple[Path, int]:
    """Publish under ``models_dir/name/<next version>/``; returns (path, version)."""
    validate_name(name)
    parent = Path(models_dir) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot write the model bundle in {parent}: {exc.strerror or exc}") from exc
    staged = write_bundle(model, {**meta, "name": name}, parent / f"{TMP_PREFIX}staged-{uuid.uuid4().hex[:8]}")
    try:
        while True:
            version = max(list_versions(parent) + [_last_version(parent)]) + 1
            final = parent / str(version)
            meta_path = staged / META_FILE
            staged_meta = json.loads(meta_path.read_text(encoding="utf-8"))
            staged_meta["version"] = version
            meta_path.write_text(json.dumps(staged_meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            try:
                os.mkdir(final)  # claims the version number; another publisher gets the next one
            except FileExistsError:
                continue
            os.rename(staged, final)  # replaces the empty directory we just made, atomically
            _record_last_version(parent, version)
            return final, version
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _last_version(parent: Path) -> int:
    """The highest version ever published under ``parent``, deleted ones included (0: none)."""
    try:
        return int((parent / LAST_VERSION_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _record_last_version(parent: Path, version: int) -> None:
    """Remember ``version`` so a deleted version's number is never given to another model."""
    if version <= _last_version(parent):
        return
    tmp = parent / f"{TMP_PREFIX}last-version-{uuid.uuid4().hex[:8]}"
    tmp.write_text(f"{version}\n")
    os.replace(tmp, parent / LAST_VERSION_FILE)


def sweep_leftovers(models_dir: Path, older_than: float = 3600.0) -> list[Path]:
    """Remove what killed publishers left behind: ``.tmp-*`` entries and empty version folders
    (claimed, never filled) older than ``older_than`` seconds. Returns what was removed."""
    removed, now = [], time.time()
    for parent in Path(models_dir).glob("*/"):
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue  # deleted meanwhile by another process sharing the volume
        for entry in entries:
            try:  # another publisher or the server may be moving these right now
                leftover = entry.name.startswith(TMP_PREFIX) or (
                    entry.name.isdigit() and entry.is_dir() and not any(entry.iterdir()))
                if leftover and now - entry.lstat().st_mtime > older_than:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                    removed.append(entry)
            except OSError:
                continue  # gone already, or not ours to remove: the next sweep tries again
    return removed


def list_versions(parent: Path) -> list[int]:
    """Version numbers present under a model's directory (complete or being claimed), sorted."""
    try:
        return sorted(int(p.name) for p in Path(parent).iterdir() if p.name.isdigit())
    except FileNotFoundError:
        return []


def is_bundle(path: Path) -> bool:
    path = Path(path)
    return (path / META_FILE).is_file() and (path / SAVED_MODEL).is_dir()


def read_meta(path: Path) -> dict:
    path = bundle_dir(path)
    if not path.exists():
        raise BundleError(f"model path {path} does not exist")
    if not is_bundle(path):
        raise BundleError(f"{path} is not a model bundle (expected {META_FILE} and {SAVED_MODEL}/ in it)")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        Charset(meta["charset"])
        int(meta["sample_len"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path / META_FILE} is not a valid bundle description: {exc}") from None
    return meta


def seed_slice(meta: dict, seed: int) -> str | None:
    """The stored seed slice a prompt-less generation with ``seed`` starts from (None: there is none).

    One rule for the server and ``trainer gen``, so the same seed gives the same text from both.
    """
    charset = Charset(meta["charset"])
    slices = [s for s in meta.get("seed_slices") or [] if s and not charset.missing(s)]
    return slices[seed % len(slices)] if slices else None


def complete_versions(parent: Path) -> list[int]:
    """Versions under a model's folder that are whole bundles (not a number being claimed), sorted."""
    return [v for v in list_versions(parent) if is_bundle(Path(parent) / str(v))]


def bundle_dir(path: Path) -> Path:
    """The bundle directory for ``path``, which may also name a file in it: the original's users
    point at ``./my-model/model.json``."""
    path = Path(path)
    if path.name in (META_FILE, KERAS_FILE, "model.json") and is_bundle(path.parent):
        return path.parent
    return path


def load_keras(path: Path):
    """The bundle's Keras model and meta, for continued training or local generation."""
    import keras

    from trainer.model import OneHot  # noqa: F401  (registers the layer for safe-mode loading)

    path = bundle_dir(path)
    meta = read_meta(path)
    try:
        model = keras.saving.load_model(path / KERAS_FILE, safe_mode=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise BundleError(f"cannot load {path / KERAS_FILE}: {exc}") from None
    return model, meta


def _fsync_tree(root: Path) -> None:
    """Flush a bundle's files and directories so the rename publishes data that is on disk."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
