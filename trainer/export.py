"""Writing model bundles: export the serving SavedModel, write a bundle, publish it as a model's next
version (one bundle's layout: textgen.bundle; the models folder's rules: textgen.models_dir).

A bundle is written under a temporary name beside its destination and put in place with one
``rename``, so a reader never sees half a bundle.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from textgen.bundle import FORMAT, KERAS_FILE, META_FILE, SAVED_MODEL, BundleError, bundle_dir, is_bundle, read_meta
from textgen.charset import Charset
from textgen.models_dir import TMP_PREFIX, ModelsDir


def export_saved_model(model, sample_len: int, charset: Charset, path: Path) -> None:
    """Write ``model`` (either objective) as a SavedModel with the serving functions at ``path``."""
    from textgen.sampling import sample_ids
    from trainer.decode import PipelinedDecoder
    from trainer.model import with_objective
    from trainer.tf import keras, tf

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
    top_k_spec = tf.TensorSpec([None], tf.int32, name="top_k")
    top_p_spec = tf.TensorSpec([None], tf.float32, name="top_p")
    archive.add_endpoint(
        "advance",
        lambda state, phase, probs, temperature, top_k, top_p, uniforms: dict(
            zip(("state", "phase", "probs", "ids", "logprobs"),
                decoder.advance_with_logprobs(state, phase, probs, temperature, uniforms, top_k, top_p))
        ),
        input_signature=[
            state_spec, phase_spec, probs_spec,
            tf.TensorSpec([None], tf.float32, name="temperature"), top_k_spec, top_p_spec,
            tf.TensorSpec([None, None], tf.float32, name="uniforms"),
        ],
    )
    def charset_spec(name):
        return tf.TensorSpec([None, decoder.charset_size], tf.float32, name=name)

    def batch_float_named(name):
        return tf.TensorSpec([None], tf.float32, name=name)

    archive.add_endpoint(
        "advance_penalized",
        lambda state, phase, probs, temperature, top_k, top_p, uniforms, counts, seen, presence, frequency, repetition,
        bias: dict(zip(("state", "phase", "probs", "ids", "logprobs", "counts", "seen", "top_ids", "top_logprobs"),
                       decoder.advance_penalized(state, phase, probs, temperature, uniforms, top_k, top_p, counts, seen,
                                                 presence, frequency, repetition, bias))),
        input_signature=[
            state_spec, phase_spec, probs_spec,
            tf.TensorSpec([None], tf.float32, name="temperature"), top_k_spec, top_p_spec,
            tf.TensorSpec([None, None], tf.float32, name="uniforms"),
            charset_spec("counts"), charset_spec("seen"), batch_float_named("presence"),
            batch_float_named("frequency"), batch_float_named("repetition"), charset_spec("bias"),
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
        lambda probs, temperature, uniform, top_k, top_p: {"ids": sample_ids(probs, temperature, uniform, top_k, top_p)},
        input_signature=[probs_spec, batch_float, batch_float, top_k_spec, top_p_spec],
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
    models = ModelsDir(models_dir)
    staged = write_bundle(model, {**meta, "name": name}, models.staging_path(name))
    return models.publish(name, staged)


def load_keras(path: Path):
    """The bundle's Keras model and meta, for continued training or local generation."""
    from trainer.model import upgraded  # also registers the old one-hot layer for older bundles
    from trainer.tf import keras

    path = bundle_dir(path)
    meta = read_meta(path)
    try:
        model = keras.saving.load_model(path / KERAS_FILE, safe_mode=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise BundleError(f"cannot load {path / KERAS_FILE}: {exc}") from None
    return upgraded(model), meta


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
