"""Token auth, TLS and the server's settings."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.auth import TokenFileError, read_tokens
from server.config import Settings, SettingsError
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

from .server_helpers import connect, copy_models, generate, running_server

TOKENS = "# who may call\nalpha-token-1\n\n  beta-token-2  \n"


@pytest.fixture(scope="module")
def guarded(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("auth-data")
    copy_models(trained_bundles, data_dir)
    tokens_file = data_dir / "tokens"
    tokens_file.write_text(TOKENS)
    with running_server(data_dir, tokens_file=tokens_file) as server:
        channel, stub = connect(server)
        yield server, channel, stub
        channel.close()


@pytest.mark.parametrize("metadata, problem", [
    (None, "needs metadata 'authorization: Bearer <token>'; the call had none"),
    ((("authorization", "Bearer wrong-token"),), "the bearer token is not valid for this server"),
    ((("authorization", "Bearer alpha-token-"),), "the bearer token is not valid for this server"),
    ((("authorization", "Basic alpha-token-1"),), "must read 'Bearer <token>'"),
    ((("authorization", "alpha-token-1"),), "must read 'Bearer <token>'"),
])
def test_calls_without_a_valid_token_are_unauthenticated(guarded, metadata, problem):
    _, _, stub = guarded
    for call in (lambda: stub.ListModels(pb.ListModelsRequest(), metadata=metadata),
                 lambda: stub.GetModel(pb.GetModelRequest(model="shake-one"), metadata=metadata),
                 lambda: generate(stub, metadata=metadata, model="shake-one", prompt="KING ", length=5)):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert problem in caught.value.details()


@pytest.mark.parametrize("token", ["alpha-token-1", "beta-token-2"])
def test_calls_with_a_listed_token_are_served(guarded, token):
    _, _, stub = guarded
    metadata = (("authorization", f"Bearer {token}"),)
    assert [m.name for m in stub.ListModels(pb.ListModelsRequest(), metadata=metadata).models] == ["shake-one", "shake-two"]
    _, text, end, _ = generate(stub, metadata=metadata, model="shake-one", prompt="KING ", length=12)
    assert len(text) == 12 and end.characters == 12


def test_health_needs_no_token_but_reflection_does(guarded):
    _, channel, _ = guarded
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="textgen.v1.TextGen")).status == \
        health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tokens_file_must_hold_a_token(tmp_path):
    (tmp_path / "empty").write_text("# nobody\n\n")
    with pytest.raises(TokenFileError, match="has no tokens"):
        read_tokens(tmp_path / "empty")
    with pytest.raises(TokenFileError, match="cannot read the tokens file"):
        read_tokens(tmp_path / "missing")
    assert read_tokens(_write(tmp_path / "t", TOKENS)) == ["alpha-token-1", "beta-token-2"]


def test_tls_serves_clients_that_trust_the_certificate(trained_bundles, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    copy_models(trained_bundles, tmp_path)
    with running_server(tmp_path, tls_cert=cert, tls_key=key) as server:
        channel = grpc.secure_channel(f"localhost:{server.port}", grpc.ssl_channel_credentials(cert.read_bytes()))
        _, text, _, _ = generate(textgen_pb2_grpc.TextGenStub(channel), model="shake-one", prompt="KING ", length=8)
        assert len(text) == 8
        channel.close()
        plain, stub = connect(server)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListModels(pb.ListModelsRequest(), timeout=2)
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        plain.close()


# -- settings --------------------------------------------------------------------------------------

def test_settings_defaults(monkeypatch):
    for name in ("TEXTGEN_ADDR", "TEXTGEN_DATA_DIR", "TEXTGEN_MAX_LENGTH", "TEXTGEN_MAX_STREAMS", "TEXTGEN_MAX_PROMPT",
                 "TEXTGEN_MAX_MESSAGE_BYTES", "TEXTGEN_RELOAD_SECONDS", "TEXTGEN_GRACE_SECONDS",
                 "TEXTGEN_TOKENS_FILE", "TEXTGEN_TLS_CERT", "TEXTGEN_TLS_KEY", "REDIS_URL", "TEXTGEN_PROMPT_CACHE_MB"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert settings == Settings()
    assert (settings.addr, settings.max_length, settings.max_streams, settings.max_prompt) == (
        "127.0.0.1:50051", 10_000, 256, 10_000)
    assert (settings.max_message_bytes, settings.reload_seconds, settings.tokens_file) == (4 * 2**20, 2.0, None)
    assert settings.models_dir == Path("var/data/models")
    assert settings.prompt_cache_mb == 32


def test_settings_read_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGEN_ADDR", "0.0.0.0:6000")
    monkeypatch.setenv("TEXTGEN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TEXTGEN_MAX_STREAMS", "8")
    monkeypatch.setenv("TEXTGEN_RELOAD_SECONDS", "0.5")
    monkeypatch.setenv("TEXTGEN_TOKENS_FILE", str(tmp_path / "tokens"))
    monkeypatch.setenv("TEXTGEN_XLA", "0")
    monkeypatch.setenv("TEXTGEN_PROMPT_CACHE_MB", "0")
    settings = Settings.from_env()
    assert (settings.addr, settings.models_dir, settings.max_streams, settings.reload_seconds, settings.xla) == (
        "0.0.0.0:6000", tmp_path / "models", 8, 0.5, False)
    assert settings.prompt_cache_mb == 0
    assert settings.tokens_file == tmp_path / "tokens"


@pytest.mark.parametrize("name, value, message", [
    ("TEXTGEN_MAX_STREAMS", "many", "TEXTGEN_MAX_STREAMS must be a positive integer, got 'many'"),
    ("TEXTGEN_MAX_LENGTH", "0", "TEXTGEN_MAX_LENGTH must be a positive integer, got '0'"),
    ("TEXTGEN_MAX_UPLOAD_BYTES", "abc", "TEXTGEN_MAX_UPLOAD_BYTES must be a positive integer, got 'abc'"),
    ("TEXTGEN_RELOAD_SECONDS", "-1", "TEXTGEN_RELOAD_SECONDS must be a positive number of seconds, got '-1'"),
    ("TEXTGEN_TLS_CERT", "/x/cert.pem", "TLS needs both TEXTGEN_TLS_CERT and TEXTGEN_TLS_KEY"),
    ("TEXTGEN_XLA", "yes", "TEXTGEN_XLA must be 1 (on) or 0 (off), got 'yes'"),
    ("TEXTGEN_PROMPT_CACHE_MB", "-1", "TEXTGEN_PROMPT_CACHE_MB must be an integer >= 0, got '-1'"),
])
def test_bad_settings_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.delenv("TEXTGEN_TLS_KEY", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert message in str(caught.value)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
