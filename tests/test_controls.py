"""Generation controls: stop strings, top_k, top_p (nucleus) and logprobs, through the engine and gRPC,
on real trained bundles, and on a bundle written before the controls existed (tests/fixtures/bundle-v1)."""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from server import engine as engine_module
from server.engine import Engine, SamplingParams
from server.errors import BadRequest, Unsupported
from server.reference import reference_generate
from server.store import ModelStore
from textgen.sampling import sample_ids
from textgen.v1 import textgen_pb2 as pb

from .server_helpers import MODELS, copy_models, generate, run_threads, running_server

REPO = Path(__file__).resolve().parents[1]
OLD_BUNDLE = REPO / "tests" / "fixtures" / "bundle-v1"  # exported before the controls
SHORT, LONG = "ROMEO: ", "First Citizen: we are accounted poor citizens, the patricians good"


@pytest.fixture(scope="module")
def data_dir(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("controls-data")
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


def run(engine, model, prompt, length, temperature, seed, **controls):
    stream = engine.submit(model, prompt, SamplingParams(length, temperature, seed, **controls))
    chunks = list(stream.chunks())
    return "".join(c.text for c in chunks), [lp for c in chunks for lp in c.logprobs], stream


# -- the sampling rule -----------------------------------------------------------------------------

def test_top_k_and_top_p_draw_only_from_the_most_likely_characters():
    probs = tf.constant([[0.05, 0.5, 0.1, 0.3, 0.05]] * 400)  # one row a draw: 400 draws in one call
    uniforms = tf.constant(np.linspace(0.0, 0.999, 400, dtype=np.float32))

    def drawn(top_k, top_p, temperature=1.0):
        ids = sample_ids(probs, [temperature] * 400, uniforms, [top_k] * 400, [top_p] * 400).numpy()
        return set(ids.tolist())

    assert drawn(0, 1.0) == {0, 1, 2, 3, 4}
    assert drawn(2, 1.0) == {1, 3}
    assert drawn(1, 1.0) == {1}
    assert drawn(0, 0.5) == {1}  # 0.5 alone reaches p
    assert drawn(0, 0.55) == {1, 3}
    assert drawn(0, 0.85) == {1, 3, 2}
    assert drawn(3, 0.6) == {1, 3}  # top_k first, then the nucleus of what is left (0.5/0.9 < 0.6)
    assert drawn(0, 0.55, temperature=0.1) == {1}  # after temperature, 1 holds nearly all the mass


def test_controls_off_draw_exactly_as_the_rule_without_them():
    rng = np.random.default_rng(3)
    probs = tf.nn.softmax(rng.normal(size=(256, 65)).astype(np.float32) * 3)
    uniform = rng.random(256).astype(np.float32)
    temperature = rng.choice([0.0, 0.3, 1.0, 2.0], 256).astype(np.float32)
    plain = sample_ids(probs, temperature, uniform).numpy()
    off = sample_ids(probs, temperature, uniform, tf.zeros([256], tf.int32), tf.ones([256])).numpy()
    assert (plain == off).all()


# -- through the engine ----------------------------------------------------------------------------

@pytest.mark.parametrize("controls", [dict(top_k=5), dict(top_p=0.7), dict(top_k=10, top_p=0.9)],
                         ids=["top_k", "top_p", "both"])
def test_sampling_controls_equal_the_reference_loop_alone_and_beside_63_other_streams(store, engine, controls):
    model = store.get(MODELS["two"])
    expected = reference_generate(model, SHORT, 150, 1.2, 99, **controls)
    alone, _, _ = run(engine, model, SHORT, 150, 1.2, 99, **controls)
    assert alone == expected

    rng = random.Random(8)
    others = [dict(prompt=rng.choice([SHORT, LONG]), length=rng.randint(20, 300), temperature=rng.choice([0.0, 0.8, 1.5]),
                   seed=rng.randrange(2**63), top_k=rng.choice([0, 3, 20]), top_p=rng.choice([1.0, 0.5, 0.95]),
                   stop=rng.choice([(), ("e",), ("the", "\n")]), logprobs=rng.choice([False, True]))
              for _ in range(63)]
    mine = dict(prompt=SHORT, length=150, temperature=1.2, seed=99, **controls)
    jobs = others[:20] + [mine] + others[20:]
    streams = [engine.submit(model, job.pop("prompt"), SamplingParams(**job)) for job in [dict(j) for j in jobs]]
    texts = run_threads(lambda s: "".join(s), [(s,) for s in streams])
    assert texts[20] == expected


def test_top_k_1_is_greedy(store, engine):
    model = store.get(MODELS["one"])
    assert run(engine, model, LONG, 100, 1.5, 4, top_k=1)[0] == reference_generate(model, LONG, 100, 0.0, 4)


def test_a_stop_string_ends_the_stream_just_before_it_across_chunks(store):
    model = store.get(MODELS["two"])
    full = reference_generate(model, SHORT, 400, 0.9, 5)
    stop = full[203:206]  # three characters that first appear at 203 or earlier
    cut = full.find(stop)
    # steps of 1 character and messages of at most 2: the match always spans chunks
    engine = Engine(chunk=2, first_chunk=1, xla=False)
    text, _, stream = run(engine, model, SHORT, 400, 0.9, 5, stop=["no such text", stop])
    engine.shutdown(0)
    assert text == full[:cut]
    assert (stream.stop_reason, stream.produced) == (engine_module.STOP, cut)


def test_a_stop_string_never_generated_changes_nothing(store, engine):
    model = store.get(MODELS["one"])
    text, _, stream = run(engine, model, SHORT, 120, 0.9, 6, stop=["\u00e9t\u00e9"])
    assert text == reference_generate(model, SHORT, 120, 0.9, 6)
    assert stream.stop_reason == engine_module.LENGTH


def test_logprobs_are_the_models_log_probability_of_each_character(store, engine):
    model = store.get(MODELS["two"])
    text, logprobs, _ = run(engine, model, LONG, 40, 0.8, 12, logprobs=True)
    assert len(logprobs) == len(text) == 40
    context = LONG
    for char, logprob in zip(text, logprobs):
        window = tf.constant([model.encode(context[-model.sample_len:])])
        probs = model.functions.predict(ids=window)["probs"].numpy()[0]
        assert logprob == pytest.approx(math.log(probs[model.charset.chars.index(char)]), abs=1e-4)
        context += char


@pytest.mark.parametrize("change, message", [
    (dict(top_k=-1), "top_k must be between 0 (off) and the model's 59 characters, got -1"),
    (dict(top_k=60), "got 60"),
    (dict(top_p=0.0), "top_p must be a number in (0, 1] (1 = off), got 0"),
    (dict(top_p=1.5), "got 1.5"),
    (dict(top_p=float("nan")), "got nan"),
    (dict(stop=["a", "b", "c", "d", "e"]), "at most 4 stop strings are allowed, got 5"),
    (dict(stop=[""]), "a stop string must have 1 to 64 characters, got '' (0 characters)"),
    (dict(stop=["x" * 65]), "(65 characters)"),
])
def test_bad_control_values_are_refused_naming_the_value(store, engine, change, message):
    model = store.get(MODELS["one"])
    assert len(model.charset) == 59
    with pytest.raises(BadRequest) as caught:  # when the params are made, or when submitted
        engine.submit(model, SHORT, SamplingParams(10, 0.5, 1, **change))
    assert message in str(caught.value)
    assert engine.active_streams() == 0


# -- a bundle written before the controls ----------------------------------------------------------

def test_an_old_bundle_serves_temperature_seed_and_stop(store, engine):
    model = store.get("old")
    assert not model.controls
    text, _, _ = run(engine, model, "ROMEO: ", 80, 0.7, 3)
    assert text == reference_generate(model, "ROMEO: ", 80, 0.7, 3)
    stop = text[30:32]
    stopped, _, stream = run(engine, model, "ROMEO: ", 80, 0.7, 3, stop=[stop])
    assert stopped == text[:text.find(stop)] and stream.stop_reason == engine_module.STOP


@pytest.mark.parametrize("control", [dict(top_k=3), dict(top_p=0.5), dict(logprobs=True)])
def test_an_old_bundle_refuses_the_controls_it_cannot_do_naming_its_version(store, engine, control):
    with pytest.raises(Unsupported, match="model 'old' version 1 was exported before"):
        engine.submit(store.get("old"), "ROMEO: ", SamplingParams(10, 0.5, 1, **control))


# -- through gRPC ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(data_dir):
    with running_server(data_dir, reload_seconds=60) as server:
        yield server


def test_grpc_carries_the_controls_stop_reason_and_logprobs(store, stub):
    model = store.get(MODELS["two"])
    full = reference_generate(model, LONG, 300, 1.0, 21, top_k=8, top_p=0.9)
    stop = full[150:152]
    start, text, end, responses = generate(stub, model=MODELS["two"], prompt=LONG, length=300, temperature=1.0,
                                           seed=21, top_k=8, top_p=0.9, stop=[stop], logprobs=True)
    assert text == full[:full.find(stop)]
    assert (end.reason, end.characters) == (pb.STOP_REASON_STOP, len(text))
    assert all(len(r.logprobs) == len(r.text) for r in responses)
    assert all(lp <= 0 for r in responses for lp in r.logprobs)


def test_grpc_refuses_an_old_bundle_control_with_failed_precondition(stub):
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, model="old", prompt="ROMEO: ", length=10, temperature=0.5, top_p=0.8)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "model 'old' version 1 was exported before top_p existed" in caught.value.details()


def test_grpc_refuses_a_bad_top_p_with_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub, model=MODELS["one"], prompt="ROMEO: ", length=10, temperature=0.5, top_p=1.5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_p must be a number in (0, 1] (1 = off), got 1.5" in caught.value.details()


# -- the CLI ---------------------------------------------------------------------------------------

def client_cli(server, *args):
    return subprocess.run([sys.executable, "-m", "client", "--server", f"127.0.0.1:{server.port}", *args], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def test_cli_generate_takes_the_controls_and_prints_logprobs(store, server):
    full = reference_generate(store.get(MODELS["one"]), SHORT, 200, 0.9, 7, top_k=6, top_p=0.95)
    stop = full[100:102]
    done = client_cli(server, "generate", MODELS["one"], "--prompt", SHORT, "--length", "200", "--temperature", "0.9",
                      "--seed", "7", "--top-k", "6", "--top-p", "0.95", "--stop", "no such", "--stop", stop,
                      "--logprobs")
    assert done.returncode == 0, done.stderr
    text = full[:full.find(stop)]
    assert done.stdout.startswith(text + "\n\n")
    rows = done.stdout[len(text) + 2:].splitlines()
    assert [row.split("\t")[0] for row in rows] == [repr(char) for char in text]
    assert all(float(row.split("\t")[1]) <= 0 for row in rows)


def test_cli_generate_refuses_a_bad_top_k_in_one_line(server):
    done = client_cli(server, "generate", MODELS["one"], "--prompt", SHORT, "--top-k", "500")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "top_k must be between 0 (off) and the model's 59 characters, got 500" in done.stderr
