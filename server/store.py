"""The model store: every complete bundle under ``models/<name>/<version>/``, served and kept current.

Like TF Serving's model base path: integer version folders, "latest" is the highest one that loads.
What is a version on disk, and how one is deleted, is textgen.models_dir's; this store keeps what it
loaded. Its version policy is TF Serving's default: the latest version of each model is loaded (at
once), an older one only when a call asks for it by number, and at most ``older_versions`` older
ones stay loaded (the least recently used goes first); ``older_versions=None`` loads every version,
as the store did before it had a policy. Every complete version is listed either way.
A background thread rescans every ``reload_seconds`` (and a lookup that misses rescans that name at
once), so a version published by the trainer appears and a deleted one disappears without a restart.
A bundle that fails to load is logged once and skipped: never served, never fatal.

Names from requests are validated before any path is built from them, so no path leaves the store.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import tensorflow as tf

from server.errors import BadRequest, ModelNotFound, StorageFailed, listed
from textgen.bundle import META_FILE, SAVED_MODEL, BundleError, parse_reference, read_meta, seed_slice
from textgen.charset import Charset
from textgen.models_dir import DeleteFailed, ModelsDir, NoSuchModel, NoSuchVersion

log = logging.getLogger(__name__)

SERVING_FUNCTIONS = ("predict", "start", "advance", "sample", "charset")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelVersion:
    """A complete version on disk, as its meta.json describes it (loaded or not)."""

    name: str
    version: int
    path: Path
    meta: dict
    charset: Charset
    sample_len: int

    @classmethod
    def read(cls, path: Path, name: str, version: int) -> "ModelVersion":
        meta = read_meta(path)
        return cls(name, version, Path(path), meta, Charset(meta["charset"]), int(meta["sample_len"]))


@dataclasses.dataclass(frozen=True, eq=False)
class ServedModel(ModelVersion):
    """One loaded model version.

    ``functions`` is the bundle's SavedModel: ``start``, ``advance``, ``predict``, ``sample`` and
    ``charset``, each taking and returning tensors by name (textgen/bundle.py has their shapes).
    """

    functions: object
    _codepoints: np.ndarray = dataclasses.field(repr=False)
    controls: bool = False  # advance takes top_k and top_p and returns logprobs (bundles exported since)
    penalties: bool = False  # the bundle has advance_penalized (penalties and logit bias; exported since)

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
    return ServedModel(name, version, path, meta, charset, sample_len, functions, codepoints, controls,
                       hasattr(functions, "advance_penalized"))


def takes_controls(advance) -> bool:
    """Whether a bundle's ``advance`` takes ``top_k`` and ``top_p`` (and returns ``logprobs``): bundles
    exported before those controls existed have only temperature."""
    signature = advance.concrete_functions[0].structured_input_signature
    return "top_k" in {spec.name for spec in tf.nest.flatten(signature)}


class ModelStore:
    """The models of ``models_dir``; ``get`` and ``list_models`` are safe from any thread.

    ``older_versions``: how many versions other than each model's latest stay loaded once a call has
    asked for them (least recently used first out); None: every version is loaded and kept.
    """

    def __init__(self, models_dir: Path, reload_seconds: float = 2.0, older_versions: int | None = 2):
        self.models_dir = Path(models_dir)
        self._disk = ModelsDir(self.models_dir)
        self.reload_seconds = reload_seconds
        self.older_versions = older_versions
        self._versions: dict[str, dict[int, ModelVersion]] = {}  # complete on disk, readable meta
        self._latest: dict[str, ServedModel] = {}  # each model's highest version that loads
        self._older: OrderedDict[tuple[str, int], ServedModel] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards the three above
        self._scan_lock = threading.Lock()  # one scan, load or delete at a time
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
        """The model ``name`` at ``version`` (0: the latest), loaded; with ``fresh``, as on disk right
        now (a version published since the last scan is loaded first).

        Raises BadRequest for a bad name or negative version, ModelNotFound (listing what there is)
        when there is no such version even after rescanning that name, or it does not load.
        """
        if version < 0:
            raise BadRequest(f"version must be 0 (latest) or a version number >= 1, got {version}")
        name, version = _reference(name, version)
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
        """The versions of ``name`` that can be asked for, ascending."""
        with self._lock:
            return sorted(self._versions.get(name, {})) if name in self._latest else []

    def list_models(self) -> list[tuple[str, list[ModelVersion]]]:
        """Every model as ``(name, versions ascending)``, sorted by name; the last is the latest, a
        ServedModel; the others are ServedModel where loaded, else ModelVersion."""
        with self._lock:
            listing = []
            for name, latest in sorted(self._latest.items()):
                versions = [self._older.get((name, v), info) for v, info in sorted(self._versions.get(name, {}).items())
                            if v < latest.version]
                listing.append((name, versions + [latest]))
            return listing

    def loaded(self) -> dict[str, int]:
        """How many versions of each model are in memory."""
        with self._lock:
            counts = {name: 1 for name in self._latest}
            for name, _version in self._older.keys():
                counts[name] = counts.get(name, 0) + 1
            return counts

    def _lookup(self, name: str, version: int) -> ServedModel | None:
        with self._lock:
            latest = self._latest.get(name)
            if latest is None or version in (0, latest.version):
                return latest
            info = self._versions.get(name, {}).get(version)
            if info is None or version > latest.version:
                return None
            model = self._older.get((name, version))
            if model is not None:
                self._older.move_to_end((name, version))  # the most recently used
        return model or self._load_older(info)

    def _load_older(self, info: ModelVersion) -> ServedModel | None:
        """Load an older version that a call asked for (once, however many ask at the same time)."""
        with self._scan_lock:
            with self._lock:
                if info.version not in self._versions.get(info.name, {}):
                    return None  # deleted meanwhile
                model = self._older.get((info.name, info.version))
            if model is None:
                model = self._try_load(info.name, info.version, info.path)
                with self._lock:
                    if model is None:
                        self._versions.get(info.name, {}).pop(info.version, None)
                    else:
                        self._keep(model)
            return model

    def _keep(self, model: ServedModel) -> None:
        """Keep an older version loaded, unloading the least recently used beyond the policy's bound;
        call with the lock held (a call that holds the model goes on with it either way)."""
        self._older[(model.name, model.version)] = model
        self._older.move_to_end((model.name, model.version))
        while self.older_versions is not None and len(self._older) > self.older_versions:
            (name, version), _ = self._older.popitem(last=False)
            log.info("unloaded model %s version %d (the least recently used of the older versions loaded; "
                     "at most %d stay loaded)", name, version, self.older_versions)

    def _names_text(self) -> str:
        with self._lock:
            names = sorted(self._latest)
        return listed(names) if names else "none (publish one under the data directory's models/)"

    # -- the disk ---------------------------------------------------------------------------------
    def rescan(self, names: list[str] | None = None) -> None:
        """Bring the store in line with the disk (only ``names`` when given): versions gone from disk
        are dropped, new ones listed, and each model's latest loaded."""
        with self._scan_lock:
            on_disk = self._scan_disk(names)
            with self._lock:
                scanned = names if names is not None else list(self._versions.keys() | on_disk.keys())
                for name in scanned:
                    gone = self._versions.get(name, {}).keys() - on_disk.get(name, {}).keys()
                    self._drop(name, gone, "is gone from disk; no longer served")
            for name in scanned:
                for version, path in sorted(on_disk.get(name, {}).items()):
                    if version not in self._versions.get(name, {}):
                        self._add(name, version, path)
                self._load_latest(name)

    def _add(self, name: str, version: int, path: Path) -> None:
        """List a new version on disk (its meta.json read; its model loaded when needed)."""
        try:
            info = ModelVersion.read(path, name, version)
        except Exception as exc:  # noqa: BLE001  (the same as a bundle that fails to load)
            self._skip(name, version, path, exc)
            return
        with self._lock:
            self._versions.setdefault(name, {})[version] = info

    def _load_latest(self, name: str) -> None:
        """Make the highest version of ``name`` that loads its latest (lower ones are tried when the
        highest fails); under the "all" policy, load the others too."""
        with self._lock:
            infos = sorted(self._versions.get(name, {}).items(), reverse=True)
            latest = self._latest.get(name)
        for version, info in infos:
            if latest is not None and version == latest.version:
                break
            model = self._older.get((name, version)) or self._try_load(name, version, info.path)
            if model is None:
                with self._lock:
                    self._versions.get(name, {}).pop(version, None)
                continue
            with self._lock:
                self._older.pop((name, version), None)
                self._latest[name] = model
                if latest is not None:
                    self._keep(latest)  # the previous latest, now an older version
            break
        with self._lock:
            if name in self._versions and not self._versions[name]:
                del self._versions[name]
            latest = self._latest.get(name)
            todo = [info for info in self._versions.get(name, {}).values()
                    if self.older_versions is None and (name, info.version) not in self._older
                    and latest is not None and info.version != latest.version]
        for info in todo:
            model = self._try_load(name, info.version, info.path)
            with self._lock:
                if model is None:
                    self._versions.get(name, {}).pop(info.version, None)
                else:
                    self._keep(model)

    def _drop(self, name: str, versions, why: str) -> None:
        """Stop serving ``versions`` of ``name``; call with the lock held."""
        for version in sorted(versions):
            log.info("model %s version %d %s", name, version, why)
            self._versions.get(name, {}).pop(version, None)  # (a model deleted before a scan saw it)
            self._older.pop((name, version), None)
            if name in self._latest and self._latest[name].version == version:
                del self._latest[name]
        if name in self._versions and not self._versions[name]:
            del self._versions[name]

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
            self._skip(name, version, path, exc)
            return None
        self._failed.pop(path, None)
        log.info("serving model %s version %d from %s", name, version, path)
        return model

    def _skip(self, name: str, version: int, path: Path, exc: Exception) -> None:
        self._failed[path] = _files_signature(path)
        log.error("skipping model %s version %d at %s: it failed to load: %s", name, version, path, exc)

    def delete(self, name: str, version: int = 0, all_versions: bool = False) -> list[int]:
        """Remove one version (``version`` >= 1) or, with ``all_versions``, every version of ``name``.

        The disk's side is textgen.models_dir's ``delete`` (out of sight first, so no reader sees half
        a bundle); the store stops serving what it removed (and loads the new latest, if the latest
        went). Returns the deleted versions, ascending. Raises BadRequest, ModelNotFound (listing what
        there is) or StorageFailed (with the path).
        """
        name, version = _reference(name, version)
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
        """Stop serving ``versions`` of ``name``, deleted from disk; the next latest is loaded if the
        latest went. Call with the scan lock held."""
        with self._lock:
            self._drop(name, versions, "deleted")
        self._load_latest(name)


def _reference(ref: str, version: int) -> tuple[str, int]:
    """``(name, version)`` of a model reference (NAME, NAME:VERSION, NAME@latest; textgen.bundle)."""
    try:
        return parse_reference(ref, version)
    except BundleError as exc:  # the bundle format's own rule and words
        raise BadRequest(str(exc)) from None


def _files_signature(path: Path) -> tuple:
    def mtime(p):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return None

    return mtime(path / META_FILE), mtime(path / SAVED_MODEL)
