"""Server replicas over one ``models/`` folder and one Redis act as one server: a version published or
deleted anywhere is what every replica serves (or refuses) at once, "latest" included, though their
own rescans are an hour apart; a job submitted through one replica is seen and cancelled through the
other."""
from __future__ import annotations

import shutil

import pytest

from client.api import Client, TextgenError
from tests.conftest import corpus_text
from tests.redis_helpers import RedisServer
from tests.server_helpers import MODELS, copy_models, running_server
from textgen.models_dir import ModelsDir
from textgen.v1 import textgen_pb2 as pb


@pytest.fixture
def replicas(trained_bundles, tmp_path):
    copy_models(trained_bundles, tmp_path)
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with running_server(tmp_path, reload_seconds=3600, redis_url=redis.url, xla=False) as a, \
                running_server(tmp_path, reload_seconds=3600, redis_url=redis.url, xla=False) as b:
            with Client(server=f"127.0.0.1:{a.port}") as ca, Client(server=f"127.0.0.1:{b.port}") as cb:
                yield tmp_path / "models", ca, cb
    finally:
        redis.stop()


def served_version(client: Client, name: str, version: int = 0) -> int:
    stream = client.generate(name, prompt="ROMEO:", length=5, temperature=0, version=version)
    assert len(stream.text) == 5
    return stream.start.version


def test_a_version_published_or_deleted_anywhere_is_what_every_replica_serves_at_once(replicas):
    models_dir, a, b = replicas
    name = MODELS["one"]
    assert served_version(a, name) == served_version(b, name) == 1

    # Another process (a worker, another replica's host) publishes version 2 into the shared folder.
    disk = ModelsDir(models_dir)
    staged = disk.staging_path(name)
    shutil.copytree(models_dir / name / "1", staged)
    assert disk.publish(name, staged)[1] == 2
    assert served_version(a, name) == served_version(b, name) == 2
    assert a.score(name, "ROMEO: what").version == b.score(name, "ROMEO: what").version == 2

    # Deleted through replica a: replica b refuses it, and its latest is version 1 again.
    assert a.delete_model(name, version=2) == [2]
    with pytest.raises(TextgenError) as caught:
        served_version(b, name, version=2)
    assert caught.value.code == "NOT_FOUND" and "available versions: 1" in caught.value.message
    assert served_version(b, name) == 1
    assert [list(m.versions) for m in b.list_models() if m.name == name] == [[1]]


def test_a_job_submitted_through_one_replica_is_listed_watched_and_cancelled_through_the_other(replicas):
    models_dir, a, b = replicas
    text = models_dir.parent / "text.txt"
    text.write_text(corpus_text("tinyshakespeare", 5000), encoding="utf-8")
    corpus = b.upload_corpus(text)  # uploads land in the shared data folder
    job = a.submit_train(corpus_id=corpus.id, options={"lstm_layer_sizes": [8], "epochs": 1},
                         model_name="elsewhere")  # no worker: it stays queued
    assert [j.id for j in b.list_jobs()] == [job.id]
    assert b.get_job(job.id).state == a.get_job(job.id).state == pb.JOB_STATE_QUEUED
    assert b.cancel_job(job.id).state == pb.JOB_STATE_CANCELLED
    assert a.get_job(job.id).state == pb.JOB_STATE_CANCELLED
    events = [event.WhichOneof("event") for event in a.watch_job(job.id)]
    assert events[0] == "queued" and events[-1] == "cancelled"


def test_a_draining_replica_refuses_new_streams_with_unavailable_which_the_client_retries(trained_bundles, tmp_path):
    """UNAVAILABLE is the code a client retries (on another replica, when the name has several); with
    only this one, it gives up after its retries and says why."""
    copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, xla=False) as draining:
        draining.engine.shutdown(0)
        with Client(server=f"127.0.0.1:{draining.port}") as client, pytest.raises(TextgenError) as caught:
            stream = client.generate(MODELS["one"], prompt="ROMEO:", length=5)
            "".join(stream)
        assert caught.value.code == "UNAVAILABLE" and "retry on another server" in caught.value.message
        assert stream.resumes == 3
