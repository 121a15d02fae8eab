"""The models folder, ``models/<name>/<version>/``: the one owner of its rules (ARCHITECTURE.md, "The
model bundle"). What one bundle holds is textgen.bundle's; which versions exist, which is the latest,
how one is published and how one is removed is this module's. The trainer, the server and the CLI ask
it, through ``ModelsDir(root)``.

A model's folder holds
- version folders. A version folder is named by a canonical decimal number >= 1, exactly
  ``str(version)``: "1" and "12" are versions; "0", "007", "+1", "1a", "-1" are not. Every path to a
  version is built as ``str(version)``, so a folder named "007" could never be asked for, served or
  deleted, and "0" would collide with 0 meaning "the latest" in every request; counting them would
  list numbers that lead nowhere, or two folders for one version ("7" and "007"). A version folder is
  *complete* when it holds a whole bundle (``textgen.bundle.is_bundle``); an empty one is a number a
  publisher has claimed and not yet filled (or, if it was killed, never will: ``sweep``). "Latest" is
  the highest complete version.
- ``.last-version``: the highest number ever published, so a deleted version's number is never given
  to another model.
- ``.tmp-*`` entries: bundles being written, published or deleted; never a version, swept once old.

The publish protocol (``staging_path`` then ``publish``), safe against a publisher killed at any point
and against publishers racing on one model:
1. the bundle is written whole under ``<model>/.tmp-staged-*``, beside the versions;
2. the next number (one above every version folder and ``.last-version``) is written into the staged
   ``meta.json``, then claimed by creating its empty folder; a publisher that created it first makes
   us try the next number;
3. the staged bundle is renamed onto that empty folder: one ``rename``, so a reader sees no version or
   the whole of it, never half a bundle;
4. ``.last-version`` is raised to the number (written aside, then renamed over).

Deleting renames each version folder to a hidden ``.tmp-deleted-*`` name first (so no reader sees half
a bundle) and then removes it; deleting every version also forgets ``.last-version`` (the model is gone
as a whole: its numbering starts again) and removes the model's folder when nothing else is in it.

Nothing here imports Keras or TensorFlow.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from textgen.bundle import META_FILE, NAME_PATTERN, BundleError, is_bundle, validate_name

TMP_PREFIX = ".tmp-"  # anything being written, published or deleted: never a version, swept once old
STAGED_PREFIX = TMP_PREFIX + "staged-"
DELETED_PREFIX = TMP_PREFIX + "deleted-"
LAST_VERSION_FILE = ".last-version"
LEFTOVER_SECONDS = 3600.0  # a leftover older than this belongs to no publish still running


class NoSuchModel(BundleError):
    """The model has no complete version (``versions`` is empty: there is none to list)."""

    def __init__(self, name: str):
        super().__init__(f"no model named {name!r}")
        self.name, self.versions = name, []


class NoSuchVersion(BundleError):
    """The model exists but not at that version; ``versions`` lists its complete versions, ascending."""

    def __init__(self, name: str, version: int, versions: list[int]):
        super().__init__(f"model {name!r} has no version {version}; it has {', '.join(map(str, versions))}")
        self.name, self.version, self.versions = name, version, versions


class DeleteFailed(BundleError):
    """A version folder could not be moved out of sight (a read-only volume...): it stays as it was.
    ``deleted`` lists the versions removed before it, ascending."""

    def __init__(self, message: str, deleted: list[int]):
        super().__init__(message)
        self.deleted = deleted


def version_number(name: str) -> int | None:
    """The version a folder name (or a user's ``NAME:VERSION``) stands for; None when it is not one.

    ``"12"`` -> 12; ``"0"``, ``"007"``, ``"1a"``, ``"-1"``, ``""`` -> None (the rule: module docstring).
    """
    if name.isascii() and name.isdigit() and not name.startswith("0"):
        return int(name)
    return None


class ModelsDir:
    """The models folder at ``root``. Several processes may share it (the server, workers, the CLI):
    every step here tolerates another one publishing, deleting or sweeping at the same time.

    Model names are validated (``textgen.bundle.validate_name``, a BundleError) before any path is built
    from them, so no name leaves ``root``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def model_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    # -- what there is ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Names of the model folders under ``root``, sorted (a folder may have no complete version)."""
        try:
            entries = list(self.root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(p.name for p in entries if NAME_PATTERN.fullmatch(p.name) and p.is_dir())

    def versions(self, name: str) -> list[int]:
        """Every version folder of ``name``, complete or only claimed, ascending."""
        try:
            entries = [p.name for p in self.model_dir(name).iterdir()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(v for v in map(version_number, entries) if v is not None)

    def complete_versions(self, name: str) -> list[int]:
        """The versions of ``name`` that are whole bundles, ascending (the last one is the latest)."""
        parent = self.model_dir(name)
        return [v for v in self.versions(name) if is_bundle(parent / str(v))]

    def resolve(self, name: str, version: int = 0) -> tuple[Path, int]:
        """``(path, version)`` of a complete version of ``name``; ``version`` 0 means the latest.

        Raises NoSuchModel when ``name`` has no complete version, NoSuchVersion when it lacks that one.
        """
        complete = self.complete_versions(name)
        if not complete:
            raise NoSuchModel(name)
        if version == 0:
            version = complete[-1]
        elif version not in complete:
            raise NoSuchVersion(name, version, complete)
        return self.model_dir(name) / str(version), version

    def published_by(self, name: str, job_id: str) -> int | None:
        """The complete version of ``name`` whose ``meta.json`` says job ``job_id`` trained it (None: none)."""
        parent = self.model_dir(name)
        for version in self.complete_versions(name):
            try:
                meta = json.loads((parent / str(version) / META_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # deleted meanwhile, or not ours to read
            if isinstance(meta, dict) and meta.get("job_id") == job_id:
                return version
        return None

    # -- publishing -------------------------------------------------------------------------------

    def staging_path(self, name: str) -> Path:
        """Where to write a bundle that ``publish`` will make ``name``'s next version: a path that does
        not exist yet, beside the version folders. Creates the model's folder if needed."""
        parent = self.model_dir(name)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleError(f"cannot write the model bundle in {parent}: {exc.strerror or exc}") from exc
        return parent / f"{STAGED_PREFIX}{uuid.uuid4().hex[:8]}"

    def publish(self, name: str, staged: Path) -> tuple[Path, int]:
        """Make the whole bundle at ``staged`` (from ``staging_path(name)``) ``name``'s next version, its
        number written into its ``meta.json``; returns ``(path, version)``. On any failure the staged
        bundle is removed and nothing is published."""
        parent, staged = self.model_dir(name), Path(staged)
        try:
            while True:
                version = max(self.versions(name) + [self._last_version(name)]) + 1
                _write_version(staged, version)
                final = parent / str(version)
                try:
                    os.mkdir(final)  # claims the number; a racing publisher gets the next one
                except FileExistsError:
                    continue
                os.rename(staged, final)  # replaces the empty folder just made, atomically
                self._record_last_version(name, version)
                return final, version
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise

    def _last_version(self, name: str) -> int:
        """The highest version ever published under ``name``, deleted ones included (0: none)."""
        try:
            return int((self.model_dir(name) / LAST_VERSION_FILE).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _record_last_version(self, name: str, version: int) -> None:
        if version <= self._last_version(name):
            return
        parent = self.model_dir(name)
        tmp = parent / f"{TMP_PREFIX}last-version-{uuid.uuid4().hex[:8]}"
        tmp.write_text(f"{version}\n")
        os.replace(tmp, parent / LAST_VERSION_FILE)

    # -- removing ---------------------------------------------------------------------------------

    def delete(self, name: str, version: int | None = None) -> list[int]:
        """Remove ``version`` of ``name``, or every complete version when ``version`` is None; returns
        the versions deleted, ascending (one that another process deleted meanwhile counts as deleted).

        Raises NoSuchModel, NoSuchVersion (nothing is removed), or DeleteFailed when a version folder
        cannot be moved: that version and those after it stay; those moved before it are removed.
        """
        parent = self.model_dir(name)
        complete = self.complete_versions(name)
        if not complete:
            raise NoSuchModel(name)
        if version is None:
            targets = complete
        elif version in complete:
            targets = [version]
        else:
            raise NoSuchVersion(name, version, complete)
        hidden, failure = {}, None
        for v in targets:  # out of sight first
            aside = parent / f"{DELETED_PREFIX}{v}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(parent / str(v), aside)
            except FileNotFoundError:
                continue  # another process sharing the folder deleted it first
            except OSError as exc:
                failure = f"cannot delete {parent / str(v)}: {exc.strerror or exc}"
                break
            hidden[v] = aside
        for aside in hidden.values():
            shutil.rmtree(aside, ignore_errors=True)  # what is left is swept as a leftover
        if failure is not None:
            raise DeleteFailed(failure, sorted(hidden))
        if version is None:  # the model is gone as a whole: its numbering starts again
            (parent / LAST_VERSION_FILE).unlink(missing_ok=True)
            try:
                parent.rmdir()  # only when nothing else (a publish in progress) is in it
            except OSError:
                pass
        return targets

    def sweep(self, older_than: float = LEFTOVER_SECONDS) -> list[Path]:
        """Remove what killed publishers (and interrupted deletes) left behind: ``.tmp-*`` entries and
        empty version folders (claimed, never filled), older than ``older_than`` seconds. Returns what
        was removed."""
        removed, now = [], time.time()
        try:
            parents = [p for p in self.root.iterdir() if p.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        for parent in parents:
            try:
                entries = list(parent.iterdir())
            except OSError:
                continue  # deleted meanwhile by another process sharing the folder
            for entry in entries:
                try:  # another publisher or the server may be moving these right now
                    leftover = entry.name.startswith(TMP_PREFIX) or (
                        version_number(entry.name) is not None and entry.is_dir() and not any(entry.iterdir()))
                    if leftover and now - entry.lstat().st_mtime > older_than:
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                        removed.append(entry)
                except OSError:
                    continue  # gone already, or not ours to remove: the next sweep tries again
        return removed


def _write_version(staged: Path, version: int) -> None:
    """Write ``version`` into the staged bundle's ``meta.json``."""
    path = staged / META_FILE
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["version"] = version
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
