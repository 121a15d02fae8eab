"""The training loop: the original's epochs, with held-out validation, samples, checkpoints.

``train()`` reports what happens through ``on_event(dict)`` (the CLI draws progress bars from it,
the RQ job appends it to the job's Redis stream) and stops at the next batch boundary once
``should_stop()`` says so. Event types and their fields:

- ``started``: epochs, batches_per_epoch, resumed_from_epoch (0 = from scratch)
- ``batch``: epoch, batch, batches, loss
- ``epoch``: epoch, epochs, loss, val_loss, bits_per_char, examples_per_second, seconds,
  learning_rate (for the next step), samples (a list of {temperature, text}); and examples, when
  the time budget ended the epoch early
- ``checkpoint``: epoch, path

Each step is one ``model.train_on_batch`` on slices of the epoch's NumPy windows, not one
``model.fit(..., epochs=1)`` per epoch: every ``fit`` call builds a tf.data pipeline and iterator,
and tearing that iterator down at the end of the call blocks the main thread until tf.data's
background threads exit, which on this machine took from 1 s to more than 20 s (the "stalled"
epochs at half speed and 0% CPU of issue 13). ``train_on_batch`` feeds the compiled train step
directly, with no dataset and no iterator.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.tf import keras, tf  # first: TensorFlow, quietly

from textgen.charset import Charset
from textgen.options import TrainConfig, run_config
from textgen.sampling import DISPLAY_TEMPERATURES, Uniforms
from trainer import export
from trainer.dataset import TextDataset
from trainer.failures import OUT_OF_MEMORY, TrainingError, describe_failure  # noqa: F401 (the trainer's names)
from trainer.decode import PipelinedDecoder
from trainer.model import (build_model, calibrate_new_chars, compile_data_parallel, compile_model, data_parallel,
                           grow_charset, resolve_precision, with_objective)

CHECKPOINT_MODEL = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"
VALIDATION_BATCH = 512
FINAL_LR_FRACTION = 0.1  # a cosine schedule ends at this fraction of its peak (nanoGPT's min_lr = lr / 10)
PART_ROWS = 16  # the fewest rows of a batch slice given its own branch (``data_parallel``)


@dataclasses.dataclass
class TrainResult:
    model: keras.Model  # predicts the next character after a window: [batch, time] -> [batch, charset]
    meta: dict  # everything meta.json needs but the name and version
    stopped: bool  # True when should_stop() ended training early


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_parts(batch_size: int) -> int:
    """Into how many side-by-side slices a step's batch is split (``trainer.model.data_parallel``):
    one per CPU core, each of at least PART_ROWS rows; 1 with a GPU, which has its own parallelism."""
    if tf.config.list_physical_devices("GPU"):
        return 1
    return max(1, min(cpu_cores(), batch_size // PART_ROWS))


def use_threads_for(config: TrainConfig) -> None:
    """Size TensorFlow's thread pools for training with ``config`` in this process: the batch's
    slices run as parallel branches (``parallel_parts``), each op on its share of the cores. Call
    it before TensorFlow runs its first op (the trainer's and the worker's processes do); later it
    changes nothing, and training is the same computation either way, only slower."""
    parts = parallel_parts(config.batch_size)
    if parts == 1:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cpu_cores() // parts))
        tf.config.threading.set_inter_op_parallelism_threads(max(2, parts))
    except RuntimeError:  # TensorFlow has started: its pools are fixed
        pass


def require_gpu() -> None:
    if not tf.config.list_physical_devices("GPU"):
        raise TrainingError("--gpu was given but TensorFlow sees no GPU on this machine")


def train(
    text: str,
    config: TrainConfig,
    *,
    corpus_name: str = "",
    corpus_sha256: str = "",
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_from: Path | None = None,
    checkpoint_dir: Path | None = None,
    after_epoch: Callable[[dict, keras.Model], None] | None = None,
    checkpoint_on_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on ``text``; with ``init_from`` (a bundle path) keep training that model.

    The options are checked here, once (``textgen.options.run_config``): a continued model keeps its
    charset, layer sizes and sample length (``config``'s are ignored); text with characters outside its
    charset raises CharsetMismatch. With ``checkpoint_dir``, each
    epoch is checkpointed there and a later call with the same directory resumes after the last one.
    When ``should_stop()`` ends training early and ``checkpoint_on_stop()`` says so (a worker handing its
    job back), the batch it stopped at is checkpointed too, and the resumed run trains the rest of that epoch.
    ``after_epoch(record, model)``, if given, sees each epoch's record and the serving model with the
    epoch's weights (the benchmark scores snapshots with it).
    """
    emit = on_event or (lambda event: None)
    parent_meta, parent_chars, charset, model = {}, "", None, None
    if init_from is not None:
        model, parent_meta = export.load_keras(init_from)
        parent_chars = Charset(parent_meta["charset"]).chars
        charset = Charset(parent_chars).grown(text)  # the parent's, and the text's characters it lacks
    config = run_config(config, text, parent_meta if init_from is not None else None)
    data = TextDataset.from_text(text, config.sample_len, config.sample_step, config.validation_split, charset)
    charset = data.charset
    added = "".join(c for c in charset.chars if c not in parent_chars) if init_from is not None else ""
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    all_positions = config.objective == "all"
    precision = resolve_precision(config.precision)

    first_epoch, first_batch, history, run = 1, 0, [], {"steps": 0, "train_seconds": 0.0}
    checkpoint = _read_checkpoint(checkpoint_dir)
    if checkpoint:
        model = keras.saving.load_model(Path(checkpoint_dir) / CHECKPOINT_MODEL, safe_mode=True)
        first_epoch, history = checkpoint["epoch"] + 1, checkpoint["history"]
        first_batch = checkpoint.get("batch", 0)  # batches of epoch first_epoch trained before a stop
        run = {"steps": checkpoint.get("steps", 0), "train_seconds": checkpoint.get("train_seconds", 0.0)}
    else:
        if model is None:
            model = build_model(len(charset), config.lstm_layer_sizes, all_positions, config.dropout, precision,
                                sequence_kernel=True)
        else:
            if added:  # the grown model is the parent on old contexts; calibrating its new units is training
                probe, _ = data.windows(data.train_ids, data.epoch_starts(1024, np.random.default_rng(0)), False)
                model = grow_charset(model, parent_chars, charset.chars, probe)
                frequencies = np.bincount(data.train_ids, minlength=len(charset)) / max(len(data.train_ids), 1)
                calibrate_new_chars(model, [charset.chars.index(c) for c in added], frequencies, probe)
            model = with_objective(model, all_positions, config.dropout, precision, sequence_kernel=True)
        compile_model(model, config)
    view = with_objective(model, all_positions=False)  # the serving shape, for validation and samples
    parts = parallel_parts(config.batch_size)
    stepper = compile_data_parallel(data_parallel(model, parts), model) if parts > 1 else model

    batches = math.ceil(config.examples_per_epoch / config.batch_size)
    schedule = LearningRateSchedule.of(config, batches)
    emit({"type": "started", "epochs": config.epochs, "batches_per_epoch": batches,
          "resumed_from_epoch": first_epoch - 1, **({"resumed_from_batch": first_batch} if first_batch else {})})
    x_val, y_val = data.validation_windows()
    display_seed = data.seed_slices(4)[1]
    decoder = PipelinedDecoder(view, config.sample_len)  # one per run: its functions trace once
    stopped = False

    for epoch in range(first_epoch, config.epochs + 1):
        rng = np.random.default_rng([config.seed or 0, epoch])
        x, y = data.windows(data.train_ids, data.epoch_starts(config.examples_per_epoch, rng), all_positions)
        done_before = first_batch if epoch == first_epoch else 0  # trained by a run that was stopped
        x, y = x[done_before * config.batch_size:], y[done_before * config.batch_size:]
        began = time.perf_counter()
        loss, examples, outcome = _train_epoch(stepper, model, x, y, config.batch_size, schedule, run,
                                               lambda batch, loss: emit({"type": "batch", "epoch": epoch,
                                                                         "batch": done_before + batch,
                                                                         "batches": batches, "loss": loss}),
                                               should_stop)
        seconds = time.perf_counter() - began
        if outcome == "stopped":
            stopped = True
            if checkpoint_dir is not None and checkpoint_on_stop is not None and checkpoint_on_stop():
                done = done_before + math.ceil(examples / config.batch_size)
                _write_checkpoint(checkpoint_dir, model, epoch - 1, history, {**run, "batch": done})
                emit({"type": "checkpoint", "epoch": epoch - 1, "batch": done, "path": str(checkpoint_dir)})
            break
        if view is not model:
            view.set_weights(model.get_weights())
        val_loss = validation_loss(view, x_val, y_val)
        samples = sample_texts(decoder, charset, display_seed, config.display_length, seed=epoch)
        record = {"epoch": epoch, "loss": loss, "val_loss": val_loss,
                  "bits_per_char": val_loss / math.log(2) if val_loss is not None else None,
                  "examples_per_second": examples / seconds, "seconds": seconds,
                  "train_seconds": run["train_seconds"], "learning_rate": schedule.at(run["steps"], run["train_seconds"])}
        if examples < len(x):
            record["examples"] = examples  # the time budget ended this epoch early
        history.append(record)
        emit({"type": "epoch", "epochs": config.epochs, **record, "samples": samples})
        if after_epoch is not None:
            after_epoch(record, view)
        if checkpoint_dir is not None:
            _write_checkpoint(checkpoint_dir, model, epoch, history, run)
            emit({"type": "checkpoint", "epoch": epoch, "path": str(checkpoint_dir)})
        if outcome == "budget":
            break

    last = history[-1] if history else {}
    meta = {
        "charset": charset.chars,
        "sample_len": config.sample_len,
        "lstm_layer_sizes": list(config.lstm_layer_sizes),
        "objective": config.objective,
        "corpus": {"name": corpus_name, "sha256": corpus_sha256, "characters": len(text)},
        "training": config.to_dict(),
        "precision": precision,
        "loss": last.get("loss"),
        "val_loss": last.get("val_loss"),
        "bits_per_char": last.get("bits_per_char"),
        "epochs": int(parent_meta.get("epochs") or 0) + len(history),
        "examples_seen": sum(h.get("examples", config.examples_per_epoch) for h in history),
        "train_seconds": run["train_seconds"],
        "history": history,
        "seed_slices": data.seed_slices(4),
        "parent": (lineage(parent_meta, init_from, added) if init_from is not None else None),
    }
    return TrainResult(view, meta, stopped)


def lineage(parent_meta: dict, path, added: str) -> dict:
    """meta.json's ``parent``: the model a run started from, the text it was trained on, and the
    characters this run added to its charset."""
    return {"name": parent_meta.get("name"), "version": parent_meta.get("version"), "path": str(path),
            "corpus_sha256": (parent_meta.get("corpus") or {}).get("sha256", ""), "characters_added": added}


def validation_loss(model, x_val: np.ndarray, y_val: np.ndarray) -> float | None:
    """Mean cross-entropy (nats per character) of the next character after each held-out window."""
    if len(x_val) == 0:
        return None
    probs = model.predict(x_val, batch_size=VALIDATION_BATCH, verbose=0)
    picked = probs[np.arange(len(y_val)), y_val]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def sample_texts(decoder: PipelinedDecoder, charset: Charset, seed_text: str, length: int, seed: int,
                 temperatures=DISPLAY_TEMPERATURES) -> list[dict]:
    """``length`` characters after ``seed_text`` at each temperature, decoded as one batch."""
    if length == 0:
        return [{"temperature": t, "text": ""} for t in temperatures]
    ids = generate_ids(decoder, charset.encode(seed_text), length,
                       temperatures, [Uniforms(seed + i) for i in range(len(temperatures))])
    return [{"temperature": t, "text": charset.decode(row)} for t, row in zip(temperatures, ids)]


def generate_ids(decoder: PipelinedDecoder, prompt_ids: np.ndarray, length: int, temperatures, uniforms,
                 chunk: int = 0):
    """Decode ``length`` ids after ``prompt_ids`` for each temperature; ``chunk`` > 0 yields chunks.

    Returns int ``[len(temperatures), length]``, or (with ``chunk``) a generator of
    ``[len(temperatures), <=chunk]`` arrays.
    """
    sample_len = decoder.sample_len
    batch = len(temperatures)
    tail = prompt_ids[-sample_len:]
    prompt = np.zeros((batch, sample_len), np.int32)
    prompt[:, sample_len - len(tail):] = tail
    state, phase, probs = decoder.start(tf.constant(prompt), tf.fill([batch], len(tail)))
    temps = tf.constant(temperatures, tf.float32)

    def chunks(size):
        nonlocal state, phase, probs
        done = 0
        while done < length:
            k = min(size, length - done)
            u = np.stack([s.take(k) for s in uniforms])
            state, phase, probs, ids = decoder.advance(state, phase, probs, temps, tf.constant(u))
            done += k
            yield ids.numpy()

    if chunk:
        return chunks(chunk)
    return np.concatenate(list(chunks(256)), axis=1)


@dataclasses.dataclass
class LearningRateSchedule:
    """The learning rate before each step: constant (the original), or linear warmup then cosine decay.

    The decay runs over the run's progress, which is the larger of steps done / all the run's steps
    (``epochs`` x batches) and training seconds / the time budget, so a ``time_budget`` run ends its
    decay when its time is up, however fast the machine is. Warmup counts steps.
    """

    peak: float
    kind: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 0
    budget_seconds: float = 0.0
    final_fraction: float = FINAL_LR_FRACTION

    @classmethod
    def of(cls, config: TrainConfig, batches_per_epoch: int) -> "LearningRateSchedule":
        return cls(config.learning_rate, config.lr_schedule, config.warmup_steps,
                   config.epochs * batches_per_epoch, config.time_budget_minutes * 60.0)

    def progress(self, steps: int, train_seconds: float) -> float:
        done = steps / self.total_steps if self.total_steps else 0.0
        if self.budget_seconds:
            done = max(done, train_seconds / self.budget_seconds)
        return min(done, 1.0)

    def at(self, steps: int, train_seconds: float) -> float:
        if self.kind == "constant":
            return self.peak
        if steps < self.warmup_steps:
            return self.peak * (steps + 1) / self.warmup_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress(steps, train_seconds)))
        return self.peak * (self.final_fraction + (1.0 - self.final_fraction) * cosine)


def _train_epoch(stepper, model, x, y, batch_size: int, schedule: LearningRateSchedule, run: dict,
                 on_batch: Callable[[int, float], None], should_stop) -> tuple[float, int, str]:
    """One epoch, batch by batch with ``train_on_batch`` (see the module note: no ``model.fit``).
    ``stepper``: ``model`` itself, or ``data_parallel(model, parts)``, which takes each batch in
    ``parts`` slices (a batch with fewer rows than that goes to ``model``).

    Updates ``run`` (steps, train_seconds). Returns (mean loss over the examples trained, examples
    trained, outcome): "done", "stopped" (``should_stop()`` said so after a batch) or "budget" (the
    time budget ran out after a batch).
    """
    total, examples, outcome = 0.0, 0, "done"
    parts = len(stepper.inputs) if stepper is not model else 1
    for batch, start in enumerate(range(0, len(x), batch_size), 1):
        began = time.perf_counter()
        model.optimizer.learning_rate = schedule.at(run["steps"], run["train_seconds"])
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if parts > 1 and len(xb) >= parts:
            logs = stepper.train_on_batch(np.array_split(xb, parts), np.array_split(yb, parts), return_dict=True)
        else:
            logs = model.train_on_batch(xb, yb, return_dict=True)
        loss, n = float(logs["loss"]), len(xb)
        run["steps"] += 1
        run["train_seconds"] += time.perf_counter() - began
        total, examples = total + loss * n, examples + n
        on_batch(batch, loss)
        # Not after the epoch's last batch: the epoch ends (and is checkpointed) first.
        if should_stop is not None and start + batch_size < len(x) and should_stop():
            outcome = "stopped"
            break
        if schedule.budget_seconds and run["train_seconds"] >= schedule.budget_seconds:
            outcome = "budget"
            break
    return total / max(examples, 1), examples, outcome


def _read_checkpoint(checkpoint_dir):
    if checkpoint_dir is None:
        return None
    state = Path(checkpoint_dir) / CHECKPOINT_STATE
    if not state.is_file() or not (Path(checkpoint_dir) / CHECKPOINT_MODEL).is_file():
        return None
    return json.loads(state.read_text())


def _write_checkpoint(checkpoint_dir, model, epoch: int, history: list, run: dict) -> None:
    """Model (with optimizer state) then the record (the last complete epoch, the run's counters, and
    after a stop inside the next epoch its ``batch``es trained), each replaced atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = checkpoint_dir / f".{CHECKPOINT_MODEL}.tmp.keras"
    model.save(tmp_model)
    os.replace(tmp_model, checkpoint_dir / CHECKPOINT_MODEL)
    tmp_state = checkpoint_dir / f".{CHECKPOINT_STATE}.tmp"
    tmp_state.write_text(json.dumps({"epoch": epoch, "history": history, **run}))
    os.replace(tmp_state, checkpoint_dir / CHECKPOINT_STATE)
