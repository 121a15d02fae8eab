"""The original's TensorFlow.js models over HTTP: import a ``model.json`` with its weights (a form
upload, as a browser's FormData or ``curl -F`` sends it), and download a model as a zip of
``model.json`` and ``weights.bin`` for ``tf.loadLayersModel`` or the original's ``yarn gen``."""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from client.api import Client, TextgenError
from web.api import caller_client
from web.convert import to_json

router = APIRouter(prefix="/api/v1")


@router.post("/models/import-tfjs", tags=["models"], status_code=201,
             summary="Import the original's model.json and weights as a model (multipart form)")
async def import_tfjs(model_json: UploadFile = File(description="the original's model.json"),
                      weights: list[UploadFile] = File(description="its weights file(s), e.g. weights.bin"),
                      name: str = Form(description="publish under this model name"),
                      corpus: str = Form("", description="the built-in corpus the model was trained on"),
                      corpus_id: str = Form("", description="or the uploaded corpus it was trained on"),
                      client: Client = Depends(caller_client)):
    document = await model_json.read()
    try:
        manifest = json.loads(document).get("weightsManifest") or []
        paths = [str(p) for group in manifest for p in group.get("paths") or []]
    except (ValueError, AttributeError) as exc:
        raise TextgenError("INVALID_ARGUMENT", f"model_json is not a model.json ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="textgen-import-") as tmp:
        folder = Path(tmp)
        (folder / "model.json").write_bytes(document)
        names = paths if len(paths) == len(weights) else [Path(w.filename or "weights.bin").name for w in weights]
        for file_name, upload in zip(names, weights):
            (folder / Path(file_name).name).write_bytes(await upload.read())
        done = await run_in_threadpool(client.import_tfjs, folder / "model.json", corpus, corpus_id, name)
    return to_json(done)


@router.get("/models/{model}/tfjs", tags=["models"], response_class=Response,
            summary="Download a model for TensorFlow.js: a zip of model.json and weights.bin",
            responses={200: {"content": {"application/zip": {}}}})
def export_tfjs(model: str, version: int = 0,
                charset_order: str = Query("", description="a built-in corpus or upload id: order the charset as "
                                                           "the original does for that text, for its `yarn gen`"),
                client: Client = Depends(caller_client)):
    corpus, corpus_id = ("", charset_order) if charset_order.startswith("upload-") else (charset_order, "")
    with tempfile.TemporaryDirectory(prefix="textgen-export-") as tmp:
        path = client.export_tfjs(model, tmp, version=version, corpus=corpus, corpus_id=corpus_id)
        meta = json.loads(path.read_text(encoding="utf-8")).get("userDefinedMetadata", {}).get("textgen", {})
        packed = io.BytesIO()
        with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, "model.json")
            archive.write(path.parent / "weights.bin", "weights.bin")
    label = f"{model}-v{meta.get('version') or version or 'latest'}-tfjs.zip"
    return Response(packed.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{label}"'})
