"""The JSON HTTP API under /api/v1: every RPC of the TextGen and Training services, through client.Client.

Unary calls are plain routes (FastAPI runs them in its thread pool). Generate and WatchJob are
Server-Sent Events; their first item is awaited before the response starts, so that a request the
server refuses gets its HTTP status (400, 404, 429...) rather than a 200 with an error event.
"""
from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool

from client.api import Client, TextgenError
from textgen import schema
from textgen.options import RECIPES, DEFAULT_RECIPE, TrainConfig
from web.convert import job_event, to_json
from web.errors import Body, error_body
from web.generation import BIAS, FREQUENCY, PRESENCE, REPETITION, Chunks, Stop, TopK, TopP, penalties, stop_list
from web.streams import KEEPALIVE, SSE_HEADERS, BlockingStream, sse

router = APIRouter(prefix="/api/v1")

WATCH_KEEPALIVE_S = 15.0


def caller_client(request: Request) -> Client:
    """The app's client, sending the caller's own bearer token when the request has one (the
    gateway's TEXTGEN_TOKEN otherwise). The token is passed on, never stored or logged."""
    client: Client = request.app.state.client
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return client.with_token(token.strip())
    return client


# ---- models --------------------------------------------------------------------------------------

@router.get("/models", tags=["models"], summary="Every model, with its versions and the latest's details")
def list_models(client: Client = Depends(caller_client)):
    return {"models": [to_json(m) for m in client.list_models()]}


@router.get("/models/{model}", tags=["models"], summary="One version of a model (0 = the latest)")
def get_model(model: str, version: int = 0, client: Client = Depends(caller_client)):
    return to_json(client.get_model(model, version))


@router.delete("/models/{model}", tags=["models"], summary="Delete one version, or all of them with all=true")
def delete_model(model: str, version: int = 0, all: bool = Query(False, description="delete every version"),
                 client: Client = Depends(caller_client)):
    return {"deleted_versions": client.delete_model(model, version, all_versions=all)}


# ---- generation ----------------------------------------------------------------------------------

class GenerateBody(Body):
    """One generation: a model, a prompt, how many characters, and the controls of each draw."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "tfjs-code", "prompt": "function ", "length": 300, "temperature": 0.5, "seed": 7}]})

    model: str = Field(description="model name")
    version: int = Field(0, description="0 = the latest")
    prompt: str = Field("", description="empty = one of the seed slices stored with the model")
    length: int = Field(200, description="characters to generate")
    temperature: float = Field(0.5, description=">= 0; 0 = always the most likely character")
    seed: int | None = Field(None, description="same seed, same text; the seed used is in the start event")
    stream: bool = Field(True, description="Server-Sent Events (true) or one JSON reply at the end (false)")
    top_k: TopK = 0
    top_p: TopP = None
    stop: Stop = None
    logprobs: bool = Field(False, description="the log-probability (ln p) of each generated character: in each "
                                              "text event, or in the reply's logprobs without streaming")
    top_logprobs: int = Field(0, description="0-20: also the likeliest characters at each place, {char: ln p} per "
                                             "character (top_logprobs, beside logprobs)")
    presence_penalty: float = Field(0, description=PRESENCE)
    frequency_penalty: float = Field(0, description=FREQUENCY)
    repetition_penalty: float | None = Field(None, description=REPETITION)
    logit_bias: dict[str, float] | None = Field(None, description=BIAS)


def _start_json(start) -> dict:
    return to_json(start) if start is not None else {}


@router.post("/generate", tags=["generate"], summary="Stream generated text as Server-Sent Events",
             response_description="SSE: `start` {model, version, prompt, seed}, `text` {text} per chunk "
                                  "({text, logprobs} with logprobs=true), then `end` {reason: length or stop, "
                                  "characters}; `error` {error} if the stream fails midway")
async def generate(body: GenerateBody, client: Client = Depends(caller_client)):
    generation = client.generate(body.model, prompt=body.prompt, length=body.length, temperature=body.temperature,
                                 seed=body.seed, version=body.version, top_k=body.top_k, top_p=body.top_p,
                                 stop=stop_list(body.stop), logprobs=body.logprobs, top_logprobs=body.top_logprobs,
                                 **penalties(body))
    # An error before the first text (bad temperature, unknown model, too many streams) is the HTTP status.
    chunks = await Chunks.open(generation)

    if not body.stream:
        text, logprobs, tops = await chunks.gather()
        reply = {"text": text, "start": _start_json(generation.start),
                 "end": to_json(generation.end) if generation.end else None}
        if body.logprobs or body.top_logprobs:
            reply["logprobs"] = logprobs
        if body.top_logprobs:
            reply["top_logprobs"] = tops
        return reply

    def text_event(text: str, chunk_logprobs: list, chunk_tops: list) -> dict:
        event = {"text": text}
        if body.logprobs or body.top_logprobs:
            event["logprobs"] = chunk_logprobs
        if body.top_logprobs:
            event["top_logprobs"] = chunk_tops
        return event

    async def events() -> AsyncIterator[str]:
        try:
            yield sse(_start_json(generation.start), event="start")
            async for text, chunk_logprobs, chunk_tops in chunks:
                yield sse(text_event(text, chunk_logprobs, chunk_tops), event="text")
            if generation.end is not None:
                yield sse(to_json(generation.end), event="end")
        except TextgenError as exc:
            yield sse(error_body(exc.code, exc.message), event="error")
        finally:
            chunks.close()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


# ---- training jobs -------------------------------------------------------------------------------

PAGE_RECIPE = "fast"  # what the page offers first: the best measured recipe (bench/results/train.md)


@router.get("/recipes", tags=["jobs"], summary="The named training recipes and what each sets")
def list_recipes():
    """Each recipe's name, description and settings (options it sets; options given with it win), the
    trainer's defaults under them, and which recipe the trainer uses with none (``default``) and which
    the page offers first (``recommended``)."""
    defaults = TrainConfig().to_dict()
    for name in ("seed", "recipe"):
        defaults.pop(name)
    return {"recipes": [{"name": name, "headline": recipe.headline, "description": recipe.summary,
                         "settings": dict(recipe.settings)}
                        for name, recipe in RECIPES.items()],
            "default": DEFAULT_RECIPE, "recommended": PAGE_RECIPE if PAGE_RECIPE in RECIPES else DEFAULT_RECIPE,
            "defaults": defaults}


def _options_model() -> type[BaseModel]:
    """The training options as the proto declares them (textgen.schema), so /docs lists each with its
    help and default. Values are checked by the server, in its words; a name it lacks passes through
    to client.Client.submit_train, which refuses it naming the known ones."""
    kinds = {int: int, float: float, str: str}
    fields = {}
    for spec in schema.OPTIONS:
        kind = (list[int] | str) if spec.is_list else kinds[spec.kind]  # sizes also as "128,128", as typed
        said = [f"one of {', '.join(spec.choices)}" if spec.choices else "",
                f"default {spec.default_text}" if spec.default_text else ""]
        help_text = spec.help + "".join(f"; {part}" for part in said if part)
        fields[spec.name] = (kind | None, Field(None, description=help_text))
    return create_model("TrainOptions", __config__=ConfigDict(extra="allow"), **fields)


TrainOptions = _options_model()


class SubmitBody(Body):
    """A training job: the text to learn (a corpus or an upload), the options, and what to publish."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"corpus": "tfjs-code", "model_name": "tiny", "options": {"lstm_layer_sizes": [32], "epochs": 2}}]})

    corpus: str = Field("", description="a built-in corpus name (see /corpora)")
    corpus_id: str = Field("", description="or an uploaded corpus' id")
    options: TrainOptions = Field(default_factory=TrainOptions,
                                  description="training options; unset ones take the trainer's defaults "
                                              "(a recipe's, with one)")
    model_name: str = Field("", description="publish under this name; default: from_model, else the corpus")
    from_model: str = Field("", description="keep training this model (a new version)")
    from_version: int = Field(0, description="0 = the latest")


@router.post("/jobs", tags=["jobs"], status_code=201, summary="Submit a training job")
def submit_job(body: SubmitBody, client: Client = Depends(caller_client)):
    options = body.options.model_dump(exclude_none=True)
    sizes = options.get("lstm_layer_sizes")
    if isinstance(sizes, str):  # "128,128", as the CLI and the page's field write it
        options["lstm_layer_sizes"] = _layer_sizes(sizes)
    job = client.submit_train(corpus=body.corpus, corpus_id=body.corpus_id, options=options,
                              model_name=body.model_name, from_model=body.from_model,
                              from_version=body.from_version)
    return to_json(job)


def _layer_sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise TextgenError("INVALID_ARGUMENT", f"lstm_layer_sizes must be whole numbers separated by commas, "
                                               f"like 128,128; got {text!r}") from None


@router.get("/jobs", tags=["jobs"], summary="Recent jobs, newest first")
def list_jobs(limit: int = Query(0, description="0 = the server's default (50)"),
              client: Client = Depends(caller_client)):
    return {"jobs": [to_json(job) for job in client.list_jobs(limit)]}


@router.get("/jobs/{job_id}", tags=["jobs"], summary="One job's state")
def get_job(job_id: str, client: Client = Depends(caller_client)):
    return to_json(client.get_job(job_id))


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], summary="Cancel a queued or running job")
def cancel_job(job_id: str, client: Client = Depends(caller_client)):
    return to_json(client.cancel_job(job_id))


@router.get("/jobs/{job_id}/events", tags=["jobs"], summary="Every event of a job from the first, then live ones",
            response_description="SSE, one event per job event, named by its type (queued, started, batch, "
                                 "epoch, checkpoint, finished, failed, cancelled); ends when the job ends")
async def watch_job(job_id: str, client: Client = Depends(caller_client)):
    watch = client.watch_job(job_id)
    stream = BlockingStream(iter(watch), watch.cancel, keepalive=WATCH_KEEPALIVE_S)
    events = stream.__aiter__()
    first = None
    try:
        while first is None:  # keepalives until the first event (or the error)
            first = await anext(events)
    except StopAsyncIteration:
        pass

    async def body() -> AsyncIterator[str]:
        try:
            item = first
            if item is not None:
                yield sse(job_event(item), event=item.WhichOneof("event") or "event", event_id=item.id)
            async for item in events:
                if item is None:
                    yield KEEPALIVE
                else:
                    yield sse(job_event(item), event=item.WhichOneof("event") or "event", event_id=item.id)
        except TextgenError as exc:
            yield sse(error_body(exc.code, exc.message), event="error")
        finally:
            stream.close()

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


# ---- corpora -------------------------------------------------------------------------------------

@router.get("/corpora", tags=["corpora"], summary="Built-in and uploaded corpora")
def list_corpora(client: Client = Depends(caller_client)):
    return {"corpora": [to_json(c) for c in client.list_corpora()]}


RAW_TYPES = ("text/plain", "application/octet-stream", "")  # the text as the body, as it is
SEND = ("send the text as the body (Content-Type: text/plain, as `curl --data-binary @my.txt -H 'Content-Type: "
        "text/plain'`) or as a form with one file field (multipart/form-data, as `curl -F file=@my.txt`)")


@router.post("/corpora", tags=["corpora"], status_code=201, summary="Upload a UTF-8 text as a corpus",
             description="The text as the body (text/plain or application/octet-stream), or a multipart form "
                         "with one file field (what `curl -F file=@my.txt`, a browser's FormData and "
                         "`requests.post(files=...)` send). The stored corpus is the file's bytes exactly: "
                         "the reply's size and sha256 say so. Any other content type: 415.",
             openapi_extra={"requestBody": {"content": {
                 "text/plain": {"schema": {"type": "string"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "file": {"type": "string", "format": "binary"}}}}}, "required": True}})
async def upload_corpus(request: Request, name: str = Query("", description="a display name (default: the "
                                                                               "file's name in a form)"),
                        client: Client = Depends(caller_client)):
    limit = request.app.state.settings.max_upload_bytes
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    too_large = JSONResponse(error_body("INVALID_ARGUMENT", f"the text is larger than {limit} bytes "
                                                            "(TEXTGEN_MAX_UPLOAD_BYTES)", 413), status_code=413)
    with tempfile.NamedTemporaryFile(prefix="textgen-upload-", suffix=".txt") as spool:
        size = 0
        if kind == "multipart/form-data":
            form = await request.form(max_files=2, max_fields=10)
            files = [(field, value) for field, value in form.multi_items() if hasattr(value, "read")]
            if len(files) != 1:
                return JSONResponse(error_body("INVALID_ARGUMENT", f"a form upload needs exactly one file field, "
                                               f"got {len(files)}; {SEND}"), status_code=400)
            upload = files[0][1]
            name = name or upload.filename or "upload.txt"
            while data := await upload.read(1 << 20):
                size += len(data)
                if size > limit:
                    return too_large
                spool.write(data)
        elif kind in RAW_TYPES:
            async for data in request.stream():
                size += len(data)
                if size > limit:
                    return too_large
                spool.write(data)
        else:
            return JSONResponse(error_body("INVALID_ARGUMENT", f"cannot take a corpus sent as {kind!r}: {SEND}", 415),
                                status_code=415)
        spool.flush()
        corpus = await run_in_threadpool(client.upload_corpus, spool.name, name or "upload.txt")
    return JSONResponse(to_json(corpus), status_code=201)
