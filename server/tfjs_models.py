"""TensorFlow.js models through the API: the Training service's ``ImportTfjs`` and the TextGen
service's ``ExportTfjs``.

The format is ``trainer.tfjs``'s, and the server never imports the trainer: each call runs the
trainer's own command (``python -m trainer import-tfjs|export-tfjs``) in a process of its own, with
the request's files in a temporary folder, and turns its one-line error into the server's
(``server.errors``). A few seconds a call, for an operation that is rare; the server keeps no Keras.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from server.corpora import Corpora
from server.errors import BadRequest, CorpusMissing
from textgen import bundle, corpus

CHUNK_BYTES = 1 << 20  # weights travel in chunks of 1 MiB, far below gRPC's 4 MiB message limit
TRAINER_TIMEOUT_S = 300


def import_tfjs(chunks: Iterable, corpora: Corpora, models_dir: Path, max_bytes: int,
                on_published: Callable[[str, int], None] | None = None) -> dict:
    """Publish the tf.js model of ``ImportTfjsChunk``s; returns what the response says.

    The first chunk's model_name, corpus (or corpus_id, or neither for a textgen export) and model_json
    count; the weights of all chunks are concatenated, up to ``max_bytes``. Raises BadRequest or
    CorpusMissing; nothing is written to the models folder unless the whole model imports.
    """
    first, parts, size = None, [], 0
    for chunk in chunks:
        first = first or chunk
        size += len(chunk.weights)
        if size > max_bytes:
            raise BadRequest(f"the weights are larger than the upload limit of {max_bytes:,} bytes "
                             "(TEXTGEN_MAX_UPLOAD_BYTES)")
        parts.append(chunk.weights)
    if first is None or not first.model_name:
        raise BadRequest("model_name is required: the name to publish the imported model under")
    try:
        bundle.validate_name(first.model_name)
    except bundle.BundleError as exc:
        raise BadRequest(str(exc)) from None
    try:
        doc = json.loads(first.model_json)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"model_json is not JSON ({exc}): send the content of the original's model.json") from None
    with tempfile.TemporaryDirectory(prefix="textgen-import-") as tmp:
        folder = Path(tmp)
        args = []
        if first.corpus or first.corpus_id:
            args.append(str(_text_file(folder, corpora, first.corpus, first.corpus_id)))
        # The weights arrive as one stream: one file, named by the one group the manifest gets here.
        (folder / "weights.bin").write_bytes(b"".join(parts))
        (folder / "model.json").write_text(json.dumps(_one_weights_file(doc)), encoding="utf-8")
        said = _trainer(["import-tfjs", *args, str(folder / "model.json"), "--name", first.model_name], models_dir,
                        "cannot import the model")
    version = int(re.search(r" version (\d+) at ", said).group(1))  # "imported ... as NAME version N at PATH"
    if on_published is not None:
        on_published(first.model_name, version)
    meta = bundle.read_meta(Path(models_dir) / first.model_name / str(version))
    return {"model_name": first.model_name, "model_version": version, "charset_size": len(meta["charset"]),
            "sample_len": int(meta["sample_len"]), "lstm_layer_sizes": list(meta["lstm_layer_sizes"])}


def export_tfjs(path: Path, models_dir: Path, corpora: Corpora, corpus_name: str = "",
                corpus_id: str = "") -> Iterator[tuple[str, bytes]]:
    """The bundle at ``path`` as (model_json, b"") then ("", weights chunk)...; with a corpus, the charset
    in the original's order for its text. Raises BadRequest or CorpusMissing."""
    with tempfile.TemporaryDirectory(prefix="textgen-export-") as tmp:
        folder = Path(tmp)
        args = ["export-tfjs", str(path), "--out", str(folder / "out")]
        if corpus_name or corpus_id:
            args += ["--charset-order", str(_text_file(folder, corpora, corpus_name, corpus_id))]
        _trainer(args, models_dir, "cannot export the model")
        document = (folder / "out" / "model.json").read_text(encoding="utf-8")
        weights = (folder / "out" / "weights.bin").read_bytes()
    yield document, b""
    for start in range(0, len(weights), CHUNK_BYTES):
        yield "", weights[start : start + CHUNK_BYTES]


def _text_file(folder: Path, corpora: Corpora, name: str, corpus_id: str) -> Path:
    """The named corpus's text in ``folder``, as ``<name or id>.txt`` (the trainer names it by the file)."""
    spec = corpora.spec(name, corpus_id)
    try:
        text = corpus.load_corpus(spec).text
    except corpus.CorpusError as exc:
        raise CorpusMissing(f"cannot read corpus {spec!r}: {exc}") from None
    path = folder / f"{spec}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _one_weights_file(doc):
    """``doc`` with its weights manifest as one group in one file (``weights.bin``), in the same order."""
    try:
        specs = [spec for group in doc["weightsManifest"] for spec in group["weights"]]
    except (KeyError, TypeError):
        return doc  # malformed: the trainer says how
    return {**doc, "weightsManifest": [{"paths": ["weights.bin"], "weights": specs}]}


def _trainer(args: list[str], models_dir: Path, what: str) -> str:
    """Run ``python -m trainer ARGS`` publishing into ``models_dir``; returns what it said on stderr.
    Its one-line error is a BadRequest."""
    env = {**os.environ, "TEXTGEN_DATA_DIR": str(Path(models_dir).parent), "TF_CPP_MIN_LOG_LEVEL": "2",
           "TEXTGEN_BASE_MODEL": "off"}
    try:
        done = subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env,
                              timeout=TRAINER_TIMEOUT_S, cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        raise BadRequest(f"{what}: the trainer took more than {TRAINER_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        reason = lines[-1].removeprefix("error: ") if lines else (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise BadRequest(f"{what}: {reason}")
    return done.stderr
