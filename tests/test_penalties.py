"""Presence, frequency and repetition penalties and logit bias: seeded and exact like every control, alone,
repeated, resumed and batched beside other streams, on real trained bundles, and through gRPC."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from server.engine import Engine, SamplingParams
from server.errors import BadRequest, Unsupported
from server.store import ModelStore
from textgen.sampling import Uniforms, sample_ids
from textgen.v1 import textgen_pb2 as pb

from .server_helpers import MODELS, copy_models, run_threads, running_server

REPO = Path(__file__).resolve().parents[1]
OLD_BUNDLE = REPO / "tests" / "fixtures" / "bundle-v1"  # exported before the controls
PROMPT = "ROMEO: "


@pytest.fixture(scope="module")
def data_dir(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("penalties-data")
    copy_models(trained_bundles, data_dir)
    shutil.copytree(OLD_BUNDLE, data_dir / "models" / "old" / "1")
    return data_dir


@pytest.fixture(scope="module")
def store(data_dir):
    store = ModelStore(data_dir / "models", reload_seconds=60).start()
    yield store
    store.close()


@pytest.fixture
def engine():
    engine = Engine()
    yield engine
    engine.shutdown(timeout=0)


def run(engine, model, prompt, length, temperature, seed, **controls) -> str:
    return "".join(engine.submit(model, prompt, SamplingParams(length, temperature, seed, **controls)))


def reference(model, prompt, length, temperature, seed, presence=0.0, frequency=0.0, repetition=1.0, bias=None):
    """The original's loop (``predict`` on each whole window) with textgen.sampling's penalized rule,
    counts kept here: slow and obviously right."""
    uniforms = Uniforms(seed)
    ids = list(model.encode(prompt))
    size = len(model.charset)
    counts = np.zeros([1, size], np.float32)
    seen = np.zeros([1, size], np.float32)
    seen[0, ids] = 1.0
    bias = np.zeros([1, size], np.float32) if bias is None else bias[None, :]
    for _ in range(length):
        probs = model.functions.predict(ids=tf.constant([ids[-model.sample_len:]], tf.int32))["probs"]
        drawn = int(sample_ids(probs, [temperature], uniforms.take(1), tf.zeros([1], tf.int32), tf.ones([1]),
                               (counts, seen, tf.constant([presence]), tf.constant([frequency]),
                                tf.constant([repetition]), bias))[0])
        counts[0, drawn] += 1
        seen[0, drawn] = 1.0
        ids.append(drawn)
    return model.decode(np.array(ids[len(ids) - length:], np.int64))


CASES = {
    "presence": dict(presence_penalty=1.5),
    "frequency": dict(frequency_penalty=0.8),
    "repetition": dict(repetition_penalty=1.8),
    "bias": dict(logit_bias_chars=(("e", -3.0), (" ", 2.0)), logit_bias=((5, 1.5),)),
    "all": dict(presence_penalty=0.4, frequency_penalty=0.3, repetition_penalty=1.3, logit_bias_chars=(("a", 1.0),)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_penalties_equal_the_reference_loop_alone_and_beside_other_streams(store, engine, case):
    controls = CASES[case]
    model = store.get(MODELS["two"])
    bias = SamplingParams(1, 1.0, **controls).bias_vector(model.charset)
    expected = reference(model, PROMPT, 120, 1.1, 7, controls.get("presence_penalty", 0.0),
                         controls.get("frequency_penalty", 0.0), controls.get("repetition_penalty", 1.0), bias)
    assert run(engine, model, PROMPT, 120, 1.1, 7, **controls) == expected
    assert run(engine, model, PROMPT, 120, 1.1, 7, **controls) == expected  # repeated: the same
    assert run(engine, model, PROMPT, 120, 1.1, 7) != expected  # and the penalty did something
    rng = random.Random(3)
    others = [dict(length=rng.randint(20, 200), temperature=rng.choice([0.0, 0.8, 1.5]), seed=rng.randrange(2**63),
                   top_k=rng.choice([0, 5]), **rng.choice([{}, {}, CASES["frequency"], CASES["bias"]]))
              for _ in range(24)]
    plain = dict(length=120, temperature=1.1, seed=7)  # a stream without penalties, in the penalized batch
    jobs = others[:10] + [dict(plain, **controls), plain] + others[10:]
    streams = [engine.submit(model, PROMPT, SamplingParams(**job)) for job in jobs]
    texts = run_threads(lambda s: "".join(s), [(s,) for s in streams])
    assert texts[10] == expected
    assert texts[11] == run(engine, model, PROMPT, 120, 1.1, 7)  # neutral rows: bit for bit


def test_a_resumed_penalized_stream_continues_exactly(store, engine):
    model = store.get(MODELS["two"])
    controls = dict(frequency_penalty=0.9, presence_penalty=0.5, repetition_penalty=1.4)
    whole = run(engine, model, PROMPT, 200, 1.0, 12, **controls)
    for offset in (1, 57, 150):
        rest = run(engine, model, PROMPT + whole[:offset], 200, 1.0, 12, resume_offset=offset, **controls)
        assert whole[:offset] + rest == whole, offset


def test_a_bias_of_minus_100_bans_a_character(store, engine):
    model = store.get(MODELS["two"])
    free = run(engine, model, PROMPT, 1500, 1.5, 1)
    common = max(set(free), key=free.count)
    assert free.count(common) > 50
    for ban in ({"logit_bias_chars": ((common, -100.0),)},
                {"logit_bias": ((int(model.encode(common)[0]), -100.0),)}):
        for temperature in (0.0, 1.0, 2.5):
            text = run(engine, model, PROMPT, 1500, temperature, 1, **ban)
            assert common not in text and len(text) == 1500, temperature


def test_a_frequency_penalty_makes_repeats_rarer(store, engine):
    model = store.get(MODELS["two"])
    plain = run(engine, model, PROMPT, 800, 0.0, 1)  # greedy: a model this small loops
    penalized = run(engine, model, PROMPT, 800, 0.0, 1, frequency_penalty=0.05)
    assert len(set(penalized)) > len(set(plain))


@pytest.mark.parametrize("change, message", [
    (dict(presence_penalty=2.5), "presence_penalty must be between -2 and 2 (0 = off), got 2.5"),
    (dict(frequency_penalty=float("nan")), "frequency_penalty must be between -2 and 2 (0 = off), got nan"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be in (0, 10] (1 = off), got 0"),
    (dict(logit_bias=((3, 150.0),)), "logit_bias[3] must be between -100 and 100 (-100 bans it), got 150"),
    (dict(logit_bias_chars=(("ab", 1.0),)), "logit_bias_chars keys are single characters, got 'ab'"),
])
def test_bad_penalties_are_refused_naming_the_value(change, message):
    with pytest.raises(BadRequest) as caught:
        SamplingParams(10, 1.0, **change)
    assert str(caught.value) == message


def test_what_the_model_cannot_take_is_refused(store, engine):
    model = store.get(MODELS["two"])
    with pytest.raises(BadRequest, match="logit_bias index 999 is not a character of the model"):
        engine.submit(model, PROMPT, SamplingParams(10, 1.0, logit_bias=((999, 1.0),)))
    with pytest.raises(BadRequest, match="logit_bias_chars has characters model 'shake-two' does not know: '€'"):
        engine.submit(model, PROMPT, SamplingParams(10, 1.0, logit_bias_chars=(("€", 1.0),)))
    everything = tuple((i, -100.0) for i in range(len(model.charset)))
    with pytest.raises(BadRequest, match="bans every character"):
        engine.submit(model, PROMPT, SamplingParams(10, 1.0, logit_bias=everything))
    with pytest.raises(Unsupported, match="exported before presence_penalty"):
        engine.submit(store.get("old"), "ab", SamplingParams(10, 1.0, presence_penalty=1.0))


def test_grpc_carries_penalties_and_bias(data_dir, store):
    model = store.get(MODELS["two"])
    with running_server(data_dir, xla=False) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        from textgen.v1 import textgen_pb2_grpc

        stub = textgen_pb2_grpc.TextGenStub(channel)
        request = pb.GenerateRequest(model=MODELS["two"], prompt=PROMPT, length=120, temperature=1.1, seed=7,
                                     frequency_penalty=0.8)
        text = "".join(r.text for r in stub.Generate(request))
        assert text == reference(model, PROMPT, 120, 1.1, 7, frequency=0.8)
        banned = pb.GenerateRequest(model=MODELS["two"], prompt=PROMPT, length=600, temperature=1.5, seed=2,
                                    logit_bias_chars={"e": -100.0})
        assert "e" not in "".join(r.text for r in stub.Generate(banned))
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(pb.GenerateRequest(model="old", prompt="ab", length=5, repetition_penalty=1.2)))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        channel.close()


def test_top_logprobs_come_with_the_text_as_score_gives_them(data_dir, store, engine):
    """The likeliest characters at each place, read from the distribution each character was drawn
    from: the text is the plain stream's, and the alternatives are Score's for that text."""
    model = store.get(MODELS["two"])
    plain = run(engine, model, PROMPT, 80, 0.9, 4)
    stream = engine.submit(model, PROMPT, SamplingParams(80, 0.9, 4, top_logprobs=3))
    chunks = list(stream.chunks())
    text = "".join(c.text for c in chunks)
    tops = [t for c in chunks for t in c.top]
    logprobs = [x for c in chunks for x in c.logprobs]
    assert text == plain and len(tops) == len(logprobs) == 80
    from server.scoring import score_text

    scored = score_text(model, PROMPT + text, 10_000, top=3, skip=len(PROMPT) - 1)
    for (chars, values), (score_chars, score_values), char, chosen in zip(tops, scored.top, text, logprobs):
        assert chars == score_chars
        assert list(values) == pytest.approx(list(score_values), rel=1e-5, abs=1e-6)
        if char in chars:
            assert values[chars.index(char)] == pytest.approx(chosen, rel=1e-5, abs=1e-6)
    with running_server(data_dir, xla=False) as server:  # and through gRPC
        from textgen.v1 import textgen_pb2_grpc

        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stub = textgen_pb2_grpc.TextGenStub(channel)
        responses = list(stub.Generate(pb.GenerateRequest(model=MODELS["two"], prompt=PROMPT, length=80,
                                                          temperature=0.9, seed=4, top_logprobs=3)))
        assert "".join(r.text for r in responses) == plain
        alternatives = [a for r in responses for a in r.top_logprobs]
        assert [a.characters for a in alternatives] == [chars for chars, _ in tops]
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(pb.GenerateRequest(model=MODELS["two"], length=5, top_logprobs=21)))
        assert caught.value.details() == "top_logprobs must be between 0 and 20, got 21"
        channel.close()
