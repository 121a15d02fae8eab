"""TensorFlow.js models through the API: the Training service's ``ImportTfjs`` and the TextGen
service's ``ExportTfjs``. The format is ``trainer.tfjs``'s (imported when a call needs it: the server
serves bundles without it); this module turns requests into its calls and its errors into the
server's (``server.errors``)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from server.corpora import Corpora
from server.errors import BadRequest, CorpusMissing, StorageFailed
from textgen import bundle, corpus

CHUNK_BYTES = 1 << 20  # weights travel in chunks of 1 MiB, far below gRPC's 4 MiB message limit


def import_tfjs(chunks: Iterable, corpora: Corpora, models_dir: Path, max_bytes: int,
                on_published: Callable[[str, int], None] | None = None) -> dict:
    """Publish the tf.js model of ``ImportTfjsChunk``s; returns what the response says.

    The first chunk's model_name, corpus (or corpus_id, or neither for a textgen export) and model_json
    count; the weights of all chunks
    are concatenated, up to ``max_bytes``. Raises BadRequest, CorpusMissing or StorageFailed; nothing
    is written to the models folder unless the whole model imports.
    """
    from trainer import tfjs

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
    # No text: the charset a textgen export wrote into model.json (import_model says when there is none).
    spec = corpora.spec(first.corpus, first.corpus_id) if first.corpus or first.corpus_id else None
    try:
        doc = json.loads(first.model_json)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"model_json is not JSON ({exc}): send the content of the original's model.json") from None
    try:
        path, version = tfjs.publish_imported(doc, b"".join(parts), spec, first.model_name, models_dir)
    except tfjs.TfjsError as exc:
        raise BadRequest(f"cannot import the model: {exc}") from None
    except corpus.CorpusError as exc:
        raise CorpusMissing(f"cannot read corpus {spec!r} to rebuild the model's charset: {exc}") from None
    except bundle.BundleError as exc:
        raise StorageFailed(str(exc)) from None
    if on_published is not None:
        on_published(first.model_name, version)
    meta = bundle.read_meta(path)
    return {"model_name": first.model_name, "model_version": version, "charset_size": len(meta["charset"]),
            "sample_len": int(meta["sample_len"]), "lstm_layer_sizes": list(meta["lstm_layer_sizes"])}


def export_tfjs(path: Path, corpora: Corpora, corpus_name: str = "", corpus_id: str = "") -> Iterator[tuple[str, bytes]]:
    """The bundle at ``path`` as (model_json, b"") then ("", weights chunk)...; with a corpus, the charset
    in the original's order for its text. Raises BadRequest or CorpusMissing."""
    from trainer import export, tfjs

    text = None
    if corpus_name or corpus_id:
        spec = corpora.spec(corpus_name, corpus_id)
        try:
            text = corpus.load_corpus(spec).text
        except corpus.CorpusError as exc:
            raise CorpusMissing(f"cannot read corpus {spec!r} for the charset order: {exc}") from None
    try:
        tfjs.charset_order(bundle.read_meta(path), text)
    except tfjs.TfjsError as exc:
        raise BadRequest(f"cannot export in that corpus' charset order: {exc}") from None
    model, meta = export.load_keras(path)
    with tempfile.TemporaryDirectory(prefix="textgen-tfjs-") as tmp:
        model_json = tfjs.export_model(model, meta, Path(tmp), text)
        document = model_json.read_text(encoding="utf-8")
        weights = (model_json.parent / tfjs.WEIGHTS_FILE).read_bytes()
    yield document, b""
    for start in range(0, len(weights), CHUNK_BYTES):
        yield "", weights[start : start + CHUNK_BYTES]
