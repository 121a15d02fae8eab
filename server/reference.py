"""The reference decoder: the original example's loop, slow and obviously right.

Each character runs the whole window (the last ``sample_len`` characters, fewer at the start of a
short prompt) through the bundle's ``predict`` from a zero state, then draws the next character with
the bundle's ``sample`` and the stream's next uniform. The engine must produce the same text; tests
and the benchmark compare against this.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from server.store import ServedModel
from textgen.sampling import Uniforms


def reference_generate(model: ServedModel, prompt: str, length: int, temperature: float, seed: int | None,
                       top_k: int = 0, top_p: float = 1.0) -> str:
    """``length`` characters after ``prompt`` (non-empty, in the model's charset) at ``temperature``
    (and ``top_k``, ``top_p`` where the bundle has them), with the uniforms of ``seed``: one
    ``predict`` call and one ``sample`` call per character."""
    fn = model.functions
    uniforms = Uniforms(seed)
    ids = list(model.encode(prompt))
    controls = dict(top_k=tf.constant([top_k], tf.int32), top_p=tf.constant([top_p], tf.float32)) if model.controls else {}
    temperature = tf.constant([temperature], tf.float32)
    for _ in range(length):
        window = tf.constant([ids[-model.sample_len:]], tf.int32)  # [1, <= sample_len]
        probs = fn.predict(ids=window)["probs"]  # [1, charset]
        drawn = fn.sample(probs=probs, temperature=temperature, uniform=tf.constant(uniforms.take(1)), **controls)["ids"]
        ids.append(int(drawn[0]))
    return model.decode(np.array(ids[len(ids) - length:], np.int64))
