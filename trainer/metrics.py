"""A training worker's metrics (Prometheus text format on ``TEXTGEN_METRICS_ADDR``, default 127.0.0.1:9451).

| name                                      | type      | labels | what                                      |
|-------------------------------------------|-----------|--------|-------------------------------------------|
| textgen_training_queue_depth              | gauge     |        | jobs waiting in the queue                 |
| textgen_training_job_records              | gauge     | state  | job records in Redis by state             |
| textgen_training_workers                  | gauge     |        | live training workers on the queue        |
| textgen_training_jobs_total               | counter   | state  | jobs this worker ran to an end            |
| textgen_training_job_duration_seconds     | histogram | state  | started to end, for those jobs            |
| textgen_training_epochs_total             | counter   |        | epochs this worker completed              |
| textgen_training_examples_total           | counter   |        | examples trained (rate() = examples/s)    |
| textgen_training_examples_per_second      | gauge     |        | the last epoch's examples per second      |
| textgen_training_busy                     | gauge     |        | 1 while this worker runs a job            |

The first three are the queue's, read from Redis when scraped: every worker shows the same values
(aggregate them with ``max``). The others are this worker's. Its jobs train in a forked work horse,
whose memory the worker never sees, so the worker folds each job's recorded events (textgen.jobs) into
them: at each scrape for the job running now, and once more when it ends.
"""
from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from textgen import metrics as shared
from textgen import jobs as training_job

FOLD_BATCH = 1000  # events read from Redis at a time
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 48 * 3600)


class _Queue(Collector):
    """The queue's gauges, from Redis."""

    def __init__(self, redis, queue_name: str, count_workers):
        self.redis, self.queue_name, self.count_workers = redis, queue_name, count_workers

    def collect(self):
        from rq import Queue

        depth = GaugeMetricFamily("textgen_training_queue_depth", "Training jobs waiting in the queue.")
        depth.add_metric([], Queue(self.queue_name, connection=self.redis).count)
        ids = self.redis.zrange(training_job.JOBS_INDEX, 0, -1)
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(training_job.job_key(job_id.decode()), "state")
            states = pipe.execute() if ids else []
        counts = {state: 0 for state in training_job.STATES}
        for state in states:
            if state is not None and state.decode() in counts:
                counts[state.decode()] += 1
        jobs = GaugeMetricFamily("textgen_training_job_records", "Training job records in Redis, by state.",
                                 labels=["state"])
        for state, count in counts.items():
            jobs.add_metric([state], count)
        workers = GaugeMetricFamily("textgen_training_workers", "Live training workers taking jobs from the queue.")
        workers.add_metric([], self.count_workers())
        yield from (depth, jobs, workers)


class WorkerMetrics(Collector):
    """This worker's metrics; ``running(job_id)`` brackets each job it runs. ``count_workers()``:
    how many training workers are alive on ``queue_name`` (trainer.worker knows)."""

    def __init__(self, redis, queue_name: str, count_workers):
        self.redis = redis
        self.registry = CollectorRegistry()
        self.registry.register(self)  # first: brings the counters up to date before they are read
        self.registry.register(_Queue(redis, queue_name, count_workers))
        self.jobs = Counter("textgen_training_jobs", "Training jobs this worker ran to an end, by final state.",
                            ["state"], registry=self.registry)
        self.durations = Histogram("textgen_training_job_duration_seconds",
                                   "Training jobs this worker ran, from start to end, by final state.",
                                   ["state"], buckets=JOB_BUCKETS, registry=self.registry)
        self.epochs = Counter("textgen_training_epochs", "Epochs this worker completed.", registry=self.registry)
        self.examples = Counter("textgen_training_examples", "Examples this worker trained on.",
                                registry=self.registry)
        self.rate = Gauge("textgen_training_examples_per_second", "The last completed epoch's examples per second.",
                          registry=self.registry)
        self.key_seconds = Counter("textgen_key_training_seconds",
                                   "Seconds of training this worker ran for each API key (the key that submitted "
                                   "the job; jobs submitted with auth off are not here).", ["key"],
                                   registry=self.registry)
        self.busy = Gauge("textgen_training_busy", "1 while this worker runs a training job.", registry=self.registry)
        for state in training_job.TERMINAL_STATES:  # zeros from the start, so rate() sees the first job
            self.jobs.labels(state)
            self.durations.labels(state)
        self._lock = threading.Lock()
        self._job: str | None = None  # the job running now
        self._after = "0-0"  # its last event folded in
        self._started: float | None = None

    @contextlib.contextmanager
    def running(self, job_id: str):
        """Around running ``job_id``: fold its events from now on (earlier attempts are not ours)."""
        with self._lock:
            last = self.redis.xrevrange(training_job.events_key(job_id), count=1)
            self._job, self._after, self._started = job_id, last[0][0].decode() if last else "0-0", None
            self.busy.set(1)
        try:
            yield
        finally:
            with self._lock:
                self._fold()
                self._job = None
                self.busy.set(0)

    def collect(self):
        with self._lock:
            if self._job is not None:
                self._fold()
        return []

    def _fold(self) -> None:
        while True:
            entries = training_job.read_events(self.redis, self._job, after=self._after, count=FOLD_BATCH)
            for entry_id, event in entries:
                self._after = entry_id
                self._fold_event(event)
            if len(entries) < FOLD_BATCH:
                return

    def _fold_event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "started":
            self._started = event["time"]
        elif kind == "epoch":
            self.epochs.inc()
            if event.get("examples_per_second") and event.get("seconds"):
                self.examples.inc(round(event["examples_per_second"] * event["seconds"]))
                self.rate.set(event["examples_per_second"])
        elif kind in training_job.TERMINAL_STATES:
            self.jobs.labels(kind).inc()
            if self._started is not None:
                seconds = max(0.0, event["time"] - self._started)
                self.durations.labels(kind).observe(seconds)
                owner = self.redis.hget(training_job.job_key(self._job), "owner")
                if owner:
                    self.key_seconds.labels(owner.decode()).inc(seconds)


def serve(redis, queue_name: str, environ, count_workers) -> WorkerMetrics:
    """The worker's metrics, served where ``environ`` says (``TEXTGEN_METRICS_ADDR``)."""
    metrics = WorkerMetrics(redis, queue_name, count_workers)
    metrics.endpoint = shared.serve(metrics.registry, shared.addr_from_env(environ, shared.WORKER_DEFAULT),
                                    "training worker")
    return metrics
