"""The TextGen service over a real gRPC server on a loopback port, serving real trained bundles."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.reference import reference_generate
from textgen.v1 import textgen_pb2 as pb

from .server_helpers import MODELS, connect, copy_models, generate, run_threads, running_server, wait_for
from .redis_helpers import free_port

SHORT, EXACT, LONG = "KING ", "ROMEO: what say you ", "First Citizen: we are accounted poor citizens, the patricians good"


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("grpc-data")
    copy_models(trained_bundles, data_dir)
    with running_server(data_dir, max_length=2000, max_prompt=300, reload_seconds=60, warm_models=8) as server:
        yield server


# -- generation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["one", "two"])
@pytest.mark.parametrize("prompt", [SHORT, EXACT, LONG], ids=["shorter", "equal", "longer"])
def test_generate_greedy_equals_the_reference_loop(server, stub, key, prompt):
    start, text, end, _ = generate(stub, model=MODELS[key], prompt=prompt, length=120, temperature=0.0, seed=9)
    model = server.store.get(MODELS[key])
    assert text == reference_generate(model, prompt, 120, 0.0, seed=9)


def test_generate_seeded_equals_the_reference_with_63_other_streams_running(server, stub):
    request = dict(model="shake-two", prompt=SHORT, length=200, temperature=0.8, seed=2024)
    _, alone, _, _ = generate(stub, **request)
    assert alone == reference_generate(server.store.get("shake-two"), SHORT, 200, 0.8, seed=2024)

    rng = random.Random(11)
    others = [dict(model=rng.choice(list(MODELS.values())), prompt=rng.choice([SHORT, LONG, ""]),
                   length=rng.randint(50, 600), temperature=rng.choice([0.0, 0.6, 1.3]), seed=rng.randrange(2**63))
              for _ in range(63)]
    requests = others[:20] + [request] + others[20:]
    results = run_threads(lambda r: generate(stub, **r), [(r,) for r in requests])
    assert results[20][1] == alone
    assert [len(text) for _, text, _, _ in results] == [r["length"] for r in requests]


def test_first_message_carries_start_and_last_carries_end(stub):
    start, text, end, responses = generate(stub, model="shake-one", prompt=SHORT, length=50, temperature=0.5, seed=42)
    assert responses[0].HasField("start") and not any(r.HasField("start") for r in responses[1:])
    assert responses[-1].HasField("end") and not any(r.HasField("end") for r in responses[:-1])
    assert (start.model, start.version, start.prompt, start.seed) == ("shake-one", 1, SHORT, 42)
    assert (end.reason, end.characters) == (pb.STOP_REASON_LENGTH, 50)
    assert len(text) == 50


def test_empty_prompt_uses_a_seed_slice_and_reports_it(server, stub):
    start, text, _, _ = generate(stub, model="shake-one", length=30, temperature=0.0, seed=3)
    slices = server.store.get("shake-one").meta["seed_slices"]
    assert start.prompt == slices[3 % len(slices)]
    assert text == reference_generate(server.store.get("shake-one"), start.prompt, 30, 0.0, seed=3)


def test_trainer_gen_and_the_server_start_from_the_same_slice_for_a_seed(server, capsys):
    from trainer.cli import main

    model = server.store.get("shake-one")
    assert main(["gen", str(model.path), "--gen-length", "5", "--temperature", "0", "--seed", "3"]) == 0
    assert f"seed 3, seed text: {model.seed_slice(3)!r}" in capsys.readouterr().err


def test_a_client_that_stops_reading_frees_its_stream(server):
    from client.api import Client

    client = Client(f"127.0.0.1:{server.port}")
    for _chunk in client.generate("shake-two", prompt=SHORT, length=2000, temperature=0.5, seed=1):
        break  # the caller has what it wanted
    assert wait_for(lambda: server.engine.active_streams() == 0, timeout=5)


def test_a_request_without_seed_gets_one_that_reproduces_its_text(stub):
    start, text, _, _ = generate(stub, model="shake-one", prompt=SHORT, length=60, temperature=1.0)
    again = generate(stub, model="shake-one", prompt=SHORT, length=60, temperature=1.0, seed=start.seed)
    assert again[1] == text


def test_200_cancelled_streams_leave_no_active_stream(server, stub):
    calls = [stub.Generate(pb.GenerateRequest(model="shake-two", prompt=SHORT, length=2000, temperature=0.7, seed=i))
             for i in range(200)]
    for call in calls[::20]:
        next(call)  # some have started streaming text
    for call in calls:
        call.cancel()
    assert wait_for(lambda: server.engine.active_streams() == 0, timeout=15)
    _, text, _, _ = generate(stub, model="shake-one", prompt=SHORT, length=10, temperature=0.0)
    assert len(text) == 10


def test_a_deadline_frees_the_stream(server, stub):
    call = stub.Generate(pb.GenerateRequest(model="shake-one", prompt=SHORT, length=2000, temperature=0.5), timeout=0.05)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call:
            time.sleep(0.01)  # a slow reader: the stream outlives its deadline
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: server.engine.active_streams() == 0, timeout=10)


# -- bad requests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("request_fields, code, message", [
    (dict(model="Shake/../x"), "INVALID_ARGUMENT", "invalid model name 'Shake/../x'"),
    (dict(model="no-such-model"), "NOT_FOUND", "no model named 'no-such-model'; available models: shake-one, shake-two"),
    (dict(version=7), "NOT_FOUND", "model 'shake-one' has no version 7; available versions: 1"),
    (dict(version=-1), "INVALID_ARGUMENT", "version must be 0 (latest) or a version number >= 1, got -1"),
    (dict(length=0), "INVALID_ARGUMENT", "length must be between 1 and 2000 characters, got 0"),
    (dict(length=-5), "INVALID_ARGUMENT", "got -5"),
    (dict(length=2001), "INVALID_ARGUMENT", "length must be between 1 and 2000 characters, got 2001"),
    (dict(temperature=-1.0), "INVALID_ARGUMENT", "temperature must be a finite number >= 0 (0 = greedy), got -1.0"),
    (dict(temperature=float("nan")), "INVALID_ARGUMENT", "got nan"),
    (dict(temperature=float("inf")), "INVALID_ARGUMENT", "got inf"),
    (dict(prompt="a" * 301), "INVALID_ARGUMENT", "the prompt has 301 characters, at most 300 are allowed"),
    (dict(prompt="naïve\tZ€"), "INVALID_ARGUMENT",
     "does not know: '\\t' (U+0009), 'Z' (U+005A), 'ï' (U+00EF), '€' (U+20AC); its characters are"),
])
def test_bad_generate_requests_get_their_status_and_a_message_naming_the_value(stub, request_fields, code, message):
    request = dict(model="shake-one", prompt=SHORT, length=10, temperature=0.5) | request_fields
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, **request)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert message in caught.value.details()
    _, text, _, _ = generate(stub, model="shake-one", prompt=SHORT, length=10, temperature=0.5)  # still serving
    assert len(text) == 10


@pytest.mark.parametrize("raw", [b"\x0a\x04\xff\xfe\xff\xfe", b"\x0a\x10shake"], ids=["invalid-utf8", "truncated"])
def test_a_request_that_is_not_a_valid_message_is_an_invalid_argument(server, stub, raw):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    generate_raw = channel.unary_stream("/textgen.v1.TextGen/Generate", response_deserializer=pb.GenerateResponse.FromString)
    get_model_raw = channel.unary_unary("/textgen.v1.TextGen/GetModel", response_deserializer=pb.ModelInfo.FromString)
    for call in (lambda: list(generate_raw(raw)), lambda: get_model_raw(raw)):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the request is not a valid /textgen.v1.TextGen/" in caught.value.details()
    channel.close()
    assert len(generate(stub, model="shake-one", prompt=SHORT, length=5)[1]) == 5


def test_a_long_bad_value_is_named_in_a_short_message(stub):
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, model="X" * 20_000, prompt=SHORT, length=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("invalid model name 'XXXXXXXX")
    assert "(20000 characters)" in caught.value.details() and len(caught.value.details()) < 300


def test_too_many_streams_get_resource_exhausted_naming_the_limit(trained_bundles, tmp_path):
    copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, max_streams=3, xla=False) as server:
        channel, stub = connect(server)
        calls = [stub.Generate(pb.GenerateRequest(model="shake-one", prompt=SHORT, length=10_000, temperature=0.5))
                 for _ in range(3)]
        for call in calls:
            next(call)
        with pytest.raises(grpc.RpcError) as caught:
            generate(stub, model="shake-one", prompt=SHORT, length=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of concurrent streams is 3" in caught.value.details()
        calls[0].cancel()
        assert wait_for(lambda: server.engine.active_streams() == 2)
        assert len(generate(stub, model="shake-one", prompt=SHORT, length=10)[1]) == 10
        for call in calls:
            call.cancel()
        channel.close()


def test_request_larger_than_the_message_limit_is_refused(trained_bundles, tmp_path):
    copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, max_message_bytes=1000, max_prompt=10_000) as server:
        channel, stub = connect(server)
        with pytest.raises(grpc.RpcError) as caught:
            generate(stub, model="shake-one", prompt="a" * 2000, length=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        channel.close()


# -- models ----------------------------------------------------------------------------------------

def test_list_models_and_get_model_return_the_meta_fields(server, stub):
    listed = stub.ListModels(pb.ListModelsRequest()).models
    assert [(m.name, list(m.versions)) for m in listed] == [("shake-one", [1]), ("shake-two", [1])]
    info = stub.GetModel(pb.GetModelRequest(model="shake-two"))
    meta = server.store.get("shake-two").meta
    assert info == listed[1].latest
    assert (info.name, info.version, info.charset, info.charset_size, info.sample_len) == (
        "shake-two", 1, meta["charset"], len(meta["charset"]), 20)
    assert list(info.lstm_layer_sizes) == [32, 24]
    assert (info.corpus, info.objective, info.epochs) == ("tinyshakespeare", "last", 3)
    assert info.loss == pytest.approx(meta["loss"]) and info.val_loss == pytest.approx(meta["val_loss"])
    assert info.bits_per_char == pytest.approx(meta["bits_per_char"]) and info.created == pytest.approx(meta["created"])


def test_get_model_errors_name_the_model_and_what_exists(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model="shake-one", version=3))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "model 'shake-one' has no version 3; available versions: 1"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model="../etc"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_versions_appear_and_disappear_without_restart(trained_bundles, tmp_path):
    from textgen.models_dir import ModelsDir

    models_dir = copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, reload_seconds=0.2, xla=False) as server:
        channel, stub = connect(server)
        # A new version arrives as a trainer publishes one: staged beside the versions, then renamed in.
        models = ModelsDir(models_dir)
        staged = models.staging_path("shake-one")
        shutil.copytree(trained_bundles["one"], staged)
        _, version = models.publish("shake-one", staged)
        assert version == 2
        # Asked for by number, it is found at once (a miss rescans); as "latest", by the next rescan.
        assert stub.GetModel(pb.GetModelRequest(model="shake-one", version=2)).version == 2
        assert wait_for(lambda: stub.GetModel(pb.GetModelRequest(model="shake-one")).version == 2)
        start, text, _, _ = generate(stub, model="shake-one", prompt=SHORT, length=20)
        assert start.version == 2 and len(text) == 20

        deleted = stub.DeleteModel(pb.DeleteModelRequest(model="shake-one", version=2))
        assert list(deleted.deleted_versions) == [2]
        assert not (models_dir / "shake-one" / "2").exists()
        assert stub.GetModel(pb.GetModelRequest(model="shake-one")).version == 1
        with pytest.raises(grpc.RpcError) as caught:
            generate(stub, model="shake-one", version=2, prompt=SHORT, length=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "available versions: 1" in caught.value.details()

        shutil.rmtree(models_dir / "shake-two" / "1")  # removed behind the server's back
        assert wait_for(lambda: [m.name for m in stub.ListModels(pb.ListModelsRequest()).models] == ["shake-one"])

        deleted = stub.DeleteModel(pb.DeleteModelRequest(model="shake-one", all_versions=True))
        assert list(deleted.deleted_versions) == [1]
        assert list(stub.ListModels(pb.ListModelsRequest()).models) == []
        assert not (models_dir / "shake-one").exists()
        channel.close()


@pytest.mark.parametrize("request_fields, code, message", [
    (dict(model="shake-one", version=0), "INVALID_ARGUMENT", "give the version to delete (>= 1) or set all_versions"),
    (dict(model="shake-one", version=5), "NOT_FOUND", "model 'shake-one' has no version 5; available versions: 1"),
    (dict(model="ghost", all_versions=True), "NOT_FOUND", "no model named 'ghost'"),
    (dict(model="..", all_versions=True), "INVALID_ARGUMENT", "invalid model name '..'"),
])
def test_bad_delete_requests_get_their_status(stub, request_fields, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        stub.DeleteModel(pb.DeleteModelRequest(**request_fields))
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert message in caught.value.details()


# -- health, reflection, shutdown ------------------------------------------------------------------

def test_health_says_serving_for_the_server_and_textgen(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "textgen.v1.TextGen"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_health_says_serving_once_the_latest_version_of_each_model_has_run_a_stream(server, trained_bundles, tmp_path):
    assert server.warmed == ["shake-one:1", "shake-two:1"]
    copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, warm_models=1) as one:
        assert one.warmed == ["shake-one:1"]
    with running_server(tmp_path, warm_models=0) as none:
        assert none.warmed == []


def test_reflection_lists_the_services(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in next(responses).list_services_response.service}
    assert {"textgen.v1.TextGen", "grpc.health.v1.Health"} <= names
    channel.close()


def test_stop_ends_running_streams_with_stop_reason_shutdown(trained_bundles, tmp_path):
    copy_models(trained_bundles, tmp_path)
    server = running_server(tmp_path, max_length=10**6, xla=False)
    with server as running:
        channel, stub = connect(running)
        call = stub.Generate(pb.GenerateRequest(model="shake-one", prompt=SHORT, length=10**6, temperature=0.5))
        first = next(call)
        assert first.HasField("start")
        running.stop(grace=1.0)
        responses = list(call)
        assert responses[-1].end.reason == pb.STOP_REASON_SHUTDOWN
        assert responses[-1].end.characters == sum(len(r.text) for r in responses) > 0
        channel.close()


def test_python_m_server_serves_and_exits_cleanly_on_sigterm(trained_bundles, tmp_path):
    copy_models(trained_bundles, tmp_path)
    addr = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, TEXTGEN_ADDR=addr, TEXTGEN_DATA_DIR=str(tmp_path), TEXTGEN_GRACE_SECONDS="2")
    process = subprocess.Popen([sys.executable, "-m", "server"], env=env, cwd=Path(__file__).parents[1],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        channel = grpc.insecure_channel(addr)
        grpc.channel_ready_future(channel).result(timeout=60)
        health = health_pb2_grpc.HealthStub(channel)
        assert wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="")).status
                        == health_pb2.HealthCheckResponse.SERVING, timeout=30)
        from textgen.v1 import textgen_pb2_grpc
        _, text, end, _ = generate(textgen_pb2_grpc.TextGenStub(channel), model="shake-two", prompt=SHORT, length=25)
        assert len(text) == 25 and end.reason == pb.STOP_REASON_LENGTH
        channel.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = process.stdout.read()
    assert "serving model shake-two version 1" in log
    assert "(warmed: shake-one:1, shake-two:1)" in log
