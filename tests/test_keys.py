"""API keys (TEXTGEN_AUTH=keys): scopes on every RPC, per-key limits across replicas, job ownership,
rotation without a restart, usage, and no secret anywhere it could leak. Real Redis, real servers."""
from __future__ import annotations

import hashlib
import hmac
import random
import re
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server import auth as auth_module
from server import limits as limits_module
from textgen import jobs as job_records
from textgen import keys
from textgen.keys import Limits
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

from .redis_helpers import RedisServer
from .server_helpers import copy_models, running_server, wait_for

REPO = Path(__file__).resolve().parents[1]
REFRESH = 0.3  # TEXTGEN_KEYS_REFRESH_SECONDS here: a revoked key is refused within this (plus a call)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("keys-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rclient(redis):
    import redis as redis_module

    client = redis_module.Redis.from_url(redis.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def data_dir(trained_bundles, tmp_path_factory):
    data = tmp_path_factory.mktemp("keys-data")
    copy_models(trained_bundles, data)
    return data


def _server(data_dir, redis, **settings):
    settings.setdefault("xla", False)
    return running_server(data_dir, auth="keys", redis_url=redis.url, keys_refresh_seconds=REFRESH, **settings)


@pytest.fixture(scope="module")
def servers(data_dir, redis):
    """Two replicas on one Redis and one models folder."""
    with _server(data_dir, redis) as one, _server(data_dir, redis) as two:
        yield one, two


@pytest.fixture(scope="module")
def made(rclient, servers):
    """Keys of each scope set, made in Redis and known to both replicas: name -> (Key, secret)."""
    out = {}
    for name, scopes in (("gen", "generate"), ("trn", "train"), ("adm", "admin"), ("all", "generate,train,admin"),
                         ("trn2", "train")):
        out[name] = keys.create(rclient, scopes, name=f"test-{name}")
    assert wait_for(lambda: all(s.keyring.lookup(secret) for s in servers for _, secret in out.values()), timeout=5)
    return out


def md(secret: str):
    return (("authorization", f"Bearer {secret}"),)


def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, textgen_pb2_grpc.TextGenStub(channel), textgen_pb2_grpc.TrainingStub(channel), \
        textgen_pb2_grpc.KeysStub(channel)


# Every RPC with a request that is cheap to serve (many end in NOT_FOUND or INVALID_ARGUMENT once
# past the key check): (service, method, kind, request).
RPCS = [
    ("TextGen", "Generate", "unary_stream", pb.GenerateRequest(model="shake-one", prompt="KING ", length=3, seed=1)),
    ("TextGen", "Score", "unary_unary", pb.ScoreRequest(model="shake-one", text="KING RICHARD")),
    ("TextGen", "ListModels", "unary_unary", pb.ListModelsRequest()),
    ("TextGen", "GetModel", "unary_unary", pb.GetModelRequest(model="shake-one")),
    ("TextGen", "ExportTfjs", "unary_stream", pb.ExportTfjsRequest(model="no-such-model")),
    ("TextGen", "DeleteModel", "unary_unary", pb.DeleteModelRequest(model="no-such-model")),
    ("Training", "SubmitTrain", "unary_unary", pb.SubmitTrainRequest(corpus="no-such-corpus")),
    ("Training", "GetJob", "unary_unary", pb.GetJobRequest(job_id="no-such-job")),
    ("Training", "ListJobs", "unary_unary", pb.ListJobsRequest()),
    ("Training", "CancelJob", "unary_unary", pb.CancelJobRequest(job_id="no-such-job")),
    ("Training", "WatchJob", "unary_stream", pb.WatchJobRequest(job_id="no-such-job")),
    ("Training", "ListCorpora", "unary_unary", pb.ListCorporaRequest()),
    ("Training", "UploadCorpus", "stream_unary", [pb.UploadCorpusChunk(name="x.txt", data=b"")]),
    ("Training", "ImportTfjs", "stream_unary", [pb.ImportTfjsChunk(model_name="x", model_json="{}")]),
    ("Keys", "WhoAmI", "unary_unary", pb.WhoAmIRequest()),
    ("Keys", "GetUsage", "unary_unary", pb.GetUsageRequest()),
    ("Keys", "CreateKey", "unary_unary", pb.CreateKeyRequest()),  # no scopes: INVALID_ARGUMENT once let in
    ("Keys", "ListKeys", "unary_unary", pb.ListKeysRequest()),
    ("Keys", "RevokeKey", "unary_unary", pb.RevokeKeyRequest(key="no-such-key")),
]
NEEDS = {"Generate": {"generate"}, "Score": {"generate"}, "ListModels": {"generate"}, "GetModel": {"generate"},
         "ExportTfjs": {"generate"}, "DeleteModel": {"admin"}, "SubmitTrain": {"train"}, "UploadCorpus": {"train"},
         "ListCorpora": {"train"}, "ImportTfjs": {"train"}, "GetJob": {"train", "admin"},
         "ListJobs": {"train", "admin"}, "CancelJob": {"train", "admin"}, "WatchJob": {"train", "admin"},
         "WhoAmI": set(), "GetUsage": set(), "CreateKey": {"admin"}, "ListKeys": {"admin"}, "RevokeKey": {"admin"}}


def call(channel, service, method, kind, request, metadata):
    """The call's status code (OK when it succeeded) and details."""
    path = f"/textgen.v1.{service}/{method}"
    fn = getattr(channel, kind)(path, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=lambda b: b)
    try:
        if kind == "stream_unary":
            fn(iter(request), metadata=metadata, timeout=30)
        elif kind == "unary_stream":
            list(fn(request, metadata=metadata, timeout=30))
        else:
            fn(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_every_rpc_checks_its_scope(servers, made):
    server = servers[0]
    channel, *_ = stubs(server)
    assert {r[1] for r in RPCS} == set(NEEDS) == {m.name for s in ("TextGen", "Training", "Keys")
                                                  for m in pb.DESCRIPTOR.services_by_name[s].methods}
    for service, method, kind, request in RPCS:
        for name in ("gen", "trn", "adm", "all"):
            key, secret = made[name]
            code, details = call(channel, service, method, kind, request, md(secret))
            allowed = not NEEDS[method] or bool(NEEDS[method] & key.scopes)
            if allowed:
                assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), \
                    (method, name, code, details)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (method, name, code, details)
                wanted = " or ".join(repr(s) for s in keys.ordered(NEEDS[method]))
                assert details == (f"{method} needs a key with scope {wanted}; key {key.id} (test-{name}) has "
                                   f"scopes: {','.join(keys.ordered(key.scopes)).replace(',', ', ')}")
        for metadata, problem in ((None, "needs metadata 'authorization: Bearer <token>'; the call had none"),
                                  (md("tgk_" + "A" * 43), "the bearer token is not valid for this server")):
            code, details = call(channel, service, method, kind, request, metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED and problem in details, (method, code, details)
    # reflection: any valid key; health: no key at all
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           metadata=md(made["gen"][1])))
    assert "textgen.v1.Keys" in {s.name for s in reply.list_services_response.service}
    channel.close()


def test_a_thousand_bad_keys_are_unauthenticated_and_never_echoed(servers, made):
    server = servers[0]
    channel, textgen, *_ = stubs(server)
    rng = random.Random(27)
    real = made["all"][1]
    alphabet = string.ascii_letters + string.digits + "-_.~+/=!@#$%^&*() "
    bad = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            bad.append("tgk_" + "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(43)))
        elif kind == 1:  # the real secret with one character changed
            at = rng.randrange(len(real))
            bad.append(real[:at] + ("B" if real[at] != "B" else "C") + real[at + 1:])
        elif kind == 2:  # a prefix or an extension of the real one
            bad.append(real[:rng.randrange(1, len(real))] if rng.random() < 0.5 else real + rng.choice(alphabet))
        elif kind == 3:
            bad.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 200))).strip() or "x")
        else:
            bad.append("".join(chr(rng.randrange(0x21, 0x7f)) for _ in range(rng.randrange(1, 80))))
    for secret in bad:
        with pytest.raises(grpc.RpcError) as caught:
            textgen.ListModels(pb.ListModelsRequest(), metadata=md(secret))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, secret
        assert caught.value.details() == "the bearer token is not valid for this server"
    channel.close()


def test_lookup_compares_digests_in_constant_time(monkeypatch, made):
    """Every lookup, of a known secret or not, compares one full SHA-256 digest with hmac.compare_digest
    (which takes the same time wherever the inputs first differ), and nothing compares the secret."""
    known = made["gen"][0]
    ring = auth_module.KeyRing(auth_module.token_keys(["a-token"]))
    ring._keys, ring._version = {known.sha256: known}, 1
    compared = []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(auth_module.hmac, "compare_digest",
                        lambda a, b: compared.append((len(a), len(b))) or real_compare(a, b))
    assert ring.lookup(made["gen"][1]) == known
    assert ring.lookup("a-token").id == "token-1"
    assert ring.lookup(made["gen"][1][:-1] + "?") is None
    assert ring.lookup("") is None
    assert compared == [(64, 64)] * 4


def test_whoami_create_list_revoke_through_the_admin_rpcs_reach_every_replica(servers, made):
    one, two = servers
    c1, t1, _, k1 = stubs(one)
    c2, t2, _, k2 = stubs(two)
    admin = md(made["adm"][1])
    who = k1.WhoAmI(pb.WhoAmIRequest(), metadata=md(made["gen"][1]))
    assert (who.id, who.name, list(who.scopes), who.auth, who.source) == (
        made["gen"][0].id, "test-gen", ["generate"], "keys", "redis")
    assert (who.limits.max_streams, who.limits.chars_per_minute, who.limits.max_jobs,
            who.limits.upload_bytes_per_day) == (16, 600_000, 4, 2**30)
    created = k1.CreateKey(pb.CreateKeyRequest(name="rotating", scopes=["generate"],
                                               limits=pb.KeyLimits(max_streams=2)), metadata=admin)
    assert created.secret.startswith("tgk_") and len(created.secret) == 47
    assert (created.key.name, list(created.key.scopes), created.key.limits.max_streams,
            created.key.limits.chars_per_minute) == ("rotating", ["generate"], 2, 600_000)
    listed = {k.name: k for k in k2.ListKeys(pb.ListKeysRequest(), metadata=admin).keys}
    assert listed["rotating"].id == created.key.id and "secret" not in str(listed["rotating"])
    # a new key works on both replicas without a restart (within the refresh interval)
    for textgen in (t1, t2):
        assert wait_for(lambda: _lists(textgen, created.secret), timeout=5 * REFRESH + 2)
    # revoked through one replica: both refuse it within the refresh interval
    revoked = k1.RevokeKey(pb.RevokeKeyRequest(key="rotating"), metadata=admin)
    assert revoked.id == created.key.id
    began = time.monotonic()
    for textgen in (t1, t2):
        assert wait_for(lambda: not _lists(textgen, created.secret), timeout=5 * REFRESH + 2)
    assert time.monotonic() - began < REFRESH + 1.0
    for bad, code, words in ((pb.CreateKeyRequest(scopes=["root"]), "INVALID_ARGUMENT", "unknown scope 'root'"),
                             (pb.CreateKeyRequest(scopes=["generate"], name="test-gen"), "INVALID_ARGUMENT",
                              "already a key named 'test-gen'"),
                             (pb.CreateKeyRequest(scopes=["generate"], limits=pb.KeyLimits(max_jobs=-1)),
                              "INVALID_ARGUMENT", "max_jobs must be an integer >= 0")):
        with pytest.raises(grpc.RpcError) as caught:
            k1.CreateKey(bad, metadata=admin)
        assert caught.value.code().name == code and words in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        k1.RevokeKey(pb.RevokeKeyRequest(key="rotating"), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "no key with id or name 'rotating'" in \
        caught.value.details()
    c1.close()
    c2.close()


def _lists(textgen, secret) -> bool:
    try:
        textgen.ListModels(pb.ListModelsRequest(), metadata=md(secret))
        return True
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False


def test_the_keys_command_adds_lists_and_revokes_without_a_restart(servers, redis):
    one, _ = servers
    env = {"REDIS_URL": redis.url, "PATH": "/usr/bin:/bin"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "server", "keys", *args], cwd=REPO, env=env,  # noqa
                                       capture_output=True, text=True, timeout=60)
    added = run("add", "--scopes", "generate,train", "--name", "from-cli", "--max-streams", "3")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.strip().splitlines()
    secret = lines[-1]
    assert re.fullmatch(r"tgk_[A-Za-z0-9_-]{43}", secret)
    assert re.match(r"key-[0-9a-f]{12}  name=from-cli  scopes=generate,train  limits: max_streams=3", lines[0])
    listed = run("list")
    assert "name=from-cli" in listed.stdout and secret not in listed.stdout
    channel, textgen, *_ = stubs(one)
    assert wait_for(lambda: _lists(textgen, secret), timeout=5)
    assert run("revoke", "from-cli").stdout.startswith("revoked key-")
    assert wait_for(lambda: not _lists(textgen, secret), timeout=5)
    for args, words in ((["add", "--scopes", "god"], "unknown scope 'god'"),
                        (["revoke", "nobody"], "no key with id or name 'nobody'"),
                        (["add"], "the following arguments are required: --scopes")):
        bad = run(*args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and words in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    down = subprocess.run([sys.executable, "-m", "server", "keys", "list"], cwd=REPO, capture_output=True, text=True,
                          env={**env, "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}, timeout=60)
    assert down.returncode == 2 and down.stderr.startswith("server keys: cannot reach Redis at 127.0.0.1:1/0 (REDIS_URL)")
    assert "hunter2" not in down.stderr
    channel.close()


def test_a_key_at_its_stream_limit_is_refused_until_one_ends_on_either_replica(servers, rclient):
    key, secret = keys.create(rclient, "generate", name="two-streams", limits=Limits(max_streams=2))
    one, two = servers
    c1, t1, *_ = stubs(one)
    c2, t2, *_ = stubs(two)
    assert wait_for(lambda: _lists(t1, secret) and _lists(t2, secret), timeout=5)
    long = pb.GenerateRequest(model="shake-one", prompt="KING ", length=9000, seed=3)
    first = t1.Generate(long, metadata=md(secret))
    second = t2.Generate(long, metadata=md(secret))
    next(first), next(second)  # both started, one on each replica
    for textgen in (t1, t2):
        with pytest.raises(grpc.RpcError) as caught:
            list(textgen.Generate(pb.GenerateRequest(model="shake-one", length=5), metadata=md(secret)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details() == (f"key {key.id} (two-streams) has 2 streams open, its limit (max_streams 2); "
                                          "retry when one of them ends")
        assert dict(caught.value.trailing_metadata())["retry-after"] == "1"
    first.cancel()
    assert wait_for(lambda: _generates(t2, secret), timeout=5)
    second.cancel()
    c1.close()
    c2.close()


def _generates(textgen, secret) -> bool:
    try:
        list(textgen.Generate(pb.GenerateRequest(model="shake-one", length=5, seed=1), metadata=md(secret)))
        return True
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False


def test_the_characters_per_minute_bucket_is_shared_and_refills(servers, rclient):
    """600 characters a minute (10 a second), over two replicas: 400 + 200 are granted, the next 50 are not
    (retry-after says when), and 50 are there again about 5 seconds later."""
    key, secret = keys.create(rclient, "generate", name="six-hundred", limits=Limits(chars_per_minute=600))
    one, two = servers
    c1, t1, *_ = stubs(one)
    c2, t2, *_ = stubs(two)
    assert wait_for(lambda: _lists(t1, secret) and _lists(t2, secret), timeout=5)
    ask = lambda textgen, n: "".join(r.text for r in textgen.Generate(  # noqa: E731
        pb.GenerateRequest(model="shake-one", prompt="KING ", length=n, seed=5), metadata=md(secret)))
    # a stream that stops early gives back what it did not generate
    stopped = "".join(r.text for r in t1.Generate(pb.GenerateRequest(
        model="shake-one", prompt="KING ", length=400, seed=5, stop=["e"]), metadata=md(secret)))
    assert len(stopped) < 50
    bucket = rclient.hgetall(limits_module.key_of(key.id, "chars"))
    assert 600 - len(stopped) <= float(bucket[b"tokens"]) <= 600 - len(stopped) + 5
    assert len(ask(t1, 400)) == 400
    assert len(ask(t2, 200 - len(stopped))) == 200 - len(stopped)
    with pytest.raises(grpc.RpcError) as caught:
        ask(t1, 50)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    wait = int(dict(caught.value.trailing_metadata())["retry-after"])
    assert 1 <= wait <= 5
    assert caught.value.details() == (f"key {key.id} (six-hundred) has used its 600 generated characters per minute "
                                      f"(chars_per_minute); 50 more are there in {wait} s")
    with pytest.raises(grpc.RpcError) as caught:
        ask(t2, 601)
    assert "more than key" in caught.value.details() and "ask for at most 600" in caught.value.details()
    time.sleep(wait)
    assert len(ask(t2, 50)) == 50
    c1.close()
    c2.close()


def test_two_replicas_grant_no_more_streams_than_the_limit_together(servers, rclient):
    """Twelve streams asked for at once through two replicas, for a key with a limit of 5: exactly 5 run."""
    key, secret = keys.create(rclient, "generate", name="five-streams", limits=Limits(max_streams=5))
    one, two = servers
    c1, t1, *_ = stubs(one)
    c2, t2, *_ = stubs(two)
    assert wait_for(lambda: _lists(t1, secret) and _lists(t2, secret), timeout=5)
    calls, outcomes, lock = [], [], threading.Lock()
    go = threading.Barrier(12)

    def start(textgen):
        go.wait()
        stream = textgen.Generate(pb.GenerateRequest(model="shake-one", prompt="KING ", length=9000, seed=1),
                                  metadata=md(secret))
        try:
            next(stream)
            with lock:
                outcomes.append("ok")
                calls.append(stream)
        except grpc.RpcError as exc:
            with lock:
                outcomes.append(exc.code().name)

    threads = [threading.Thread(target=start, args=(t1 if i % 2 else t2,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["RESOURCE_EXHAUSTED"] * 7 + ["ok"] * 5
    for stream in calls:
        stream.cancel()
    c1.close()
    c2.close()


def test_a_train_key_sees_and_cancels_only_its_own_jobs(servers, made, data_dir):
    one, two = servers
    c1, _, tr1, _ = stubs(one)
    c2, _, tr2, _ = stubs(two)
    corpus = data_dir / "corpora"
    corpus.mkdir(exist_ok=True)
    text = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 40).encode()
    mine = tr1.UploadCorpus(iter([pb.UploadCorpusChunk(name="mine.txt", data=text)]), metadata=md(made["trn"][1]))
    options = pb.TrainOptions(lstm_layer_sizes=[8], sample_len=8, epochs=1, examples_per_epoch=64, batch_size=32)
    job = tr1.SubmitTrain(pb.SubmitTrainRequest(corpus_id=mine.id, options=options, model_name="owned"),
                          metadata=md(made["trn"][1]))
    assert job.owner == made["trn"][0].id
    other = md(made["trn2"][1])
    for fn, request in ((tr2.GetJob, pb.GetJobRequest(job_id=job.id)),
                        (tr2.CancelJob, pb.CancelJobRequest(job_id=job.id)),
                        (lambda r, metadata: list(tr2.WatchJob(r, metadata=metadata)), pb.WatchJobRequest(job_id=job.id))):
        with pytest.raises(grpc.RpcError) as caught:
            fn(request, metadata=other)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details().startswith(f"job '{job.id}' not found")
    assert job.id not in [j.id for j in tr2.ListJobs(pb.ListJobsRequest(), metadata=other).jobs]
    assert job.id in [j.id for j in tr2.ListJobs(pb.ListJobsRequest(), metadata=md(made["trn"][1])).jobs]
    assert job.id in [j.id for j in tr1.ListJobs(pb.ListJobsRequest(), metadata=md(made["adm"][1])).jobs]
    assert tr2.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md(made["adm"][1])).owner == made["trn"][0].id
    cancelled = tr2.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=md(made["trn"][1]))
    assert cancelled.state == pb.JOB_STATE_CANCELLED  # no worker here: it was still queued
    c1.close()
    c2.close()


def test_a_key_at_its_job_limit_is_refused_and_two_replicas_grant_one_place(servers, rclient):
    key, secret = keys.create(rclient, "train", name="one-job", limits=Limits(max_jobs=1))
    one, two = servers
    c1, _, tr1, _ = stubs(one)
    c2, _, tr2, _ = stubs(two)
    assert wait_for(lambda: _lists_jobs(tr1, secret) and _lists_jobs(tr2, secret), timeout=5)
    text = ("Now is the winter of our discontent made glorious summer by this sun of York. " * 40).encode()
    upload = tr1.UploadCorpus(iter([pb.UploadCorpusChunk(name="york.txt", data=text)]), metadata=md(secret))
    options = pb.TrainOptions(lstm_layer_sizes=[8], sample_len=8, epochs=1, examples_per_epoch=64, batch_size=32)
    request = pb.SubmitTrainRequest(corpus_id=upload.id, options=options, model_name="limited")
    outcomes, go = [], threading.Barrier(2)

    def submit(training):
        go.wait()
        try:
            outcomes.append(training.SubmitTrain(request, metadata=md(secret)).id)
        except grpc.RpcError as exc:
            outcomes.append((exc.code(), exc.details(), dict(exc.trailing_metadata()).get("retry-after")))

    threads = [threading.Thread(target=submit, args=(t,)) for t in (tr1, tr2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(ids) == 1 and len(refused) == 1
    assert refused[0] == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"key {key.id} (one-job) has 1 training jobs queued or running, its limit (max_jobs 1); "
                          "retry when one ends, or cancel one", "60")
    tr1.CancelJob(pb.CancelJobRequest(job_id=ids[0]), metadata=md(secret))
    assert tr2.SubmitTrain(request, metadata=md(secret)).id  # its place is free again
    c1.close()
    c2.close()


def _lists_jobs(training, secret) -> bool:
    try:
        training.ListJobs(pb.ListJobsRequest(), metadata=md(secret))
        return True
    except grpc.RpcError:
        return False


def test_upload_bytes_per_day_is_counted_and_a_refused_upload_costs_nothing(servers, rclient):
    key, secret = keys.create(rclient, "train", name="small-uploads", limits=Limits(upload_bytes_per_day=5000))
    one, two = servers
    c1, _, tr1, _ = stubs(one)
    c2, _, tr2, _ = stubs(two)
    assert wait_for(lambda: _lists_jobs(tr1, secret) and _lists_jobs(tr2, secret), timeout=5)
    up = lambda training, data: training.UploadCorpus(  # noqa: E731
        iter([pb.UploadCorpusChunk(name="a.txt", data=data[i:i + 1000]) for i in range(0, len(data), 1000)]),
        metadata=md(secret))
    assert up(tr1, b"a" * 3000).size == 3000
    with pytest.raises(grpc.RpcError) as caught:
        up(tr2, b"b" * 2500)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details().startswith(f"key {key.id} (small-uploads) may upload 5000 bytes a day "
                                             "(upload_bytes_per_day)")
    assert int(dict(caught.value.trailing_metadata())["retry-after"]) <= 86400
    assert up(tr2, b"c" * 2000).size == 2000  # the refused upload's first 2000 bytes were given back
    c1.close()
    c2.close()


def test_usage_is_counted_per_key_over_replicas_and_readable_by_the_key_and_admins(servers, rclient, made):
    key, secret = keys.create(rclient, "generate", name="counted")
    one, two = servers
    c1, t1, _, k1 = stubs(one)
    c2, t2, _, k2 = stubs(two)
    assert wait_for(lambda: _lists(t1, secret) and _lists(t2, secret), timeout=5)
    for textgen, n in ((t1, 30), (t2, 20)):
        list(textgen.Generate(pb.GenerateRequest(model="shake-one", prompt="KING ", length=n, seed=1),
                              metadata=md(secret)))
    scored = t1.Score(pb.ScoreRequest(model="shake-one", text="KING RICHARD"), metadata=md(secret)).characters
    with pytest.raises(grpc.RpcError):
        t2.GetModel(pb.GetModelRequest(model="no-such"), metadata=md(secret))

    def usage():
        return k1.GetUsage(pb.GetUsageRequest(), metadata=md(secret))

    def counted(reply):
        return {(r.method, r.code): r.count for r in reply.requests}

    # Each replica flushes its counts on its own second: wait for both flushes of the last calls.
    assert wait_for(lambda: (lambda reply: reply.generated_characters == 50
                             and ("GetModel", "NOT_FOUND") in counted(reply))(usage()), timeout=5)
    mine = usage()
    assert (mine.key_id, mine.generated_characters, mine.scored_characters) == (key.id, 50, scored)
    counts = counted(mine)
    assert counts[("Generate", "OK")] == 2 and counts[("Score", "OK")] == 1
    assert counts[("GetModel", "NOT_FOUND")] == 1
    assert k2.GetUsage(pb.GetUsageRequest(key="counted"), metadata=md(made["adm"][1])).generated_characters == 50
    with pytest.raises(grpc.RpcError) as caught:
        k2.GetUsage(pb.GetUsageRequest(key="counted"), metadata=md(made["gen"][1]))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    c1.close()
    c2.close()


def test_no_secret_in_logs_metrics_job_records_errors_or_redis_values(servers, made, rclient, caplog, data_dir):
    secrets_made = [secret for _, secret in made.values()]
    one, _ = servers
    channel, textgen, training, keys_stub = stubs(one)
    caplog.set_level("DEBUG")
    for secret in secrets_made:
        for service, method, kind, request in RPCS:
            code, details = call(channel, service, method, kind, request, md(secret))
            assert secret not in details
    from server import metrics as server_metrics
    from prometheus_client import generate_latest
    exposition = generate_latest(server_metrics.PROCESS).decode()
    assert made["gen"][0].id in exposition  # labelled by id...
    dumped = []
    for raw in rclient.scan_iter("*"):
        kind = rclient.type(raw).decode()
        value = {"string": rclient.get, "hash": rclient.hgetall, "set": rclient.smembers,
                 "zset": lambda k: rclient.zrange(k, 0, -1), "stream": lambda k: rclient.xrange(k),
                 "list": lambda k: rclient.lrange(k, 0, -1)}[kind](raw)
        dumped.append(f"{raw!r} {value!r}")
    everything = "\n".join([exposition, caplog.text, *dumped])
    for secret in secrets_made:
        assert secret not in everything  # ...never by secret
        assert hashlib.sha256(secret.encode()).hexdigest() in "\n".join(dumped)  # only its digest is kept
    assert job_records.JOBS_INDEX  # (job records were dumped above, with every other Redis value)
    channel.close()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed (openssl): (ca.pem, cert.pem, key.pem)."""
    ca, ca_key, cert, key = folder / "ca.pem", folder / "ca.key", folder / "cert.pem", folder / "key.pem"
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)  # noqa
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=textgen test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(folder / "cert.csr"),
        "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(folder / "cert.csr"), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(folder / "san.ext"))
    return ca, cert, key


def test_a_rediss_redis_with_a_password_file_and_a_ca_holds_the_keys(data_dir, tmp_path, monkeypatch):
    """Redis over TLS (rediss://, its CA in REDIS_CA_CERT) with a password read from REDIS_PASSWORD_FILE:
    the server checks keys there and the keys command manages them; neither URL nor output has the password."""
    from textgen import config

    ca, cert, key_file = _tls_files(tmp_path)
    port = __import__("tests.redis_helpers", fromlist=["free_port"]).free_port()
    password = "s3cret-" + "".join(random.Random(5).choice(string.ascii_letters) for _ in range(20))
    (tmp_path / "redis-password").write_text(password + "\n")
    redis_process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        env = {"REDIS_URL": url, "REDIS_PASSWORD_FILE": str(tmp_path / "redis-password"), "REDIS_CA_CERT": str(ca)}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        client = config.redis_client()
        assert wait_for(lambda: _pings(client), timeout=10)
        added = subprocess.run([sys.executable, "-m", "server", "keys", "add", "--scopes", "generate", "--name", "tls"],
                               cwd=REPO, env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                               timeout=60)
        assert added.returncode == 0, added.stderr
        secret = added.stdout.strip().splitlines()[-1]
        assert password not in added.stdout + added.stderr
        with running_server(data_dir, auth="keys", redis_url=url, keys_refresh_seconds=REFRESH, xla=False) as server:
            channel, _, _, keys_stub = stubs(server)
            who = keys_stub.WhoAmI(pb.WhoAmIRequest(), metadata=md(secret))
            assert (who.name, list(who.scopes)) == ("tls", ["generate"])
            channel.close()
        monkeypatch.setenv("REDIS_CA_CERT", str(tmp_path / "missing.pem"))
        bad = subprocess.run([sys.executable, "-m", "server", "keys", "list"], cwd=REPO, capture_output=True, text=True,
                             env={**env, "REDIS_CA_CERT": str(tmp_path / "missing.pem"), "PATH": "/usr/bin:/bin"},
                             timeout=60)
        assert bad.returncode == 2 and "REDIS_CA_CERT" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        redis_process.terminate()
        redis_process.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:  # noqa: BLE001  (still starting)
        return False
