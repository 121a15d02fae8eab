"""The server's metrics (Prometheus text format on ``TEXTGEN_METRICS_ADDR``, default 127.0.0.1:9450).

| name                                          | type      | labels                  | what                              |
|-----------------------------------------------|-----------|-------------------------|-----------------------------------|
| textgen_grpc_requests_total                   | counter   | service, method, code   | RPCs handled, by final status     |
| textgen_active_streams                        | gauge     |                         | Generate streams the engine holds |
| textgen_generated_characters_total            | counter   | model                   | characters sent to clients        |
| textgen_time_to_first_chunk_seconds           | histogram | model                   | call start to first text          |
| textgen_stream_characters_per_second          | histogram | model                   | each finished stream's rate       |
| textgen_decode_step_seconds                   | histogram |                         | one batched ``advance`` call      |
| textgen_decode_batch_size                     | histogram |                         | streams in that call              |
| textgen_scored_characters_total               | counter   | model                   | characters scored by Score        |
| textgen_xla_compile_seconds                   | histogram | function                | one XLA program compiled          |
| textgen_prompt_cache_lookups_total            | counter   | result                  | prompts found started, or read    |
| textgen_model_versions_loaded                 | gauge     | model                   | versions of each model in memory  |
| textgen_model_latest_version                  | gauge     | model                   | the version "latest" means        |
| textgen_key_requests_total                    | counter   | key, method, code       | calls made with each API key      |
| textgen_key_generated_characters_total        | counter   | key                     | characters generated per key      |
| textgen_key_scored_characters_total           | counter   | key                     | characters scored per key         |
| textgen_key_upload_bytes_total                | counter   | key                     | bytes uploaded per key            |

plus the process collector's ``process_*`` (CPU seconds, memory, open files). Counters and
histograms belong to the process; the gauges are read from one server's engine and store when scraped.
The decode engine calls ``decode_step``; the gRPC layer calls ``observe_call`` and ``observe_generate``.
"""
from __future__ import annotations

import contextlib
import time

from prometheus_client import Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from textgen.metrics import Joined

PROCESS = CollectorRegistry()  # this process's counters and histograms (any number of servers)

REQUESTS = Counter("textgen_grpc_requests", "gRPC calls handled, by method and final status code.",
                   ["service", "method", "code"], registry=PROCESS)
CHARACTERS = Counter("textgen_generated_characters", "Characters of generated text sent to clients.",
                     ["model"], registry=PROCESS)
FIRST_CHUNK = Histogram(
    "textgen_time_to_first_chunk_seconds", "Time from a Generate call's start to its first text.", ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=PROCESS)
STREAM_RATE = Histogram(
    "textgen_stream_characters_per_second", "Each finished Generate stream's characters per second, "
    "from its call's start to its last text.", ["model"],
    buckets=(10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000), registry=PROCESS)
STEP_SECONDS = Histogram(
    "textgen_decode_step_seconds", "Duration of one batched decode step (the bundle's advance).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=PROCESS)
BATCH_SIZE = Histogram(
    "textgen_decode_batch_size", "Streams advanced together in one decode step.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=PROCESS)
SCORED = Counter("textgen_scored_characters", "Characters whose log-likelihood Score computed.",
                 ["model"], registry=PROCESS)
PROMPT_LOOKUPS = Counter(
    "textgen_prompt_cache_lookups", "Prompts of joining streams whose started state was found (result=hit: cached, "
    "or read once for several streams of the same group) or read by the model (result=miss).", ["result"],
    registry=PROCESS)
# Per API key (server.usage): labelled by key id, never the secret; calls made with auth off are not here.
KEY_REQUESTS = Counter("textgen_key_requests", "gRPC calls made with each API key, by method and final status code.",
                       ["key", "method", "code"], registry=PROCESS)
KEY_GENERATED = Counter("textgen_key_generated_characters", "Characters generated for each API key.", ["key"],
                        registry=PROCESS)
KEY_SCORED = Counter("textgen_key_scored_characters", "Characters scored for each API key.", ["key"],
                     registry=PROCESS)
KEY_UPLOADED = Counter("textgen_key_upload_bytes", "Corpus and model bytes uploaded with each API key.", ["key"],
                       registry=PROCESS)
COMPILE_SECONDS = Histogram(
    "textgen_xla_compile_seconds", "Time to compile one XLA program of a decode function (start or advance) "
    "for one input shape, on the engine's background thread.", ["function"],
    buckets=(0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0), registry=PROCESS)


@contextlib.contextmanager
def decode_step(streams: int):
    """Time the decode step run inside the ``with``, for ``streams`` streams."""
    began = time.perf_counter()
    yield
    STEP_SECONDS.observe(time.perf_counter() - began)
    BATCH_SIZE.observe(streams)


def observe_prompts(hits: int, misses: int) -> None:
    """Count the prompts of one group of joining streams: found started (``hits``) or read (``misses``)."""
    if hits:
        PROMPT_LOOKUPS.labels(result="hit").inc(hits)
    if misses:
        PROMPT_LOOKUPS.labels(result="miss").inc(misses)


def observe_call(method: str, code) -> None:
    """Count one handled call of ``method`` (``/package.Service/Method``) that ended with ``code``
    (a grpc.StatusCode)."""
    service, _, name = method.lstrip("/").rpartition("/")
    REQUESTS.labels(service=service or "unknown", method=name, code=code.name).inc()


def observe_generate(responses, began: float):
    """Pass Generate's ``responses`` through, measuring the stream (``began``: ``time.perf_counter()``
    at the call's start)."""
    model, characters, last = "", 0, began
    try:
        for response in responses:
            if response.HasField("start"):
                model = response.start.model
            if response.text:
                last = time.perf_counter()
                if not characters:
                    FIRST_CHUNK.labels(model).observe(last - began)
                characters += len(response.text)
                CHARACTERS.labels(model).inc(len(response.text))
            yield response
    finally:
        if characters and last > began:
            STREAM_RATE.labels(model).observe(characters / (last - began))


def observe_score(model: str, characters: int) -> None:
    SCORED.labels(model).inc(characters)


class _Served(Collector):
    """The gauges of one server: its engine's streams and its store's models, read when scraped."""

    def __init__(self, engine, store):
        self.engine, self.store = engine, store

    def collect(self):
        streams = GaugeMetricFamily("textgen_active_streams", "Generate streams the decode engine holds.")
        streams.add_metric([], self.engine.active_streams())
        loaded = GaugeMetricFamily("textgen_model_versions_loaded", "Versions of each model loaded in memory "
                                   "(the latest, and older ones asked for: TEXTGEN_OLDER_VERSIONS).",
                                   labels=["model"])
        latest = GaugeMetricFamily("textgen_model_latest_version", "The version a request for 'latest' gets.",
                                   labels=["model"])
        in_memory = self.store.loaded()
        for name, versions in self.store.list_models():
            loaded.add_metric([name], in_memory.get(name, 0))
            latest.add_metric([name], versions[-1].version)
        yield from (streams, loaded, latest)


def registry_for(engine, store) -> CollectorRegistry:
    """What one server's ``/metrics`` shows: the process's metrics and this server's gauges."""
    registry = CollectorRegistry()
    registry.register(Joined(PROCESS, _Served(engine, store), ProcessCollector(registry=None)))
    return registry
