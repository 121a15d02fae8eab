"""The JSON HTTP API under /api/v1: every RPC of the TextGen and Training services, through client.Client.

Unary calls are plain routes (FastAPI runs them in its thread pool). Generate and WatchJob are
Server-Sent Events; their first item is awaited before the response starts, so that a request the
server refuses gets its HTTP status (400, 404, 429...) rather than a 200 with an error event.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from client.api import Client, Generation, TextgenError
from textgen.options import RECIPES, DEFAULT_RECIPE, TrainConfig
from web.convert import job_event, to_json
from web.errors import error_body
from web.streams import KEEPALIVE, SSE_HEADERS, BlockingStream, sse

router = APIRouter(prefix="/api/v1")

WATCH_KEEPALIVE_S = 15.0
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # the server's default TEXTGEN_MAX_UPLOAD_BYTES


def caller_client(request: Request) -> Client:
    """The app's client, sending the caller's own bearer token when the request has one (the
    gateway's TEXTGEN_TOKEN otherwise). The token is passed on, never stored or logged."""
    client: Client = request.app.state.client
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return client.with_token(token.strip())
    return client


def extra_arguments(method, body: BaseModel) -> dict:
    """The request's fields beyond the declared ones, as keyword arguments of ``method``; a field
    ``method`` does not take is an INVALID_ARGUMENT naming it. New options of client.Client (top_k,
    a training recipe...) so reach the server with no change here."""
    extra = dict(body.model_extra or {})
    params = inspect.signature(method).parameters
    unknown = sorted(name for name in extra if name not in params or name == "self")
    if unknown:
        known = sorted(set(type(body).model_fields) | {p for p in params if p != "self"})
        raise TextgenError("INVALID_ARGUMENT", f"unknown field {', '.join(map(repr, unknown))}; "
                                               f"known fields: {', '.join(known)}")
    return extra


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

class GenerateBody(BaseModel):
    """Fields beyond these are passed to ``client.Client.generate`` as they are."""
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "tfjs-code", "prompt": "function ", "length": 300, "temperature": 0.5, "seed": 7}]})

    model: str = Field(description="model name")
    version: int = Field(0, description="0 = the latest")
    prompt: str = Field("", description="empty = one of the seed slices stored with the model")
    length: int = Field(200, description="characters to generate")
    temperature: float = Field(0.5, description=">= 0; 0 = always the most likely character")
    seed: int | None = Field(None, description="same seed, same text; the seed used is in the start event")
    stream: bool = Field(True, description="Server-Sent Events (true) or one JSON reply at the end (false)")


def _start_json(start) -> dict:
    return to_json(start) if start is not None else {}


def stop_list(stop) -> list:
    """``stop`` as a list: one string is one stop string (OpenAI's and our JSON allow both), never
    its characters; None is none."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


def chunks_with_logprobs(generation: Generation):
    """(text, logprobs of its characters) for each chunk of ``generation``: the logprobs are those
    the chunk's message carried (empty unless the request asked for them). Runs in the stream's thread."""
    seen = 0
    for text in generation:
        logprobs = generation.logprobs[seen:]
        seen += len(logprobs)
        yield text, logprobs



async def first_chunk(generation: Generation) -> tuple[BlockingStream, AsyncIterator, tuple[str, list]]:
    """Read ``generation`` as ``(text, logprobs)`` chunks and wait for the first, so that an error
    before any text (bad temperature, unknown model, too many streams) is raised here, while the
    caller can still answer with an HTTP status. Returns the stream (to close), the rest, the first."""
    stream = BlockingStream(chunks_with_logprobs(generation), generation.cancel)
    chunks = stream.__aiter__()
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = ("", [])
    return stream, chunks, first

@router.post("/generate", tags=["generate"], summary="Stream generated text as Server-Sent Events",
             response_description="SSE: `start` {model, version, prompt, seed}, `text` {text} per chunk "
                                  "({text, logprobs} with logprobs=true), then `end` {reason: length or stop, "
                                  "characters}; `error` {error} if the stream fails midway")
async def generate(body: GenerateBody, client: Client = Depends(caller_client)):
    extra = extra_arguments(client.generate, body)
    if "stop" in extra:
        extra["stop"] = stop_list(extra["stop"])
    logprobs = bool(extra.get("logprobs"))
    generation = client.generate(body.model, prompt=body.prompt, length=body.length, temperature=body.temperature,
                                 seed=body.seed, version=body.version, **extra)
    stream, chunks, first = await first_chunk(generation)
    # An error before the first text (bad temperature, unknown model, too many streams) is the HTTP status.

    def text_event(text: str, chunk_logprobs: list) -> dict:
        return {"text": text, "logprobs": chunk_logprobs} if logprobs else {"text": text}

    if not body.stream:
        parts = [first]
        async for item in chunks:
            parts.append(item)
        reply = {"text": "".join(text for text, _ in parts), "start": _start_json(generation.start),
                 "end": to_json(generation.end) if generation.end else None}
        if logprobs:
            reply["logprobs"] = [lp for _, chunk_logprobs in parts for lp in chunk_logprobs]
        return reply

    async def events() -> AsyncIterator[str]:
        try:
            yield sse("start", _start_json(generation.start))
            if first[0]:
                yield sse("text", text_event(*first))
            async for text, chunk_logprobs in chunks:
                yield sse("text", text_event(text, chunk_logprobs))
            if generation.end is not None:
                yield sse("end", to_json(generation.end))
        except TextgenError as exc:
            yield sse("error", error_body(exc.code, exc.message))
        finally:
            stream.close()

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
    return {"recipes": [{"name": name, "description": recipe.summary, "settings": dict(recipe.settings)}
                        for name, recipe in RECIPES.items()],
            "default": DEFAULT_RECIPE, "recommended": PAGE_RECIPE if PAGE_RECIPE in RECIPES else DEFAULT_RECIPE,
            "defaults": defaults}

class SubmitBody(BaseModel):
    """Fields beyond these are passed to ``client.Client.submit_train`` as they are."""
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"corpus": "tfjs-code", "model_name": "tiny", "options": {"lstm_layer_sizes": [32], "epochs": 2}}]})

    corpus: str = Field("", description="a built-in corpus name (see /corpora)")
    corpus_id: str = Field("", description="or an uploaded corpus' id")
    options: dict = Field(default_factory=dict, description="training options (lstm_layer_sizes, epochs, "
                          "examples_per_epoch, batch_size, validation_split, learning_rate, objective, ...); "
                          "unset ones take the trainer's defaults")
    model_name: str = Field("", description="publish under this name; default: from_model, else the corpus")
    from_model: str = Field("", description="keep training this model (a new version)")
    from_version: int = Field(0, description="0 = the latest")


@router.post("/jobs", tags=["jobs"], status_code=201, summary="Submit a training job")
def submit_job(body: SubmitBody, client: Client = Depends(caller_client)):
    extra = extra_arguments(client.submit_train, body)
    options = dict(body.options)
    sizes = options.get("lstm_layer_sizes")
    if isinstance(sizes, str):  # "128,128", as the CLI and the page's field write it
        options["lstm_layer_sizes"] = _layer_sizes(sizes)
    job = client.submit_train(corpus=body.corpus, corpus_id=body.corpus_id, options=options,
                              model_name=body.model_name, from_model=body.from_model,
                              from_version=body.from_version, **extra)
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
                yield sse(item.WhichOneof("event") or "event", job_event(item), item.id)
            async for item in events:
                if item is None:
                    yield KEEPALIVE
                else:
                    yield sse(item.WhichOneof("event") or "event", job_event(item), item.id)
        except TextgenError as exc:
            yield sse("error", error_body(exc.code, exc.message))
        finally:
            stream.close()

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


# ---- corpora -------------------------------------------------------------------------------------

@router.get("/corpora", tags=["corpora"], summary="Built-in and uploaded corpora")
def list_corpora(client: Client = Depends(caller_client)):
    return {"corpora": [to_json(c) for c in client.list_corpora()]}


@router.post("/corpora", tags=["corpora"], status_code=201, summary="Upload a UTF-8 text as a corpus",
             openapi_extra={"requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}},
                                            "required": True}})
async def upload_corpus(request: Request, name: str = Query("", description="a display name"),
                        client: Client = Depends(caller_client)):
    limit = _max_upload_bytes()
    with tempfile.NamedTemporaryFile(prefix="textgen-upload-", suffix=".txt") as spool:
        size = 0
        async for data in request.stream():
            size += len(data)
            if size > limit:
                return JSONResponse(error_body("INVALID_ARGUMENT", f"the text is larger than {limit} bytes "
                                               f"(TEXTGEN_MAX_UPLOAD_BYTES)"), status_code=413)
            spool.write(data)
        spool.flush()
        from starlette.concurrency import run_in_threadpool

        corpus = await run_in_threadpool(client.upload_corpus, spool.name, name or "upload.txt")
    return JSONResponse(to_json(corpus), status_code=201)


def _max_upload_bytes() -> int:
    try:
        return int(os.environ.get("TEXTGEN_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES))
    except ValueError:
        return DEFAULT_MAX_UPLOAD_BYTES
