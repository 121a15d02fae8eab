"""The sampling rule, in one place: ``logits = log(p) / temperature``, one categorical draw.

Temperature 0 means the most likely character (the original clamps it to 1e-6: the same thing).
After temperature, ``top_k`` keeps the k most likely characters (0: all) and ``top_p`` (nucleus) the
fewest most likely ones whose probability adds up to at least p (1: all); characters tied with the
last one kept are kept too. With neither, the draw is exactly the original rule's.
The draw is by inverse CDF from a uniform number the caller supplies, so a stream's text depends only
on its own uniforms (drawn from its own seed), never on what else shares the batch.
"""
from __future__ import annotations

import numpy as np

from textgen.tfimport import import_tensorflow

tf = import_tensorflow()

DISPLAY_TEMPERATURES = (0.0, 0.25, 0.5, 0.75)


BAN = -100.0  # a logit_bias at or below this bans the character outright (OpenAI's "-100 should ban")


def sample_ids(probs, temperature, uniform, top_k=None, top_p=None, penalties=None):
    """Next ids int32 ``[batch]`` from ``probs`` ``[batch, charset]``, ``temperature`` ``[batch]``,
    ``uniform`` ``[batch]`` in [0, 1), and optionally ``top_k`` int32 ``[batch]`` (0: off) and
    ``top_p`` float32 ``[batch]`` in (0, 1] (1: off), and ``penalties`` (``penalized``'s arguments
    after the log-probabilities), applied to the log-probabilities before temperature."""
    probs = tf.convert_to_tensor(probs, tf.float32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    logprobs = tf.math.log(tf.maximum(probs, 1e-30))
    if penalties is not None:
        logprobs = penalized(logprobs, *penalties)
        greedy = tf.argmax(logprobs, axis=-1, output_type=tf.int32)
    else:
        greedy = tf.argmax(probs, axis=-1, output_type=tf.int32)
    safe_t = tf.where(temperature > 0, temperature, tf.ones_like(temperature))
    logits = logprobs / safe_t[:, None]
    weights = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    if top_k is not None or top_p is not None:
        weights = narrowed(weights, top_k, top_p)
    cdf = tf.cumsum(weights, axis=-1)
    threshold = tf.convert_to_tensor(uniform, tf.float32)[:, None] * cdf[:, -1:]
    drawn = tf.reduce_sum(tf.cast(cdf <= threshold, tf.int32), axis=-1)
    drawn = tf.minimum(drawn, tf.shape(probs)[-1] - 1)
    return tf.where(temperature > 0, drawn, greedy)


def penalized(logprobs, counts, seen, presence, frequency, repetition, bias):
    """``logprobs`` ``[batch, charset]`` with vLLM's penalties and OpenAI's logit bias, per row:
    ``repetition`` ``[batch]`` (1: off) divides a positive and multiplies a negative value of each
    character ``seen`` ``[batch, charset]`` (1.0 where it is in the prompt or the text so far); then
    ``frequency`` ``[batch]`` times each character's ``counts`` ``[batch, charset]`` in the generated
    text, and ``presence`` ``[batch]`` for each character that is in it, are subtracted; then ``bias``
    ``[batch, charset]`` is added, and a bias at or below BAN bans the character. At their neutral values
    (0, 0, 1, 0) a row comes back bit for bit."""
    repetition = repetition[:, None]
    repeated = tf.where(logprobs > 0, logprobs / repetition, logprobs * repetition)
    out = tf.where(seen > 0, repeated, logprobs)
    out = out - frequency[:, None] * counts - presence[:, None] * tf.cast(counts > 0, tf.float32)
    out = out + bias
    return tf.where(bias <= BAN, tf.fill(tf.shape(out), -1e30), out)


def narrowed(weights, top_k=None, top_p=None):
    """``weights`` ``[batch, charset]`` (unnormalised, after temperature) with every character outside
    each row's top ``top_k`` and then outside its ``top_p`` nucleus set to 0; rows with the control
    off (k = 0, p = 1) are returned unchanged, bit for bit."""
    size = tf.shape(weights)[-1]
    ranked = tf.sort(weights, axis=-1, direction="DESCENDING")
    if top_k is not None:
        k = tf.convert_to_tensor(top_k, tf.int32)
        k = tf.where((k <= 0) | (k > size), size, k)
        kth = tf.gather(ranked, k - 1, batch_dims=1)[:, None]  # the k-th largest weight of each row
        weights = tf.where(weights >= kth, weights, tf.zeros_like(weights))
        ranked = tf.where(ranked >= kth, ranked, tf.zeros_like(ranked))
    if top_p is not None:
        p = tf.convert_to_tensor(top_p, tf.float32)
        before = tf.cumsum(ranked / tf.reduce_sum(ranked, axis=-1, keepdims=True), axis=-1, exclusive=True)
        kept = tf.reduce_sum(tf.cast(before < p[:, None], tf.int32), axis=-1)  # >= 1: before[0] is 0
        least = tf.gather(ranked, tf.maximum(kept, 1) - 1, batch_dims=1)[:, None]
        weights = tf.where((p[:, None] < 1.0) & (weights < least), tf.zeros_like(weights), weights)
    return weights


class Uniforms:
    """The uniform numbers of one generation, drawn in order from its own seed.

    ``take(k)`` returns the next ``k`` as float32 ``[k]``; how the draws are split into chunks does
    not change them (``take(3)`` then ``take(5)`` equals ``take(8)``). ``skip``: start after that many
    draws (``Uniforms(s, skip=3).take(5)`` equals ``Uniforms(s).take(8)[3:]``), in constant time: a
    resumed stream continues with the uniforms of its character indices.
    """

    def __init__(self, seed: int | None, skip: int = 0):
        self._rng = np.random.default_rng(seed)
        if skip:
            self._rng.bit_generator.advance(skip)  # PCG64: one 64-bit draw per float64 from random()

    def take(self, k: int) -> np.ndarray:
        return self._rng.random(k).astype(np.float32)
