"""Training speed and time to quality (``python -m bench.train_bench [--minutes M] [--quick]``).

In one run on this machine, on tinyshakespeare:

1. Throughput, examples per second, with the original's model and recipe (128,128, sample_len 60,
   batch 128, RMSprop lr 1e-2): the project's trainer (``trainer.training.train``: character ids in,
   one-hot inside the model) against a naive port as the Keras example does it (each epoch built as a
   one-hot float32 NumPy array ``[examples, sample_len, charset]`` and fed to ``model.fit`` of an
   equivalent model with one-hot input; building that array counts against it, as it does for the
   original). Epochs of 10,000 examples; the first epoch of each is warm-up (tracing) and is left out
   of the median; the spread of the trainer's epoch times shows whether any epoch stalls (issue 13).
   Also the memory of one epoch's input both ways.
2. Time to quality, as issue 13's table: each recipe (``--recipes``, default the original's and
   ``fast``) trains on the first 93.75% of the text for ``--minutes`` of training time with its
   schedule sized to them (``--time-budget``), and every character of the held-out last 6.25% is
   scored (mean -log p in nats, each after exactly 60 characters of context) with the weights of the
   last epoch that ended by 1, 3, 5 and 10 minutes.

Writes ``bench/results/train.json`` (every raw number and the machine, load averages included),
``bench/results/train.md`` (tables) and ``bench/results/train_quality.png`` (nats per character
against minutes). ``--quick``: 1 minute per recipe and 3 throughput epochs, to check that it works.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from textgen.charset import Charset  # noqa: E402
from textgen.options import MAX_EPOCHS, RECIPES, TrainConfig  # noqa: E402
from trainer import training  # noqa: E402
from trainer.dataset import TextDataset  # noqa: E402
from trainer.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CORPUS_NAME = "tinyshakespeare"

LAYERS = (128, 128)
SAMPLE_LEN = 60
SAMPLE_STEP = 3
BATCH = 128
LEARNING_RATE = 1e-2
SEED = 1

THROUGHPUT_EXAMPLES = 10_000  # per epoch, as the original
THROUGHPUT_EPOCHS = 6  # the first is warm-up; the median of the rest is reported
QUICK_THROUGHPUT_EPOCHS = 3
DEFAULT_MINUTES = 10.0
QUICK_MINUTES = 1.0
MARKS_MINUTES = (1, 3, 5, 10)
DEFAULT_RECIPES = ("original", "fast")
HELDOUT_FRACTION = 0.0625  # the last 6.25%: 69,713 characters of tinyshakespeare
SCORE_CHUNK = 8192  # held-out characters per predict call (windows [chunk, 60] int32)
SCORE_BATCH = 1024
# Issue 13's nanoGPT "baby GPT" row (measured there, not in this run): a reference line on the plot.
NANOGPT_REFERENCE = {1: 1.92, 3: 1.68, 5: 1.56, 10: 1.490}


def shared_corpora() -> Path:
    """``../shared/corpora`` next to the work tree, as tests/conftest.py finds it."""
    path = Path(__file__).resolve().parents[2] / "shared" / "corpora"
    if not path.is_dir():
        path = Path(os.environ.get("TEXTGEN_SHARED_CORPORA", "/work/shared/corpora"))
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"training minutes per recipe (default {DEFAULT_MINUTES:g}; {QUICK_MINUTES:g} with "
                             "--quick); scores at 1, 3, 5, 10 minutes up to it, and at it")
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                        help=f"comma-separated recipes to compare (default %(default)s; known: {', '.join(RECIPES)})")
    parser.add_argument("--skip-throughput", action="store_true", help="time to quality only")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_MINUTES:g} minute per recipe and {QUICK_THROUGHPUT_EPOCHS} throughput "
                             "epochs: a check that the bench works, not numbers to quote")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    parser.add_argument("--run-recipe", help=argparse.SUPPRESS)  # one recipe's run, in a process of its own
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_recipe:
        return run_recipe(args.run_recipe, args.minutes, args.out)
    minutes = args.minutes if args.minutes is not None else (QUICK_MINUTES if args.quick else DEFAULT_MINUTES)
    if not (math.isfinite(minutes) and minutes > 0):
        parser.error(f"--minutes must be a positive number, got {minutes}")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        parser.error(f"--recipes: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(RECIPES)}")
    throughput_epochs = QUICK_THROUGHPUT_EPOCHS if args.quick else THROUGHPUT_EPOCHS

    corpus = shared_corpora() / f"{CORPUS_NAME}.txt"
    if not corpus.is_file():
        sys.exit(f"train bench: {corpus} not found (set TEXTGEN_SHARED_CORPORA to the folder holding "
                 f"{CORPUS_NAME}.txt)")
    text = corpus.read_text(encoding="utf-8")
    began = time.perf_counter()
    out = {
        "bench": "train",
        "command": "python -m bench.train_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"corpus": CORPUS_NAME, "corpus_chars": len(text), "lstm_layer_sizes": list(LAYERS),
                     "sample_len": SAMPLE_LEN, "sample_step": SAMPLE_STEP, "batch_size": BATCH,
                     "optimizer": "RMSprop", "learning_rate": LEARNING_RATE, "seed": SEED,
                     "throughput_examples_per_epoch": THROUGHPUT_EXAMPLES, "throughput_epochs": throughput_epochs,
                     "minutes": minutes, "marks": marks(minutes), "recipes": recipes,
                     "train_chars": heldout_split(text), "heldout_chars": len(text) - heldout_split(text)},
    }
    log(f"corpus {corpus} ({len(text):,} chars); {os.cpu_count()} CPUs; TF {tf.__version__}; "
        f"{minutes:g} min per recipe ({', '.join(recipes)}); throughput {throughput_epochs} epochs")

    if not args.skip_throughput:
        out["throughput"] = tp = measure_throughput(text, throughput_epochs)
        tp["memory"] = epoch_memory(text)
        log(f"throughput: trainer {tp['trainer']['examples_per_second']:.0f} ex/s, naive "
            f"{tp['naive']['examples_per_second']:.0f} ex/s, ratio {tp['ratio']:.2f}; trainer epoch times "
            f"spread {tp['trainer']['epoch_seconds_spread']:.1%}")

    out["recipes"] = {name: measure_recipe_apart(name, minutes) for name in recipes}
    out["seconds"] = time.perf_counter() - began
    out["machine"]["load_average_end"] = list(os.getloadavg())

    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "train.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "train.md").write_text(report(out))
    plot(out, args.results / "train_quality.png")
    log(f"wrote {args.results / 'train.json'}, train.md, train_quality.png in {out['seconds'] / 60:.1f} min")
    return out


# --- 1. throughput -------------------------------------------------------------------------------


def throughput_config(epochs: int) -> TrainConfig:
    return TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, sample_step=SAMPLE_STEP,
                       learning_rate=LEARNING_RATE, epochs=epochs, examples_per_epoch=THROUGHPUT_EXAMPLES,
                       batch_size=BATCH, display_length=0, seed=SEED)


def measure_throughput(text: str, epochs: int) -> dict:
    """Both ways, epoch by epoch in turn, so that each pair of epochs meets the same machine load.

    The trainer runs as one ``train()`` call; after each of its epochs (inside its epoch event) the
    naive port trains one epoch on the same windows. Both models start from the same weights (same
    seed), so their per-epoch losses should agree: a check that they are the same computation.
    """
    load = os.getloadavg()
    log(f"throughput: project trainer and naive port in turn, {epochs} epochs of {THROUGHPUT_EXAMPLES} examples")
    data = TextDataset.from_text(text, SAMPLE_LEN, SAMPLE_STEP)
    keras.utils.set_random_seed(SEED)  # train() sets the same seed before building its model
    naive = naive_model(len(data.charset))
    trainer_epochs, naive_epochs = [], []

    def on_event(event):
        if event["type"] != "epoch":
            return
        trainer_epochs.append({k: event[k] for k in ("epoch", "loss", "val_loss", "bits_per_char",
                                                     "examples_per_second", "seconds")})
        log(f"  trainer epoch {event['epoch']}/{epochs}: {event['examples_per_second']:.0f} ex/s "
            f"({event['seconds']:.1f} s), loss {event['loss']:.3f}, val bpc {event['bits_per_char']:.3f}")
        record = naive_epoch(naive, data, event["epoch"])
        naive_epochs.append(record)
        log(f"  naive   epoch {record['epoch']}/{epochs}: {record['examples_per_second']:.0f} ex/s "
            f"({record['seconds']:.1f} s, one-hot build {record['build_seconds']:.2f} s), loss {record['loss']:.3f}")

    began = time.perf_counter()
    train(text, throughput_config(epochs), corpus_name=CORPUS_NAME, on_event=on_event)
    wall = time.perf_counter() - began

    # Per-epoch data work outside the timings above, for reference: the trainer's int windows (outside
    # its fit timing, a few ms) and the Keras example's Python loop (the naive timing uses NumPy).
    starts = data.epoch_starts(THROUGHPUT_EXAMPLES, np.random.default_rng([SEED, 1]))
    t0 = time.perf_counter()
    data.windows(data.train_ids, starts)
    window_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    keras_example_one_hot(text[: len(data.train_ids)], data.charset.chars, starts, SAMPLE_LEN)
    loop_seconds = time.perf_counter() - t0

    rest = naive_epochs[1:] or naive_epochs
    trainer = {"what": "trainer.training.train: int32 ids [n, 60] in, one-hot inside the model; "
                       "examples/s = examples / seconds of model.fit",
               "examples_per_second": median_after_warmup([e["examples_per_second"] for e in trainer_epochs]),
               "epochs": trainer_epochs, "window_build_seconds": window_seconds,
               "epoch_seconds_spread": spread([e["seconds"] for e in trainer_epochs[1:]])}
    naive_out = {"what": "equivalent Keras model with one-hot float32 input; examples/s = examples / "
                         "(one-hot build + model.fit) per epoch",
                 "examples_per_second": median_after_warmup([e["examples_per_second"] for e in naive_epochs]),
                 "fit_examples_per_second": median_after_warmup([e["fit_examples_per_second"] for e in naive_epochs]),
                 "build_seconds": statistics.median(e["build_seconds"] for e in rest),
                 "fit_seconds": statistics.median(e["fit_seconds"] for e in rest),
                 "keras_example_loop_seconds": loop_seconds, "epochs": naive_epochs}
    pair_ratios = [t["examples_per_second"] / n["examples_per_second"] for t, n in zip(trainer_epochs, naive_epochs)]
    return {"trainer": trainer, "naive": naive_out,
            "ratio": trainer["examples_per_second"] / naive_out["examples_per_second"],
            "pair_ratios": pair_ratios, "median_pair_ratio": median_after_warmup(pair_ratios),
            "max_loss_difference": max((abs(t["loss"] - n["loss"]) for t, n in zip(trainer_epochs, naive_epochs)),
                                       default=None),
            "wall_seconds": wall, "load_average_before": list(load), "load_average_after": list(os.getloadavg()),
            "max_rss_mib": max_rss_mib()}


def naive_model(charset_size: int):
    """The Keras example's model: one-hot input, LSTM(128, sequences) -> LSTM(128) -> softmax."""
    inputs = keras.Input(shape=(SAMPLE_LEN, charset_size))
    x = inputs
    for i, units in enumerate(LAYERS):
        x = layers.LSTM(units, return_sequences=i < len(LAYERS) - 1)(x)
    probs = layers.Dense(charset_size, activation="softmax")(x)
    model = keras.Model(inputs, probs, name="naive_char_lstm")
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=LEARNING_RATE), loss="categorical_crossentropy")
    return model


def one_hot_epoch(data: TextDataset, starts: np.ndarray):
    """One epoch as the naive port holds it: x float32 [n, sample_len, charset], y float32 [n, charset].

    Vectorised NumPy from the ids: the cheapest way to build it (the Keras example's Python loop is
    timed apart, in ``keras_example_loop_seconds``).
    """
    n, depth = len(starts), len(data.charset)
    offsets = starts[:, None] + np.arange(data.sample_len)[None, :]
    x = np.zeros((n, data.sample_len, depth), np.float32)
    x[np.arange(n)[:, None], np.arange(data.sample_len)[None, :], data.train_ids[offsets]] = 1.0
    y = np.zeros((n, depth), np.float32)
    y[np.arange(n), data.train_ids[starts + data.sample_len]] = 1.0
    return x, y


def keras_example_one_hot(text: str, chars: str, starts: np.ndarray, sample_len: int):
    """The Keras example's own loop over sentences and characters (timed once, for reference)."""
    index = {c: i for i, c in enumerate(chars)}
    sentences = [text[s : s + sample_len] for s in starts]
    next_chars = [text[s + sample_len] for s in starts]
    x = np.zeros((len(sentences), sample_len, len(chars)), np.float32)
    y = np.zeros((len(sentences), len(chars)), np.float32)
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, index[char]] = 1
        y[i, index[next_chars[i]]] = 1
    return x, y


def naive_epoch(model, data: TextDataset, epoch: int) -> dict:
    """One epoch of the naive port on the windows train() uses for ``epoch``: build, then fit."""
    starts = data.epoch_starts(THROUGHPUT_EXAMPLES, np.random.default_rng([SEED, epoch]))  # as train()
    t0 = time.perf_counter()
    x, y = one_hot_epoch(data, starts)
    t1 = time.perf_counter()
    fit = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    t2 = time.perf_counter()
    return {"epoch": epoch, "loss": float(fit.history["loss"][-1]), "build_seconds": t1 - t0,
            "fit_seconds": t2 - t1, "seconds": t2 - t0, "examples_per_second": len(starts) / (t2 - t0),
            "fit_examples_per_second": len(starts) / (t2 - t1)}


def epoch_memory(text: str) -> dict:
    """Bytes of one epoch's input both ways (shapes only: nothing is allocated)."""
    data = TextDataset.from_text(text, SAMPLE_LEN, SAMPLE_STEP)
    n, depth = THROUGHPUT_EXAMPLES, len(data.charset)
    one_hot = n * SAMPLE_LEN * depth * np.dtype(np.float32).itemsize
    ids = n * SAMPLE_LEN * np.dtype(np.int32).itemsize
    return {"charset_size": depth, "examples": n,
            "one_hot_x_shape": [n, SAMPLE_LEN, depth], "one_hot_x_bytes": one_hot,
            "one_hot_y_bytes": n * depth * 4,
            "ids_x_shape": [n, SAMPLE_LEN], "ids_x_bytes": ids, "ids_y_bytes": n * 4,
            "ratio": one_hot / ids,
            "corpus_ids_bytes": len(text) * 4,
            "one_hot_whole_corpus_windows_bytes": len(range(0, len(data.train_ids) - SAMPLE_LEN - 1, SAMPLE_STEP))
            * SAMPLE_LEN * depth * 4}


def spread(values: list[float]) -> float:
    """(slowest - fastest) / median: 0.1 means the epoch times vary by 10% of a typical one."""
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


def median_after_warmup(values: list[float]) -> float:
    return float(statistics.median(values[1:] if len(values) > 1 else values))


# --- 2. time to quality ---------------------------------------------------------------------------


def heldout_split(text: str) -> int:
    """Characters trained on: the first ``1 - HELDOUT_FRACTION`` of the text (issue 13's split)."""
    return int(len(text) * (1 - HELDOUT_FRACTION))


def recipe_run_config(recipe: str, minutes: float) -> TrainConfig:
    """``recipe`` for ``minutes`` of training: its schedule sized to them, no per-epoch validation
    (the bench scores the held-out tail itself) and no samples."""
    return TrainConfig.from_recipe(recipe, epochs=MAX_EPOCHS, time_budget_minutes=minutes, validation_split=0.0,
                                   display_length=0, seed=SEED)


def measure_recipe_apart(recipe: str, minutes: float) -> dict:
    """``measure_recipe`` in a fresh process of its own, as ``python -m trainer train`` would run it
    (with the trainer's thread settings, ``trainer.training.use_threads_for``, which must come before
    TensorFlow's first op and would slow this process's single-graph naive port)."""
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        out = Path(tmp) / "recipe.json"
        subprocess.run([sys.executable, "-m", "bench.train_bench", "--run-recipe", recipe, "--minutes", str(minutes),
                        "--out", str(out)], check=True, cwd=ROOT)
        return json.loads(out.read_text())


def run_recipe(recipe: str, minutes: float, out: Path) -> dict:
    training.use_threads_for(recipe_run_config(recipe, minutes))
    text = (shared_corpora() / f"{CORPUS_NAME}.txt").read_text(encoding="utf-8")
    result = measure_recipe(text, recipe, minutes, marks(minutes))
    result["tf_threads"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                            "batch_slices": training.parallel_parts(result["config"]["batch_size"])}
    out.write_text(json.dumps(result))
    return result


def measure_recipe(text: str, recipe: str, minutes: float, mark_minutes: list[float]) -> dict:
    """Train ``recipe`` on the head of ``text`` for ``minutes``; score the tail at each mark.

    The marks count training time (the steps, as ``--time-budget`` does), not the scoring, which runs
    after training on copies of the weights of the last epoch that ended within each mark.
    """
    n_train = heldout_split(text)
    config = recipe_run_config(recipe, minutes)
    log(f"recipe {recipe}: {minutes:g} min on the first {n_train:,} characters; scores at "
        f"{', '.join(f'{m:g}' for m in mark_minutes)} min")
    load = os.getloadavg()
    snapshots, epochs, pending = {}, [], sorted(m for m in mark_minutes if m < minutes)
    last = {"train_seconds": 0.0, "weights": None}  # the newest epoch end
    began = time.perf_counter()

    def after_epoch(record, model):
        epochs.append({k: record[k] for k in ("epoch", "loss", "examples_per_second", "seconds", "train_seconds",
                                               "learning_rate")})
        while pending and record["train_seconds"] > pending[0] * 60:  # the mark fell inside this epoch
            snapshots[pending.pop(0)] = (last["train_seconds"], last["weights"])
        last.update(train_seconds=record["train_seconds"], weights=model.get_weights())
        if record["epoch"] % 20 == 0:
            log(f"  {recipe} epoch {record['epoch']}: {record['train_seconds'] / 60:.2f} min, loss "
                f"{record['loss']:.3f}, {record['examples_per_second']:.0f} ex/s, lr {record['learning_rate']:.2g}")

    result = train(text[:n_train], config, corpus_name=CORPUS_NAME, after_epoch=after_epoch)
    wall = time.perf_counter() - began
    load_after = os.getloadavg()
    for mark in pending + [minutes]:  # the budget's own mark: the trained model
        snapshots[mark] = (last["train_seconds"], last["weights"])
    model, charset = result.model, Charset(result.meta["charset"])
    scores = {}
    for mark, (seconds, weights) in sorted(snapshots.items()):
        if weights is None:
            continue  # no epoch had ended by this mark
        model.set_weights(weights)
        t0 = time.perf_counter()
        nats = score_heldout(model, charset, text, n_train, SAMPLE_LEN)
        scores[f"{mark:g}"] = {"nats_per_char": nats, "bits_per_char": nats / math.log(2),
                               "train_seconds": seconds, "score_seconds": time.perf_counter() - t0}
        log(f"  {recipe} at {mark:g} min (epoch end {seconds / 60:.2f} min): {nats:.4f} nats/char "
            f"({time.perf_counter() - t0:.0f} s to score)")
    exs = [e["examples_per_second"] for e in epochs]
    return {"recipe": recipe, "config": config.to_dict(), "budget_seconds": minutes * 60,
            "epochs": len(epochs), "examples_seen": result.meta["examples_seen"],
            "train_seconds": epochs[-1]["train_seconds"] if epochs else 0.0, "wall_seconds": wall,
            "median_examples_per_second": median_after_warmup(exs) if exs else None,
            "scores": scores, "load_average_before": list(load), "load_average_after": list(load_after),
            "epoch_times": epoch_time_stats([e["seconds"] for e in epochs[1:-1]]), "epoch_log": epochs}


STALL_FACTOR = 1.5  # an epoch this many times the median took is counted as a stall (issue 13's took 2x)


def epoch_time_stats(seconds: list[float]) -> dict | None:
    """The spread of a run's epoch times (its full epochs: not the first, which traces, nor the last,
    which the time budget cuts short): median, the 10th and 90th percentiles, the slowest, and the
    epochs that took STALL_FACTOR times the median or more."""
    if len(seconds) < 3:
        return None
    median = statistics.median(seconds)
    deciles = statistics.quantiles(seconds, n=10)
    return {"epochs": len(seconds), "median": median, "p10": deciles[0], "p90": deciles[-1], "max": max(seconds),
            "p10_p90_spread": (deciles[-1] - deciles[0]) / median, "max_over_median": max(seconds) / median,
            "stalls": sum(1 for x in seconds if x >= STALL_FACTOR * median)}


def score_heldout(model, charset: Charset, text: str, n_train: int, sample_len: int) -> float:
    """Mean -log p (nats) of every character of ``text[n_train:]``, each after exactly the
    ``sample_len`` characters before it (the first ones' context reaches back into the training text).

    ``model``: the serving model, windows ``[batch, sample_len]`` -> ``[batch, charset]``.
    """
    ids = charset.encode(text)
    total, count = 0.0, 0
    for start in range(n_train, len(ids), SCORE_CHUNK):
        targets = np.arange(start, min(start + SCORE_CHUNK, len(ids)))
        windows = ids[targets[:, None] - sample_len + np.arange(sample_len)[None, :]]
        probs = model.predict(windows, batch_size=SCORE_BATCH, verbose=0)
        picked = probs[np.arange(len(targets)), ids[targets]]
        total += float(-np.sum(np.log(np.maximum(picked, 1e-12))))
        count += len(targets)
    return total / count


def marks(minutes: float) -> list[float]:
    return sorted({m for m in MARKS_MINUTES if m <= minutes} | {minutes})


# --- reports -------------------------------------------------------------------------------------


def report(out: dict) -> str:
    s, m = out["settings"], out["machine"]
    lines = [
        "# Training benchmark" + (" (quick run: a check, not numbers to quote)" if out["quick"] else ""),
        "",
        f"`{out['command']}` on {out['date']}: {m['cpu_count']} CPUs ({m['cpu_model']}), "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, GPUs: {', '.join(m['gpus']) or 'none'}. "
        f"Load average (1 / 5 / 15 min) {fmt_load(m['load_average_start'])} at the start, "
        f"{fmt_load(m['load_average_end'])} at the end; the machine has {m['cpu_count']} cores, so a load above "
        f"{m['cpu_count']} means other work shared them and every time-based figure below is pessimistic.",
        "",
    ]
    if "throughput" in out:
        lines += throughput_report(out)
    lines += quality_report(out)
    return "\n".join(lines)


def throughput_report(out: dict) -> list[str]:
    s, tp = out["settings"], out["throughput"]
    tr, nv, mem = tp["trainer"], tp["naive"], tp["memory"]
    lines = [
        f"Throughput model: LSTM {','.join(map(str, s['lstm_layer_sizes']))}, sample_len {s['sample_len']}, batch "
        f"{s['batch_size']}, RMSprop lr {s['learning_rate']:g} (the original's recipe), corpus {s['corpus']} "
        f"({s['corpus_chars']:,} characters, charset {mem['charset_size']}), seed {s['seed']}.",
        "",
        "## Throughput",
        "",
        f"Epochs of {s['throughput_examples_per_epoch']:,} examples, the two run in turn (trainer epoch k, then "
        f"naive epoch k, on the same windows) so that both meet the same machine load; median of epochs "
        f"2..{s['throughput_epochs']} (epoch 1 is warm-up: tracing).",
        "",
        "| | examples/s | seconds per epoch |",
        "|---|---:|---:|",
        f"| textgen trainer (int ids in, one-hot inside the model) | {tr['examples_per_second']:,.0f} | "
        f"{s['throughput_examples_per_epoch'] / tr['examples_per_second']:.2f} |",
        f"| naive port (one-hot float32 NumPy epoch + `model.fit`) | {nv['examples_per_second']:,.0f} | "
        f"{nv['build_seconds'] + nv['fit_seconds']:.2f} |",
        f"| &nbsp;&nbsp;of which building the one-hot array | | {nv['build_seconds']:.2f} |",
        f"| &nbsp;&nbsp;of which `model.fit` ({nv['fit_examples_per_second']:,.0f} examples/s) | | "
        f"{nv['fit_seconds']:.2f} |",
        f"| **trainer / naive** (ratio of medians; median of per-epoch ratios {tp['median_pair_ratio']:.2f}x) | "
        f"**{tp['ratio']:.2f}x** | |",
        "",
        f"The trainer's epoch times after warm-up vary by {tr['epoch_seconds_spread']:.1%} of their median "
        f"((slowest - fastest) / median; load average {fmt_load(tp['load_average_before'])} before, "
        f"{fmt_load(tp['load_average_after'])} after). It takes one `train_on_batch` per step; the naive port "
        "calls `model.fit` once per epoch, as the trainer did before issue 13, and its epochs can stall while "
        "`fit` tears its tf.data iterator down.",
        "",
        "Per epoch (same initial weights and windows, so the losses should agree):",
        "",
        "| epoch | trainer examples/s | naive examples/s | naive one-hot build s | ratio | trainer loss | naive loss |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, n, r in zip(tr["epochs"], nv["epochs"], tp["pair_ratios"]):
        lines.append(f"| {t['epoch']}{' (warm-up)' if t['epoch'] == 1 else ''} | {t['examples_per_second']:,.0f} | "
                     f"{n['examples_per_second']:,.0f} | {n['build_seconds']:.2f} | {r:.2f} | {t['loss']:.4f} | "
                     f"{n['loss']:.4f} |")
    lines += [
        "",
        f"The one-hot array is built with vectorised NumPy; the Keras example's Python loop over characters "
        f"takes {nv['keras_example_loop_seconds']:.2f} s for the same epoch. The trainer gathers its int "
        f"windows in {tr['window_build_seconds'] * 1000:.1f} ms (outside its timing).",
        "",
        "Memory of one epoch's input:",
        "",
        "| | shape | MiB |",
        "|---|---|---:|",
        f"| one-hot float32 (naive) | {fmt_shape(mem['one_hot_x_shape'])} | {mib(mem['one_hot_x_bytes']):,.1f} |",
        f"| character ids int32 (trainer) | {fmt_shape(mem['ids_x_shape'])} | {mib(mem['ids_x_bytes']):,.2f} |",
        f"| ratio | | {mem['ratio']:.0f}x |",
        "",
        f"(One-hot windows for every start of the corpus would take {mib(mem['one_hot_whole_corpus_windows_bytes']):,.0f} "
        f"MiB; the whole corpus as int32 ids takes {mib(mem['corpus_ids_bytes']):,.1f} MiB.)",
        "",
    ]
    return lines


def quality_report(out: dict) -> list[str]:
    s, runs = out["settings"], out["recipes"]
    keys = [f"{m:g}" for m in s["marks"]]
    lines = [
        "## Time to quality",
        "",
        f"Each recipe trains on the first {s['train_chars']:,} characters of {s['corpus']} for {s['minutes']:g} "
        f"minutes of training steps (`--time-budget {s['minutes']:g}`: its schedule is sized to them), seed "
        f"{s['seed']}. Every one of the {s['heldout_chars']:,} held-out characters is then scored after exactly "
        f"{SAMPLE_LEN} characters of context, with the weights of the last epoch that ended by each time. "
        "Mean -log p in nats per character (lower is better; bits = nats / 0.693):",
        "",
        "| recipe | LSTM layers | " + " | ".join(f"{k} min" for k in keys)
        + " | examples/s | examples seen | load avg before -> after |",
        "|---|---|" + "---:|" * len(keys) + "---:|---:|---|",
    ]
    for name, r in runs.items():
        cells = [fmt_num(r["scores"].get(k, {}).get("nats_per_char")) for k in keys]
        model = ",".join(map(str, r["config"]["lstm_layer_sizes"]))
        lines.append(f"| {name} | {model} | " + " | ".join(cells)
                     + f" | {fmt_num(r['median_examples_per_second'], '{:,.0f}')} "
                     f"| {r['examples_seen']:,} | {fmt_load(r['load_average_before'])} -> "
                     f"{fmt_load(r['load_average_after'])} |")
    ref = [fmt_num(NANOGPT_REFERENCE.get(float(k))) for k in keys]
    lines.append("| nanoGPT baby GPT (issue 13's table, not run here) | (4 layers, 128 wide) | " + " | ".join(ref)
                 + " | | | |")
    lines += ["", "What each recipe sets (everything else is the original's default):", ""]
    for name in runs:
        lines.append(f"- `{name}`: {RECIPES[name].summary}")
    lines += ["", "Per recipe: the training seconds behind each mark's weights (the end of the last epoch by then) "
              "and the seconds scoring took:", "",
              "| recipe | epochs | train min | wall min | " + " | ".join(f"{k} min: trained s / score s" for k in keys)
              + " |", "|---|---:|---:|---:|" + "---:|" * len(keys)]
    for name, r in runs.items():
        cells = [(f"{r['scores'][k]['train_seconds']:.0f} / {r['scores'][k]['score_seconds']:.0f}"
                  if k in r["scores"] else "-") for k in keys]
        lines.append(f"| {name} | {r['epochs']} | {r['train_seconds'] / 60:.2f} | {r['wall_seconds'] / 60:.2f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Epoch times in these runs (issue 13's stalls: epochs that took twice their usual time at 0% CPU). "
              "Full epochs only: not the first (tracing) nor the last (cut short by the time budget). An epoch of "
              f"{STALL_FACTOR:g}x the median or more counts as a stall:", "",
              "| recipe | epochs | median s | 10th-90th percentile | spread (p90 - p10) / median | slowest / median "
              "| stalls |", "|---|---:|---:|---|---:|---:|---:|"]
    for name, r in runs.items():
        t = r.get("epoch_times")
        if t:
            lines.append(f"| {name} | {t['epochs']} | {t['median']:.2f} | {t['p10']:.2f}-{t['p90']:.2f} s | "
                         f"{t['p10_p90_spread']:.1%} | {t['max_over_median']:.2f}x | {t['stalls']} |")
    lines += ["", "![held-out nats per character against training minutes](train_quality.png)", ""]
    return lines


def plot(out: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # the `bench` extra; `make bench` installs it
        log(f"matplotlib is not installed (pip install -e '.[bench]'): {path.name} not drawn")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, m = out["settings"], out["machine"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
    for (name, r), color in zip(out["recipes"].items(), colors):
        points = sorted((v["train_seconds"] / 60, v["nats_per_char"]) for v in r["scores"].values())
        if not points:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, "-o", color=color, label=name)
        ax.annotate(f"{ys[-1]:.3f}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, 0), va="center",
                    fontsize=8, color=color)
    ref = sorted((k, v) for k, v in NANOGPT_REFERENCE.items() if k <= s["minutes"])
    if ref:
        ax.plot(*zip(*ref), ":", color="gray", marker="x", label="nanoGPT baby GPT (issue 13, not run here)")
    ax.set_xlim(0, s["minutes"] * 1.08)
    ax.set_xlabel("training minutes (steps only; scoring excluded)")
    ax.set_ylabel("held-out nats per character (60-character context)")
    ax.set_title(f"{s['corpus']}: every one of the last {s['heldout_chars']:,} characters scored", fontsize=10)
    fig.suptitle("Time to quality" + (" (quick run)" if out["quick"] else ""), fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.text(0.01, 0.01, f"{m['cpu_count']} CPUs ({m['cpu_model']}), TensorFlow {m['tensorflow']}, {out['date'][:16]}; "
             f"load average {fmt_load(m['load_average_start'])} at the start, {fmt_load(m['load_average_end'])} at the end",
             ha="left", va="bottom", fontsize=7, color="gray")
    fig.savefig(path)
    plt.close(fig)


# --- helpers -------------------------------------------------------------------------------------


def machine_info() -> dict:
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        mem_total = None
    return {"cpu_count": os.cpu_count(), "cpus_usable": usable, "cpu_model": cpu_model or "unknown",
            "memory_bytes": mem_total, "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "keras_backend": keras.backend.backend(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "load_average_start": list(os.getloadavg())}


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def mib(n: float) -> float:
    return n / 2**20


def fmt_shape(shape) -> str:
    return "[" + ", ".join(f"{d:,}" for d in shape) + "]"


def fmt_load(load) -> str:
    return " / ".join(f"{x:.1f}" for x in load)


def fmt_num(x, pattern: str = "{:.3f}") -> str:
    return "-" if x is None else pattern.format(x)


def log(message: str) -> None:
    print(f"[train bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
