"""The training worker: ``python -m trainer worker`` (or ``python -m trainer.worker``).

An RQ worker on the ``training`` queue with RQ's JSON serializer, which

- runs ``trainer.job.run_training_job`` with well-formed JSON job data and nothing else: a job whose
  data is not JSON (a pickle written into Redis by hand), that names another function, carries
  callbacks or webhooks, or whose data is not a training job is failed without running anything
  (``refusal_reason``);
- runs each job in a forked work horse that dies with its worker (``PR_SET_PDEATHSIG``; the job also
  checks its parent at each batch), so a job never keeps training unsupervised once its worker is gone;
- proves it is alive with a short-lived key (``alive_key``, refreshed every ``ttl / 3`` s by a
  thread) and registers in ``workers_key(queue)``. The same thread, in whichever worker holds the
  queue's reaper lock, finds jobs in RQ's StartedJobRegistry whose worker is registered but no longer
  alive, and hands them to RQ's own abandoned-job handling (``StartedJobRegistry.cleanup``): RQ runs
  the job's failure callback, then retries it (``Retry(max=3)``, set at submit) or fails it. Left to
  itself RQ would notice only once the execution's heartbeat expired (``job_monitoring_interval +
  60`` s) and at its next maintenance run (every 10 minutes by default, 60 s here).
  The retried job resumes from its last checkpoint (trainer.job).

Stopping (``docker stop``, ``compose down``, ``make down``): on the first SIGTERM or SIGINT a worker
with a running job has its work horse stop training at the next batch and save a checkpoint there;
the worker then puts the job back at the front of the queue at once, without spending one of its
retries, and exits. Any live worker (or this one, started again) resumes it from that checkpoint. A
second signal is RQ's cold shutdown: the horse is killed and the worker exits at once; its alive key
goes with it but it stays in ``workers_key``, so the next liveness check of any worker takes the job
back as a dead worker's. A SIGKILL leaves the alive key to lapse: the job is taken back at most
``ttl`` plus one check later.

The job's events and summary (textgen.jobs) are written by trainer.job; this module only supervises.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import faulthandler
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from textgen import config
from textgen import jobs as records
from textgen.models_dir import ModelsDir
from trainer import metrics as worker_metrics
from trainer import job as training_job
from textgen.args import Parser, UsageError

log = logging.getLogger("trainer.worker")  # also when run as __main__

DEFAULT_LIVENESS_TTL = 15.0  # seconds without a sign of life before a worker's jobs are taken back
JOB_MONITORING_INTERVAL = 10  # RQ's heartbeat of a running job (its own dead-worker timeout is this + 60)
MAINTENANCE_INTERVAL = 60  # RQ's registry maintenance (jobs stuck between queue and start, expired entries)
REDIS_WAIT_SECONDS = 60
REDIS_RETRIES = 30  # with backoff capped at 1 s: a Redis that is back within ~25 s loses no worker
_PR_SET_PDEATHSIG = 1


def alive_key(worker_name: str) -> str:
    return f"{records.KEY_PREFIX}:worker:{worker_name}:alive"


def workers_key(queue_name: str) -> str:
    """The set of training workers (they keep an alive key) that take jobs from ``queue_name``."""
    return f"{records.KEY_PREFIX}:workers:{queue_name}"


def live_workers(redis, queue_name: str) -> int:
    """Training workers registered on ``queue_name`` whose alive key is fresh."""
    names = [name.decode() for name in redis.smembers(workers_key(queue_name))]
    return sum(redis.exists(alive_key(name)) for name in names)


def refusal_reason(job, connection) -> str | None:
    """Why this worker will not run ``job`` (None: it is a training job it runs).

    Reads the job's data with the JSON serializer only; nothing in it is imported or called.
    """
    from rq.exceptions import DeserializationError

    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except DeserializationError:
        return "its data is not JSON job data (this worker reads JSON only, never pickle)"
    if func_name != records.JOB_FUNCTION:
        return f"it names the function {func_name!r}; this worker runs only {records.JOB_FUNCTION}"
    if instance is not None or kwargs or not isinstance(args, (list, tuple)) or len(args) != 1:
        return "its arguments are not one JSON payload"
    try:
        records.parse_payload(args[0])
    except records.PayloadError as exc:
        return str(exc)
    names = connection.hmget(job.key, "success_callback_name", "failure_callback_name",
                             "stopped_callback_name", "webhooks")
    success, failure, stopped, webhooks = (v.decode() if v else "" for v in names)
    if success or stopped or failure not in ("", records.FAILURE_CALLBACK) or webhooks not in ("", "[]"):
        return "it carries callbacks or webhooks this worker does not run"
    return None


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the worker) dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the job's own parent check still stops it
        pass


def _worker_class():
    from rq import Worker
    from rq.utils import now

    class TrainingWorker(Worker):
        """rq.Worker that refuses foreign jobs and whose horses die with it."""

        metrics: worker_metrics.WorkerMetrics | None = None

        def execute_job(self, job, queue):
            reason = refusal_reason(job, self.connection)
            if reason is None:
                self._supervisor_pid = os.getpid()  # what the horse, once forked, checks its parent against
                with self.metrics.running(job.id) if self.metrics else contextlib.nullcontext():
                    return super().execute_job(job, queue)
            self.log.warning("Worker %s: refusing job %s: %s", self.name, job.id, reason)
            job.retries_left = None  # the job's own hash is not trusted: never run it again
            job.webhooks = []
            execution = self.prepare_execution(job)
            queue.intermediate_queue.remove(job.id)  # what the horse does first, had there been one
            job.ended_at = now()
            self.handle_job_failure(job, queue, exc_string=f"refused by the training worker: {reason}",
                                    execution=execution)
            if self.connection.exists(records.job_key(job.id)):
                records.record_event(self.connection, job.id, {"type": "failed", "reason": f"refused: {reason}"})
            self.set_state("idle")

        def fork_work_horse(self, job, queue):
            # SIGTERM stays blocked across the fork: the horse unblocks it once its own handler is in
            # place (setup_work_horse_signals), so a stop that comes at once still hands the job back.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                super().fork_work_horse(job, queue)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

        def setup_work_horse_signals(self):
            super().setup_work_horse_signals()
            signal.signal(signal.SIGTERM, self._supervision.request_handback)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

        def handle_warm_shutdown_request(self):
            super().handle_warm_shutdown_request()
            if self.horse_pid:  # the job stops at its next batch; handle_job_failure requeues it
                self.log.info("Worker %s: handing the running job back to the queue", self.name)
                try:
                    os.kill(self.horse_pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

        def unsubscribe(self):
            # RQ's own then waits for its pubsub thread, which it runs with sleep_time=60. Since redis-py 8.2,
            # PubSubWorkerThread.stop() joins that thread with no limit, and a thread that saw the
            # unsubscribe first sleeps out the 60 s: the warm shutdown outlived compose's 30 s stop grace
            # period (in 3 of 8 runs of the shutdown tests here). The thread is a daemon and main() ends
            # the process right after work() returns, which closes the connection: unsubscribe, and do
            # not wait.
            if self.pubsub_thread:
                self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
                self.pubsub.unsubscribe()

        def main_work_horse(self, job, queue):
            _die_with_parent()
            if os.getppid() != self._supervisor_pid:  # the worker died before that took effect
                os._exit(training_job.EXIT_SUPERVISOR_GONE)
            self._supervision = training_job.Supervision(self._supervisor_pid)
            job.supervision = self._supervision  # what run_training_job finds on rq.get_current_job()
            super().main_work_horse(job, queue)

        _superseded_job: str | None = None
        _handed_back_job: str | None = None

        def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
            """The horse died under a live worker (e.g. killed for memory): RQ retries while it can."""
            exit_code = os.WEXITSTATUS(ret_val) if ret_val is not None and os.WIFEXITED(ret_val) else None
            if exit_code == training_job.EXIT_HANDED_BACK:
                self._handed_back_job = job.id  # it saved a checkpoint and stopped: requeue, no retry spent
                return
            super().handle_work_horse_killed(job, retpid, ret_val, rusage)
            if exit_code == training_job.EXIT_SUPERVISOR_GONE:
                self._superseded_job = job.id  # another worker runs the job now: leave it alone
                return
            if not job.retries_left:
                signal_note = f" by signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else ""
                records.record_event(self.connection, job.id, {
                    "type": "failed",
                    "reason": f"the training process was killed{signal_note} (out of memory?) and no retry is left"})

        def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
            if self._handed_back_job == job.id:
                self._handed_back_job = None
                self.hand_back(job, queue, execution)
                return
            if self._superseded_job == job.id:  # only forget our own execution: no retry, no failure
                self._superseded_job = None
                with self.connection.pipeline() as pipeline:
                    self.cleanup_execution(job, pipeline=pipeline, execution=execution)
                    pipeline.execute()
                return
            super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                       exc_string=exc_string, execution=execution)

        def hand_back(self, job, queue, execution):
            """Put a job that stopped for our shutdown back at the front of its queue, its retries untouched."""
            records.record_event(self.connection, job.id, {"type": "queued", "reason": "handed back by a stopping worker"})
            with self.connection.pipeline() as pipeline:
                self.cleanup_execution(job, pipeline=pipeline, execution=execution)
                pipeline.execute()
            queue.enqueue_job(job, at_front=True)  # (it WATCHes: not in the pipeline above)
            self.log.info("Worker %s: job %s is back in the queue %r, to resume from its checkpoint",
                          self.name, job.id, queue.name)

    return TrainingWorker


class Liveness(threading.Thread):
    """Keeps this worker's alive key fresh and takes back the jobs of workers whose key lapsed."""

    def __init__(self, redis, worker_name: str, queue_name: str, ttl: float):
        super().__init__(name="textgen-liveness", daemon=True)
        self.redis, self.worker_name, self.queue_name, self.ttl = redis, worker_name, queue_name, ttl
        self.interval = max(ttl / 3, 0.2)
        self.stopping = threading.Event()

    def beat(self) -> None:
        self.redis.set(alive_key(self.worker_name), os.getpid(), px=int(self.ttl * 1000))
        self.redis.sadd(workers_key(self.queue_name), self.worker_name)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.beat()
                self.reap()
            except Exception as exc:  # noqa: BLE001 - Redis away for a moment: try again next beat
                log.warning("liveness: %s", exc)

    def stop(self) -> None:
        """This worker is gone: its alive key goes at once. It stays in ``workers_key`` so that the next
        liveness check (of any worker) takes back a job it may have left started (a cold shutdown), and
        removes it from there."""
        self.stopping.set()
        try:
            self.redis.delete(alive_key(self.worker_name))
        except Exception:  # noqa: BLE001
            pass

    def reap(self) -> list[str]:
        """Hand the jobs of dead training workers to RQ's abandoned-job handling; returns their ids."""
        from rq.registry import StartedJobRegistry
        from rq.serializers import JSONSerializer
        from rq.timeouts import TimerDeathPenalty

        lock = f"{records.KEY_PREFIX}:reaper-lock:{self.queue_name}"
        if not self.redis.set(lock, self.worker_name, nx=True, px=int(self.interval * 1000)):
            return []  # another worker is reaping right now
        # The failure callback RQ runs for each abandoned job gets a timer, not SIGALRM: this is not the
        # main thread.
        registry = StartedJobRegistry(self.queue_name, connection=self.redis, serializer=JSONSerializer,
                                      death_penalty_class=TimerDeathPenalty)
        dead_workers = {name.decode() for name in self.redis.smembers(workers_key(self.queue_name))
                        if not self.redis.exists(alive_key(name.decode()))}  # training workers only
        dead_entries, dead_jobs = [], []
        for entry in self.redis.zrange(registry.key, 0, -1):
            entry = entry.decode()
            job_id, _, execution_id = entry.partition(":")
            if self._owner(job_id, execution_id) in dead_workers:
                dead_entries.append(entry)
                dead_jobs.append(job_id)
        if dead_entries:
            log.warning("jobs of dead workers, handing back to RQ for a retry: %s", ", ".join(dead_jobs))
            self.redis.zadd(registry.key, {entry: 0 for entry in dead_entries}, xx=True)
            registry.cleanup(timestamp=0)  # only the entries just marked: RQ retries or fails each one
        if dead_workers:
            self.redis.srem(workers_key(self.queue_name), *dead_workers)
        return dead_jobs

    def _owner(self, job_id: str, execution_id: str) -> str:
        from rq.defaults import RQ_KEY_PREFIX

        owner = self.redis.hget(f"{RQ_KEY_PREFIX}:execution:{job_id}:{execution_id}", "worker_name")
        if owner is None:
            owner = self.redis.hget(f"{RQ_KEY_PREFIX}:job:{job_id}", "worker_name")
        return owner.decode() if owner else ""


def connect(url: str, wait_seconds: float):
    """A Redis client for ``url``, waiting up to ``wait_seconds`` for the server to answer."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    # A Redis restart (appendonly on, back within seconds) must not end the worker or its job: every
    # command, in the worker and in the forked work horse, retries (REDIS_RETRIES, backoff to 1 s).
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), REDIS_RETRIES)
    client = config.redis_client(url, retry=retry, retry_on_error=[redis.exceptions.ConnectionError,
                                                                   redis.exceptions.TimeoutError])
    deadline = time.monotonic() + wait_seconds
    warned = False
    while True:
        try:
            client.ping()
            return client
        except redis.exceptions.RedisError as exc:
            if time.monotonic() >= deadline:
                raise ConnectionError(f"cannot reach Redis at {config.redis_address(url)}: {exc}") from None
            if not warned:
                print(f"waiting for Redis at {config.redis_address(url)} ({exc})", file=sys.stderr)
                warned = True
            time.sleep(1)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m trainer worker",
        description="Run training jobs from the RQ queue 'training' (REDIS_URL, TEXTGEN_DATA_DIR).")
    parser.add_argument("--name", default=None, help="worker name (default: host, pid and a random suffix)")
    parser.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    parser.add_argument("--liveness-ttl", type=float,
                        default=os.environ.get("TEXTGEN_WORKER_LIVENESS_TTL", DEFAULT_LIVENESS_TTL),
                        help="seconds without a sign of life after which this worker's jobs are run elsewhere "
                             "(default %(default)s, env TEXTGEN_WORKER_LIVENESS_TTL)")
    parser.add_argument("--wait-redis", type=float, default=REDIS_WAIT_SECONDS,
                        help="seconds to wait for Redis at start (default %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="log RQ's debug messages")
    return parser


def install_base_model(env=os.environ) -> subprocess.Popen | None:
    """Install the shipped base model (trainer.base_model) as ``$TEXTGEN_BASE_MODEL`` (default
    base-english; empty or ``off``: not at all) in the models folder, if it has none of that name, in
    a process of its own: this supervisor imports TensorFlow but runs no model (no TensorFlow threads or
    graphs) before its work horses fork from it."""
    name = env.get("TEXTGEN_BASE_MODEL", "base-english").strip()
    if not name or name == "off":
        return None
    return subprocess.Popen([sys.executable, "-m", "trainer", "install-base", "--name", name], env=dict(env))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)  # (a string default goes through type=float too)
        if not args.liveness_ttl > 0:
            raise UsageError(f"--liveness-ttl must be a positive number of seconds, got {args.liveness_ttl}")
    except UsageError as exc:
        print(f"error: {exc} (see python -m trainer worker --help)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack to stderr
    from rq.serializers import JSONSerializer

    url = config.redis_url()
    try:
        redis = connect(url, args.wait_redis)
    except (ConnectionError, config.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = args.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    worker = _worker_class()(
        [config.QUEUE_NAME], name=name, connection=redis, serializer=JSONSerializer,
        job_monitoring_interval=JOB_MONITORING_INTERVAL, maintenance_interval=MAINTENANCE_INTERVAL)
    try:
        metrics_redis = connect(url, 0)
        worker.metrics = worker_metrics.serve(metrics_redis, config.QUEUE_NAME, os.environ,
                                              lambda: live_workers(metrics_redis, config.QUEUE_NAME))
    except ValueError as exc:  # a TEXTGEN_METRICS_ADDR that is not host:port
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for leftover in ModelsDir(config.models_dir()).sweep():
        print(f"removed {leftover}, left by a publish that did not finish", file=sys.stderr)
    install_base_model()
    # TensorFlow, Keras and the training modules now, once: each job's forked work horse inherits them.
    from trainer import export, training  # noqa: F401

    liveness = Liveness(connect(url, 0), name, config.QUEUE_NAME, args.liveness_ttl)
    liveness.beat()
    liveness.start()
    print(f"training worker {name}: queue {config.QUEUE_NAME!r} at {config.redis_address(url)}, "
          f"data in {config.data_dir()}", file=sys.stderr)
    code = 0
    try:
        worker.work(burst=args.burst, logging_level="DEBUG" if args.verbose else "INFO")
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # RQ's cold shutdown (a second SIGTERM)
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        liveness.stop()
    # Nothing is left to clean up: skip TensorFlow's teardown at interpreter exit (imported above),
    # which takes seconds of the stop grace period.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
