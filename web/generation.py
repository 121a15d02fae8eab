"""What /api/v1/generate and /v1/completions share: the generation controls their bodies declare, and
a ``client.Generation`` read from async code as ``(text, logprobs)`` chunks, streamed or gathered.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from pydantic import Field

from client.api import Generation, TextgenError
from web.streams import BlockingStream

# The controls' limits are the server's (textgen.v1's GenerateRequest): a value outside them is the
# server's INVALID_ARGUMENT with its message, so they are described here, not checked.
TopK = Annotated[int, Field(description="sample from the k most likely characters only; 0 = off")]
TopP = Annotated[float | None, Field(description="nucleus sampling, in (0, 1]: sample from the fewest likely "
                                                 "characters whose probabilities add up to top_p; 1 = off")]
Stop = Annotated[str | list[str] | None, Field(
    description="up to 4 stop strings (one string = one stop string); the text ends just before the first "
                "one it generates (reason: stop)")]


PRESENCE = "[-2, 2]: subtracted from the log-probability of each character already generated (vLLM's meaning)"
FREQUENCY = "[-2, 2]: times each character's count in the generated text, subtracted"
REPETITION = "ours and vLLM's, (0, 10]; 1 = off: characters in the prompt or the text are made less likely"
BIAS = ("{token: [-100, 100]} added to the log-probability; -100 bans it. A token is a charset index as a "
        "decimal string (GET /api/v1/models/{model}'s charset, in order), or a single non-digit character")


def penalties(body) -> dict:
    """client.Client.generate's penalty and bias arguments for a request body (/api/v1/generate, OpenAI's
    completions and chat): a ``logit_bias`` key is a charset index (a decimal string) or one character."""
    bias = {}
    for key, value in (body.logit_bias or {}).items():
        if key.isascii() and key.isdigit():
            bias[int(key)] = value
        elif len(key) == 1:
            bias[key] = value
        else:
            raise TextgenError("INVALID_ARGUMENT", f"logit_bias key {key!r} is neither a charset index (a decimal "
                                                   "string) nor a single character")
    return {"presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty,
            "repetition_penalty": body.repetition_penalty, "logit_bias": bias}


def stop_list(stop: str | list[str] | None) -> list[str]:
    """``stop`` as a list: one string is one stop string (OpenAI's and our JSON allow both), never
    its characters; None is none."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


class Chunks:
    """The ``(text, logprobs of its characters, their alternatives)`` chunks of a generation, read by a
    thread of their own (logprobs and alternatives empty unless the request asked for them; an
    alternative is ``{character: logprob}`` of the likeliest characters at that place).

    ``await Chunks.open(generation)`` waits for the first chunk, so that an error before any text (bad
    temperature, unknown model, too many streams) is raised there, while the caller can still answer
    with an HTTP status. Then ``async for`` streams every chunk, or ``await gather()`` joins them.
    """

    def __init__(self, stream: BlockingStream, rest: AsyncIterator, first: tuple[str, list[float], list[dict]]):
        self._stream, self._rest, self._first = stream, rest, first

    @classmethod
    async def open(cls, generation: Generation) -> "Chunks":
        stream = BlockingStream(_with_logprobs(generation), generation.cancel)
        rest = stream.__aiter__()
        try:
            first = await anext(rest)
        except StopAsyncIteration:
            first = ("", [], [])
        return cls(stream, rest, first)

    async def __aiter__(self) -> AsyncIterator[tuple[str, list[float], list[dict]]]:
        if self._first[0]:
            yield self._first
        async for chunk in self._rest:
            yield chunk

    async def gather(self) -> tuple[str, list[float], list[dict]]:
        """All of the text, the logprobs of its characters and their alternatives (empty unless asked)."""
        texts, logprobs, tops = [], [], []
        async for text, chunk_logprobs, chunk_tops in self:
            texts.append(text)
            logprobs.extend(chunk_logprobs)
            tops.extend(chunk_tops)
        return "".join(texts), logprobs, tops

    def close(self) -> None:
        """Cancel the gRPC call unless it already ended (the HTTP client went away)."""
        self._stream.close()


def _with_logprobs(generation: Generation):
    """(text, logprobs, alternatives) for each chunk of ``generation``: what its message carried (empty
    unless the request asked for them). Runs in the stream's thread."""
    seen = seen_top = 0
    for text in generation:
        logprobs = generation.logprobs[seen:]
        seen += len(logprobs)
        tops = [dict(zip(a.characters, a.logprobs)) for a in generation.top_logprobs[seen_top:]]
        seen_top += len(tops)
        yield text, logprobs, tops
