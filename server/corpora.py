"""Corpora as the Training service offers them: built-in names and uploads, listed, stored, and named
in a training request (``spec``).

The catalog itself (sources, checksums, where files live) is ``textgen.corpus``; this is the server's
side of it: what a request may name, the text the server already has for the door's checks, and
uploads with their size limit.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from server.errors import BadRequest, CorpusMissing, StorageFailed, shown
from textgen import bundle, config, corpus


class Corpora:
    """The corpora of ``textgen.config.corpora_dir()``; uploads up to ``max_upload_bytes``."""

    def __init__(self, max_upload_bytes: int = config.DEFAULT_MAX_UPLOAD_BYTES):
        self.max_upload_bytes = max_upload_bytes

    def spec(self, name: str, corpus_id: str) -> str:
        """The corpus a training request names: a built-in ``name`` or an uploaded ``corpus_id``
        (exactly one). Raises BadRequest, or CorpusMissing for an upload id with no upload."""
        if name and corpus_id:
            raise BadRequest("give either corpus (a built-in name) or corpus_id (an upload id), not both")
        spec = name or corpus_id
        if not spec:
            raise BadRequest(f"no corpus given: name a built-in corpus ({', '.join(sorted(corpus.BUILTINS))}) "
                             "or an uploaded corpus id (see ListCorpora)")
        if spec in corpus.BUILTINS:
            return spec
        if corpus.UPLOAD_ID.fullmatch(spec):
            if not (config.corpora_dir() / "uploads" / f"{spec}.txt").is_file():
                raise CorpusMissing(f"no uploaded corpus {shown(spec)} (see ListCorpora; upload the text with UploadCorpus)")
            return spec
        if "/" in spec or "\\" in spec or spec.startswith("."):
            raise BadRequest(f"corpus {shown(spec)} looks like a file path; the server does not read its own files "
                             "for a request: upload the file (UploadCorpus, `client upload PATH`) and pass its id")
        raise BadRequest(f"unknown corpus {shown(spec)}: built-in corpora are {', '.join(sorted(corpus.BUILTINS))}; "
                         "an uploaded corpus is named by its id (upload-<16 hex digits>, see ListCorpora)")

    def model_name(self, spec: str) -> str:
        """The model name a job on ``spec`` gets by default: a built-in corpus's name; for an upload,
        its display name made a model name ("My Text.txt" -> "my-text"), or its id when nothing of
        the display name is left."""
        if not corpus.UPLOAD_ID.fullmatch(spec):
            return spec
        display = next((u.name for u in corpus.list_uploads() if u.corpus_id == spec), "")
        name = re.sub(r"[^a-z0-9._-]+", "-", Path(display).stem.lower()).strip("._-")[:64]
        return name if name and bundle.NAME_PATTERN.fullmatch(name) else spec

    def local_text(self, spec: str) -> str | None:
        """The text of ``spec`` when it is on this machine (an upload, a fetched built-in), else None:
        the server never fetches a corpus for a request (the worker does)."""
        try:
            if corpus.UPLOAD_ID.fullmatch(spec):
                return corpus.load_upload(spec).text
            cached = config.corpora_dir() / f"{spec}.txt"
            return corpus.load_file(cached).text if cached.is_file() else None
        except corpus.CorpusNotFound as exc:
            raise CorpusMissing(str(exc)) from None
        except corpus.CorpusError as exc:
            raise BadRequest(f"corpus {shown(spec)} cannot be used: {exc}") from None

    def list(self) -> list[dict]:
        """Built-in corpora (fetched or not) and uploads: ``id, name, builtin, size, sha256, available``."""
        out = [{"id": b.name, "name": b.name, "builtin": True, "size": b.size or 0, "sha256": b.sha256 or "",
                "available": b.cached} for b in corpus.list_builtin()]
        out += [{"id": u.corpus_id, "name": u.name, "builtin": False, "size": u.size, "sha256": u.sha256,
                 "available": True} for u in corpus.list_uploads()]
        return out

    def upload(self, chunks: Iterable[tuple[str, bytes]]) -> dict:
        """Store text sent as ``(name, data)`` chunks (the name counts in the first chunk only)."""
        name, parts, size = "", [], 0
        for index, (chunk_name, data) in enumerate(chunks):
            if index == 0:
                name = chunk_name
            size += len(data)
            if size > self.max_upload_bytes:
                raise BadRequest(f"the corpus is larger than the upload limit of {self.max_upload_bytes:,} bytes "
                                 "(TEXTGEN_MAX_UPLOAD_BYTES)")
            parts.append(data)
        try:
            stored = corpus.save_upload(b"".join(parts), name)
        except corpus.CorpusError as exc:
            raise BadRequest(f"upload refused: {exc}") from None
        except OSError as exc:
            raise StorageFailed(f"cannot store the corpus in {config.corpora_dir()}: {exc.strerror or exc}") from None
        return {"id": stored.name, "name": (name or "").strip()[:200] or stored.name, "builtin": False,
                "size": size, "sha256": stored.sha256, "available": True}
