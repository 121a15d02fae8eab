"""The character-level LSTM: ids -> one-hot -> stacked LSTMs -> softmax over the charset.

As the original example: input a window of ``sample_len`` character ids ``[batch, sample_len]``,
output next-character probabilities ``[batch, charset_size]``. The model takes windows of any length
(the input's time axis is ``None``) so that a prompt shorter than ``sample_len`` is a shorter window,
exactly as the original would see it. With ``all_positions`` the last LSTM returns sequences and the
output is ``[batch, time, charset_size]``: the same weights, trained on every position.

Only Keras' built-in layers, so a bundle's ``model.keras`` loads in stock Keras (safe mode on) in a
process that never imported this project.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from textgen.options import LEARNING_RATE, LSTM_LAYER_SIZES


def build_model(charset_size: int, lstm_layer_sizes=LSTM_LAYER_SIZES, all_positions: bool = False):
    """A fresh model; layer names are fixed so weights move between the two output shapes."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    # One-hot as a frozen identity embedding: a built-in layer that takes [batch, time] ids of any
    # length, also inside a traced function (CategoryEncoding cannot: it tests the time axis's size in
    # Python, which a [None, None] signature does not have).
    x = layers.Embedding(charset_size, charset_size, embeddings_initializer="identity", trainable=False,
                         name="one_hot")(ids)
    for i, units in enumerate(lstm_layer_sizes):
        last = i == len(lstm_layer_sizes) - 1
        # Default activations, no dropout, no mask: the conditions for the cuDNN kernel on a GPU.
        x = layers.LSTM(units, return_sequences=all_positions or not last, name=f"lstm_{i}")(x)
    probs = layers.Dense(charset_size, activation="softmax", name="next_char")(x)
    return keras.Model(ids, probs, name="char_lstm")


def lstm_layer_sizes(model) -> list[int]:
    return [layer.units for layer in model.layers if isinstance(layer, layers.LSTM)]


def charset_size(model) -> int:
    return int(model.get_layer("next_char").units)


def with_objective(model, all_positions: bool):
    """``model``'s weights in a model with the other output shape (or ``model`` itself)."""
    returns_sequences = model.get_layer(f"lstm_{len(lstm_layer_sizes(model)) - 1}").return_sequences
    if returns_sequences == all_positions:
        return model
    other = build_model(charset_size(model), lstm_layer_sizes(model), all_positions)
    other.set_weights(model.get_weights())
    return other


def upgraded(model):
    """A model loaded from a bundle written before the one-hot was a built-in layer, rebuilt with
    built-in layers only and the same LSTM and softmax weights."""
    if isinstance(model.get_layer("one_hot"), layers.Embedding):
        return model
    sizes = lstm_layer_sizes(model)
    returns_sequences = model.get_layer(f"lstm_{len(sizes) - 1}").return_sequences
    rebuilt = build_model(charset_size(model), sizes, all_positions=returns_sequences)
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


def compile_model(model, learning_rate: float = LEARNING_RATE):
    """RMSprop and cross-entropy on integer targets, as the original (which uses one-hot targets)."""
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    return model


@keras.saving.register_keras_serializable(package="textgen")
class OneHot(layers.Layer):
    """The one-hot layer of bundles written before the built-in one took its place; kept
    registered so their ``model.keras`` still loads (``upgraded`` then rebuilds the model)."""

    def __init__(self, depth: int, **kwargs):
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, ids):
        return ops.one_hot(ops.cast(ids, "int32"), self.depth)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.depth)

    def get_config(self):
        return {**super().get_config(), "depth": self.depth}
