"""Training recipes (issue 13): optimizers, the learning-rate schedule, clipping, dropout, bfloat16,
time budgets, named recipes, and how each travels through the CLI, a checkpoint and a bundle."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from textgen import bundle
from textgen.options import MAX_EPOCHS, RECIPES, OptionError, TrainConfig
from trainer import export, training
from trainer.cli import build_parser, main, train_config
from trainer.model import build_model, compile_data_parallel, compile_model, data_parallel
from trainer.training import FINAL_LR_FRACTION, LearningRateSchedule, train

from .conftest import corpus_text

TINY = dict(lstm_layer_sizes=(16,), sample_len=10, epochs=2, examples_per_epoch=256, batch_size=64,
            display_length=0, seed=3)


@pytest.fixture(scope="module")
def text():
    return corpus_text("tinyshakespeare", 30_000)


# -- options and recipes ---------------------------------------------------------------------------

def test_no_options_is_the_original_recipe():
    args = build_parser().parse_args(["train", "shakespeare"])
    assert train_config(args) == TrainConfig() == TrainConfig.from_recipe("original")
    original = TrainConfig()
    assert (original.optimizer, original.learning_rate, original.lr_schedule, original.objective,
            original.clip_norm, original.dropout, original.precision, original.time_budget_minutes) == \
        ("rmsprop", 1e-2, "constant", "last", 0.0, 0.0, "float32", 0.0)


def test_the_fast_recipe_sets_its_settings_and_flags_given_with_it_win():
    args = build_parser().parse_args(["train", "shakespeare", "--recipe", "fast", "--learning-rate", "0.001",
                                      "--epochs", "7"])
    config = train_config(args)
    assert config == TrainConfig(**{**RECIPES["fast"].settings, "learning_rate": 1e-3, "epochs": 7,
                                    "recipe": "fast"})
    assert (config.optimizer, config.lr_schedule, config.warmup_steps, config.clip_norm, config.objective,
            config.dropout, config.batch_size, config.lstm_layer_sizes) == \
        ("rmsprop", "cosine", 300, 1.0, "all", 0.2, 32, (224, 224))
    # layer sizes given with the recipe win too
    sized = train_config(build_parser().parse_args(["train", "x", "--recipe", "fast", "--lstm-layer-size", "128"]))
    assert (sized.lstm_layer_sizes, sized.dropout) == ((128,), 0.2)


def test_a_time_budget_lifts_the_epoch_cap_unless_epochs_are_given():
    parse = build_parser().parse_args
    assert train_config(parse(["train", "x", "--time-budget", "3"])).epochs == MAX_EPOCHS
    assert train_config(parse(["train", "x", "--time-budget", "3"])).time_budget_minutes == 3.0
    assert train_config(parse(["train", "x", "--time-budget", "3", "--epochs", "5"])).epochs == 5


def test_a_config_round_trips_through_json_with_its_recipe():
    config = TrainConfig.from_recipe("fast", dropout=0.1, time_budget_minutes=2.5)
    assert TrainConfig.from_dict(config.to_dict()) == config
    # A job's options name the recipe and only what differs from it.
    assert TrainConfig.from_dict({"recipe": "fast", "batch_size": 256}) == TrainConfig.from_recipe("fast", batch_size=256)


def test_the_help_says_what_each_recipe_changes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "fast: every position of each window (--objective all), the original's RMSprop at 1e-2 after 300" in out
    assert "after 300 steps of linear warmup (--warmup-steps 300)" in out
    assert "clipped to a global norm of 1 (--clip-norm 1)" in out
    assert "and dropout 0.2 after each LSTM layer (--dropout 0.2), in batches of 32 (--batch-size 32;" in out
    assert "with two LSTM layers of 224 (--lstm-layer-" in out and "224,224: a larger model" in out
    assert "original: the original example's settings, unchanged" in out


@pytest.mark.parametrize("change, message", [
    ({"optimizer": "sgd"}, "optimizer must be one of rmsprop, adam, adamw, got 'sgd'"),
    ({"lr_schedule": "linear"}, "learning rate schedule must be one of constant, cosine, got 'linear'"),
    ({"warmup_steps": -1}, "warmup steps must be between 0 and 1000000, got -1"),
    ({"clip_norm": -1.0}, "clip norm must be in [0.0, 1000000.0], got -1.0"),
    ({"dropout": 1.0}, "dropout must be in [0.0, 1.0), got 1.0"),
    ({"precision": "float16"}, "precision must be one of float32, bfloat16, auto, got 'float16'"),
    ({"time_budget_minutes": float("nan")}, "time budget (minutes) must be a finite number, got nan"),
    ({"time_budget_minutes": -5}, "time budget (minutes) must be in [0.0, 10080], got -5"),
])
def test_bad_recipe_options_are_named(change, message):
    with pytest.raises(OptionError) as err:
        TrainConfig(**change).validate()
    assert str(err.value) == message


def test_an_unknown_recipe_is_named_with_the_known_ones():
    with pytest.raises(OptionError, match=r"^recipe must be one of original, fast, finetune, got 'turbo'$"):
        TrainConfig.from_dict({"recipe": "turbo"})


def test_bad_recipe_flags_end_with_one_line(capsys):
    assert main(["train", "shakespeare", "--recipe", "turbo"]) == 2
    err = capsys.readouterr().err
    assert "argument --recipe: invalid choice: 'turbo'" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "shakespeare", "--optimizer", "sgd"]) == 1
    assert capsys.readouterr().err == "error: optimizer must be one of rmsprop, adam, adamw, got 'sgd'\n"


# -- the schedule ----------------------------------------------------------------------------------

def test_cosine_schedule_warms_up_then_decays_to_a_tenth_by_the_last_step():
    schedule = LearningRateSchedule(peak=1e-2, kind="cosine", warmup_steps=10, total_steps=110)
    assert [schedule.at(step, 0.0) for step in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])
    assert schedule.at(10, 0.0) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 10 / 110))))
    assert schedule.at(55, 0.0) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))  # half way: half way down
    assert schedule.at(110, 0.0) == pytest.approx(1e-2 * FINAL_LR_FRACTION)
    assert LearningRateSchedule(peak=1e-2).at(50, 99.0) == 1e-2  # the original's: constant


def test_a_time_budget_schedule_follows_training_time_not_steps():
    schedule = LearningRateSchedule(peak=1.0, kind="cosine", total_steps=10**9, budget_seconds=60.0)
    assert schedule.progress(5, 30.0) == 0.5 and schedule.at(5, 30.0) == pytest.approx(0.55)
    assert schedule.at(6, 60.0) == pytest.approx(FINAL_LR_FRACTION)


# -- training with them ----------------------------------------------------------------------------

def test_a_time_budget_ends_training_with_the_schedule_at_its_end_and_the_bundle_records_the_recipe(text, tmp_path):
    config = TrainConfig.from_recipe("fast", **{**TINY, "epochs": MAX_EPOCHS, "time_budget_minutes": 0.03,
                                                "warmup_steps": 0})
    events = []
    result = train(text, config, on_event=events.append)
    epochs = [e for e in events if e["type"] == "epoch"]
    assert not result.stopped and 1 <= len(epochs) < MAX_EPOCHS
    assert result.meta["train_seconds"] >= 0.03 * 60  # it stops at the first batch past the budget
    assert epochs[-1]["learning_rate"] == pytest.approx(1e-2 * FINAL_LR_FRACTION)
    assert result.meta["examples_seen"] == sum(e.get("examples", 256) for e in epochs)
    path = export.save_to_path(result.model, result.meta, tmp_path / "m")
    meta = bundle.read_meta(path)
    assert meta["training"]["recipe"] == "fast" and meta["training"]["lr_schedule"] == "cosine"
    assert TrainConfig.from_dict(meta["training"]) == config


def test_dropout_and_bfloat16_train_but_the_served_model_is_float32_without_dropout(text, tmp_path):
    config = TrainConfig(**{**TINY, "lstm_layer_sizes": (16, 16), "epochs": 1}, dropout=0.25, precision="bfloat16",
                         optimizer="adamw", clip_norm=1.0)
    result = train(text, config)
    assert result.meta["precision"] == "bfloat16" and result.meta["val_loss"] < math.log(65)
    served = result.model
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in served.layers)
    assert {w.dtype for w in served.weights} == {"float32"}
    assert served.get_layer("lstm_0").dtype_policy.name == "float32"
    path = export.save_to_path(served, result.meta, tmp_path / "m")
    loaded, _meta = export.load_keras(path)
    ids = np.zeros((1, 10), np.int32)
    np.testing.assert_array_equal(loaded(ids).numpy(), served(ids).numpy())


def test_a_resumed_run_continues_the_schedule_where_it_stopped(text, tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 3}, optimizer="adam", learning_rate=3e-3, lr_schedule="cosine",
                         warmup_steps=3)
    whole = train(text, config)
    stops = iter([False] * 4 + [True] * 1000)  # 4 batches per epoch: stop in the second epoch
    assert train(text, config, checkpoint_dir=tmp_path, should_stop=lambda: next(stops)).stopped
    resumed = train(text, config, checkpoint_dir=tmp_path)
    rates = [h["learning_rate"] for h in whole.meta["history"]]
    assert [h["learning_rate"] for h in resumed.meta["history"]] == pytest.approx(rates)
    assert rates[-1] == pytest.approx(3e-3 * FINAL_LR_FRACTION)
    ids = np.arange(20, dtype=np.int32).reshape(2, 10) % 30
    np.testing.assert_allclose(resumed.model(ids).numpy(), whole.model(ids).numpy(), rtol=1e-4, atol=1e-6)


def test_continuing_a_model_starts_a_fresh_warmup_and_decay(text, tmp_path):
    config = TrainConfig(**TINY, optimizer="adam", learning_rate=3e-3, lr_schedule="cosine", warmup_steps=3)
    parent = train(text, config)
    path = export.save_to_path(parent.model, parent.meta, tmp_path / "m")
    child = train(text, config, init_from=path)
    assert [h["learning_rate"] for h in child.meta["history"]] == \
        pytest.approx([h["learning_rate"] for h in parent.meta["history"]])
    assert child.meta["epochs"] == 4 and child.meta["training"]["lr_schedule"] == "cosine"


# -- the batch in side-by-side slices ---------------------------------------------------------------

def test_a_step_on_a_batch_in_two_slices_is_a_step_on_the_whole_batch():
    keras.utils.set_random_seed(1)
    whole = build_model(65, (32, 32), all_positions=True)
    compile_model(whole)
    sliced = build_model(65, (32, 32), all_positions=True)
    compile_model(sliced)
    sliced.set_weights(whole.get_weights())
    stepper = compile_data_parallel(data_parallel(sliced, 2), sliced)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (16, 12)).astype(np.int32), rng.integers(0, 65, (16, 12)).astype(np.int32)
    for _ in range(3):
        expected = whole.train_on_batch(x, y, return_dict=True)["loss"]
        got = stepper.train_on_batch(np.array_split(x, 2), np.array_split(y, 2), return_dict=True)["loss"]
        assert got == pytest.approx(expected, rel=1e-5)
    for before, after in zip(whole.get_weights(), sliced.get_weights()):
        np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-6)


def test_a_batch_is_sliced_once_per_core_but_never_below_16_rows(monkeypatch):
    monkeypatch.setattr(training, "cpu_cores", lambda: 2)
    assert [training.parallel_parts(batch) for batch in (1, 16, 31, 32, 128, 4096)] == [1, 1, 1, 2, 2, 2]
    monkeypatch.setattr(training, "cpu_cores", lambda: 16)
    assert [training.parallel_parts(batch) for batch in (32, 64, 4096)] == [2, 4, 16]


def test_training_in_slices_ends_with_the_same_quality_as_in_one_piece(text, monkeypatch):
    config = TrainConfig(**{**TINY, "batch_size": 64, "epochs": 3, "lstm_layer_sizes": (32,)})
    monkeypatch.setattr(training, "cpu_cores", lambda: 2)
    sliced = train(text, config)
    monkeypatch.setattr(training, "cpu_cores", lambda: 1)
    whole = train(text, config)
    assert sliced.meta["val_loss"] == pytest.approx(whole.meta["val_loss"], abs=1e-3)
