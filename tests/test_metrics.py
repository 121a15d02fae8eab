"""Metrics: the server's and a worker's /metrics endpoints, scraped over HTTP as Prometheus would.

A real server on loopback (its metrics on a free port), a real redis-server and a real training worker
process; the counters must move by exactly what a Generate, a Score and a training job did.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.api import Client, TextgenError
from server.config import Settings, SettingsError
from tests.conftest import SHARED_CORPORA
from tests.redis_helpers import RedisServer, free_port
from tests.server_helpers import connect, copy_models, generate, running_server, wait_for
from textgen.v1 import textgen_pb2 as pb

REPO = Path(__file__).resolve().parents[1]
TINY = {"lstm_layer_sizes": [16], "sample_len": 10, "examples_per_epoch": 256, "batch_size": 64, "epochs": 2,
        "display_length": 0, "seed": 1}
TEXTGEN = "textgen.v1.TextGen"


def scrape(port: int) -> dict:
    """``{(sample name, ((label, value), ...)): value}`` from ``http://127.0.0.1:port/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode("utf-8")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(samples: dict, method: str, code: str) -> float:
    return value(samples, "textgen_grpc_requests_total", service=TEXTGEN, method=method, code=code)


# ---- the server --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("metrics")
    copy_models(trained_bundles, data_dir)
    with running_server(data_dir, metrics_addr=("127.0.0.1", 0), xla=False) as server:
        yield server


def test_a_generate_moves_the_characters_requests_and_stream_metrics_by_exactly_what_it_did(server):
    port = server.metrics_endpoint.port
    before = scrape(port)
    channel, stub = connect(server)

    _start, text, end, _responses = generate(stub, model="shake-one", prompt="ROMEO:", length=157, temperature=0.5,
                                             seed=3)

    assert wait_for(lambda: value(scrape(port), "textgen_active_streams") == 0)
    after = scrape(port)
    channel.close()
    assert len(text) == end.characters == 157

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("textgen_generated_characters_total", model="shake-one") == 157
    assert requests(after, "Generate", "OK") - requests(before, "Generate", "OK") == 1
    assert delta("textgen_time_to_first_chunk_seconds_count", model="shake-one") == 1
    assert delta("textgen_stream_characters_per_second_count", model="shake-one") == 1
    assert delta("textgen_decode_step_seconds_count") >= 1
    assert delta("textgen_decode_batch_size_count") == delta("textgen_decode_step_seconds_count")
    assert value(after, "textgen_model_versions_loaded", model="shake-one") == 1
    assert value(after, "textgen_model_latest_version", model="shake-two") == 1


def test_a_prompt_sent_again_counts_as_a_prompt_cache_hit(server):
    port = server.metrics_endpoint.port
    before = scrape(port)
    channel, stub = connect(server)
    prompt = "MENENIUS: I tell you, friends, most charitable care"  # not used by any other test
    texts = [generate(stub, model="shake-two", prompt=prompt, length=40, temperature=0.7, seed=seed)[1]
             for seed in (1, 2, 1)]
    after = scrape(port)
    channel.close()
    assert texts[0] == texts[2] != texts[1]  # the cached prompt gives the seed's text again
    hits = value(after, "textgen_prompt_cache_lookups_total", result="hit") - \
        value(before, "textgen_prompt_cache_lookups_total", result="hit")
    misses = value(after, "textgen_prompt_cache_lookups_total", result="miss") - \
        value(before, "textgen_prompt_cache_lookups_total", result="miss")
    assert (misses, hits) == (1, 2)


def test_active_streams_counts_a_stream_while_it_runs_and_a_cancelled_one_counts_as_cancelled(server):
    port = server.metrics_endpoint.port
    cancelled = requests(scrape(port), "Generate", "CANCELLED")
    channel, stub = connect(server)
    responses = stub.Generate(pb.GenerateRequest(model="shake-two", prompt="KING", length=10_000, temperature=1))
    next(responses)  # started

    assert value(scrape(port), "textgen_active_streams") == 1
    responses.cancel()
    assert wait_for(lambda: value(scrape(port), "textgen_active_streams") == 0)
    assert wait_for(lambda: requests(scrape(port), "Generate", "CANCELLED") == cancelled + 1)
    channel.close()


def test_refused_calls_are_counted_by_their_status_code(server):
    port = server.metrics_endpoint.port
    before = scrape(port)
    channel, stub = connect(server)
    with pytest.raises(grpc.RpcError):
        stub.GetModel(pb.GetModelRequest(model="no-such-model"))
    with pytest.raises(grpc.RpcError):
        generate(stub, model="shake-one", prompt="A", length=5, temperature=-1)
    channel.close()
    after = scrape(port)
    assert requests(after, "GetModel", "NOT_FOUND") - requests(before, "GetModel", "NOT_FOUND") == 1
    assert requests(after, "Generate", "INVALID_ARGUMENT") - requests(before, "Generate", "INVALID_ARGUMENT") == 1
    assert requests(after, "Generate", "OK") == requests(before, "Generate", "OK")


def test_score_counts_its_call_and_the_characters_it_scored(server):
    port = server.metrics_endpoint.port
    before = scrape(port)
    with Client(server=f"127.0.0.1:{server.port}") as client:
        reply = client.score("shake-one", "ROMEO:\nWhat light is this?")
        with pytest.raises(TextgenError):
            client.score("shake-one", "{}")
    after = scrape(port)
    assert reply.characters == 25
    assert value(after, "textgen_scored_characters_total", model="shake-one") - \
        value(before, "textgen_scored_characters_total", model="shake-one") == 25
    assert requests(after, "Score", "OK") - requests(before, "Score", "OK") == 1
    assert requests(after, "Score", "INVALID_ARGUMENT") - requests(before, "Score", "INVALID_ARGUMENT") == 1


def test_the_metrics_address_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("TEXTGEN_METRICS_ADDR", raising=False)
    assert Settings.from_env().metrics_addr == ("127.0.0.1", 9450)
    monkeypatch.setenv("TEXTGEN_METRICS_ADDR", "0.0.0.0:9999")
    assert Settings.from_env().metrics_addr == ("0.0.0.0", 9999)
    monkeypatch.setenv("TEXTGEN_METRICS_ADDR", "")
    assert Settings.from_env().metrics_addr is None  # off
    monkeypatch.setenv("TEXTGEN_METRICS_ADDR", "9450")
    with pytest.raises(SettingsError, match=r"TEXTGEN_METRICS_ADDR must be host:port .* got '9450'"):
        Settings.from_env()


def test_a_taken_metrics_port_leaves_the_server_serving_without_metrics(trained_bundles, tmp_path, caplog):
    copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, metrics_addr=("127.0.0.1", 0)) as first:
        taken = first.metrics_endpoint.port
        with running_server(tmp_path, metrics_addr=("127.0.0.1", taken)) as second:
            assert second.metrics_endpoint is None
            channel, stub = connect(second)
            assert generate(stub, model="shake-one", prompt="A", length=5, temperature=0)[2].characters == 5
            channel.close()
    assert f"cannot listen on 127.0.0.1:{taken} (TEXTGEN_METRICS_ADDR)" in caplog.text


# ---- a training worker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def training_stack(tmp_path_factory):
    """Redis, a worker process (metrics on a free port) and a server with the Training service."""
    root = tmp_path_factory.mktemp("worker-metrics")
    data_dir = root / "data"
    (data_dir / "corpora").mkdir(parents=True)
    shutil.copyfile(SHARED_CORPORA / "tfjs-code.txt", data_dir / "corpora" / "tfjs-code.txt")
    redis = RedisServer(root / "redis").start()
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis.url, "TEXTGEN_DATA_DIR": str(data_dir), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONUNBUFFERED": "1", "TEXTGEN_METRICS_ADDR": f"127.0.0.1:{port}"}
    log = (root / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "trainer.worker"], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with running_server(data_dir, redis_url=redis.url, reload_seconds=0.2, xla=False) as server, \
                Client(server=f"127.0.0.1:{server.port}") as client:
            yield {"worker_port": port, "client": client, "log": root / "worker.log"}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        redis.stop()


def _scrape_when_up(port: int, log: Path) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            samples = scrape(port)
            if value(samples, "textgen_training_workers") == 1:
                return samples
        except OSError:
            pass
        assert time.monotonic() < deadline, f"worker metrics never came up: {log.read_text()[-2000:]}"
        time.sleep(0.2)


def test_training_jobs_move_the_queue_state_epoch_and_example_metrics_of_the_worker(training_stack):
    port, client = training_stack["worker_port"], training_stack["client"]
    before = _scrape_when_up(port, training_stack["log"])
    assert value(before, "textgen_training_busy") == 0

    submitted = time.monotonic()
    first = client.submit_train(corpus="tfjs-code", options=TINY, model_name="tiny-a")
    second = client.submit_train(corpus="tfjs-code", options=TINY, model_name="tiny-b")
    running = wait_for(lambda: (lambda s: s if value(s, "textgen_training_job_records", state="started") else None)(
        scrape(port)), timeout=60, interval=0.1)
    assert running, "the worker never reported a running job"
    # One worker: the first job runs, the second waits in the queue.
    assert value(running, "textgen_training_busy") == 1
    assert value(running, "textgen_training_queue_depth") == 1
    assert value(running, "textgen_training_job_records", state="queued") == 1
    assert value(running, "textgen_training_job_records", state="started") == 1

    for job in (first, second):
        for _event in client.watch_job(job.id):
            pass
    elapsed = time.monotonic() - submitted
    assert client.get_job(second.id).state == pb.JOB_STATE_FINISHED
    after = wait_for(lambda: (lambda s: s if value(s, "textgen_training_busy") == 0 else None)(scrape(port)))

    assert value(after, "textgen_training_jobs_total", state="finished") == 2
    assert value(after, "textgen_training_epochs_total") == 2 * TINY["epochs"]
    assert value(after, "textgen_training_examples_total") == 2 * TINY["epochs"] * TINY["examples_per_epoch"]
    assert value(after, "textgen_training_examples_per_second") > 0
    assert value(after, "textgen_training_job_duration_seconds_count", state="finished") == 2
    assert 0 < value(after, "textgen_training_job_duration_seconds_sum", state="finished") <= elapsed  # started to end, each
    assert value(after, "textgen_training_queue_depth") == 0
    assert value(after, "textgen_training_job_records", state="finished") == 2
    assert value(after, "textgen_training_job_records", state="queued") == 0
    assert value(after, "textgen_training_workers") == 1
