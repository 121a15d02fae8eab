"""Keras' LSTM, trained faster on a CPU: the same layer and weights, a different order of work.

Keras' LSTM on a CPU runs its cell once per time step in a ``while`` loop, and TensorFlow
differentiates that loop step by step: per step and layer, two matmuls forward and four backward,
each on one step's ``[batch, units]`` rows, and two weight gradients added into accumulators. Here
(as cuDNN does on a GPU) the work that does not depend on the previous step is taken out of the loop:

- forward, the input projection ``x @ kernel + bias`` of every step is one matmul over
  ``[batch * steps, inputs]``; only ``h @ recurrent_kernel`` stays in the loop;
- backward (a hand-written gradient), the loop only carries ``dh`` and ``dc`` back through the
  steps (one matmul per step); the gradients of ``kernel``, ``recurrent_kernel`` and ``bias`` and of
  the input are then one matmul each over all the steps.

On 2 CPU cores, 192,192 at batch 32 trained 1.35x the examples per second of Keras' LSTM
(bench/results/train_recipes.md, section H); 128,128 at batch 128, the same. The results are the same
as Keras' LSTM to float32 rounding (``tests/test_sequence_lstm.py``). Where this order of work does
not apply (a GPU, which has cuDNN; bfloat16; a mask; non-default activations; the cell's own dropout)
the layer is Keras' LSTM unchanged.

Only the trainer builds this layer. Bundles hold Keras' own LSTM (``trainer.model.with_objective``):
the weights are the same variables in the same order.
"""
from __future__ import annotations

from trainer.tf import keras, tf  # first: TensorFlow, quietly
from keras import layers  # noqa: E402


def lstm_sequence(x, h0, c0, kernel, recurrent_kernel, bias):
    """Keras' LSTM over a whole window (gates i, f, c, o; sigmoid and tanh) with the gradient above.

    x ``[batch, steps, inputs]``; h0, c0 ``[batch, units]``; kernel ``[inputs, 4 units]``,
    recurrent_kernel ``[units, 4 units]``, bias ``[4 units]``.
    Returns outputs ``[batch, steps, units]`` (h of each step), the last h and the last c.
    """

    @tf.custom_gradient
    def run(x, h0, c0, kernel, recurrent_kernel, bias):
        batch, steps, inputs = tf.unstack(tf.shape(x))
        units = tf.shape(recurrent_kernel)[0]
        x_steps = tf.transpose(x, [1, 0, 2])  # [steps, batch, inputs]
        flat_x = tf.reshape(x_steps, [-1, inputs])
        projected = tf.reshape(tf.matmul(flat_x, kernel) + bias, [steps, batch, 4 * units])

        def forward(t, h, c, hs, cs, gates):
            z = projected[t] + tf.matmul(h, recurrent_kernel)
            z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
            i, f, g, o = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.tanh(z_c), tf.sigmoid(z_o)
            c = f * c + i * g
            h = o * tf.tanh(c)
            return t + 1, h, c, hs.write(t, h), cs.write(t, c), gates.write(t, tf.concat([i, f, g, o], axis=1))

        arrays = [tf.TensorArray(x.dtype, size=steps) for _ in range(3)]
        _, h, c, hs, cs, gates = tf.while_loop(lambda t, *_: t < steps, forward, (0, h0, c0, *arrays))
        hs, cs, gates = hs.stack(), cs.stack(), gates.stack()  # [steps, batch, units or 4 units]

        def grad(d_outputs, d_h_last, d_c_last):
            d_steps = tf.transpose(d_outputs, [1, 0, 2])
            c_prev = tf.concat([c0[None], cs[:-1]], axis=0)
            tanh_c = tf.tanh(cs)
            recurrent_t = tf.transpose(recurrent_kernel)

            def backward(t, dh, dc, dzs):
                i, f, g, o = tf.split(gates[t], 4, axis=1)
                dh = dh + d_steps[t]
                dc = dc + dh * o * (1 - tanh_c[t] * tanh_c[t])
                dz = tf.concat([dc * g * i * (1 - i), dc * c_prev[t] * f * (1 - f), dc * i * (1 - g * g),
                                dh * tanh_c[t] * o * (1 - o)], axis=1)
                return t - 1, tf.matmul(dz, recurrent_t), dc * f, dzs.write(t, dz)

            dh = d_h_last if d_h_last is not None else tf.zeros_like(h0)
            dc = d_c_last if d_c_last is not None else tf.zeros_like(c0)
            _, dh, dc, dzs = tf.while_loop(lambda t, *_: t >= 0, backward,
                                           (steps - 1, dh, dc, tf.TensorArray(x.dtype, size=steps)))
            dz = tf.reshape(dzs.stack(), [-1, 4 * units])  # [steps * batch, 4 units]
            h_prev = tf.reshape(tf.concat([h0[None], hs[:-1]], axis=0), [-1, units])
            dx = tf.transpose(tf.reshape(tf.matmul(dz, kernel, transpose_b=True), [steps, batch, inputs]), [1, 0, 2])
            return (dx, dh, dc, tf.matmul(flat_x, dz, transpose_a=True), tf.matmul(h_prev, dz, transpose_a=True),
                    tf.reduce_sum(dz, axis=0))

        return (tf.transpose(hs, [1, 0, 2]), h, c), grad

    return run(x, h0, c0, kernel, recurrent_kernel, bias)


@keras.saving.register_keras_serializable(package="textgen")
class SequenceLSTM(layers.LSTM):
    """``keras.layers.LSTM`` (same arguments, weights and results) with ``lstm_sequence`` on a CPU."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self._sequence_kernel_applies(sequences, mask):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        # Reading the variables through tf.identity gives the custom gradient tensors, not variables.
        outputs, h, c = lstm_sequence(sequences, initial_state[0], initial_state[1], tf.identity(cell.kernel.value),
                                      tf.identity(cell.recurrent_kernel.value), tf.identity(cell.bias.value))
        return h, outputs, [h, c]

    def _sequence_kernel_applies(self, sequences, mask) -> bool:
        cell = self.cell
        return (mask is None and not self.go_backwards
                and cell.use_bias and cell.dropout == 0 and cell.recurrent_dropout == 0
                and cell.activation is keras.activations.tanh and cell.recurrent_activation is keras.activations.sigmoid
                and self.compute_dtype == "float32" and not tf.config.list_physical_devices("GPU"))
