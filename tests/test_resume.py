"""Streams that survive a lost server: a stream continued with ``resume_offset`` sends exactly the
rest of the text the broken one would have sent, and ``client.Client.generate`` does it by itself
when the replica serving a stream is SIGKILLed mid-stream (two server processes, one models folder),
whether the client sees both replicas or reaches them through the balancer (nginx with
deploy/lb/nginx.conf, the one compose runs).
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from bench.balancer import balancer, find_nginx
from client.api import Client
from tests.redis_helpers import free_port
from tests.reliability.helpers import ServerProcess, copy_bundle
from tests.server_helpers import MODELS, copy_models, running_server
from textgen.v1 import textgen_pb2 as pb

LENGTH = 300
# Each kind of request a stream can be: plain, narrowed draws, logprobs, an empty prompt (the server
# picks a seed slice, which the resume must reuse), and a stop string (chosen from the text below).
KINDS = {
    "plain": dict(prompt="ROMEO:\n", temperature=0.8, seed=11),
    "top-k and top-p": dict(prompt="KING RICHARD II:\nNow", temperature=1.2, seed=12, top_k=7, top_p=0.9),
    "logprobs": dict(prompt="First Citizen:\n", temperature=0.7, seed=13, logprobs=True),
    "empty prompt": dict(prompt="", temperature=0.9, seed=14),
}
OFFSETS = [1, 5, 19, 20, 21, 64, 150, LENGTH - 1]  # the models read 20 characters (sample_len)


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("resume-data")
    copy_models(trained_bundles, data_dir)
    with running_server(data_dir, max_length=LENGTH, max_prompt=40) as server:
        yield server


def call(stub, **fields) -> tuple[pb.StreamStart, str, list[float], pb.StreamEnd]:
    start, texts, logprobs, end = None, [], [], None
    for response in stub.Generate(pb.GenerateRequest(model=MODELS["two"], **fields), timeout=60):
        if response.HasField("start"):
            start = response.start
        texts.append(response.text)
        logprobs.extend(response.logprobs)
        if response.HasField("end"):
            end = response.end
    return start, "".join(texts), logprobs, end


def with_stop(stub) -> dict:
    """The plain request with a stop string that first occurs at character 200 or later."""
    _, text, _, _ = call(stub, length=LENGTH, **KINDS["plain"])
    at = next(i for i in range(200, LENGTH - 3) if text.find(text[i:i + 3]) == i)
    return dict(KINDS["plain"], stop=[text[at:at + 3]])


@pytest.mark.parametrize("kind", [*KINDS, "stop string"])
def test_a_resumed_stream_sends_exactly_the_rest_of_the_text(stub, kind):
    fields = with_stop(stub) if kind == "stop string" else KINDS[kind]
    start, text, logprobs, end = call(stub, length=LENGTH, **fields)
    if kind == "stop string":
        assert end.reason == pb.STOP_REASON_STOP and 200 <= len(text) < LENGTH
    else:
        assert len(text) == LENGTH and end.reason == pb.STOP_REASON_LENGTH
    for offset in [k for k in OFFSETS if k < len(text)]:
        resumed = dict(fields, prompt=start.prompt + text[:offset])
        rstart, rest, rest_logprobs, rend = call(stub, length=LENGTH, resume_offset=offset, **resumed)
        assert rest == text[offset:], (kind, offset)
        # To float rounding: the first stream may have stepped with the graph function, a later one with the
        # XLA program compiled meanwhile (the same computation, fused).
        assert rest_logprobs == pytest.approx(logprobs[offset:], abs=1e-5)
        assert rstart.seed == start.seed and rstart.prompt == start.prompt + text[:offset]
        assert (rend.reason, rend.characters) == (end.reason, len(text) - offset)


@pytest.mark.parametrize("fields, message", [
    (dict(resume_offset=-1, seed=1), "resume_offset must be >= 0 (0 = a new stream), got -1"),
    (dict(resume_offset=3), "resume_offset 3 needs the seed of the stream it continues (its StreamStart.seed)"),
    (dict(resume_offset=50, seed=1), "resume_offset must be less than length (50): a stream that delivered 50 "
                                     "characters has nothing left to continue"),
    (dict(resume_offset=9, seed=1), "resume_offset is 9 but the prompt has 8 characters: a resumed stream's "
                                    "prompt is the first prompt followed by the characters already received"),
])
def test_a_bad_resume_is_an_invalid_argument_that_says_what_is_allowed(stub, fields, message):
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, prompt="ROMEO:\nW", length=50, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


def test_a_resumed_prompt_may_exceed_the_prompt_limit_by_the_characters_received(stub):
    _, text, _, _ = call(stub, length=LENGTH, **KINDS["plain"])
    prompt = KINDS["plain"]["prompt"] + text[:250]  # 257 characters; the limit here is 40
    _, rest, _, _ = call(stub, length=LENGTH, resume_offset=250, **dict(KINDS["plain"], prompt=prompt))
    assert rest == text[250:]
    with pytest.raises(grpc.RpcError, match="the prompt has 41 characters, at most 40 are allowed"):
        call(stub, length=LENGTH, resume_offset=250, **dict(KINDS["plain"], prompt="x" * 41 + text[:250]))


# ---- a replica SIGKILLed mid-stream -------------------------------------------------------------


class Readers:
    """A thread per stream reading it to its end; returns once every stream has sent some text."""

    def __init__(self, streams: dict):
        self.streams, self.errors = streams, []
        self.received = {name: [] for name in streams}
        started = {name: threading.Event() for name in streams}

        def read(name):
            try:
                for text in streams[name]:
                    self.received[name].append(text)
                    started[name].set()
            except Exception as exc:  # noqa: BLE001  (reported by join)
                self.errors.append(exc)
            started[name].set()

        self.threads = [threading.Thread(target=read, args=(name,)) for name in streams]
        for thread in self.threads:
            thread.start()
        assert all(event.wait(60) for event in started.values())

    def characters(self) -> dict:
        return {name: sum(map(len, parts)) for name, parts in self.received.items()}

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)
        assert not self.errors, self.errors


REPLICA_LENGTH = 8000  # long enough that every stream is still running when its replica dies


def test_the_client_continues_its_streams_on_the_other_replica_when_their_replica_is_killed(trained_bundles, tmp_path):
    data_dir = tmp_path / "data"
    copy_bundle(trained_bundles, "two", data_dir / "models", MODELS["two"])
    env = dict(TEXTGEN_RELOAD_SECONDS="60", TEXTGEN_MAX_LENGTH=str(REPLICA_LENGTH))
    ports = [free_port(), free_port()]
    first, second = (ServerProcess(data_dir, tmp_path / f"replica-{i}.log", TEXTGEN_ADDR=f"127.0.0.1:{port}", **env)
                     for i, port in enumerate(ports))
    kinds = dict(KINDS, **{"stop string": dict(KINDS["plain"], seed=15, stop=["\n\n\n\n\n"])})
    try:
        first.start()
        # The client knows both addresses; only the first is up, so every stream starts there.
        with Client(server="ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)) as client:
            streams = {kind: client.generate(MODELS["two"], length=REPLICA_LENGTH, **fields)
                       for kind, fields in kinds.items()}
            readers = Readers(streams)
            os.kill(first.pid, signal.SIGSTOP)  # frozen mid-stream (each resumes below) while the other starts
            killed_at = readers.characters()
            second.start()
            first.kill()  # SIGKILL
            readers.join()
            received = readers.received

        with Client(server=second.address) as direct:
            for kind, fields in kinds.items():
                whole = direct.generate(MODELS["two"], length=REPLICA_LENGTH, **fields)
                text = "".join(whole)
                assert streams[kind].resumes == 1 and killed_at[kind] < len(text), (kind, killed_at[kind])
                assert "".join(received[kind]) == text, (kind, killed_at[kind])
                # The same to float rounding: a batch of five on one replica, one stream alone on the other.
                assert streams[kind].logprobs == pytest.approx(whole.logprobs, abs=1e-5)
                assert streams[kind].start.seed == whole.start.seed == fields["seed"]
                assert (streams[kind].end.reason, streams[kind].end.characters) == (whole.end.reason, len(text))
                assert len(text) == REPLICA_LENGTH or kind == "stop string"
        print(f"\nSIGKILLed the replica serving {len(kinds)} streams at characters {sorted(killed_at.values())} of "
              f"{REPLICA_LENGTH}; each continued on the other replica with exactly the text of an unbroken stream")
    finally:
        first.kill()
        second.kill()


@pytest.fixture(scope="module")
def nginx() -> str:
    if find_nginx() is None:
        subprocess.run([str(Path(__file__).resolve().parents[1] / "deploy" / "local" / "install-nginx.sh")], check=True)
    return find_nginx()


def test_through_the_balancer_streams_spread_over_both_replicas_and_survive_the_one_killed(trained_bundles, tmp_path,
                                                                                           nginx):
    data_dir = tmp_path / "data"
    copy_bundle(trained_bundles, "two", data_dir / "models", MODELS["two"])
    env = dict(TEXTGEN_RELOAD_SECONDS="60", TEXTGEN_MAX_LENGTH=str(REPLICA_LENGTH), TEXTGEN_XLA="0")
    replicas = [ServerProcess(data_dir, tmp_path / f"replica-{i}.log", **env) for i in range(2)]
    requests = {f"{kind}, seed {fields['seed'] + 100 * i}": dict(fields, seed=fields["seed"] + 100 * i)
                for i in range(2) for kind, fields in KINDS.items()}
    try:
        for replica in replicas:
            replica.start()
        with balancer(nginx, tmp_path / "lb", [replica.address for replica in replicas]) as address, \
                Client(server=address) as client:
            streams = {name: client.generate(MODELS["two"], length=REPLICA_LENGTH, **fields)
                       for name, fields in requests.items()}
            readers = Readers(streams)
            served = [replica.active_streams() for replica in replicas]
            victim, survivor = sorted(replicas, key=lambda replica: -replica.active_streams())
            killed_at = readers.characters()
            victim.kill()  # SIGKILL: nginx resets its streams, and the client resumes them through nginx
            readers.join()
            received = readers.received

        assert sum(served) == len(requests) and min(served) > 0, served  # spread over both
        with Client(server=survivor.address) as direct, ThreadPoolExecutor(len(requests)) as pool:
            def unbroken(name):  # all at once: one batch on the survivor
                whole = direct.generate(MODELS["two"], length=REPLICA_LENGTH, **requests[name])
                return whole, "".join(whole)

            for name, (whole, text) in zip(requests, pool.map(unbroken, requests)):
                assert "".join(received[name]) == text, (name, killed_at[name])
                assert streams[name].logprobs == pytest.approx(whole.logprobs, abs=1e-5)
                assert (streams[name].end.reason, streams[name].end.characters) == (whole.end.reason, len(text))
        resumed = sorted(name for name in requests if streams[name].resumes)
        assert len(resumed) == max(served) and all(streams[name].resumes == 1 for name in resumed), resumed
        print(f"\nthrough nginx: {len(requests)} streams served {served} by the two replicas; SIGKILLed the one "
              f"serving {max(served)}: each of its streams continued through nginx on the other with exactly "
              f"the text of an unbroken stream")
    finally:
        for replica in replicas:
            replica.kill()
