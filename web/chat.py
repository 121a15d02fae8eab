"""OpenAI's chat completions for character models: ``POST /v1/chat/completions``.

A character model has no chat training, so the messages are written out as a play script and the
model continues it (the template, documented in the README):

    System: <system message>
    User: <user message>
    Assistant: <assistant message>
    User: <user message>
    Assistant:

one line per message, each ``<Role name>: <content>`` (newlines inside a message become spaces), and
the prompt ends with the assistant's name and ": ". Generation stops at the next turn marker (a new
line that starts with the user's or the assistant's name and ":") besides the request's own stop
strings (4 in all at most). The roles' names default to ``DEFAULT_ROLES``; a model may set its own
in meta.json (``"chat": {"roles": {"user": "ROMEO", "assistant": "JULIET"}}``, shown as
``chat_roles`` by GetModel), and a request may set them (``roles``, ours: OpenAI has no such field).

The reply, its stream chunks (``delta``), ``finish_reason``, ``usage``, ``logprobs`` (chat's format:
``content`` entries with ``token``, ``logprob``, ``bytes`` and ``top_logprobs``) and errors follow
OpenAI's schema; a token is a character.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from client.api import Client, TextgenError
from web import choices
from web.api import caller_client
from web.completions import OpenAIBody, StreamOptions, event_stream, log_user, refuse_unsupported, split_model
from web.generation import BIAS, FREQUENCY, PRESENCE, REPETITION, Stop, TopK, TopP, penalties, stop_list
from web.streams import sse

router = APIRouter(prefix="/v1", tags=["openai"])

DEFAULT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
MAX_TOP_LOGPROBS = 20  # as OpenAI's chat
MAX_STOPS = 4


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI's messages carry more (name, tool_calls...): not used
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = Field("", description="text, or OpenAI's list of text parts")


class Roles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    user: str | None = None
    assistant: str | None = None


class ChatBody(OpenAIBody):
    """OpenAI's chat completions request (UNSUPPORTED fields only at their defaults)."""
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "shakespeare", "messages": [{"role": "user", "content": "What light through yonder window?"}],
         "max_tokens": 120, "temperature": 0.6}]})

    model: str = Field(description="NAME, NAME:VERSION or NAME@latest")
    messages: list[Message] = Field(description="the conversation so far, written out as the model's prompt")
    max_tokens: int | None = Field(None, description="characters to generate (default 200)")
    max_completion_tokens: int | None = Field(None, description="the same as max_tokens (OpenAI's newer name)")
    temperature: float = Field(1.0, description=">= 0; 0 = always the most likely character")
    top_p: TopP = None
    top_k: TopK = Field(0, description="ours, not OpenAI's")
    n: int = Field(1, description=f"choices (1-{choices.MAX_CHOICES}), choice i from seed + i")
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    logprobs: bool = Field(False, description="each character's log-probability under the model")
    top_logprobs: int | None = Field(None, description=f"0-{MAX_TOP_LOGPROBS}: the likeliest characters at each place")
    user: str | None = Field(None, description="who asked, for this process's log; not interpreted")
    roles: Roles | None = Field(None, description="ours: the speakers' names in the template (default: the "
                                                  "model's meta.json chat.roles, else System, User, Assistant)")
    presence_penalty: float = Field(0, description=PRESENCE)
    frequency_penalty: float = Field(0, description=FREQUENCY)
    repetition_penalty: float | None = Field(None, description=REPETITION)
    logit_bias: dict[str, float] | None = Field(None, description=BIAS)


def roles_for(info, requested: Roles | None) -> dict[str, str]:
    """The speakers' names: the request's, else the model's (meta.json), else DEFAULT_ROLES."""
    roles = {**DEFAULT_ROLES, **dict(info.chat_roles)}
    if requested is not None:
        roles.update({k: v for k, v in requested.model_dump().items() if v})
    for role, name in roles.items():
        if not name.strip() or "\n" in name or ":" in name:
            raise TextgenError("INVALID_ARGUMENT", f"roles.{role} must be a name without ':' or line breaks, "
                                                   f"got {name!r}")
    return roles


def render(messages: list[Message], roles: dict[str, str]) -> str:
    """The messages as the template's lines, ending with the assistant's turn (module docstring)."""
    if not messages:
        raise TextgenError("INVALID_ARGUMENT", "messages: give at least one message")
    lines = []
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if any(p.get("type") != "text" for p in content if isinstance(p, dict)) or None in parts:
                raise TextgenError("INVALID_ARGUMENT", f"messages[{i}].content: only text parts are taken by a "
                                                       "character model")
            content = "".join(parts)
        role = {"developer": "system", "tool": "user"}.get(message.role, message.role)
        lines.append(f"{roles[role]}: {' '.join((content or '').splitlines())}")
    return "\n".join(lines) + f"\n{roles['assistant']}:"


def turn_markers(roles: dict[str, str]) -> list[str]:
    return [f"\n{roles['user']}:", f"\n{roles['assistant']}:"]


def chat_logprobs(text: str, logprobs: list, tops: list) -> dict:
    """Chat's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}]}``."""
    def entry(token, logprob):
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(c, lp), "top_logprobs": [entry(t, x) for t, x in top.items()]}
                        for c, lp, top in zip(text, logprobs, tops)]}


@router.post("/chat/completions", summary="A chat completion: the messages written out as a script, continued")
async def chat_completions(body: ChatBody, client: Client = Depends(caller_client)):
    refuse_unsupported(body)
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_TOP_LOGPROBS:
        raise TextgenError("INVALID_ARGUMENT", f"top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, "
                                               f"got {body.top_logprobs}")
    if body.top_logprobs and not body.logprobs:
        raise TextgenError("INVALID_ARGUMENT", "top_logprobs needs logprobs: true")
    count = choices.check_counts(body.n, None, body.stream)
    name, version = split_model(body.model)
    info = await run_in_threadpool(client.get_model, name, version)
    roles = roles_for(info, body.roles)
    prompt = render(body.messages, roles)
    stop = turn_markers(roles) + [s for s in stop_list(body.stop) if s not in turn_markers(roles)]
    if len(stop) > MAX_STOPS:
        raise TextgenError("INVALID_ARGUMENT", f"stop: at most {MAX_STOPS - 2} stop strings with chat (the other "
                                               f"{2} are the turn markers {turn_markers(roles)!r}), got "
                                               f"{len(stop_list(body.stop))}")
    length = body.max_completion_tokens or body.max_tokens or 200
    log_user(body.user, "chat completion", body.model)
    runs = await choices.start(client, count, body.seed, body.logprobs, model=name, prompt=prompt, length=length,
                               temperature=body.temperature, version=info.version, top_k=body.top_k,
                               top_p=body.top_p, stop=stop, top_logprobs=(body.top_logprobs or 0) if body.logprobs
                               else 0, **penalties(body))
    chat_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def reply(kind: str, items: list[dict]) -> dict:
        return {"id": chat_id, "object": kind, "created": created, "model": body.model,
                "system_fingerprint": f"{info.name}:{info.version}", "choices": items}

    if not body.stream:
        done = await choices.gather(runs, body.n)
        items = []
        for run in done:
            lp = None
            if body.logprobs:
                lp = chat_logprobs(run.text, run.logprobs, run.tops or [{} for _ in run.text])
            items.append({"index": run.index, "message": {"role": "assistant", "content": run.text},
                          "logprobs": lp, "finish_reason": run.finish_reason})
        out = reply("chat.completion", items)
        out["usage"] = choices.usage(prompt, done)
        return out

    async def events() -> AsyncIterator[str]:
        for run in runs:
            yield sse(reply("chat.completion.chunk", [{"index": run.index, "delta": {"role": "assistant",
                                                                                      "content": ""},
                                                       "logprobs": None, "finish_reason": None}]))
        async for run, text, chunk_logprobs, chunk_tops in choices.merged(runs):
            if text is None:
                yield sse(reply("chat.completion.chunk", [{"index": run.index, "delta": {}, "logprobs": None,
                                                           "finish_reason": run.finish_reason}]))
                continue
            lp = None
            if body.logprobs:
                lp = chat_logprobs(text, chunk_logprobs, chunk_tops or [{} for _ in text])
            yield sse(reply("chat.completion.chunk", [{"index": run.index, "delta": {"content": text},
                                                       "logprobs": lp, "finish_reason": None}]))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield sse({**reply("chat.completion.chunk", []), "usage": choices.usage(prompt, runs)})

    return event_stream(events(), runs)
