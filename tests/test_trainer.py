"""The trainer: the original's windows, the model's arithmetic, training, bundles, the sampling rule."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from textgen import bundle
from textgen.charset import Charset, CharsetError
from textgen.options import OptionError, TrainConfig
from textgen.sampling import Uniforms, sample_ids
from trainer import export
from trainer.decode import PipelinedDecoder
from trainer.dataset import DatasetError, TextDataset, window_starts
from trainer.model import build_model
from trainer.training import generate_ids, train

from .conftest import corpus_text

TINY = dict(sample_len=10, epochs=1, examples_per_epoch=256, batch_size=64, display_length=0, seed=3)


# -- dataset ---------------------------------------------------------------------------------------

def original_windows(text, sample_len, sample_step, begin_indices):
    """A line-by-line port of the original's data.js nextDataEpoch for given begin indices."""
    char_set = sorted(set(text))
    xs, ys = [], []
    for begin in begin_indices:
        xs.append([char_set.index(text[begin + j]) for j in range(sample_len)])
        ys.append(char_set.index(text[begin + sample_len]))
    return np.array(xs), np.array(ys)


def test_window_starts_are_the_originals():
    # data.js: for (let i = 0; i < textLen - sampleLen - 1; i += sampleStep)
    assert window_starts(20, 5, 3).tolist() == [0, 3, 6, 9, 12]
    assert window_starts(7, 5, 1).tolist() == [0]
    assert window_starts(6, 5, 1).tolist() == []


def test_windows_equal_the_originals_for_a_known_text():
    text = "to be, or not to be: that is the question."
    data = TextDataset.from_text(text, sample_len=6, sample_step=2, validation_split=0.0)
    starts = window_starts(len(text), 6, 2)
    x, y = data.windows(data.train_ids, starts)
    want_x, want_y = original_windows(text, 6, 2, starts)
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)
    assert data.charset.decode(x[1]) == " be, o" and data.charset.decode([y[1]]) == "r"


def test_all_positions_targets_are_the_next_character_at_every_position():
    data = TextDataset.from_text("abcdefghijklmnop", sample_len=4, sample_step=1, validation_split=0.0)
    x, y = data.windows(data.train_ids, np.array([2]), all_positions=True)
    assert data.charset.decode(x[0]) == "cdef" and data.charset.decode(y[0]) == "defg"


def test_epoch_takes_the_first_examples_of_a_fresh_shuffle_and_wraps():
    data = TextDataset.from_text("x" * 40 + "y", sample_len=5, sample_step=3, validation_split=0.0)
    starts = data.epoch_starts(30, np.random.default_rng(0))
    all_starts = window_starts(41, 5, 3)
    assert sorted(starts[: len(all_starts)].tolist()) == all_starts.tolist()
    assert starts[len(all_starts):].tolist() == starts[: 30 - len(all_starts)].tolist()


def test_validation_is_the_held_out_tail():
    text = corpus_text("nietzsche", 10_000)
    data = TextDataset.from_text(text, validation_split=0.0625)
    assert len(data.val_ids) == 625 and len(data.train_ids) == 9375
    assert data.charset.decode(data.val_ids) == text[9375:]


def test_charset_is_sorted_and_names_unknown_characters():
    charset = Charset.of_text("banana!")
    assert charset.chars == "!abn"
    with pytest.raises(CharsetError, match=r"'é' \(U\+00E9\)"):
        charset.encode("bé")


def test_a_corpus_shorter_than_a_window_is_refused():
    with pytest.raises(DatasetError, match="has 11 characters.*needs at least 12"):
        TextDataset.from_text("hello world", sample_len=10, validation_split=0.0)


# -- model -----------------------------------------------------------------------------------------

def test_one_hot_lstm_equals_a_hand_computation():
    model = build_model(3, [2])
    rng = np.random.default_rng(0)
    for w in model.trainable_weights:  # the one-hot table stays the identity
        w.assign(rng.normal(0, 0.7, w.shape).astype("float32"))
    kernel, recurrent, bias, dense_w, dense_b = [w.numpy() for w in model.trainable_weights]
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    h, c = np.zeros(2), np.zeros(2)
    for char_id in [2, 0, 1]:
        z = kernel[char_id] + h @ recurrent + bias  # one-hot input: a row of the kernel
        i, f, g, o = np.split(z, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    logits = h @ dense_w + dense_b
    expected = np.exp(logits) / np.exp(logits).sum()
    got = model(np.array([[2, 0, 1]], np.int32)).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_the_keras_file_loads_in_safe_mode(tmp_path):
    model = build_model(5, [4, 3])
    model.save(tmp_path / "m.keras")
    import keras
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    ids = np.array([[1, 2, 3, 4]], np.int32)
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())


# -- sampling --------------------------------------------------------------------------------------

def test_temperature_zero_is_greedy():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    ids = sample_ids(probs, [0.0, 0.0], [0.99, 0.0]).numpy()
    assert ids.tolist() == [1, 0]


def test_sampling_follows_the_tempered_distribution():
    probs = np.array([[0.2, 0.8]], np.float32)
    # temperature 1: cdf [0.2, 1.0]; temperature 0.5: p^2 normalised -> [0.0588, 0.9412]
    assert sample_ids(probs, [1.0], [0.19]).numpy().tolist() == [0]
    assert sample_ids(probs, [1.0], [0.21]).numpy().tolist() == [1]
    assert sample_ids(probs, [0.5], [0.05]).numpy().tolist() == [0]
    assert sample_ids(probs, [0.5], [0.07]).numpy().tolist() == [1]


def test_uniforms_do_not_depend_on_chunking():
    a, b = Uniforms(42), Uniforms(42)
    np.testing.assert_array_equal(np.concatenate([a.take(3), a.take(5)]), b.take(8))


# -- training, bundles, continued training ---------------------------------------------------------

@pytest.fixture(scope="module")
def text():
    return corpus_text("tinyshakespeare", 40_000)


@pytest.fixture(scope="module")
def tiny_lstm8(text):
    """One LSTM(8) trained for an epoch of TINY: the model the save, publish and failure tests below use
    (none of them changes it)."""
    return train(text, TrainConfig(lstm_layer_sizes=(8,), **TINY))


def test_a_few_epochs_lower_the_validation_loss(text):
    events = []
    config = TrainConfig(lstm_layer_sizes=(48,), sample_len=20, epochs=4, examples_per_epoch=1024,
                         batch_size=32, display_length=30, seed=1)
    result = train(text, config, on_event=events.append)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"] - 0.2
    assert epochs[-1]["bits_per_char"] == pytest.approx(epochs[-1]["val_loss"] / np.log(2))
    assert [s["temperature"] for s in epochs[-1]["samples"]] == [0.0, 0.25, 0.5, 0.75]
    assert all(len(s["text"]) == 30 for s in epochs[-1]["samples"])
    batches = [e for e in events if e["type"] == "batch" and e["epoch"] == 1]
    assert [b["batch"] for b in batches] == list(range(1, 33))
    assert result.meta["epochs"] == 4 and result.meta["val_loss"] == epochs[-1]["val_loss"]


def test_pipelined_generation_is_greedy_reference_output(text):
    result = train(text, TrainConfig(lstm_layer_sizes=(24, 16), **TINY))
    model, charset = result.model, Charset(result.meta["charset"])
    prompt = charset.encode("ROMEO:\nWhat")  # 11 characters: longer than sample_len 10
    got = generate_ids(PipelinedDecoder(model, 10), prompt, 30, [0.0], [Uniforms(0)])[0]
    window, want = list(prompt), []
    for _ in range(30):
        next_id = int(np.argmax(model(np.array([window[-10:]], np.int32)).numpy()[0]))
        want.append(next_id)
        window.append(next_id)
    assert got.tolist() == want


def test_save_load_and_continue_round_trip_exactly(text, tmp_path):
    result = train(text, TrainConfig(lstm_layer_sizes=(16,), **TINY))
    path = export.save_to_path(result.model, result.meta, tmp_path / "model")
    loaded, meta = export.load_keras(path)
    ids = result.meta and Charset(meta["charset"]).encode(text[:10])[None, :]
    np.testing.assert_array_equal(loaded(ids).numpy(), result.model(ids).numpy())
    served = tf.saved_model.load(str(path / "saved_model"))
    np.testing.assert_allclose(served.predict(tf.constant(ids))["probs"].numpy(), result.model(ids).numpy(), rtol=1e-6)
    assert served.charset()["charset"].numpy().decode() == meta["charset"]

    continued = train(text, TrainConfig(**TINY), init_from=path)
    assert continued.meta["epochs"] == 2 and continued.meta["lstm_layer_sizes"] == [16]
    assert continued.meta["parent"]["path"] == str(path)
    assert not np.array_equal(continued.model(ids).numpy(), loaded(ids).numpy())


def test_both_objectives_serve_the_same_way(text):
    for objective in ("last", "all"):
        result = train(text, TrainConfig(lstm_layer_sizes=(8,), objective=objective, **TINY))
        out = result.model(np.zeros((2, 10), np.int32))
        assert out.shape == (2, len(result.meta["charset"]))
        assert result.meta["objective"] == objective


def test_checkpoints_resume_after_the_last_epoch(text, tmp_path):
    config = TrainConfig(lstm_layer_sizes=(8,), **{**TINY, "epochs": 3})
    stops = iter([False] * 4 + [True] * 1000)  # 4 batches per epoch: stop in the second epoch
    first = train(text, config, checkpoint_dir=tmp_path, should_stop=lambda: next(stops))
    assert first.stopped and json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 1
    events = []
    second = train(text, config, checkpoint_dir=tmp_path, on_event=events.append)
    assert events[0] == {"type": "started", "epochs": 3, "batches_per_epoch": 4, "resumed_from_epoch": 1}
    assert [e["epoch"] for e in events if e["type"] == "epoch"] == [2, 3]
    assert second.meta["epochs"] == 3 and not second.stopped


def test_publish_numbers_versions_and_leaves_no_temporary_directory(tiny_lstm8, tmp_path):
    result = tiny_lstm8
    assert export.publish(result.model, result.meta, tmp_path, "shake")[1] == 1
    assert export.publish(result.model, result.meta, tmp_path, "shake")[1] == 2
    assert sorted(p.name for p in (tmp_path / "shake").iterdir()) == [".last-version", "1", "2"]
    assert json.loads((tmp_path / "shake" / "2" / "meta.json").read_text())["version"] == 2
    import shutil
    shutil.rmtree(tmp_path / "shake" / "2")  # deleting the latest version does not free its number
    assert export.publish(result.model, result.meta, tmp_path, "shake")[1] == 3


def test_an_interrupted_save_leaves_no_bundle_behind(tiny_lstm8, tmp_path):
    result = tiny_lstm8
    model = result.model

    def explode(*_args, **_kwargs):
        raise KeyboardInterrupt

    original = model.save
    model.save = explode  # the Keras file is written after the SavedModel: fail half way
    try:
        with pytest.raises(KeyboardInterrupt):
            export.save_to_path(model, result.meta, tmp_path / "m")
        with pytest.raises(KeyboardInterrupt):
            export.publish(model, result.meta, tmp_path / "models", "m")
    finally:
        model.save = original
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "models"]
    assert [p.name for p in (tmp_path / "models" / "m").iterdir()] == []


def test_bad_model_names_are_refused():
    for name in ["../etc", "", "A", "-x", "a/b", "x" * 65]:
        with pytest.raises(bundle.BundleError, match="invalid model name"):
            bundle.validate_name(name)


@pytest.mark.parametrize("change, message", [
    (dict(lstm_layer_sizes=(0,)), "lstm layer size must be between 1 and 4096, got 0"),
    (dict(lstm_layer_sizes=(-5,)), "lstm layer size must be between 1 and 4096, got -5"),
    (dict(epochs=0), "epochs must be between 1 and 100000, got 0"),
    (dict(sample_len=0), "sample length must be between 1 and 1000, got 0"),
    (dict(learning_rate=float("nan")), "learning rate must be a finite number, got nan"),
    (dict(objective="middle"), "objective must be one of last, all, got 'middle'"),
    (dict(validation_split=1.0), r"validation split must be in \[0.0, 1.0\), got 1.0"),
])
def test_bad_training_options_are_named(change, message):
    with pytest.raises(OptionError, match=message):
        TrainConfig(**change).validate()


def test_a_model_too_large_for_memory_is_refused_with_its_size():
    # 100*100 (one-hot) + 4*4096*(100+4096+1) + 2 * 4*4096*(4096+4096+1) + 4096*100 + 100
    with pytest.raises(OptionError, match=r"give 337,651,572 parameters \(1,288 MiB of weights\) .* at most 50,000,000"):
        TrainConfig(lstm_layer_sizes=(4096, 4096, 4096)).validate(charset_size=100)


def test_parameter_count_is_keras_count():
    from textgen.options import parameter_count
    assert parameter_count(10, (16, 8)) == build_model(10, (16, 8)).count_params()


def test_a_full_disk_or_read_only_volume_is_a_bundle_error_naming_the_folder(tiny_lstm8, tmp_path):
    result = tiny_lstm8
    blocked = tmp_path / "models"
    blocked.write_text("a file where the models folder should be")
    with pytest.raises(bundle.BundleError, match=r"cannot write the model bundle in .*models/m"):
        export.publish(result.model, result.meta, blocked, "m")


def test_running_out_of_memory_is_a_message_not_a_traceback():
    from trainer.training import OUT_OF_MEMORY, describe_failure

    assert describe_failure(MemoryError()) == OUT_OF_MEMORY
    assert describe_failure(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating")) == OUT_OF_MEMORY
    assert describe_failure(ValueError("a bug")) is None
