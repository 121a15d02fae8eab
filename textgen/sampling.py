"""The sampling rule, in one place: ``logits = log(p) / temperature``, one categorical draw.

Temperature 0 means the most likely character (the original clamps it to 1e-6: the same thing).
The draw is by inverse CDF from a uniform number the caller supplies, so a stream's text depends only
on its own uniforms (drawn from its own seed), never on what else shares the batch.
"""
from __future__ import annotations

import numpy as np

from textgen.tfimport import import_tensorflow

tf = import_tensorflow()

DISPLAY_TEMPERATURES = (0.0, 0.25, 0.5, 0.75)


def sample_ids(probs, temperature, uniform):
    """Next ids int32 ``[batch]`` from ``probs`` ``[batch, charset]``, ``temperature`` ``[batch]``,
    ``uniform`` ``[batch]`` in [0, 1)."""
    probs = tf.convert_to_tensor(probs, tf.float32)
    temperature = tf.convert_to_tensor(temperature, tf.float32)
    greedy = tf.argmax(probs, axis=-1, output_type=tf.int32)
    safe_t = tf.where(temperature > 0, temperature, tf.ones_like(temperature))
    logits = tf.math.log(tf.maximum(probs, 1e-30)) / safe_t[:, None]
    weights = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    cdf = tf.cumsum(weights, axis=-1)
    threshold = tf.convert_to_tensor(uniform, tf.float32)[:, None] * cdf[:, -1:]
    drawn = tf.reduce_sum(tf.cast(cdf <= threshold, tf.int32), axis=-1)
    drawn = tf.minimum(drawn, tf.shape(probs)[-1] - 1)
    return tf.where(temperature > 0, drawn, greedy)


class Uniforms:
    """The uniform numbers of one generation, drawn in order from its own seed.

    ``take(k)`` returns the next ``k`` as float32 ``[k]``; how the draws are split into chunks does
    not change them (``take(3)`` then ``take(5)`` equals ``take(8)``).
    """

    def __init__(self, seed: int | None):
        self._rng = np.random.default_rng(seed)

    def take(self, k: int) -> np.ndarray:
        return self._rng.random(k).astype(np.float32)
