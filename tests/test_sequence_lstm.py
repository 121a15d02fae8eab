"""The trainer's SequenceLSTM is Keras' LSTM: same outputs, states and gradients, same saved file."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.model import build_model, with_objective
from trainer.sequence_lstm import SequenceLSTM

RNG = np.random.default_rng(7)


def twin_layers(units: int, inputs: int, **kwargs):
    """A Keras LSTM and a SequenceLSTM with the same (non-trivial) weights."""
    stock, ours = keras.layers.LSTM(units, **kwargs), SequenceLSTM(units, **kwargs)
    stock.build((None, None, inputs))
    ours.build((None, None, inputs))
    weights = [RNG.normal(0, 0.3, w.shape).astype("float32") for w in stock.get_weights()]
    stock.set_weights(weights)
    ours.set_weights(weights)
    return stock, ours


def outputs_and_gradients(layer, x, initial_state=None):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        if initial_state is not None:
            tape.watch(initial_state)
        out = layer(x, initial_state=initial_state)
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        # Weighted sums, so that every output element gets its own gradient.
        loss = sum(tf.reduce_sum(o * np.linspace(-1, 1, int(np.prod(o.shape))).reshape(o.shape).astype("float32"))
                   for o in outs)
    sources = [x, *layer.trainable_weights, *(initial_state or [])]
    return [o.numpy() for o in outs], [g.numpy() for g in tape.gradient(loss, sources)]


@pytest.mark.parametrize("kwargs", [{"return_sequences": True}, {"return_sequences": False},
                                    {"return_sequences": True, "return_state": True}])
def test_outputs_and_gradients_equal_keras_lstm(kwargs):
    stock, ours = twin_layers(12, 5, **kwargs)
    x = RNG.normal(size=(3, 9, 5)).astype("float32")
    (out_a, grad_a), (out_b, grad_b) = outputs_and_gradients(stock, x), outputs_and_gradients(ours, x)
    assert len(out_a) == len(out_b) and len(grad_a) == len(grad_b) == 4  # x, kernel, recurrent kernel, bias
    for a, b in zip(out_a + grad_a, out_b + grad_b):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_a_given_initial_state_and_its_gradient_equal_keras_lstm():
    stock, ours = twin_layers(6, 4, return_sequences=True)
    x = RNG.normal(size=(2, 7, 4)).astype("float32")
    state = [tf.constant(RNG.normal(size=(2, 6)).astype("float32")) for _ in range(2)]
    (out_a, grad_a), (out_b, grad_b) = outputs_and_gradients(stock, x, state), outputs_and_gradients(ours, x, state)
    assert len(grad_a) == 6
    for a, b in zip(out_a + grad_a, out_b + grad_b):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_it_runs_its_own_kernel_only_where_it_applies():
    _, ours = twin_layers(4, 3)
    x = tf.zeros((2, 5, 3))
    assert ours._sequence_kernel_applies(x, mask=None)
    assert not ours._sequence_kernel_applies(x, mask=tf.ones((2, 5), bool))
    _, with_dropout = twin_layers(4, 3, dropout=0.5)
    assert not with_dropout._sequence_kernel_applies(x, mask=None)
    # A window of any length (unknown when traced), as the serving signature has it.
    stock, ours = twin_layers(4, 3)
    fn_a, fn_b = (tf.function(layer, input_signature=[tf.TensorSpec([None, None, 3])]) for layer in (stock, ours))
    x = RNG.normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(fn_b(x), fn_a(x), rtol=1e-5, atol=1e-6)


def test_a_training_model_trains_as_keras_lstm_and_serves_as_it():
    stock = build_model(11, (16, 8), all_positions=True)
    ours = build_model(11, (16, 8), all_positions=True, sequence_kernel=True)
    assert [type(layer) for layer in ours.layers if isinstance(layer, keras.layers.LSTM)] == [SequenceLSTM] * 2
    ours.set_weights(stock.get_weights())
    x = RNG.integers(0, 11, (8, 20)).astype("int32")
    y = RNG.integers(0, 11, (8, 20)).astype("int32")
    losses = []
    for model in (stock, ours):
        model.compile(optimizer=keras.optimizers.RMSprop(1e-2), loss=keras.losses.SparseCategoricalCrossentropy())
        losses.append([float(model.train_on_batch(x, y)) for _ in range(5)])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for a, b in zip(stock.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    serving = with_objective(ours, all_positions=False)
    assert [type(layer) for layer in serving.layers if isinstance(layer, keras.layers.LSTM)] == [keras.layers.LSTM] * 2


def test_a_model_with_it_saves_and_loads_in_safe_mode(tmp_path):
    model = build_model(7, (5,), all_positions=True, sequence_kernel=True)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("lstm_0"), SequenceLSTM)
    x = RNG.integers(0, 7, (2, 6)).astype("int32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
