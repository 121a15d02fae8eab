"""What /api/v1/generate and /v1/completions share: the generation controls their bodies declare, and
a ``client.Generation`` read from async code as ``(text, logprobs)`` chunks, streamed or gathered.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from pydantic import Field

from client.api import Generation
from web.streams import BlockingStream

# The controls' limits are the server's (textgen.v1's GenerateRequest): a value outside them is the
# server's INVALID_ARGUMENT with its message, so they are described here, not checked.
TopK = Annotated[int, Field(description="sample from the k most likely characters only; 0 = off")]
TopP = Annotated[float | None, Field(description="nucleus sampling, in (0, 1]: sample from the fewest likely "
                                                 "characters whose probabilities add up to top_p; 1 = off")]
Stop = Annotated[str | list[str] | None, Field(
    description="up to 4 stop strings (one string = one stop string); the text ends just before the first "
                "one it generates (reason: stop)")]


def stop_list(stop: str | list[str] | None) -> list[str]:
    """``stop`` as a list: one string is one stop string (OpenAI's and our JSON allow both), never
    its characters; None is none."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


class Chunks:
    """The ``(text, logprobs of its characters)`` chunks of a generation, read by a thread of their own.

    ``await Chunks.open(generation)`` waits for the first chunk, so that an error before any text (bad
    temperature, unknown model, too many streams) is raised there, while the caller can still answer
    with an HTTP status. Then ``async for`` streams every chunk, or ``await gather()`` joins them.
    """

    def __init__(self, stream: BlockingStream, rest: AsyncIterator, first: tuple[str, list[float]]):
        self._stream, self._rest, self._first = stream, rest, first

    @classmethod
    async def open(cls, generation: Generation) -> "Chunks":
        stream = BlockingStream(_with_logprobs(generation), generation.cancel)
        rest = stream.__aiter__()
        try:
            first = await anext(rest)
        except StopAsyncIteration:
            first = ("", [])
        return cls(stream, rest, first)

    async def __aiter__(self) -> AsyncIterator[tuple[str, list[float]]]:
        if self._first[0]:
            yield self._first
        async for chunk in self._rest:
            yield chunk

    async def gather(self) -> tuple[str, list[float]]:
        """All of the text, and the logprobs of its characters (empty unless the request asked)."""
        texts, logprobs = [], []
        async for text, chunk_logprobs in self:
            texts.append(text)
            logprobs.extend(chunk_logprobs)
        return "".join(texts), logprobs

    def close(self) -> None:
        """Cancel the gRPC call unless it already ended (the HTTP client went away)."""
        self._stream.close()


def _with_logprobs(generation: Generation):
    """(text, logprobs) for each chunk of ``generation``: the logprobs its message carried (empty
    unless the request asked for them). Runs in the stream's thread."""
    seen = 0
    for text in generation:
        logprobs = generation.logprobs[seen:]
        seen += len(logprobs)
        yield text, logprobs
