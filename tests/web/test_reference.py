"""One model reference everywhere: NAME, NAME:VERSION and NAME@latest mean the same thing to the gRPC
API, the client (its library and command), --from, the HTTP routes and the OpenAI side."""
from __future__ import annotations

import shutil
import subprocess
import sys

import grpc
import openai
import pytest

from client.api import Client, TextgenError
from tests.web.conftest import REPO, TOKEN
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

NAME = "ref-model"


@pytest.fixture(scope="module")
def two_versions(web_stack, tiny_model):
    """``ref-model`` versions 1 and 2 (copies of tiny-web's bundle: the same weights, two versions)."""
    source = web_stack.data_dir / "models" / "tiny-web" / "1"
    for version in (1, 2):
        shutil.copytree(source, web_stack.data_dir / "models" / NAME / str(version))
    assert web_stack.http.get(f"/api/v1/models/{NAME}").json()["version"] == 2
    return NAME


def test_every_place_takes_name_name_version_and_name_at_latest(web_stack, two_versions):
    expected = {NAME: 2, f"{NAME}:1": 1, f"{NAME}:2": 2, f"{NAME}@latest": 2}
    channel = grpc.insecure_channel(web_stack.env["TEXTGEN_SERVER"])
    stub = textgen_pb2_grpc.TextGenStub(channel)
    auth = (("authorization", f"Bearer {TOKEN}"),)
    env = {**web_stack.env, "TEXTGEN_TOKEN": TOKEN}
    with Client(web_stack.env["TEXTGEN_SERVER"], token=TOKEN) as client, \
            openai.OpenAI(base_url=f"{web_stack.url}/v1", api_key=TOKEN, max_retries=0, timeout=60) as sdk:
        for ref, version in expected.items():
            # gRPC, as any language calls it
            start = next(iter(stub.Generate(pb.GenerateRequest(model=ref, length=5, seed=1), metadata=auth))).start
            assert (start.model, start.version) == (NAME, version), ref
            assert stub.GetModel(pb.GetModelRequest(model=ref), metadata=auth).version == version
            assert stub.Score(pb.ScoreRequest(model=ref, text="function x"), metadata=auth).version == version
            # the client library and its command
            generation = client.generate(ref, length=5, seed=1)
            "".join(generation)
            assert generation.start.version == version
            out = subprocess.run([sys.executable, "-m", "client", "score", ref, "-"], input="function x", env=env,
                                 cwd=REPO, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and f"{NAME}  {version} " in out.stdout, (ref, out.stdout, out.stderr)
            # HTTP and OpenAI
            assert web_stack.http.get(f"/api/v1/models/{ref}").json()["version"] == version
            done = web_stack.http.post("/api/v1/generate", json={"model": ref, "length": 5, "seed": 1, "stream": False})
            assert done.status_code == 200 and done.json()["start"]["version"] == version, done.text
            completion = sdk.completions.create(model=ref, prompt="a", max_tokens=3, seed=1)
            assert (completion.model, completion.system_fingerprint) == (ref, f"{NAME}:{version}")
        out = subprocess.run([sys.executable, "-m", "client", "generate", f"{NAME}:1", "--length", "5", "--seed", "1"],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and len(out.stdout.rstrip("\n")) == 5, out.stderr
        # --from: the job records the reference resolved
        job = client.submit_train(corpus="tfjs-code", options={"epochs": 1, "examples_per_epoch": 64},
                                  from_model=f"{NAME}@latest")
        assert job.from_model == f"{NAME}:2"
        client.cancel_job(job.id)
        job = client.submit_train(corpus="tfjs-code", options={"epochs": 1, "examples_per_epoch": 64},
                                  from_model=f"{NAME}:1")
        assert job.from_model == f"{NAME}:1"
        client.cancel_job(job.id)
        for bad in (f"{NAME}:0", f"{NAME}:x", f"{NAME}@newest"):
            with pytest.raises(TextgenError) as caught:
                client.get_model(bad)
            assert caught.value.code == "INVALID_ARGUMENT" and repr(bad) in caught.value.message
        with pytest.raises(TextgenError) as caught:
            client.get_model(f"{NAME}:1", version=2)
        assert caught.value.message == f"model '{NAME}:1' names version 1, but version 2 was also given"
    channel.close()
