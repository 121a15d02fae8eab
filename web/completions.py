"""OpenAI-compatible endpoints, so OpenAI's SDKs and the tools built on them can use our models.

    GET  /v1/models        every model, as OpenAI's model list (``name``; ``name:VERSION`` also works below)
    POST /v1/completions   model, prompt, max_tokens, temperature, seed, stream (SSE chunks, then [DONE]),
                           stop (a string or up to 4), top_p, logprobs (0-5), and our top_k; OpenAI's
                           other fields (n, echo, ...) only at their NEUTRAL values

A token here is a character: ``max_tokens`` is the number of characters to generate, and ``usage``
counts characters. ``logprobs`` gives OpenAI's legacy object for the chosen characters only (the
server does not report the alternatives): ``top_logprobs`` entries hold just the chosen character
(none with ``logprobs=0``), and ``text_offset`` counts from the start of the prompt, as OpenAI's do.
``finish_reason`` is "stop" when a stop string ended the completion. The API key
(``Authorization: Bearer ...``) is passed on as the textgen token.
Errors are OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status
of the gRPC status.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ConfigDict, Field

from client.api import Client, TextgenError
from textgen.bundle import BundleError, parse_reference
from textgen.v1 import textgen_pb2 as pb
from web.api import caller_client
from web.convert import http_status
from web.errors import Body
from web.generation import Chunks, Stop, TopK, TopP, stop_list
from web.streams import DONE, SSE_HEADERS, sse

router = APIRouter(prefix="/v1", tags=["openai"])

OWNER = "textgen"
# OpenAI's error types by HTTP status, as their SDKs and docs use them.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
               429: "rate_limit_error"}
# Fields OpenAI's completions take that mean nothing for a character model at their defaults; any
# other value is refused rather than silently ignored.
NEUTRAL = {"n": 1, "best_of": 1, "echo": False, "suffix": None, "presence_penalty": 0, "frequency_penalty": 0,
           "logit_bias": None, "user": None, "stream_options": None}
MAX_LOGPROBS = 5  # OpenAI's limit for completions' logprobs


def openai_error(code: str, message: str, param: str | None = None) -> JSONResponse:
    status = http_status(code)
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code.lower()}},
                        status_code=status)


def split_model(model: str) -> tuple[str, int]:
    """``"name"`` and ``"name@latest"`` -> (name, 0: latest); ``"name:3"`` -> (name, 3) (textgen.bundle);
    a reference that is none of these goes to the server as it is, which says what is wrong with it."""
    try:
        return parse_reference(model)
    except BundleError:
        return model, 0


@router.get("/models", summary="The models, in OpenAI's list format")
def list_models(client: Client = Depends(caller_client)):
    return {"object": "list", "data": [
        {"id": m.name, "object": "model", "created": int(m.latest.created), "owned_by": OWNER}
        for m in client.list_models()]}


@router.get("/models/{model}", summary="One model, in OpenAI's format")
def get_model(model: str, client: Client = Depends(caller_client)):
    name, version = split_model(model)
    info = client.get_model(name, version)
    return {"id": model, "object": "model", "created": int(info.created), "owned_by": OWNER}


class CompletionBody(Body):
    """OpenAI's completions request, every field of it; those after top_k only at the values that change
    nothing here (n=1, best_of=1, echo=false, penalties 0, the rest left out)."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "tfjs-code", "prompt": "function ", "max_tokens": 200, "temperature": 0.7, "stream": True}]})

    model: str = Field(description="a model name, or name:version")
    prompt: str | list[str] = Field("", description="one prompt; empty = a seed slice stored with the model")
    max_tokens: int = Field(16, description="characters to generate (a token is a character here)")
    temperature: float = Field(1.0, description=">= 0; 0 = always the most likely character")
    seed: int | None = Field(None, description="same seed, same text")
    stream: bool = Field(False, description="completion chunks as Server-Sent Events, then data: [DONE]")
    stop: Stop = None
    top_p: TopP = None
    logprobs: int | None = Field(None, description=f"0-{MAX_LOGPROBS}: the log-probability of each character "
                                 "(only the chosen one's: top_logprobs hold just it)")
    top_k: TopK = Field(0, description="ours, not OpenAI's: sample from the k most likely characters only; 0 = off")
    n: int = Field(1, description="completions per prompt: only 1 here")
    best_of: int = Field(1, description="only 1 here")
    echo: bool = Field(False, description="only false here: the prompt is not repeated in the completion")
    suffix: str | None = Field(None, description="not supported: leave it out")
    presence_penalty: int | float = Field(0, description="only 0 here")
    frequency_penalty: int | float = Field(0, description="only 0 here")
    logit_bias: dict | None = Field(None, description="not supported: leave it out")
    user: str | None = Field(None, description="not supported: leave it out")
    stream_options: dict | None = Field(None, description="not supported: leave it out")

    @classmethod
    def unknown_fields(cls, names: list[str]) -> str:
        taken = [name for name in cls.model_fields if name not in NEUTRAL]
        return (f"unknown field {', '.join(map(repr, names))}; this server takes "
                f"{', '.join(taken[:-1])} and {taken[-1]}")


def _prompt(body: CompletionBody) -> str:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise TextgenError("INVALID_ARGUMENT", f"prompt: give one prompt (a string or a list of one); "
                                                   f"got a list of {len(body.prompt)}")
        return body.prompt[0]
    return body.prompt


def _controls(body: CompletionBody) -> dict:
    """``client.Client.generate``'s controls for ``body``; a NEUTRAL field at another value, or
    logprobs beyond MAX_LOGPROBS, is INVALID_ARGUMENT."""
    for name, neutral in NEUTRAL.items():
        value = getattr(body, name)
        if value != neutral:
            raise TextgenError("INVALID_ARGUMENT", f"{name}={value!r} is not supported by this server; "
                                                   f"leave it out (or {neutral!r})")
    if body.logprobs is not None and not 0 <= body.logprobs <= MAX_LOGPROBS:
        raise TextgenError("INVALID_ARGUMENT", f"logprobs must be an integer from 0 to {MAX_LOGPROBS}, "
                                               f"got {body.logprobs}")
    return {"top_k": body.top_k, "top_p": body.top_p, "stop": stop_list(body.stop),
            "logprobs": body.logprobs is not None}


class LogprobsObject:
    """OpenAI's legacy completions ``logprobs`` object, built chunk by chunk (a token is a character)."""

    def __init__(self, top: int, offset: int):
        self.top, self.offset = top, offset

    def chunk(self, text: str, logprobs: list[float]) -> dict:
        tokens = list(text)
        offsets = list(range(self.offset, self.offset + len(tokens)))
        self.offset += len(tokens)
        return {"tokens": tokens, "token_logprobs": list(logprobs),
                "top_logprobs": [{t: lp} if self.top else {} for t, lp in zip(tokens, logprobs)],
                "text_offset": offsets}


@router.post("/completions", summary="A completion, or a stream of completion chunks (stream=true)")
async def completions(body: CompletionBody, client: Client = Depends(caller_client)):
    controls = _controls(body)
    prompt = _prompt(body)
    name, version = split_model(body.model)
    generation = client.generate(name, prompt=prompt, length=body.max_tokens, temperature=body.temperature,
                                 seed=body.seed, version=version, **controls)
    chunks = await Chunks.open(generation)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    used_prompt = generation.start.prompt if generation.start else prompt
    logprobs = LogprobsObject(body.logprobs, len(used_prompt)) if body.logprobs is not None else None

    def chunk(text: str, finish_reason: str | None, chunk_logprobs: list[float] = ()) -> dict:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"text": text, "index": 0, "finish_reason": finish_reason,
                             "logprobs": logprobs.chunk(text, chunk_logprobs) if logprobs else None}]}

    def finish_reason() -> str:
        # "length": the requested characters were produced; "stop" when the server ended it early.
        return "length" if generation.end is not None and generation.end.reason == pb.STOP_REASON_LENGTH else "stop"

    if not body.stream:
        text, text_logprobs = await chunks.gather()
        reply = chunk(text, finish_reason(), text_logprobs)
        reply["usage"] = {"prompt_tokens": len(used_prompt), "completion_tokens": len(text),
                          "total_tokens": len(text) + len(used_prompt)}
        return reply

    async def events() -> AsyncIterator[str]:
        try:
            async for text, chunk_logprobs in chunks:
                yield sse(chunk(text, None, chunk_logprobs))
            yield sse(chunk("", finish_reason()))
        except TextgenError as exc:
            status = http_status(exc.code)
            yield sse({"error": {"message": exc.message, "type": ERROR_TYPES.get(status, "server_error"),
                                 "param": None, "code": exc.code.lower()}})
        finally:
            chunks.close()
        yield DONE

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
