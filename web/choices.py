"""What /v1/completions and /v1/chat/completions share: several choices of one request (``n``,
``best_of``), the likeliest alternatives at each character (``logprobs``/``top_logprobs``), and usage.

Choice ``i`` of a seeded request uses seed ``seed + i``: the choices differ from each other, and the
same request gives the same choices again. ``best_of`` > ``n`` runs ``best_of`` streams and keeps the
``n`` with the highest cumulative log-probability. The alternatives come with the text
(GenerateRequest.top_logprobs): each character's N likeliest characters under the model, from the
distribution it was drawn from, before temperature, top-k/top-p and penalties, as vLLM returns them by
default; an echoed prompt's come from Score.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from client.api import Client, TextgenError
from textgen.v1 import textgen_pb2 as pb
from web.generation import Chunks

MAX_CHOICES = 16  # n and best_of: streams one request may start


@dataclasses.dataclass
class Run:
    """One choice's generation: its index, its chunks, and what it produced."""

    index: int
    chunks: Chunks
    generation: object
    text: str = ""
    logprobs: list = dataclasses.field(default_factory=list)
    tops: list = dataclasses.field(default_factory=list)  # {char: logprob} per character, when asked

    @property
    def finish_reason(self) -> str:
        end = self.generation.end
        return "length" if end is not None and end.reason == pb.STOP_REASON_LENGTH else "stop"

    @property
    def cumulative_logprob(self) -> float:
        return float(sum(self.logprobs))


def check_counts(n: int, best_of: int | None, stream: bool) -> int:
    """How many streams to run for ``n`` choices out of ``best_of``; INVALID_ARGUMENT when out of range."""
    if not 1 <= n <= MAX_CHOICES:
        raise TextgenError("INVALID_ARGUMENT", f"n must be between 1 and {MAX_CHOICES}, got {n}")
    runs = n if best_of is None else best_of
    if not n <= runs <= MAX_CHOICES:
        raise TextgenError("INVALID_ARGUMENT", f"best_of must be between n ({n}) and {MAX_CHOICES}, got {best_of}")
    if stream and runs > n:
        raise TextgenError("INVALID_ARGUMENT", "best_of greater than n cannot be streamed: the best ones are known "
                                               "only at the end; leave out stream or best_of")
    return runs


async def start(client: Client, count: int, seed: int | None, logprobs: bool, **request) -> list[Run]:
    """``count`` generations of ``request`` (client.Client.generate's arguments, ``top_logprobs`` among
    them), seeds ``seed + i``, each waited for until its first chunk (so a refused request raises here,
    before any reply)."""
    generations = [client.generate(**request, seed=None if seed is None else seed + i, logprobs=logprobs)
                   for i in range(count)]
    try:
        chunks = await asyncio.gather(*(Chunks.open(g) for g in generations))
    except BaseException:
        for generation in generations:
            generation.cancel()
        raise
    return [Run(i, c, g) for i, (c, g) in enumerate(zip(chunks, generations))]


async def gather(runs: list[Run], keep: int) -> list[Run]:
    """Every run to its end; the ``keep`` best by cumulative log-probability (all, in order, when
    ``keep`` is their number), re-indexed from 0."""
    async def finish(run: Run) -> Run:
        run.text, run.logprobs, run.tops = await run.chunks.gather()
        return run

    done = list(await asyncio.gather(*(finish(r) for r in runs)))
    if keep < len(done):
        done = sorted(done, key=lambda r: r.cumulative_logprob, reverse=True)[:keep]
    for index, run in enumerate(done):
        run.index = index
    return done


async def merged(runs: list[Run]) -> AsyncIterator[tuple[Run, str | None, list[float], list[dict]]]:
    """``(run, text, logprobs, alternatives)`` of every run's chunks as they come (``run.text`` then ends
    with ``text``), and ``(run, None, [], [])`` when a run ends; a failed run raises its TextgenError here."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(run: Run):
        try:
            async for text, logprobs, tops in run.chunks:
                await queue.put((run, text, logprobs, tops))
            await queue.put((run, None, [], []))
        except BaseException as exc:  # noqa: BLE001  (handed to the reader)
            await queue.put((run, exc, [], []))

    tasks = [asyncio.create_task(pump(r)) for r in runs]
    try:
        for _ in range(len(runs)):
            while True:
                run, text, logprobs, tops = await queue.get()
                if isinstance(text, BaseException):
                    raise text
                if text is not None:
                    run.text += text  # here, so that run.text is what the reader has seen, this chunk last
                yield run, text, logprobs, tops
                if text is None:
                    break
    finally:
        for task in tasks:
            task.cancel()
        for run in runs:
            run.chunks.close()


class PromptLogprobs:
    """An echoed prompt's own characters, from the server's Score: their logprobs and alternatives."""

    def __init__(self, client: Client, model: str, count: int):
        self.client, self.model, self.count = client, model, count

    async def of(self, prompt: str, version: int) -> tuple[list[float | None], list[dict | None]]:
        """The prompt's characters' logprobs (None for the first, which has no context) and their
        ``count`` likeliest alternatives (None for the first)."""
        if len(prompt) < 2:
            return [None] * len(prompt), [None] * len(prompt)
        reply = await run_in_threadpool(self.client.score, self.model, prompt, version, True, self.count)
        tops = [dict(zip(a.characters, a.logprobs)) for a in reply.top_logprobs] if self.count else \
            [{} for _ in reply.logprobs]
        return [None, *reply.logprobs], [None, *tops]


def usage(prompt: str, runs: list[Run]) -> dict:
    """OpenAI's usage, in characters: the prompt once, every choice's completion."""
    completion = sum(len(r.text) for r in runs)
    return {"prompt_tokens": len(prompt), "completion_tokens": completion, "total_tokens": len(prompt) + completion}
