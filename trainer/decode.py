"""Exact sliding-window decoding, pipelined (ARCHITECTURE.md, "Serving").

The original predicts character n+1 by running the LSTM from a zero state over the last
``sample_len`` characters. Here every stream keeps ``sample_len`` windows in flight, window ``j``
being reset to a zero state every ``sample_len`` characters, one character apart from the next.
Each new character is fed to all of a stream's windows in one batched step; the window at the
stream's ``phase`` has then seen exactly the last ``min(n, sample_len)`` characters, so its output is
the reference distribution for the next character; it is read, then reset to become the newest
window. One character costs one batched LSTM step per layer instead of ``sample_len`` steps.

State of a batch of streams (opaque to the server):
- ``state``  float32 ``[batch, sample_len, state_size]``: per layer ``h`` then ``c``, concatenated.
- ``phase``  int32 ``[batch]``: characters fed so far, modulo ``sample_len``.
- ``probs``  float32 ``[batch, charset]``: the distribution of each stream's next character.

These functions read the Keras model's own variables, so the exported SavedModel carries them next
to the original's ``predict`` and stays usable without this project's server. Their loops are written
as ``tf.while_loop``s (``_loop``), not converted by AutoGraph: converting them cost every process that
exported a model about 1 s, once per process (a worker's work horse: once per job; the first export in a
process took 2.5 s, now 1.4 s).
"""
from __future__ import annotations

from trainer.tf import keras, tf  # first: TensorFlow, quietly
from keras import layers  # noqa: E402

from textgen.sampling import sample_ids

MAX_ALTERNATIVES = 20  # the likeliest characters advance_penalized reports at each step (OpenAI's chat limit)
graph_function = tf.function(autograph=False)  # the decode functions have no Python control flow on tensors


def _loop(k, body, loop_vars):
    """``for step in range(k): loop_vars = body(step, *loop_vars)`` in the graph (a ``tf.while_loop``,
    bounded by ``k`` for XLA, as AutoGraph writes it); returns the last ``loop_vars``."""
    _, *last = tf.while_loop(lambda step, *_: step < k, lambda step, *v: (step + 1, *body(step, *v)),
                             (tf.constant(0), *loop_vars), maximum_iterations=k)
    return last


class PipelinedDecoder:
    """The decode functions of one model (weights shared with ``model``, read at call time)."""

    def __init__(self, model, sample_len: int):
        self.sample_len = int(sample_len)
        self._lstms = [layer for layer in model.layers if isinstance(layer, layers.LSTM)]
        self._dense = model.get_layer("next_char")
        self.units = [layer.units for layer in self._lstms]
        self.state_size = 2 * sum(self.units)
        self.charset_size = int(self._dense.units)
        # Each layer's (activation, recurrent activation): tf.tanh and tf.sigmoid for Keras' defaults
        # (the ops every model used before imported ones), else the layer's own (a TensorFlow.js model's).
        self._activations = [(tf.tanh if l.cell.activation is keras.activations.tanh else l.cell.activation,
                              tf.sigmoid if l.cell.recurrent_activation is keras.activations.sigmoid
                              else l.cell.recurrent_activation) for l in self._lstms]

    # -- one step -----------------------------------------------------------------------------
    def _weights(self):
        w = [(l.cell.kernel.value, l.cell.recurrent_kernel.value, l.cell.bias.value) for l in self._lstms]
        return w, self._dense.kernel.value, self._dense.bias.value

    def _split(self, state):
        parts = tf.split(state, [u for units in self.units for u in (units, units)], axis=-1)
        return [(parts[2 * i], parts[2 * i + 1]) for i in range(len(self.units))]

    def _feed(self, hc, phase, ids, active):
        """Feed ``ids`` [batch] to every window of each stream where ``active`` [batch] (bool).

        ``hc``: per layer ``(h, c)``, each ``[batch, sample_len, units]``. Returns the new ``hc``,
        ``phase`` and the next-character ``probs`` ``[batch, charset]`` read from the window at
        ``phase`` (which is then reset).
        """
        lstm_weights, dense_kernel, dense_bias = self._weights()
        batch = tf.shape(ids)[0]
        # The first layer's input is one-hot: its input projection is a row lookup, the same row for
        # all windows of a stream.
        kernel, recurrent, bias = lstm_weights[0]
        x_proj = (tf.gather(kernel, ids) + bias)[:, None, :]  # [batch, 1, 4u]
        new_hc, below = [], None
        for i, ((h, c), (kernel, recurrent, bias)) in enumerate(zip(hc, lstm_weights)):
            units = self.units[i]
            flat_h = tf.reshape(h, [-1, units])
            z = tf.reshape(tf.matmul(flat_h, recurrent), [batch, self.sample_len, 4 * units])
            if i == 0:
                z = z + x_proj
            else:
                flat_below = tf.reshape(below, [-1, self.units[i - 1]])
                z = z + tf.reshape(tf.matmul(flat_below, kernel), [batch, self.sample_len, 4 * units]) + bias
            gate_i, gate_f, gate_c, gate_o = tf.split(z, 4, axis=-1)  # Keras' gate order
            act, rec = self._activations[i]
            c = rec(gate_f) * c + rec(gate_i) * act(gate_c)
            h = rec(gate_o) * act(c)
            new_hc.append((h, c))
            below = h
        read = tf.one_hot(phase, self.sample_len, dtype=tf.float32)  # [batch, sample_len]
        top = tf.reduce_sum(below * read[:, :, None], axis=1)  # [batch, units]
        probs = tf.nn.softmax(tf.matmul(top, dense_kernel) + dense_bias)
        keep = (1.0 - read)[:, :, None]
        on = active[:, None, None]
        hc = [(tf.where(on, h * keep, h0), tf.where(on, c * keep, c0)) for (h, c), (h0, c0) in zip(new_hc, hc)]
        phase = tf.where(active, (phase + 1) % self.sample_len, phase)
        return hc, phase, probs

    # -- the serving functions ----------------------------------------------------------------
    @graph_function
    def start(self, prompt, lengths):
        """Start streams from prompts.

        ``prompt`` int32 ``[batch, sample_len]``, each prompt's last ``lengths[b]`` ids right-aligned
        (``1 <= lengths[b] <= sample_len``; left padding is ignored). Returns ``(state, phase, probs)``.
        """
        batch = tf.shape(prompt)[0]
        hc = [(tf.zeros([batch, self.sample_len, u]), tf.zeros([batch, self.sample_len, u])) for u in self.units]
        phase = tf.zeros([batch], tf.int32)
        probs = tf.zeros([batch, self.charset_size])

        def body(t, hc, phase, probs):
            active = t >= self.sample_len - lengths
            hc, phase, step_probs = self._feed(hc, phase, prompt[:, t], active)
            return hc, phase, tf.where(active[:, None], step_probs, probs)

        hc, phase, probs = _loop(self.sample_len, body, (hc, phase, probs))
        return self._pack(hc), phase, probs

    @graph_function
    def advance(self, state, phase, probs, temperature, uniforms):
        """Sample and feed ``k`` characters per stream.

        ``temperature`` float32 ``[batch]``; ``uniforms`` float32 ``[batch, k]`` (one per character).
        Returns ``(state, phase, probs, ids)`` with ``ids`` int32 ``[batch, k]``.
        """
        return self._advance(state, phase, probs, temperature, uniforms)[:4]

    @graph_function
    def advance_with_logprobs(self, state, phase, probs, temperature, uniforms, top_k, top_p):
        """``advance`` with the sampling controls: ``top_k`` int32 ``[batch]`` (0: off), ``top_p``
        float32 ``[batch]`` (1: off). Returns ``(state, phase, probs, ids, logprobs)``, ``logprobs``
        float32 ``[batch, k]``: the natural log of each drawn id's probability under the model."""
        return self._advance(state, phase, probs, temperature, uniforms, top_k, top_p)

    @graph_function
    def advance_penalized(self, state, phase, probs, temperature, uniforms, top_k, top_p, counts, seen, presence,
                          frequency, repetition, bias):
        """``advance_with_logprobs`` with penalties (textgen.sampling.penalized): ``counts`` and ``seen``
        float32 ``[batch, charset]`` (each character's count in the text generated so far; 1.0 where it
        is in the prompt or that text), ``presence``, ``frequency``, ``repetition`` float32 ``[batch]``,
        ``bias`` float32 ``[batch, charset]``. Each drawn character is counted before the next draw.
        Returns ``(state, phase, probs, ids, logprobs, counts, seen, top_ids, top_logprobs)``; ``logprobs``
        are the model's, before penalties and temperature; ``top_ids`` int32 and ``top_logprobs`` float32
        ``[batch, k, min(MAX_ALTERNATIVES, charset)]``: the likeliest characters at each step under the
        model, most likely first (ties: the lower id), and their log-probabilities."""
        return self._advance(state, phase, probs, temperature, uniforms, top_k, top_p,
                             (counts, seen, presence, frequency, repetition, bias))

    def _advance(self, state, phase, probs, temperature, uniforms, top_k=None, top_p=None, penalties=None):
        if penalties is not None:
            return self._advance_penalized(state, phase, probs, temperature, uniforms, top_k, top_p, *penalties)
        hc = self._split(state)
        k = tf.shape(uniforms)[1]
        active = tf.ones_like(phase, dtype=tf.bool)

        def body(step, hc, phase, probs, out, logprobs):
            ids = sample_ids(probs, temperature, uniforms[:, step], top_k, top_p)
            logprobs = logprobs.write(step, tf.math.log(tf.gather(probs, ids, batch_dims=1)))
            hc, phase, probs = self._feed(hc, phase, ids, active)
            return hc, phase, probs, out.write(step, ids), logprobs

        hc, phase, probs, out, logprobs = _loop(k, body, (hc, phase, probs, tf.TensorArray(tf.int32, size=k),
                                                          tf.TensorArray(tf.float32, size=k)))
        return self._pack(hc), phase, probs, tf.transpose(out.stack()), tf.transpose(logprobs.stack())

    def _advance_penalized(self, state, phase, probs, temperature, uniforms, top_k, top_p, counts, seen, presence,
                           frequency, repetition, bias):
        hc = self._split(state)
        k = tf.shape(uniforms)[1]
        active = tf.ones_like(phase, dtype=tf.bool)
        alternatives = min(MAX_ALTERNATIVES, self.charset_size)

        def body(step, hc, phase, probs, out, logprobs, top_ids, top_logprobs, counts, seen):
            ids = sample_ids(probs, temperature, uniforms[:, step], top_k, top_p,
                             (counts, seen, presence, frequency, repetition, bias))
            logprobs = logprobs.write(step, tf.math.log(tf.gather(probs, ids, batch_dims=1)))
            best, best_ids = tf.math.top_k(probs, alternatives)
            top_ids = top_ids.write(step, best_ids)
            top_logprobs = top_logprobs.write(step, tf.math.log(best))
            hc, phase, probs = self._feed(hc, phase, ids, active)
            drawn = tf.one_hot(ids, self.charset_size, dtype=tf.float32)
            return (hc, phase, probs, out.write(step, ids), logprobs, top_ids, top_logprobs, counts + drawn,
                    tf.maximum(seen, drawn))

        arrays = [tf.TensorArray(dtype, size=k) for dtype in (tf.int32, tf.float32, tf.int32, tf.float32)]
        hc, phase, probs, out, logprobs, top_ids, top_logprobs, counts, seen = _loop(
            k, body, (hc, phase, probs, *arrays, counts, seen))
        return (self._pack(hc), phase, probs, tf.transpose(out.stack()), tf.transpose(logprobs.stack()), counts,
                seen, tf.transpose(top_ids.stack(), [1, 0, 2]), tf.transpose(top_logprobs.stack(), [1, 0, 2]))

    @graph_function
    def score(self, state, phase, probs, ids):
        """Feed the GIVEN ``ids`` int32 ``[batch, k]`` (instead of sampled ones), reading the
        log-probability of each before it is fed.

        Returns ``(state, phase, probs, logprobs)``; ``logprobs`` float32 ``[batch, k]`` holds
        ``log P(ids[b, j] | the up to sample_len ids before it)``, the original's window for window.
        """
        hc = self._split(state)
        k = tf.shape(ids)[1]
        active = tf.ones_like(phase, dtype=tf.bool)

        def body(step, hc, phase, probs, out):
            given = ids[:, step]
            out = out.write(step, tf.math.log(tf.gather(probs, given, batch_dims=1)))
            hc, phase, probs = self._feed(hc, phase, given, active)
            return hc, phase, probs, out

        hc, phase, probs, out = _loop(k, body, (hc, phase, probs, tf.TensorArray(tf.float32, size=k)))
        return self._pack(hc), phase, probs, tf.transpose(out.stack())

    def _pack(self, hc):
        return tf.concat([t for pair in hc for t in pair], axis=-1)
