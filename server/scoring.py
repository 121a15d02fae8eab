"""Scoring: a text's log-likelihood under a model, exactly as the original's windowed model defines it.

Character ``i`` is predicted from the up to ``sample_len`` characters before it, the window run from
a zero state: ``log P(text[i] | text[max(0, i - sample_len):i])``. The first character has no
context and is not scored (the model needs at least one character before the one it predicts, as a
generation needs a prompt of at least one character), so a text of ``n`` characters scores ``n - 1``.

The pipelined decoder does this in one batched step per character: the bundle's ``score`` function
feeds given characters to the windows in flight (instead of sampled ones) and reads each one's
log-probability before feeding it. As a character depends only on the ``sample_len`` characters
before it, the text is also cut into segments scored side by side as the rows of one batch: the
segment that starts at ``s`` is started from the characters ``text[s - sample_len:s]``, and the cut
changes no number.

Bundles exported before ``score`` existed are scored through their ``predict`` (the original's
signature, in every bundle) over batches of whole windows: the same numbers, at ``sample_len`` LSTM
steps per window instead of one, so every model on disk can be scored without re-exporting it.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from server.errors import BadRequest, shown
from server.store import ServedModel
from textgen.charset import describe_chars

MAX_SEGMENTS = 64  # rows of the scoring batch: segments of the text scored side by side
MIN_SEGMENT = 4  # in sample_len's: a segment's start costs sample_len steps, so segments are longer
PREDICT_BATCH = 512  # windows per predict call for bundles without ``score``


@dataclasses.dataclass(frozen=True)
class TextScore:
    """``logprobs`` float32 ``[characters]``: natural-log probability of ``text[1:]``, in order; with
    top logprobs asked for, ``top`` is ``[(characters, logprobs)]`` per scored character."""

    logprobs: np.ndarray
    top: tuple = ()

    @property
    def characters(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def log_likelihood(self) -> float:
        """Sum of ``logprobs`` in nats (<= 0)."""
        return float(np.sum(self.logprobs, dtype=np.float64))

    @property
    def bits_per_char(self) -> float:
        return -self.log_likelihood / self.characters / math.log(2)


def score_text(model: ServedModel, text: str, max_chars: int, top: int = 0, skip: int = 0) -> TextScore:
    """Score ``text`` (2 to ``max_chars`` characters, all in the model's charset) under ``model``; with
    ``top`` (1 to MAX_TOP_LOGPROBS), also the ``top`` most likely characters at each position after the
    first ``skip`` scored ones.

    Raises BadRequest saying what is wrong with the text, ``top`` or ``skip``.
    """
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {top}")
    if not 0 <= skip < max(1, len(text) - 1):
        raise BadRequest(f"top_logprobs_skip must be between 0 and the scored characters less one "
                         f"({max(0, len(text) - 2)}), got {skip}")
    if len(text) < 2:
        raise BadRequest(f"the text must have at least 2 characters (the first is the context of the second), "
                         f"got {len(text)}")
    if len(text) > max_chars:
        raise BadRequest(f"the text has {len(text)} characters, at most {max_chars} can be scored in one call "
                         "(TEXTGEN_MAX_SCORE_CHARS); score it in parts")
    missing = model.charset.missing(text)
    if missing:
        raise BadRequest(
            f"the text has characters that model {model.name!r} version {model.version} does not know: "
            f"{describe_chars(missing)}; its characters are {shown(model.charset.chars, 200)}"
        )
    ids = model.encode(text)
    if hasattr(model.functions, "score"):
        logprobs = pipelined_logprobs(model.functions, ids, model.sample_len)
    else:
        logprobs = predict_logprobs(model.functions, ids, model.sample_len)
    if not top:
        return TextScore(logprobs)
    count = min(top, len(model.charset))
    top_ids, top_values = top_logprobs(model.functions, ids, model.sample_len, count, first=skip + 1)
    return TextScore(logprobs, tuple((model.charset.decode(row), values) for row, values in zip(top_ids, top_values)))


def pipelined_logprobs(functions, ids: np.ndarray, sample_len: int) -> np.ndarray:
    """``log P(ids[i] | ids[max(0, i - sample_len):i])`` for ``i = 1 .. n-1``, float32 ``[n - 1]``,
    with the bundle's ``start`` and ``score`` (one batched step per character)."""
    scored = len(ids) - 1
    segments = max(1, min(MAX_SEGMENTS, scored // (MIN_SEGMENT * sample_len)))
    length = -(-scored // segments)  # characters per segment, the last one may be shorter
    starts = [1 + row * length for row in range(segments)]
    prompt = np.zeros([segments, sample_len], np.int32)
    lengths = np.zeros([segments], np.int32)
    given = np.zeros([segments, length], np.int32)  # padding past the text: scored, then dropped
    for row, start in enumerate(starts):
        context = ids[max(0, start - sample_len):start]
        prompt[row, sample_len - len(context):] = context  # right-aligned, as start wants
        lengths[row] = len(context)
        part = ids[start:start + length]
        given[row, :len(part)] = part
    state = functions.start(prompt=tf.constant(prompt), lengths=tf.constant(lengths))
    out = functions.score(**state, ids=tf.constant(given))
    return out["logprobs"].numpy().reshape(-1)[:scored]


def predict_logprobs(functions, ids: np.ndarray, sample_len: int) -> np.ndarray:
    """As ``pipelined_logprobs``, with the bundle's ``predict`` on whole windows (any bundle)."""
    out = np.zeros([len(ids) - 1], np.float32)
    for targets, probs in window_probs(functions, ids, sample_len):
        out[targets - 1] = np.log(probs[np.arange(len(targets)), ids[targets]])
    return out


MAX_TOP_LOGPROBS = 20


def top_logprobs(functions, ids: np.ndarray, sample_len: int, count: int,
                 first: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` most likely ids at each position ``i = first .. n-1`` and their natural-log
    probabilities under the model, most likely first: int32 and float32 ``[n - first, count]``. The
    model's whole distribution there comes from ``predict`` on the position's window (the same window
    Score scores the character from); ties go to the lower id."""
    top_ids = np.zeros([len(ids) - first, count], np.int32)
    top = np.zeros([len(ids) - first, count], np.float32)
    for targets, probs in window_probs(functions, ids, sample_len, first):
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :count]
        top_ids[targets - first] = order
        top[targets - first] = np.log(np.take_along_axis(probs, order, axis=-1))
    return top_ids, top


def window_probs(functions, ids: np.ndarray, sample_len: int, first: int = 1):
    """``(targets, probs)`` in batches: the model's distribution ``[len(targets), charset]`` over the
    character at each position in ``targets`` (``first`` .. n-1), from the up to ``sample_len`` before it."""
    short = range(first, min(sample_len, len(ids)))  # the first windows are shorter, one length each
    for i in short:
        yield np.array([i]), functions.predict(ids=tf.constant(ids[None, :i]))["probs"].numpy()
    full = np.arange(max(sample_len, first), len(ids))
    for begin in range(0, len(full), PREDICT_BATCH):
        targets = full[begin:begin + PREDICT_BATCH]
        windows = np.stack([ids[t - sample_len:t] for t in targets])
        yield targets, functions.predict(ids=tf.constant(windows))["probs"].numpy()
