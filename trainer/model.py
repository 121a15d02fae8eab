"""The character-level LSTM: ids -> one-hot -> stacked LSTMs -> softmax over the charset.

As the original example: input a window of ``sample_len`` character ids ``[batch, sample_len]``,
output next-character probabilities ``[batch, charset_size]``. The model takes windows of any length
(the input's time axis is ``None``) so that a prompt shorter than ``sample_len`` is a shorter window,
exactly as the original would see it. With ``all_positions`` the last LSTM returns sequences and the
output is ``[batch, time, charset_size]``: the same weights, trained on every position.
"""
from __future__ import annotations

import keras
from keras import layers, ops

LSTM_LAYER_SIZES = (128, 128)
LEARNING_RATE = 1e-2


@keras.saving.register_keras_serializable(package="textgen")
class OneHot(layers.Layer):
    """Character ids ``[batch, time]`` to one-hot float32 ``[batch, time, depth]``."""

    def __init__(self, depth: int, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, ids):
        return ops.one_hot(ops.cast(ids, "int32"), self.depth)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.depth)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}


def build_model(charset_size: int, lstm_layer_sizes=LSTM_LAYER_SIZES, all_positions: bool = False):
    """A fresh model; layer names are fixed so weights move between the two output shapes."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = OneHot(charset_size, name="one_hot")(ids)
    for i, units in enumerate(lstm_layer_sizes):
        last = i == len(lstm_layer_sizes) - 1
        # Default activations, no dropout, no mask: the conditions for the cuDNN kernel on a GPU.
        x = layers.LSTM(units, return_sequences=all_positions or not last, name=f"lstm_{i}")(x)
    probs = layers.Dense(charset_size, activation="softmax", name="next_char")(x)
    return keras.Model(ids, probs, name="char_lstm")


def lstm_layer_sizes(model) -> list[int]:
    return [layer.units for layer in model.layers if isinstance(layer, layers.LSTM)]


def charset_size(model) -> int:
    return model.get_layer("one_hot").depth


def with_objective(model, all_positions: bool):
    """``model``'s weights in a model with the other output shape (or ``model`` itself)."""
    returns_sequences = model.get_layer(f"lstm_{len(lstm_layer_sizes(model)) - 1}").return_sequences
    if returns_sequences == all_positions:
        return model
    other = build_model(charset_size(model), lstm_layer_sizes(model), all_positions)
    other.set_weights(model.get_weights())
    return other


def compile_model(model, learning_rate: float = LEARNING_RATE):
    """RMSprop and cross-entropy on integer targets, as the original (which uses one-hot targets)."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    return model


def parameter_count(charset_size: int, lstm_layer_sizes) -> int:
    """Trainable parameters of ``build_model(charset_size, lstm_layer_sizes)``, without building it."""
    total, inputs = 0, charset_size
    for units in lstm_layer_sizes:
        total += 4 * units * (inputs + units + 1)
        inputs = units
    return total + inputs * charset_size + charset_size
