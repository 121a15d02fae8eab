"""OpenAI-compatible endpoints, so OpenAI's SDKs and the tools built on them can use our models.

    GET  /v1/models        every model, as OpenAI's model list (``name``; ``name:VERSION`` also works below)
    POST /v1/completions   model, prompt, max_tokens, temperature, seed, stream (SSE chunks, then [DONE]),
                           stream_options.include_usage, stop (a string or up to 4), top_p, logprobs (0-5),
                           n, best_of, echo, user, presence_penalty, frequency_penalty, logit_bias,
                           and ours (and vLLM's) top_k and repetition_penalty; suffix is refused
    POST /v1/chat/completions   web/chat.py

A token here is a character: ``max_tokens`` is the number of characters to generate, and ``usage``
counts characters. ``logprobs`` gives OpenAI's legacy object: each character's log-probability under
the model and, in ``top_logprobs``, the N likeliest characters there (web/choices.py);
``text_offset`` counts from the start of the prompt, as OpenAI's do. ``finish_reason`` is "stop" when
a stop string ended the completion. ``user`` is written to this process's log, not interpreted. The API key
(``Authorization: Bearer ...``) is passed on as the textgen token.
Errors are OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status
of the gRPC status.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from client.api import Client, TextgenError
from textgen.bundle import BundleError, parse_reference
from web import choices
from web.api import caller_client
from web.convert import http_status
from web.errors import Body
from web.generation import BIAS, FREQUENCY, PRESENCE, REPETITION, Stop, TopK, TopP, penalties, stop_list
from web.streams import DONE, SSE_HEADERS, sse

router = APIRouter(prefix="/v1", tags=["openai"])

OWNER = "textgen"
# OpenAI's error types by HTTP status, as their SDKs and docs use them.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
               429: "rate_limit_error"}
# OpenAI's fields this server does not do, and why; at these values (their defaults) they are accepted.
UNSUPPORTED = {
    "suffix": (None, "a character model continues a text; it cannot write toward a suffix"),
}
MAX_LOGPROBS = 5  # OpenAI's limit for completions' logprobs
log = logging.getLogger(__name__)


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
        {"id": m.name, "object": "model", "created": int(m.latest.created), "owned_by": OWNER,
         "capabilities": {"completion": True, "chat": accepts_chat(m.latest)}}
        for m in client.list_models()]}


def accepts_chat(info) -> bool:
    """Whether /v1/chat/completions can write its template for this model: every character of the speakers'
    names (web/chat.py), ': ' and the line break is in its charset."""
    from web.chat import DEFAULT_ROLES

    needed = set("".join({**DEFAULT_ROLES, **dict(info.chat_roles)}.values())) | set(": \n")
    return needed <= set(info.charset)


@router.get("/models/{model}", summary="One model, in OpenAI's format")
def get_model(model: str, client: Client = Depends(caller_client)):
    name, version = split_model(model)
    info = client.get_model(name, version)
    return {"id": model, "object": "model", "created": int(info.created), "owned_by": OWNER,
            "capabilities": {"completion": True, "chat": accepts_chat(info)}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = Field(False, description="a last chunk, before [DONE], with no choices and the usage")


class OpenAIBody(Body):
    """An OpenAI request body: a misspelt field is refused listing the fields this server takes."""

    @classmethod
    def unknown_fields(cls, names: list[str]) -> str:
        taken = [name for name in cls.model_fields if name not in UNSUPPORTED]
        return (f"unknown field {', '.join(map(repr, names))}; this server takes "
                f"{', '.join(taken[:-1])} and {taken[-1]}")


class CompletionBody(OpenAIBody):
    """OpenAI's completions request, every field of it (UNSUPPORTED ones only at their defaults)."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "tfjs-code", "prompt": "function ", "max_tokens": 200, "temperature": 0.7, "stream": True}]})

    model: str = Field(description="NAME, NAME:VERSION or NAME@latest")
    prompt: str | list[str] = Field("", description="one prompt; empty = a seed slice stored with the model")
    max_tokens: int = Field(16, description="characters to generate (a token is a character here)")
    temperature: float = Field(1.0, description=">= 0; 0 = always the most likely character")
    seed: int | None = Field(None, description="same seed, same text; choice i uses seed + i")
    stream: bool = Field(False, description="completion chunks as Server-Sent Events, then data: [DONE]")
    stream_options: StreamOptions | None = Field(None, description="include_usage: a last chunk with the usage")
    stop: Stop = None
    top_p: TopP = None
    logprobs: int | None = Field(None, description=f"0-{MAX_LOGPROBS}: each character's log-probability, and "
                                 "the N likeliest characters at its place (top_logprobs)")
    top_k: TopK = Field(0, description="ours, not OpenAI's: sample from the k most likely characters only; 0 = off")
    n: int = Field(1, description=f"choices to return (1-{choices.MAX_CHOICES}), each from its own seed")
    best_of: int | None = Field(None, description="run this many and return the n with the highest cumulative "
                                                  "log-probability (not with stream)")
    echo: bool = Field(False, description="the prompt again before each completion (with its logprobs when asked)")
    user: str | None = Field(None, description="who asked, for this process's log; not interpreted")
    suffix: str | None = Field(None, description="refused: a character model cannot write toward a suffix")
    presence_penalty: float = Field(0, description=PRESENCE)
    frequency_penalty: float = Field(0, description=FREQUENCY)
    repetition_penalty: float | None = Field(None, description=REPETITION)
    logit_bias: dict[str, float] | None = Field(None, description=BIAS)



def _prompt(body) -> str:
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise TextgenError("INVALID_ARGUMENT", f"prompt: give one prompt (a string or a list of one); "
                                                   f"got a list of {len(body.prompt)}")
        return body.prompt[0]
    return body.prompt


def refuse_unsupported(body) -> None:
    """INVALID_ARGUMENT naming an UNSUPPORTED field given another value than its default, and why."""
    for name, (default, why) in UNSUPPORTED.items():
        value = getattr(body, name, default)
        if value != default and not (value == {} and name == "logit_bias"):
            raise TextgenError("INVALID_ARGUMENT", f"{name}={value!r} is not supported: {why}; leave it out")


def _controls(body: CompletionBody) -> dict:
    """``client.Client.generate``'s controls for ``body``; INVALID_ARGUMENT for what cannot be done."""
    refuse_unsupported(body)
    if body.logprobs is not None and not 0 <= body.logprobs <= MAX_LOGPROBS:
        raise TextgenError("INVALID_ARGUMENT", f"logprobs must be an integer from 0 to {MAX_LOGPROBS}, "
                                               f"got {body.logprobs}")
    return {"top_k": body.top_k, "top_p": body.top_p, "stop": stop_list(body.stop), **penalties(body)}




def legacy_logprobs(text: str, logprobs: list, tops: list, offset: int) -> dict:
    """OpenAI's legacy completions ``logprobs`` object for ``text`` (a token is a character)."""
    return {"tokens": list(text), "token_logprobs": list(logprobs), "top_logprobs": list(tops),
            "text_offset": list(range(offset, offset + len(text)))}


def log_user(user: str | None, route: str, model: str) -> None:
    if user:
        log.info("%s for user %r on %s", route, user[:200], model)


@router.post("/completions", summary="A completion, or a stream of completion chunks (stream=true)")
async def completions(body: CompletionBody, client: Client = Depends(caller_client)):
    controls = _controls(body)
    prompt = _prompt(body)
    count = choices.check_counts(body.n, body.best_of, body.stream)
    name, version = split_model(body.model)
    log_user(body.user, "completion", body.model)
    want_logprobs = body.logprobs is not None
    runs = await choices.start(client, count, body.seed, want_logprobs or count > body.n, model=name,
                               prompt=prompt, length=body.max_tokens, temperature=body.temperature, version=version,
                               top_logprobs=body.logprobs or 0, **controls)
    start = runs[0].generation.start
    used_prompt = start.prompt if start else prompt
    prompt_logprobs = choices.PromptLogprobs(client, name, body.logprobs or 0)
    completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    async def echoed() -> tuple[list, list]:
        if body.echo and want_logprobs:
            return await prompt_logprobs.of(used_prompt, start.version)
        return [], []

    def reply(items: list[dict]) -> dict:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": body.model,
                "system_fingerprint": f"{start.model}:{start.version}", "choices": items}

    if not body.stream:
        done = await choices.gather(runs, body.n)
        prompt_lp, prompt_top = await echoed()
        items = []
        for run in done:
            text = (used_prompt if body.echo else "") + run.text
            lp = None
            if want_logprobs:
                tops = run.tops or [{} for _ in run.text]
                offset = 0 if body.echo else len(used_prompt)
                lp = legacy_logprobs(text, (prompt_lp if body.echo else []) + run.logprobs,
                                     (prompt_top if body.echo else []) + tops, offset)
            items.append({"text": text, "index": run.index, "finish_reason": run.finish_reason, "logprobs": lp})
        out = reply(items)
        out["usage"] = choices.usage(used_prompt, done)
        return out

    async def events() -> AsyncIterator[str]:
        prompt_lp, prompt_top = await echoed()
        if body.echo:
            for run in runs:
                lp = legacy_logprobs(used_prompt, prompt_lp, prompt_top, 0) if want_logprobs else None
                yield sse(reply([{"text": used_prompt, "index": run.index, "finish_reason": None, "logprobs": lp}]))
        async for run, text, chunk_logprobs, chunk_tops in choices.merged(runs):
            if text is None:
                yield sse(reply([{"text": "", "index": run.index, "finish_reason": run.finish_reason,
                                  "logprobs": None}]))
                continue
            lp = None
            if want_logprobs:
                before = used_prompt + run.text[:-len(text)]
                lp = legacy_logprobs(text, chunk_logprobs, chunk_tops or [{} for _ in text], len(before))
            yield sse(reply([{"text": text, "index": run.index, "finish_reason": None, "logprobs": lp}]))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield sse({**reply([]), "usage": choices.usage(used_prompt, runs)})

    return event_stream(events(), runs)


def event_stream(events: AsyncIterator[str], runs: list) -> StreamingResponse:
    """``events`` (the SSE chunks of ``runs``) as OpenAI streams them: an error after the first chunk in
    the stream (``stream_error``), every run's stream closed however it ends, then ``[DONE]``."""
    async def framed() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield event
        except TextgenError as exc:
            yield stream_error(exc)
        finally:
            await events.aclose()
            for run in runs:
                run.chunks.close()
        yield DONE

    return StreamingResponse(framed(), media_type="text/event-stream", headers=SSE_HEADERS)


def stream_error(exc: TextgenError) -> str:
    """An error after the stream began, as OpenAI's SDKs read one from an SSE stream."""
    status = http_status(exc.code)
    return sse({"error": {"message": exc.message, "type": ERROR_TYPES.get(status, "server_error"),
                          "param": None, "code": exc.code.lower()}})
