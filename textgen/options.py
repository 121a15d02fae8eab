"""Training options: ``TrainConfig``, the recipes, and the one place the options are checked.

The options, their defaults (the original example's) and their allowed values are declared in the
proto (``TrainOptions``, read through ``textgen.schema``); ``TrainConfig`` gives them types and
ranges. ``run_config`` is the one check of a training request, made twice on a job's way: at the door
(the server's Training service, the trainer CLI) and in the job itself (``trainer.training.train``),
which may run code from an older or newer server. It also decides what a continued model keeps.
A bad value raises ``OptionError`` with a message naming the value and what is allowed.
No Keras here: the server checks a request without loading any training code.
"""
from __future__ import annotations

import dataclasses
import math

from textgen import schema
from textgen.charset import Charset

_DEFAULTS = schema.defaults()  # the proto's (option).default of each option

# The original example's defaults.
LSTM_LAYER_SIZES = _DEFAULTS["lstm_layer_sizes"]
LEARNING_RATE = _DEFAULTS["learning_rate"]  # RMSprop
SAMPLE_LEN = _DEFAULTS["sample_len"]  # characters in a window
SAMPLE_STEP = _DEFAULTS["sample_step"]  # between window starts
EXAMPLES_PER_EPOCH = _DEFAULTS["examples_per_epoch"]
VALIDATION_SPLIT = _DEFAULTS["validation_split"]  # held out at the end of the text

OBJECTIVES = schema.option("objective").choices
MAX_LAYERS = 8
MAX_UNITS = 4096
MAX_PARAMETERS = 50_000_000  # ~200 MB of float32 weights, ~600 MB with RMSprop state and gradients
MAX_EPOCHS = 100_000
MAX_EXAMPLES_PER_EPOCH = 10_000_000
MAX_SAMPLE_LEN = 1000
MAX_BATCH_SIZE = 65536
MAX_DISPLAY_LENGTH = 10_000
OPTIMIZERS = schema.option("optimizer").choices
LR_SCHEDULES = schema.option("lr_schedule").choices
PRECISIONS = schema.option("precision").choices
MAX_WARMUP_STEPS = 1_000_000
MAX_CLIP_NORM = 1e6
MAX_TIME_BUDGET_MINUTES = 7 * 24 * 60


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named bundle of training settings; options given with it override its settings."""

    summary: str  # what it changes from the original's defaults, for --help and the bench
    settings: dict
    headline: str = ""  # the summary in a few words (the page shows it, the rest on demand)


# The settings and their worth were measured with bench/train_bench.py (bench/results/train.md).
RECIPES = {
    "original": Recipe("the original example's settings, unchanged (RMSprop at a constant 1e-2, the next "
                       "character after each window).", {}, "the original example's settings, unchanged"),
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
        "the best model per CPU minute measured here: warmup, cosine decay, clipping, dropout, 224,224",
    ),
    "finetune": Recipe(
        "for a trained model (--from; the default there): every position of each window (--objective all), "
        "RMSprop at a peak of 2e-3 (--learning-rate 0.002, a fifth of the fast recipe's), no warmup "
        "(--warmup-steps 0: the weights are already good), decayed to a tenth over the run on a cosine "
        "(--lr-schedule cosine), gradients clipped to a global norm of 1 (--clip-norm 1), dropout 0.1, "
        "in batches of 32; the layer sizes and sample length are the parent's.",
        {"objective": "all", "lr_schedule": "cosine", "warmup_steps": 0, "learning_rate": 0.002, "clip_norm": 1.0,
         "dropout": 0.1, "batch_size": 32},
        "for continuing a trained model (--from): a fifth of fast's learning rate, no warmup",
    ),
}
FINETUNE_RECIPE = "finetune"  # the default recipe of a run that continues a model
DEFAULT_RECIPE = _DEFAULTS["recipe"]
if set(RECIPES) != set(schema.option("recipe").choices):
    raise RuntimeError("the recipes in textgen/options.py and the recipe choices in the proto differ")


class OptionError(ValueError):
    """A training option outside what is allowed."""


class TextTooShort(OptionError):
    """A text too short for one training window."""


@dataclasses.dataclass
class TrainConfig:
    """Every training option, typed; the defaults are the proto's (``textgen.schema``)."""

    lstm_layer_sizes: tuple[int, ...] = _DEFAULTS["lstm_layer_sizes"]
    sample_len: int = _DEFAULTS["sample_len"]
    sample_step: int = _DEFAULTS["sample_step"]
    learning_rate: float = _DEFAULTS["learning_rate"]
    epochs: int = _DEFAULTS["epochs"]
    examples_per_epoch: int = _DEFAULTS["examples_per_epoch"]
    batch_size: int = _DEFAULTS["batch_size"]
    validation_split: float = _DEFAULTS["validation_split"]
    display_length: int = _DEFAULTS["display_length"]
    objective: str = _DEFAULTS["objective"]
    seed: int | None = _DEFAULTS["seed"]
    optimizer: str = _DEFAULTS["optimizer"]
    lr_schedule: str = _DEFAULTS["lr_schedule"]  # or "cosine": linear warmup, then cosine decay to a tenth
    warmup_steps: int = _DEFAULTS["warmup_steps"]
    clip_norm: float = _DEFAULTS["clip_norm"]  # > 0: clip each step's gradients to this global norm
    dropout: float = _DEFAULTS["dropout"]  # after each LSTM layer (not recurrent: layers stay cuDNN-eligible)
    precision: str = _DEFAULTS["precision"]  # "bfloat16": mixed bfloat16; "auto": where the CPU has it
    time_budget_minutes: float = _DEFAULTS["time_budget_minutes"]  # > 0: train this many minutes (of steps)
    recipe: str = _DEFAULTS["recipe"]  # the named settings this config started from (see RECIPES)
    weight_decay: float = _DEFAULTS["weight_decay"]  # AdamW's (decoupled); other optimizers have none

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
        _float_in("weight decay", self.weight_decay, 0.0, 1.0)
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
    def from_dict(cls, d: dict, continuing: bool = False) -> "TrainConfig":
        """From JSON data (a job's options, meta.json's ``training``): a ``recipe`` key applies that
        recipe's settings under the other keys; unknown keys raise OptionError. Without a recipe, the
        default one: the original's, or ``finetune`` when ``continuing`` a trained model."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OptionError(f"unknown training options: {', '.join(unknown)}")
        d = dict(d)
        if "lstm_layer_sizes" in d:
            d["lstm_layer_sizes"] = tuple(d["lstm_layer_sizes"])
        recipe = d.pop("recipe", None) or (FINETUNE_RECIPE if continuing else DEFAULT_RECIPE)
        if not isinstance(recipe, str):
            raise OptionError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r:.80}")
        return cls.from_recipe(recipe, **d)


def min_text_length(sample_len: int) -> int:
    """The fewest characters a text needs to train on with windows of ``sample_len``: one window,
    its next character, and one more (the original's loop stops one short of the end)."""
    return sample_len + 2


def run_config(config: TrainConfig, text: str | None = None, parent: dict | None = None, *,
               corpus: str = "the corpus", model: str = "the model") -> TrainConfig:
    """The options a run trains with, every value checked: the one check of a training request.

    ``parent``: the meta.json of the model a run continues. A continued model keeps its layer sizes
    and sample length (``config``'s are ignored); its charset grows by the characters of ``text`` it
    lacks (``Charset.grown``). With ``text`` (None: not at hand, as at a server that has not fetched a
    built-in corpus), the model's size is checked for its charset and the text must be long enough
    for one window. ``corpus`` names the text in messages. Raises OptionError, or TextTooShort (an
    OptionError).
    """
    charset = None
    if parent is not None:
        charset = Charset(parent["charset"])
        config = dataclasses.replace(config, lstm_layer_sizes=tuple(parent.get("lstm_layer_sizes") or
                                                                    config.lstm_layer_sizes),
                                     sample_len=int(parent["sample_len"]))
        if text is not None:
            charset = charset.grown(text)
    elif text is not None:
        charset = Charset.of_text(text)
    config.validate(charset_size=len(charset) if charset is not None else None)
    if text is not None and len(text) < min_text_length(config.sample_len):
        raise TextTooShort(f"{corpus} has {len(text)} characters; training with sample length {config.sample_len} "
                          f"needs at least {min_text_length(config.sample_len)}")
    return config


def parameter_count(charset_size: int, lstm_layer_sizes) -> int:
    """Parameters of the model ``trainer.model.build_model(charset_size, lstm_layer_sizes)`` builds:
    the frozen one-hot table ``charset_size ** 2``, each LSTM ``4 * units * (inputs + units + 1)``,
    then the softmax layer."""
    total, inputs = charset_size * charset_size, charset_size
    for units in lstm_layer_sizes:
        total += 4 * units * (inputs + units + 1)
        inputs = units
    return total + inputs * charset_size + charset_size


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
