"""Score: a text's log-likelihood under a model, the original's window for window.

The reference is the plainest reading of the definition: for every character after the first, the
bundle's ``predict`` on the up to ``sample_len`` characters before it, from a zero state (the windows of
one length go in one call, as rows of a batch: rows do not interact).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from client import cli
from client.api import Client, TextgenError
from server.scoring import MIN_SEGMENT, pipelined_logprobs
from server.store import load_model
from tests.conftest import corpus_text
from tests.server_helpers import copy_models, running_server

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAX_SCORE_CHARS = 3000
TOLERANCE = 1e-5  # nats per character: float32 arithmetic in another order


def reference_logprobs(model, text: str) -> np.ndarray:
    """``log P(text[i] | text[max(0, i - sample_len):i])`` for i >= 1, each window read whole by ``predict``
    (the shorter first windows one by one, the full-length ones as the rows of one batch)."""
    ids, n = model.encode(text), model.sample_len
    out = []
    for i in range(1, min(n, len(ids))):
        probs = model.functions.predict(ids=tf.constant(ids[None, :i]))["probs"].numpy()[0]
        out.append(math.log(probs[ids[i]]))
    if len(ids) > n:
        windows = np.stack([ids[i - n:i] for i in range(n, len(ids))])
        probs = model.functions.predict(ids=tf.constant(windows))["probs"].numpy()
        out.extend(np.log(probs[np.arange(len(windows)), ids[n:]]))
    return np.array(out)


def held_out(corpus: str, charsets, chars: int, start: int = 60_000) -> str:
    """``chars`` characters of ``corpus`` after the part the test models trained on, from the first
    line start where all of them are in every one of ``charsets``."""
    text = corpus_text(corpus)
    allowed = set.intersection(*(set(c) for c in charsets))
    position = start
    while True:
        position = text.index("\n", position) + 1
        piece = text[position:position + chars]
        if set(piece) <= allowed:
            return piece


@pytest.fixture(scope="module")
def data_dir(trained_bundles, tmp_path_factory):
    """shake-one and shake-two (Shakespeare); shakespeare and nietzsche, two small models trained alike
    (the all-positions objective, for a clear difference after a few seconds), and old-v1: a bundle
    written before ``score`` existed."""
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    data_dir = tmp_path_factory.mktemp("score")
    models_dir = copy_models(trained_bundles, data_dir)
    shutil.copytree(FIXTURES / "bundle-v1", models_dir / "old-v1" / "1")
    config = TrainConfig(lstm_layer_sizes=(32,), sample_len=20, epochs=3, examples_per_epoch=2048, batch_size=64,
                         display_length=0, seed=7, objective="all")
    for corpus, name in (("tinyshakespeare", "shakespeare"), ("nietzsche", "nietzsche")):
        result = train(corpus_text(corpus, 60_000), config, corpus_name=corpus)
        export.publish(result.model, result.meta, models_dir, name)
    return data_dir


@pytest.fixture(scope="module")
def server(data_dir):
    with running_server(data_dir, max_score_chars=MAX_SCORE_CHARS, xla=False) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with Client(server=f"127.0.0.1:{server.port}") as client:
        yield client


def test_score_equals_a_plain_predict_loop_window_for_window(data_dir):
    model = load_model(data_dir / "models" / "shake-two" / "1", "shake-two", 1)
    text = held_out("tinyshakespeare", [model.charset.chars], 600)
    assert (len(text) - 1) // (MIN_SEGMENT * model.sample_len) > 1  # scored as several segments side by side
    scored = pipelined_logprobs(model.functions, model.encode(text), model.sample_len)
    np.testing.assert_allclose(scored, reference_logprobs(model, text), rtol=0, atol=TOLERANCE)


def test_score_rpc_returns_the_total_bits_per_character_and_each_characters_log_probability(server, client):
    model = server.store.get("shake-one")
    text = held_out("tinyshakespeare", [model.charset.chars], 300)
    reference = reference_logprobs(model, text)

    reply = client.score("shake-one", text, per_character=True)

    assert (reply.model, reply.version, reply.characters) == ("shake-one", 1, len(text) - 1)
    np.testing.assert_allclose(reply.logprobs, reference, rtol=0, atol=TOLERANCE)
    assert reply.log_likelihood == pytest.approx(reference.sum(), abs=len(text) * TOLERANCE)
    assert reply.bits_per_char == pytest.approx(-reply.log_likelihood / (len(text) - 1) / math.log(2), rel=1e-12)
    assert list(client.score("shake-one", text).logprobs) == []  # only when asked for
    assert client.score("shake-one", text).log_likelihood == reply.log_likelihood


def test_a_bundle_written_before_score_existed_is_scored_through_its_predict(server, client):
    model = server.store.get("old-v1")
    assert not hasattr(model.functions, "score")
    text = held_out("tinyshakespeare", [model.charset.chars], 150)

    reply = client.score("old-v1", text, per_character=True)

    np.testing.assert_allclose(reply.logprobs, reference_logprobs(model, text), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("text, words", [
    ("x" * (MAX_SCORE_CHARS + 1), [f"{MAX_SCORE_CHARS + 1} characters", f"at most {MAX_SCORE_CHARS}",
                                   "TEXTGEN_MAX_SCORE_CHARS"]),
    ("To be {or} not", ["does not know", "'{' (U+007B)", "'}' (U+007D)"]),
    ("T", ["at least 2 characters", "got 1"]),
    ("", ["at least 2 characters", "got 0"]),
])
def test_a_text_that_cannot_be_scored_is_an_invalid_argument_that_says_why(client, text, words):
    with pytest.raises(TextgenError) as error:
        client.score("shake-one", text)
    assert error.value.code == "INVALID_ARGUMENT"
    for word in words:
        assert word in error.value.message


def test_scoring_an_unknown_model_is_not_found(client):
    with pytest.raises(TextgenError) as error:
        client.score("no-such-model", "some text")
    assert error.value.code == "NOT_FOUND" and "no model named 'no-such-model'" in error.value.message


def test_scores_rank_which_model_wrote_a_text(server, client, tmp_path, capsys):
    charsets = [server.store.get(name).charset.chars for name in ("shakespeare", "nietzsche")]
    for corpus, author in (("tinyshakespeare", "shakespeare"), ("nietzsche", "nietzsche")):
        path = tmp_path / f"{corpus}.txt"
        path.write_text(held_out(corpus, charsets, 1500), encoding="utf-8")
        capsys.readouterr()

        status = cli.main(["--server", f"127.0.0.1:{server.port}", "score", "shakespeare", "nietzsche", str(path)])

        lines = capsys.readouterr().out.splitlines()
        assert status == 0
        assert lines[0].split()[:2] == ["MODEL", "VERSION"]
        ranked = [line.split()[0] for line in lines[1:]]
        assert ranked[0] == author and sorted(ranked) == ["nietzsche", "shakespeare"]
        bits = [float(line.split()[-1]) for line in lines[1:]]
        print(f"\n{corpus}: {dict(zip(ranked, bits))}")
        assert bits == sorted(bits) and bits[0] < bits[1]


def test_cli_score_of_a_text_with_unknown_characters_is_one_line_on_stderr(server, tmp_path, capsys):
    path = tmp_path / "code.txt"
    path.write_text("function f() { return 1; }", encoding="utf-8")

    status = cli.main(["--server", f"127.0.0.1:{server.port}", "score", "shake-one", str(path)])

    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("error: INVALID_ARGUMENT: the text has characters that model 'shake-one' version 1")



def test_score_gives_the_likeliest_characters_at_each_place_after_the_skipped(server, client):
    model = server.store.get("shake-one")
    text = held_out("tinyshakespeare", [model.charset.chars], 150)
    ids = model.encode(text)
    reply = client.score("shake-one", text, per_character=True, top_logprobs=4)
    assert len(reply.top_logprobs) == len(text) - 1
    for i, alternatives in enumerate(reply.top_logprobs, start=1):
        window = ids[max(0, i - model.sample_len):i]
        probs = model.functions.predict(ids=tf.constant(window[None, :]))["probs"].numpy()[0]
        order = np.argsort(-probs, kind="stable")[:4]
        assert alternatives.characters == model.charset.decode(order), i
        np.testing.assert_allclose(alternatives.logprobs, np.log(probs[order]), rtol=0, atol=TOLERANCE)
        assert list(alternatives.logprobs) == sorted(alternatives.logprobs, reverse=True)
        if text[i] in alternatives.characters:  # the character's own value is Score's
            at = alternatives.characters.index(text[i])
            assert alternatives.logprobs[at] == pytest.approx(reply.logprobs[i - 1], abs=TOLERANCE)
    skipped = client.score("shake-one", text, top_logprobs=4, top_logprobs_skip=100)
    assert list(skipped.top_logprobs) == list(reply.top_logprobs)[100:]
    for top, skip, words in ((21, 0, "top_logprobs must be between 0 and 20, got 21"),
                             (2, len(text) - 1, f"top_logprobs_skip must be between 0 and the scored characters less "
                                                f"one ({len(text) - 2}), got {len(text) - 1}")):
        with pytest.raises(TextgenError) as caught:
            client.score("shake-one", text, top_logprobs=top, top_logprobs_skip=skip)
        assert caught.value.code == "INVALID_ARGUMENT" and caught.value.message == words
