"""The model store: every complete bundle under ``models/<name>/<version>/``, loaded and kept current.

Like TF Serving's model base path: integer version folders, "latest" is the highest one loaded. What
is a version on disk, and how one is deleted, is textgen.models_dir's; this store keeps what it loaded.
A background thread rescans every ``reload_seconds`` (and a lookup that misses rescans that name at
once), so a version published by the trainer appears and a deleted one disappears without a restart.
A bundle that fails to load is logged once and skipped: never served, never fatal.

Names from requests are validated before any path is built from them, so no path leaves the store.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from server.errors import BadRequest, ModelNotFound, StorageFailed, listed
from textgen.bundle import META_FILE, SAVED_MODEL, BundleError, read_meta, seed_slice, validate_name
from textgen.charset import Charset
from textgen.models_dir import DeleteFailed, ModelsDir, NoSuchModel, NoSuchVersion

log = logging.getLogger(__name__)

SERVING_FUNCTIONS = ("predict", "start", "advance", "sample", "charset")


@dataclasses.dataclass(frozen=True, eq=False)
class ServedModel:
    """One loaded model version.

    ``functions`` is the bundle's SavedModel: ``start``, ``advance``, ``predict``, ``sample`` and
    ``charset``, each taking and returning tensors by name (textgen/bundle.py has their shapes).
    """

    name: str
    version: int
    path: Path
    meta: dict
    charset: Charset
    sample_len: int
    functions: object
    _codepoints: np.ndarray = dataclasses.field(repr=False)
    controls: bool = False  # advance takes top_k and top_p and returns logprobs (bundles exported since)

    def encode(self, text: str) -> np.ndarray:
        """``text`` as int32 ids ``[len(text)]`` (every character must be in the charset)."""
        return self.charset.encode(text)

    def decode(self, ids: np.ndarray) -> str:
        """Ids ``[n]`` to text, without a Python step per character."""
        return self._codepoints[ids].tobytes().decode("utf-32-le")

    def seed_slice(self, seed: int) -> str | None:
        return seed_slice(self.meta, seed)


def load_model(path: Path, name: str, version: int) -> ServedModel:
    """Load the bundle at ``path`` and run its functions once; raises on anything unusable."""
    path = Path(path)
    meta = read_meta(path)
    functions = tf.saved_model.load(str(path / SAVED_MODEL))
    missing = [fn for fn in SERVING_FUNCTIONS if not hasattr(functions, fn)]
    if missing:
        raise BundleError(f"{path / SAVED_MODEL} lacks the serving functions {', '.join(missing)}")
    charset = Charset(meta["charset"])
    exported = functions.charset()["charset"].numpy().decode("utf-8")
    if exported != charset.chars:
        raise BundleError(f"{path}: the SavedModel's charset differs from {META_FILE}'s")
    sample_len = int(meta["sample_len"])
    # The first call of a restored function builds it; do that now rather than in a user's request.
    state = functions.start(prompt=tf.zeros([1, sample_len], tf.int32), lengths=tf.ones([1], tf.int32))
    controls = takes_controls(functions.advance)
    extra = dict(top_k=tf.zeros([1], tf.int32), top_p=tf.ones([1])) if controls else {}
    functions.advance(**state, temperature=tf.zeros([1]), uniforms=tf.zeros([1, 1]), **extra)
    codepoints = np.array([ord(c) for c in charset.chars], dtype="<u4")
    return ServedModel(name, version, path, meta, charset, sample_len, functions, codepoints, controls)


def takes_controls(advance) -> bool:
    """Whether a bundle's ``advance`` takes ``top_k`` and ``top_p`` (and returns ``logprobs``): bundles
    exported before those controls existed have only temperature."""
    signature = advance.concrete_functions[0].structured_input_signature
    return "top_k" in {spec.name for spec in tf.nest.flatten(signature)}


class ModelStore:
    """The models of ``models_dir``; ``get`` and ``list_models`` are safe from any thread."""

    def __init__(self, models_dir: Path, reload_seconds: float = 2.0):
        self.models_dir = Path(models_dir)
        self._disk = ModelsDir(self.models_dir)
        self.reload_seconds = reload_seconds
        self._models: dict[str, dict[int, ServedModel]] = {}
        self._lock = threading.Lock()  # guards _models
        self._scan_lock = threading.Lock()  # one scan (or delete) of the disk at a time
        self._failed: dict[Path, tuple] = {}  # bundles that failed to load, with their files' mtimes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> "ModelStore":
        """Load what is on disk now, then keep rescanning in the background."""
        self.rescan()
        self._thread = threading.Thread(target=self._rescan_loop, name="model-store", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            try:
                self.rescan()
            except Exception:  # a disk hiccup must not end reloading for good
                log.exception("rescanning %s failed", self.models_dir)

    # -- lookups ----------------------------------------------------------------------------------
    def get(self, name: str, version: int = 0, fresh: bool = False) -> ServedModel:
        """The model ``name`` at ``version`` (0: the latest); with ``fresh``, as on disk right now
        (a version published since the last scan is loaded first).

        Raises BadRequest for a bad name or negative version, ModelNotFound (listing what there is)
        when it is not loaded even after rescanning that name.
        """
        _check_name(name)
        if version < 0:
            raise BadRequest(f"version must be 0 (latest) or a version number >= 1, got {version}")
        if fresh:
            self.rescan(names=[name])
        model = self._lookup(name, version)
        if model is None:
            self.rescan(names=[name])
            model = self._lookup(name, version)
        if model is None:
            versions = self.versions(name)
            if not versions:
                raise ModelNotFound(f"no model named {name!r}; available models: {self._names_text()}")
            raise ModelNotFound(
                f"model {name!r} has no version {version}; available versions: {listed(versions)}"
            )
        return model

    def versions(self, name: str) -> list[int]:
        with self._lock:
            return sorted(self._models.get(name, {}))

    def list_models(self) -> list[tuple[str, list[ServedModel]]]:
        """Every loaded model as ``(name, versions ascending)``, sorted by name."""
        with self._lock:
            return [(name, [by_version[v] for v in sorted(by_version)])
                    for name, by_version in sorted(self._models.items()) if by_version]

    def _lookup(self, name: str, version: int) -> ServedModel | None:
        with self._lock:
            by_version = self._models.get(name) or {}
            if version == 0:
                return by_version[max(by_version)] if by_version else None
            return by_version.get(version)

    def _names_text(self) -> str:
        with self._lock:
            names = sorted(name for name, by_version in self._models.items() if by_version)
        return listed(names) if names else "none (publish one under the data directory's models/)"

    # -- the disk ---------------------------------------------------------------------------------
    def rescan(self, names: list[str] | None = None) -> None:
        """Bring the loaded models in line with the disk (only ``names`` when given)."""
        with self._scan_lock:
            on_disk = self._scan_disk(names)
            with self._lock:
                scanned = names if names is not None else list(self._models.keys() | on_disk.keys())
                for name in scanned:
                    gone = self._models.get(name, {}).keys() - on_disk.get(name, {}).keys()
                    for version in gone:
                        log.info("model %s version %d is gone from disk; no longer served", name, version)
                        del self._models[name][version]
                    if name in self._models and not self._models[name]:
                        del self._models[name]
                new = [(name, version, path) for name, versions in on_disk.items()
                       for version, path in versions.items() if version not in self._models.get(name, {})]
            for name, version, path in sorted(new):
                model = self._try_load(name, version, path)
                if model is not None:
                    with self._lock:
                        self._models.setdefault(name, {})[version] = model

    def _scan_disk(self, names: list[str] | None) -> dict[str, dict[int, Path]]:
        """``{name: {version: path}}`` of the complete bundles on disk."""
        found = {}
        for name in self._disk.names() if names is None else names:
            parent = self._disk.model_dir(name)
            found[name] = {v: parent / str(v) for v in self._disk.complete_versions(name)}
        return found

    def _try_load(self, name: str, version: int, path: Path) -> ServedModel | None:
        signature = _files_signature(path)
        if self._failed.get(path) == signature:
            return None  # failed before and unchanged since: don't log it every rescan
        try:
            model = load_model(path, name, version)
        except Exception as exc:  # any broken bundle is skipped, never fatal
            self._failed[path] = signature
            log.error("skipping model %s version %d at %s: it failed to load: %s", name, version, path, exc)
            return None
        self._failed.pop(path, None)
        log.info("serving model %s version %d from %s", name, version, path)
        return model

    def delete(self, name: str, version: int = 0, all_versions: bool = False) -> list[int]:
        """Remove one version (``version`` >= 1) or, with ``all_versions``, every version of ``name``.

        The disk's side is textgen.models_dir's ``delete`` (out of sight first, so no reader sees half
        a bundle); the store stops serving what it removed. Returns the deleted versions, ascending.
        Raises BadRequest, ModelNotFound (listing what there is) or StorageFailed (with the path).
        """
        _check_name(name)
        if not all_versions and version < 1:
            raise BadRequest(f"give the version to delete (>= 1) or set all_versions; got version {version}")
        with self._scan_lock:
            try:
                targets = self._disk.delete(name, None if all_versions else version)
            except NoSuchModel:
                raise ModelNotFound(f"no model named {name!r}; available models: {self._names_text()}") from None
            except NoSuchVersion as exc:
                raise ModelNotFound(
                    f"model {name!r} has no version {version}; available versions: {listed(exc.versions)}"
                ) from None
            except DeleteFailed as exc:  # what could not be moved stays served
                self._forget(name, exc.deleted)
                raise StorageFailed(str(exc)) from None
            self._forget(name, targets)
        return targets

    def _forget(self, name: str, versions: list[int]) -> None:
        """Stop serving ``versions`` of ``name``, deleted from disk."""
        with self._lock:
            for version in versions:
                self._models.get(name, {}).pop(version, None)
            if name in self._models and not self._models[name]:
                del self._models[name]
        for version in versions:
            log.info("deleted model %s version %d", name, version)


def _check_name(name: str) -> None:
    try:
        validate_name(name)
    except BundleError as exc:  # the bundle format's own rule and words
        raise BadRequest(str(exc)) from None


def _files_signature(path: Path) -> tuple:
    def mtime(p):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return None

    return mtime(path / META_FILE), mtime(path / SAVED_MODEL)
