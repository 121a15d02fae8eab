"""Training speed and learning curves (``python -m bench.train_bench [--minutes M] [--quick]``).

In one run on this machine, with the 128,128 model (sample_len 60, batch 128, RMSprop lr 1e-2) on
tinyshakespeare:

1. Throughput, examples per second: the project's trainer (``trainer.training.train``: character ids
   in, one-hot inside the model) against a naive port as the Keras example does it (each epoch built as
   a one-hot float32 NumPy array ``[examples, sample_len, charset]`` and fed to ``model.fit`` of an
   equivalent model with one-hot input; building that array counts against it, as it does for the
   original). Epochs of 10,000 examples; the first epoch of each is warm-up (tracing) and is left out
   of the median. Also the memory of one epoch's input both ways.
2. Held-out bits per character against training time for the two objectives (``last``: the
   original's, the character after the window; ``all``: every position of the window), each for
   ``--minutes`` of training (validation time excluded from the budget, recorded apart), same seed.
   Small epochs (2,000 examples) so the curve has many points.

Writes ``bench/results/train.json`` (every raw number and the machine), ``bench/results/train.md``
(tables) and ``bench/results/train_bpc.png`` (bits per character against minutes).
``--quick``: 1 minute per objective and 3 throughput epochs, to check that everything works.
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
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from trainer.dataset import TextDataset  # noqa: E402
from textgen.options import MAX_EPOCHS, TrainConfig  # noqa: E402
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
CURVE_EXAMPLES = 2_000  # per epoch: one validation point per epoch
DEFAULT_MINUTES = 10.0
QUICK_MINUTES = 1.0
MARKS_MINUTES = (1, 2, 5, 10)
OBJECTIVES = (("last", "last (original: next char after the window)"),
              ("all", "all (next char at every position)"))


def shared_corpora() -> Path:
    """``../shared/corpora`` next to the work tree, as tests/conftest.py finds it."""
    path = Path(__file__).resolve().parents[2] / "shared" / "corpora"
    if not path.is_dir():
        path = Path(os.environ.get("TEXTGEN_SHARED_CORPORA", "/work/shared/corpora"))
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.train_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"training minutes per objective for the curve (default {DEFAULT_MINUTES:g}; "
                             f"{QUICK_MINUTES:g} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_MINUTES:g} minute per objective and {QUICK_THROUGHPUT_EPOCHS} throughput "
                             "epochs: a check that the bench works, not numbers to quote")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (QUICK_MINUTES if args.quick else DEFAULT_MINUTES)
    if not (math.isfinite(minutes) and minutes > 0):
        parser.error(f"--minutes must be a positive number, got {minutes}")
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
                     "curve_examples_per_epoch": CURVE_EXAMPLES, "curve_minutes": minutes},
    }
    log(f"corpus {corpus} ({len(text):,} chars); {os.cpu_count()} CPUs; TF {tf.__version__}; "
        f"curve {minutes:g} min per objective; throughput {throughput_epochs} epochs")

    out["throughput"] = tp = measure_throughput(text, throughput_epochs)
    tp["memory"] = epoch_memory(text)
    log(f"throughput: trainer {tp['trainer']['examples_per_second']:.0f} ex/s, naive "
        f"{tp['naive']['examples_per_second']:.0f} ex/s, ratio {tp['ratio']:.2f}")

    out["curves"] = {name: measure_curve(text, name, minutes) for name, _ in OBJECTIVES}
    out["bpc_at_minutes"] = {name: {f"{m:g}": bpc_at(curve["points"], m, minutes) for m in marks(minutes)}
                             for name, curve in out["curves"].items()}
    out["seconds"] = time.perf_counter() - began
    out["machine"]["load_average_end"] = list(os.getloadavg())

    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "train.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "train.md").write_text(report(out))
    plot(out, args.results / "train_bpc.png")
    log(f"wrote {args.results / 'train.json'}, train.md, train_bpc.png in {out['seconds'] / 60:.1f} min")
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
               "epochs": trainer_epochs, "window_build_seconds": window_seconds}
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


def median_after_warmup(values: list[float]) -> float:
    return float(statistics.median(values[1:] if len(values) > 1 else values))


# --- 2. learning curves --------------------------------------------------------------------------


def measure_curve(text: str, objective: str, minutes: float) -> dict:
    """Train ``objective`` for ``minutes`` of training time; one (time, val bpc) point per epoch.

    The budget counts ``model.fit`` time (the sum of the epochs' ``seconds`` plus the epoch in
    progress), not the per-epoch validation, which is the same work for both objectives and would
    otherwise charge an objective for how often the bench measures it. ``wall_seconds`` has it all.
    should_stop() ends training at the next batch once the budget is spent; that partial epoch is
    not evaluated, so the last point lies within one epoch before the budget.
    """
    budget = minutes * 60.0
    load = os.getloadavg()
    log(f"curve: objective {objective}, {minutes:g} min of training, epochs of {CURVE_EXAMPLES} examples")
    config = TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, sample_step=SAMPLE_STEP,
                         learning_rate=LEARNING_RATE, epochs=MAX_EPOCHS, examples_per_epoch=CURVE_EXAMPLES,
                         batch_size=BATCH, display_length=0, objective=objective, seed=SEED)
    points = []
    clock = {"trained": 0.0, "since": time.perf_counter()}  # fit seconds of finished epochs; start of this one
    began = time.perf_counter()

    def on_event(event):
        if event["type"] == "started":
            clock["since"] = time.perf_counter()
        elif event["type"] == "epoch":
            clock["trained"] += event["seconds"]
            points.append({"epoch": event["epoch"], "train_seconds": clock["trained"],
                           "wall_seconds": time.perf_counter() - began, "loss": event["loss"],
                           "val_loss": event["val_loss"], "bits_per_char": event["bits_per_char"],
                           "examples_per_second": event["examples_per_second"]})
            if event["epoch"] == 1 or event["epoch"] % 10 == 0:
                log(f"  {objective} epoch {event['epoch']}: {clock['trained'] / 60:.2f} min, "
                    f"val bpc {event['bits_per_char']:.3f}, {event['examples_per_second']:.0f} ex/s")
            clock["since"] = time.perf_counter()

    def should_stop() -> bool:
        return clock["trained"] + (time.perf_counter() - clock["since"]) >= budget

    result = train(text, config, corpus_name=CORPUS_NAME, on_event=on_event, should_stop=should_stop)
    wall = time.perf_counter() - began
    bpcs = [p["bits_per_char"] for p in points]
    best = min(range(len(points)), key=bpcs.__getitem__) if points else None
    summary = {
        "objective": objective, "budget_seconds": budget, "stopped_by_budget": result.stopped,
        "epochs": len(points), "examples_seen": len(points) * CURVE_EXAMPLES,
        "train_seconds": points[-1]["train_seconds"] if points else 0.0, "wall_seconds": wall,
        "final_bits_per_char": bpcs[-1] if points else None,
        "best_bits_per_char": bpcs[best] if points else None,
        "best_at_train_seconds": points[best]["train_seconds"] if points else None,
        "median_examples_per_second": median_after_warmup([p["examples_per_second"] for p in points]) if points else None,
        "load_average_before": list(load), "points": points,
    }
    log(f"  {objective}: {len(points)} epochs, final bpc {summary['final_bits_per_char']}, "
        f"best {summary['best_bits_per_char']}, wall {wall / 60:.1f} min")
    return summary


def marks(minutes: float) -> list[float]:
    return sorted({m for m in MARKS_MINUTES if m <= minutes} | {minutes})


def bpc_at(points: list[dict], minutes: float, budget_minutes: float):
    """Bits per character of the last epoch finished within ``minutes`` of training (None: none yet).

    At the budget itself, the final epoch: an epoch's fit time can run past the budget by the fit's
    own teardown after the last batch's check (about a second), and it counts as within the budget.
    """
    if minutes >= budget_minutes:
        return points[-1]["bits_per_char"] if points else None
    done = [p for p in points if p["train_seconds"] <= minutes * 60 + 1e-9]
    return done[-1]["bits_per_char"] if done else None


def minutes_to_reach(points: list[dict], bpc: float):
    for p in points:
        if p["bits_per_char"] <= bpc:
            return p["train_seconds"] / 60
    return None


# --- reports -------------------------------------------------------------------------------------


def report(out: dict) -> str:
    s, m, tp = out["settings"], out["machine"], out["throughput"]
    tr, nv, mem = tp["trainer"], tp["naive"], tp["memory"]
    lines = [
        "# Training benchmark" + (" (quick run: a check, not numbers to quote)" if out["quick"] else ""),
        "",
        f"`{out['command']}` on {out['date']}: {m['cpu_count']} CPUs ({m['cpu_model']}), "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, GPUs: {', '.join(m['gpus']) or 'none'}. "
        f"Load average {fmt_load(m['load_average_start'])} at the start, {fmt_load(m['load_average_end'])} at the end.",
        "",
        f"Model: LSTM {','.join(map(str, s['lstm_layer_sizes']))}, sample_len {s['sample_len']}, batch "
        f"{s['batch_size']}, RMSprop lr {s['learning_rate']:g}, corpus {s['corpus']} ({s['corpus_chars']:,} "
        f"characters, charset {mem['charset_size']}), seed {s['seed']}.",
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
        "## Held-out bits per character against training time",
        "",
        f"{s['curve_minutes']:g} min of training per objective (model.fit time; the per-epoch validation "
        f"on the held-out tail is excluded from the budget and shown in the wall column), epochs of "
        f"{s['curve_examples_per_epoch']:,} examples, same seed. Validation: the character after each of up "
        "to 2,048 held-out windows, for both objectives.",
        "",
        "| objective | epochs | examples | train min | wall min | examples/s | final bpc | best bpc (at min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in OBJECTIVES:
        c = out["curves"][name]
        lines.append(
            f"| {label} | {c['epochs']} | {c['examples_seen']:,} | {c['train_seconds'] / 60:.2f} | "
            f"{c['wall_seconds'] / 60:.2f} | {fmt_num(c['median_examples_per_second'], '{:,.0f}')} | "
            f"{fmt_num(c['final_bits_per_char'])} | {fmt_num(c['best_bits_per_char'])} "
            f"({fmt_num(c['best_at_train_seconds'] and c['best_at_train_seconds'] / 60, '{:.2f}')}) |")
    at = out["bpc_at_minutes"]
    keys = list(next(iter(at.values())).keys())
    lines += ["", "Bits per character of the last epoch finished by each time:", "",
              "| objective | " + " | ".join(f"{k} min" for k in keys) + " |",
              "|---|" + "---:|" * len(keys)]
    for name, _ in OBJECTIVES:
        lines.append(f"| {name} | " + " | ".join(fmt_num(at[name][k]) for k in keys) + " |")
    last, allp = out["curves"]["last"], out["curves"]["all"]
    if last["final_bits_per_char"] is not None and allp["points"]:
        reach = minutes_to_reach(allp["points"], last["final_bits_per_char"])
        lines += ["", f"`all` reaches the final bits per character of `last` ({last['final_bits_per_char']:.3f}) "
                      + (f"after {reach:.2f} minutes of training." if reach is not None else "not within the budget.")]
    lines += ["", "![bits per character against minutes](train_bpc.png)", ""]
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, m = out["settings"], out["machine"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    all_bpc = []
    for (name, label), color in zip(OBJECTIVES, ("tab:blue", "tab:orange")):
        points = out["curves"][name]["points"]
        xs = [p["train_seconds"] / 60 for p in points]
        ys = [p["bits_per_char"] for p in points]
        all_bpc += ys
        ax.plot(xs, ys, "-o", color=color, markersize=2.5 if len(points) <= 80 else 1.2, linewidth=1.4, label=label)
        if ys:
            ax.annotate(f"{ys[-1]:.2f}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 0),
                        va="center", fontsize=8, color=color)
    if all_bpc:
        uniform = math.log2(out["throughput"]["memory"]["charset_size"])  # a model that knows nothing
        ax.set_ylim(min(all_bpc) - 0.1, min(max(all_bpc), uniform) + 0.1)
    for mark in marks(s["curve_minutes"])[:-1]:  # the columns of the bpc-at-minutes table
        ax.axvline(mark, color="gray", linewidth=0.6, linestyle=":", alpha=0.7)
    ax.set_xlim(0, s["curve_minutes"] * 1.04)
    ax.set_xlabel("training minutes (model.fit time; validation excluded)")
    ax.set_ylabel("held-out bits per character")
    ax.set_title(f"{s['corpus']}, LSTM {','.join(map(str, s['lstm_layer_sizes']))}, sample_len {s['sample_len']}, "
                 f"batch {s['batch_size']}, RMSprop {s['learning_rate']:g}", fontsize=10)
    fig.suptitle("Validation bits per character vs training time" + (" (quick run)" if out["quick"] else ""),
                 fontsize=12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.text(0.01, 0.01, f"{m['cpu_count']} CPUs ({m['cpu_model']}), TensorFlow {m['tensorflow']}, {out['date'][:10]}; "
             f"epochs of {s['curve_examples_per_epoch']:,} examples, one point per epoch",
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
