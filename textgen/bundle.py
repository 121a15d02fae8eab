"""The model bundle as anyone reads it: what the trainer writes and the server serves (ARCHITECTURE.md).

``models/<name>/<version>/`` holds
- ``saved_model/``: a TensorFlow SavedModel with the functions
    ``predict(ids int32 [batch, time]) -> probs float32 [batch, charset]`` (the original's),
    ``start(prompt int32 [batch, sample_len], lengths int32 [batch]) -> state, phase, probs``,
    ``advance(state, phase, probs, temperature float32 [batch], top_k int32 [batch],
        top_p float32 [batch], uniforms float32 [batch, k]) -> state, phase, probs, ids int32 [batch, k],
        logprobs float32 [batch, k]``,
    ``score(state, phase, probs, ids int32 [batch, k]) -> state, phase, probs, logprobs float32 [batch, k]``
        (feeds GIVEN ids, reading each one's log-probability first; bundles written before it lack it:
        server/scoring.py),
    ``sample(probs, temperature, uniform, top_k, top_p) -> ids`` (the sampling rule) and
    ``charset() -> string``. Bundles exported before top_k/top_p existed (tests/fixtures/bundle-v1)
    have ``advance`` and ``sample`` without ``top_k``, ``top_p`` and ``logprobs``; the server serves
    them with temperature only;
- ``model.keras``: the Keras model, for continued training (stock Keras loads it, safe mode on);
- ``meta.json``: ``format``, ``charset``, ``sample_len``, ``lstm_layer_sizes``, ``objective``,
  ``corpus`` (name, sha256, characters), ``training`` (the options), ``epochs``, ``loss``,
  ``val_loss``, ``bits_per_char``, ``seed_slices``, ``created``, and once published ``name``,
  ``version`` and ``job_id`` when a job trained it.

Which versions exist, which is the latest, and how one is published and removed is the models
folder's business: textgen.models_dir.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from textgen.charset import Charset, CharsetError

FORMAT = "textgen-bundle/1"
SAVED_MODEL = "saved_model"
KERAS_FILE = "model.keras"
META_FILE = "meta.json"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class BundleError(ValueError):
    """A path that is not a readable bundle, or a bundle that cannot be written."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BundleError(
            f"invalid model name {short(name)}: use 1-64 characters from a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


REFERENCE_FORMS = "NAME, NAME:VERSION or NAME@latest"


def parse_reference(ref: str, version: int = 0) -> tuple[str, int]:
    """A model reference as ``(name, version)``, version 0 meaning the latest: ``NAME``, ``NAME:VERSION``
    (a version number >= 1) and ``NAME@latest`` mean the same everywhere a model is named. ``version``
    is a separate version field (0: unset); it must agree with a version the reference names.
    Raises BundleError saying what is wrong."""
    if not isinstance(ref, str):
        raise BundleError(f"a model is {REFERENCE_FORMS}, got {short(ref)}")
    name, named = ref, None
    if ref.endswith("@latest"):
        name, named = ref[: -len("@latest")], 0
    elif ":" in ref:
        name, _, text = ref.rpartition(":")
        if not (text.isascii() and text.isdigit() and text == str(int(text)) and int(text) >= 1):
            raise BundleError(f"a model is {REFERENCE_FORMS} with VERSION a number >= 1, got {short(ref)}")
        named = int(text)
    validate_name(name)
    if named is None or (version and named == version):
        return name, version
    if version and named != version:
        raise BundleError(f"model {short(ref)} names version {named or 'latest'}, but version {version} was also given")
    return name, named


def short(value, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def is_bundle(path: Path) -> bool:
    path = Path(path)
    return (path / META_FILE).is_file() and (path / SAVED_MODEL).is_dir()


def bundle_dir(path: Path) -> Path:
    """The bundle directory for ``path``, which may also name a file in it: the original's users
    point at ``./my-model/model.json``."""
    path = Path(path)
    if path.name in (META_FILE, KERAS_FILE, "model.json") and is_bundle(path.parent):
        return path.parent
    return path


def read_meta(path: Path) -> dict:
    """The bundle's ``meta.json`` (checked to carry a usable charset and sample_len)."""
    path = bundle_dir(path)
    if not path.exists():
        raise BundleError(f"model path {path} does not exist")
    if not is_bundle(path):
        raise BundleError(f"{path} is not a model bundle (expected {META_FILE} and {SAVED_MODEL}/ in it)")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        Charset(meta["charset"])
        int(meta["sample_len"])
    except (ValueError, KeyError, TypeError, CharsetError) as exc:
        raise BundleError(f"{path / META_FILE} is not a valid bundle description: {exc}") from None
    return meta


def seed_slice(meta: dict, seed: int) -> str | None:
    """The stored seed slice a prompt-less generation with ``seed`` starts from (None: there is none).

    One rule for the server and ``trainer gen``, so the same seed gives the same text from both.
    """
    charset = Charset(meta["charset"])
    slices = [s for s in meta.get("seed_slices") or [] if s and not charset.missing(s)]
    return slices[seed % len(slices)] if slices else None
