"""The training loop: the original's epochs, with held-out validation, samples, checkpoints.

``train()`` reports what happens through ``on_event(dict)`` (the CLI draws progress bars from it,
the RQ job appends it to the job's Redis stream) and stops at the next batch boundary once
``should_stop()`` says so. Event types and their fields:

- ``started``: epochs, batches_per_epoch, resumed_from_epoch (0 = from scratch)
- ``batch``: epoch, batch, batches, loss
- ``epoch``: epoch, epochs, loss, val_loss, bits_per_char, examples_per_second,
  samples (a list of {temperature, text})
- ``checkpoint``: epoch, path
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from textgen.charset import Charset, describe_chars
from textgen.options import TrainConfig
from textgen.sampling import DISPLAY_TEMPERATURES, Uniforms
from trainer import export
from trainer.dataset import TextDataset
from trainer.decode import PipelinedDecoder
from trainer.model import build_model, compile_model, lstm_layer_sizes, with_objective

CHECKPOINT_MODEL = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"
VALIDATION_BATCH = 512


class TrainingError(Exception):
    """Training cannot go on; the message says why."""


class CharsetMismatch(TrainingError):
    """Continuing a model on text with characters the model does not have."""


@dataclasses.dataclass
class TrainResult:
    model: keras.Model  # predicts the next character after a window: [batch, time] -> [batch, charset]
    meta: dict  # everything meta.json needs but the name and version
    stopped: bool  # True when should_stop() ended training early


OUT_OF_MEMORY = "out of memory: try smaller layers (--lstm-layer-size) or a smaller --batch-size"


def describe_failure(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can act on (bad input, missing file, no memory),
    or None for a bug. The CLI prints it; the RQ job records it as the job's reason."""
    from textgen import bundle, charset, corpus, options
    from trainer import dataset

    if isinstance(exc, (corpus.CorpusError, dataset.DatasetError, charset.CharsetError, options.OptionError,
                        bundle.BundleError, TrainingError)):
        return str(exc)
    if isinstance(exc, (MemoryError, tf.errors.ResourceExhaustedError)):
        return OUT_OF_MEMORY
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return None


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
) -> TrainResult:
    """Train on ``text``; with ``init_from`` (a bundle path) keep training that model.

    A continued model keeps its charset, layer sizes and sample length (``config``'s are ignored);
    text with characters outside its charset raises CharsetMismatch. With ``checkpoint_dir``, each
    epoch is checkpointed there and a later call with the same directory resumes after the last one.
    """
    emit = on_event or (lambda event: None)
    parent_meta, charset, model = {}, None, None
    if init_from is not None:
        model, parent_meta = export.load_keras(init_from)
        charset = Charset(parent_meta["charset"])
        missing = charset.missing(text)
        if missing:
            raise CharsetMismatch(
                f"the corpus has {len(missing)} characters the model {init_from} was not trained on: "
                f"{describe_chars(missing)}; continue on text made of the model's characters or train a new model"
            )
        config = dataclasses.replace(
            config, lstm_layer_sizes=tuple(lstm_layer_sizes(model)), sample_len=int(parent_meta["sample_len"])
        )
    config.validate(charset_size=len(charset) if charset else None)
    data = TextDataset.from_text(text, config.sample_len, config.sample_step, config.validation_split, charset)
    charset = data.charset
    config.validate(charset_size=len(charset))
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    all_positions = config.objective == "all"

    first_epoch, history = 1, []
    checkpoint = _read_checkpoint(checkpoint_dir)
    if checkpoint:
        model = keras.saving.load_model(Path(checkpoint_dir) / CHECKPOINT_MODEL, safe_mode=True)
        first_epoch, history = checkpoint["epoch"] + 1, checkpoint["history"]
    else:
        if model is None:
            model = build_model(len(charset), config.lstm_layer_sizes, all_positions)
        else:
            model = with_objective(model, all_positions)
        compile_model(model, config.learning_rate)
    view = with_objective(model, all_positions=False)  # the serving shape, for validation and samples

    batches = math.ceil(config.examples_per_epoch / config.batch_size)
    emit({"type": "started", "epochs": config.epochs, "batches_per_epoch": batches,
          "resumed_from_epoch": first_epoch - 1})
    x_val, y_val = data.validation_windows()
    display_seed = data.seed_slices(4)[1]
    decoder = PipelinedDecoder(view, config.sample_len)  # one per run: its functions trace once
    stopped = False

    for epoch in range(first_epoch, config.epochs + 1):
        rng = np.random.default_rng([config.seed or 0, epoch])
        x, y = data.windows(data.train_ids, data.epoch_starts(config.examples_per_epoch, rng), all_positions)
        progress = _BatchProgress(epoch, batches, emit, should_stop)
        began = time.perf_counter()
        fit = model.fit(x, y, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[progress])
        seconds = time.perf_counter() - began
        if progress.stopped:
            stopped = True
            break
        if view is not model:
            view.set_weights(model.get_weights())
        loss = float(fit.history["loss"][-1])
        val_loss = validation_loss(view, x_val, y_val)
        samples = sample_texts(decoder, charset, display_seed, config.display_length, seed=epoch)
        record = {"epoch": epoch, "loss": loss, "val_loss": val_loss,
                  "bits_per_char": val_loss / math.log(2) if val_loss is not None else None,
                  "examples_per_second": len(x) / seconds, "seconds": seconds}
        history.append(record)
        emit({"type": "epoch", "epochs": config.epochs, **record, "samples": samples})
        if checkpoint_dir is not None:
            _write_checkpoint(checkpoint_dir, model, epoch, history)
            emit({"type": "checkpoint", "epoch": epoch, "path": str(checkpoint_dir)})

    last = history[-1] if history else {}
    meta = {
        "charset": charset.chars,
        "sample_len": config.sample_len,
        "lstm_layer_sizes": list(config.lstm_layer_sizes),
        "objective": config.objective,
        "corpus": {"name": corpus_name, "sha256": corpus_sha256, "characters": len(text)},
        "training": config.to_dict(),
        "loss": last.get("loss"),
        "val_loss": last.get("val_loss"),
        "bits_per_char": last.get("bits_per_char"),
        "epochs": int(parent_meta.get("epochs", 0)) + len(history),
        "history": history,
        "seed_slices": data.seed_slices(4),
        "parent": ({"name": parent_meta.get("name"), "version": parent_meta.get("version"),
                    "path": str(init_from)} if init_from is not None else None),
    }
    return TrainResult(view, meta, stopped)


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


class _BatchProgress(keras.callbacks.Callback):
    def __init__(self, epoch, batches, emit, should_stop):
        super().__init__()
        self.epoch, self.batches, self.emit, self.should_stop = epoch, batches, emit, should_stop
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        self.emit({"type": "batch", "epoch": self.epoch, "batch": batch + 1, "batches": self.batches,
                   "loss": float((logs or {}).get("loss", float("nan")))})
        if self.should_stop is not None and self.should_stop():
            self.stopped = True
            self.model.stop_training = True


def _read_checkpoint(checkpoint_dir):
    if checkpoint_dir is None:
        return None
    state = Path(checkpoint_dir) / CHECKPOINT_STATE
    if not state.is_file() or not (Path(checkpoint_dir) / CHECKPOINT_MODEL).is_file():
        return None
    return json.loads(state.read_text())


def _write_checkpoint(checkpoint_dir, model, epoch: int, history: list) -> None:
    """Model (with optimizer state) then the epoch record, each replaced atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = checkpoint_dir / f".{CHECKPOINT_MODEL}.tmp.keras"
    model.save(tmp_model)
    os.replace(tmp_model, checkpoint_dir / CHECKPOINT_MODEL)
    tmp_state = checkpoint_dir / f".{CHECKPOINT_STATE}.tmp"
    tmp_state.write_text(json.dumps({"epoch": epoch, "history": history}))
    os.replace(tmp_state, checkpoint_dir / CHECKPOINT_STATE)
