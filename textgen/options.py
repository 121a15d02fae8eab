"""Training options: the original's flags and defaults, and the one place they are validated.

The trainer CLI and the server's Training service both build a ``TrainConfig`` and call
``validate()``; a bad value raises ``OptionError`` with a message naming the value and what is allowed.
No Keras here: the server validates a request without loading any training code.
"""
from __future__ import annotations

import dataclasses
import math

# The original example's defaults.
LSTM_LAYER_SIZES = (128, 128)
LEARNING_RATE = 1e-2  # RMSprop
SAMPLE_LEN = 60  # characters in a window
SAMPLE_STEP = 3  # between window starts
EXAMPLES_PER_EPOCH = 10000
VALIDATION_SPLIT = 0.0625  # held out at the end of the text

OBJECTIVES = ("last", "all")
MAX_LAYERS = 8
MAX_UNITS = 4096
MAX_PARAMETERS = 50_000_000  # ~200 MB of float32 weights, ~600 MB with RMSprop state and gradients
MAX_EPOCHS = 100_000
MAX_EXAMPLES_PER_EPOCH = 10_000_000
MAX_SAMPLE_LEN = 1000
MAX_BATCH_SIZE = 65536
MAX_DISPLAY_LENGTH = 10_000
OPTIMIZERS = ("rmsprop", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "bfloat16", "auto")
MAX_WARMUP_STEPS = 1_000_000
MAX_CLIP_NORM = 1e6
MAX_TIME_BUDGET_MINUTES = 7 * 24 * 60


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named bundle of training settings; options given with it override its settings."""

    summary: str  # what it changes from the original's defaults, for --help and the bench
    settings: dict


# The settings and their worth were measured with bench/train_bench.py (bench/results/train.md).
RECIPES = {
    "original": Recipe("the original example's settings, unchanged (RMSprop at a constant 1e-2, the next "
                       "character after each window).", {}),
    "fast": Recipe(
        "every position of each window (--objective all), the original's RMSprop at 1e-2 after 300 steps "
        "of linear warmup (--warmup-steps 300), decayed to a tenth over the run on a cosine "
        "(--lr-schedule cosine), each step's gradients clipped to a global norm of 1 (--clip-norm 1), "
        "and dropout 0.2 after each LSTM layer (--dropout 0.2), in batches of 32 (--batch-size 32; the "
        "original's 128 learns less per example at these budgets), with two LSTM layers of 224 "
        "(--lstm-layer-size 224,224: a larger model than the original's 128,128, which learns more per "
        "example and wins from a few minutes of training on; the warmup and clipping get it past its "
        "first minute, which it would otherwise spend at the unigram loss).",
        {"objective": "all", "lr_schedule": "cosine", "warmup_steps": 300, "clip_norm": 1.0, "dropout": 0.2,
         "batch_size": 32, "lstm_layer_sizes": (224, 224)},
    ),
}
DEFAULT_RECIPE = "original"


class OptionError(ValueError):
    """A training option outside what is allowed."""


@dataclasses.dataclass
class TrainConfig:
    lstm_layer_sizes: tuple[int, ...] = LSTM_LAYER_SIZES
    sample_len: int = SAMPLE_LEN
    sample_step: int = SAMPLE_STEP
    learning_rate: float = LEARNING_RATE
    epochs: int = 150
    examples_per_epoch: int = EXAMPLES_PER_EPOCH
    batch_size: int = 128
    validation_split: float = VALIDATION_SPLIT
    display_length: int = 120
    objective: str = "last"
    seed: int | None = None
    optimizer: str = "rmsprop"
    lr_schedule: str = "constant"  # or "cosine": linear warmup, then cosine decay to a tenth over the run
    warmup_steps: int = 0
    clip_norm: float = 0.0  # > 0: clip each step's gradients to this global norm
    dropout: float = 0.0  # after each LSTM layer (not recurrent: the layers stay cuDNN-eligible)
    precision: str = "float32"  # "bfloat16": mixed bfloat16; "auto": bfloat16 on CPUs with native support
    time_budget_minutes: float = 0.0  # > 0: train this many minutes (of steps), the schedule fitted to them
    recipe: str = DEFAULT_RECIPE  # the named settings this config started from (see RECIPES)

    def validate(self, charset_size: int | None = None) -> "TrainConfig":
        """Raise OptionError for the first bad value; with ``charset_size``, also the model's size."""
        sizes = self.lstm_layer_sizes
        if not sizes:
            raise OptionError("lstm layer sizes must name at least one layer, e.g. 128,128")
        if len(sizes) > MAX_LAYERS:
            raise OptionError(f"lstm layer sizes: {len(sizes)} layers given, at most {MAX_LAYERS} allowed")
        for size in sizes:
            _int_in("lstm layer size", size, 1, MAX_UNITS)
        _int_in("sample length", self.sample_len, 1, MAX_SAMPLE_LEN)
        _int_in("sample step", self.sample_step, 1, MAX_SAMPLE_LEN)
        _float_in("learning rate", self.learning_rate, 0.0, 10.0, low_open=True)
        _int_in("epochs", self.epochs, 1, MAX_EPOCHS)
        _int_in("examples per epoch", self.examples_per_epoch, 1, MAX_EXAMPLES_PER_EPOCH)
        _int_in("batch size", self.batch_size, 1, MAX_BATCH_SIZE)
        _float_in("validation split", self.validation_split, 0.0, 1.0, high_open=True)
        _int_in("display length", self.display_length, 0, MAX_DISPLAY_LENGTH)
        if self.objective not in OBJECTIVES:
            raise OptionError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r:.80}")
        if self.seed is not None:
            _int_in("seed", self.seed, 0, 2**63 - 1)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _one_of("learning rate schedule", self.lr_schedule, LR_SCHEDULES)
        _int_in("warmup steps", self.warmup_steps, 0, MAX_WARMUP_STEPS)
        _float_in("clip norm", self.clip_norm, 0.0, MAX_CLIP_NORM)
        _float_in("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _one_of("precision", self.precision, PRECISIONS)
        _float_in("time budget (minutes)", self.time_budget_minutes, 0.0, MAX_TIME_BUDGET_MINUTES)
        _one_of("recipe", self.recipe, tuple(RECIPES))
        if charset_size is not None:
            params = parameter_count(charset_size, sizes)
            if params > MAX_PARAMETERS:
                raise OptionError(
                    f"lstm layer sizes {','.join(map(str, sizes))} give {params:,} parameters "
                    f"({params * 4 / 2**20:,.0f} MiB of weights) for {charset_size} characters; "
                    f"at most {MAX_PARAMETERS:,} are allowed"
                )
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lstm_layer_sizes"] = list(self.lstm_layer_sizes)
        return d

    @classmethod
    def from_recipe(cls, recipe: str = DEFAULT_RECIPE, **options) -> "TrainConfig":
        """The recipe's settings, then ``options`` over them (``epochs=3`` beats the recipe's epochs).

        With a time budget and no ``epochs``, the budget alone ends the run (epochs = MAX_EPOCHS)."""
        _one_of("recipe", recipe, tuple(RECIPES))
        settings = {**RECIPES[recipe].settings, **options, "recipe": recipe}
        if settings.get("time_budget_minutes") and "epochs" not in options:
            settings["epochs"] = MAX_EPOCHS
        return cls(**settings)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From JSON data (a job's options, meta.json's ``training``): a ``recipe`` key applies that
        recipe's settings under the other keys; unknown keys raise OptionError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError(f"unknown training options: {', '.join(unknown)}")
        d = dict(d)
        if "lstm_layer_sizes" in d:
            d["lstm_layer_sizes"] = tuple(d["lstm_layer_sizes"])
        recipe = d.pop("recipe", DEFAULT_RECIPE)
        if not isinstance(recipe, str):
            raise OptionError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r:.80}")
        return cls.from_recipe(recipe, **d)


def parameter_count(charset_size: int, lstm_layer_sizes) -> int:
    """Parameters of the model ``trainer.model.build_model(charset_size, lstm_layer_sizes)`` builds:
    the frozen one-hot table ``charset_size ** 2``, each LSTM ``4 * units * (inputs + units + 1)``,
    then the softmax layer."""
    total, inputs = charset_size * charset_size, charset_size
    for units in lstm_layer_sizes:
        total += 4 * units * (inputs + units + 1)
        inputs = units
    return total + inputs * charset_size + charset_size


def parse_layer_sizes(text: str) -> tuple[int, ...]:
    """``"128,128"`` -> ``(128, 128)``; OptionError naming the bad part otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    sizes = []
    for part in parts:
        try:
            sizes.append(int(part))
        except ValueError:
            raise OptionError(
                f"lstm layer sizes must be positive integers separated by commas (e.g. 128,128), got {text!r}"
            ) from None
    return tuple(sizes)


def _int_in(what: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{what} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise OptionError(f"{what} must be between {low} and {high}, got {value}")


def _float_in(what, value, low, high, low_open=False, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(f"{what} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise OptionError(f"{what} must be in {lo}{low}, {high}{hi}, got {value}")


def _one_of(what: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise OptionError(f"{what} must be one of {', '.join(allowed)}, got {value!r:.80}")
