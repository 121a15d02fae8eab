"""The character-level LSTM: ids -> one-hot -> stacked LSTMs -> softmax over the charset.

As the original example: input a window of ``sample_len`` character ids ``[batch, sample_len]``,
output next-character probabilities ``[batch, charset_size]``. The model takes windows of any length
(the input's time axis is ``None``) so that a prompt shorter than ``sample_len`` is a shorter window,
exactly as the original would see it. With ``all_positions`` the last LSTM returns sequences and the
output is ``[batch, time, charset_size]``: the same weights, trained on every position.

Only Keras' built-in layers, so a bundle's ``model.keras`` loads in stock Keras (safe mode on) in a
process that never imported this project. The trainer's own model may use ``SequenceLSTM``, Keras'
LSTM trained faster on a CPU (``trainer.sequence_lstm``); the serving model never does.
"""
from __future__ import annotations

import numpy as np

from trainer.tf import keras  # first: TensorFlow, quietly
from keras import layers, ops  # noqa: E402

from textgen.options import LSTM_LAYER_SIZES, TrainConfig
from trainer.sequence_lstm import SequenceLSTM

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic


@keras.saving.register_keras_serializable(package="textgen", name="tfjs_hard_sigmoid")
def tfjs_hard_sigmoid(x):
    """TensorFlow.js's ``hardSigmoid`` (its LSTM's default recurrent activation), as tf.js computes it:
    ``clip(0.2 x + 0.5, 0, 1)``; Keras 3's ``hard_sigmoid`` is another function (``relu6(x + 3) / 6``)."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


# The LSTM activations a model may have, by their TensorFlow.js (and Keras 2) names.
ACTIVATIONS = {"tanh": keras.activations.tanh, "sigmoid": keras.activations.sigmoid,
               "hard_sigmoid": tfjs_hard_sigmoid, "relu": keras.activations.relu,
               "linear": keras.activations.linear, "softsign": keras.activations.softsign}
DEFAULT_ACTIVATIONS = ("tanh", "sigmoid")  # (activation, recurrent activation): Keras' and cuDNN's


def build_model(charset_size: int, lstm_layer_sizes=LSTM_LAYER_SIZES, all_positions: bool = False,
                dropout: float = 0.0, precision: str = "float32", sequence_kernel: bool = False,
                activations=None):
    """A fresh model; layer names are fixed so weights move between the two output shapes.

    ``dropout`` > 0 puts a Dropout layer after each LSTM, the last included (before the softmax;
    active in training only; it has no weights, so the serving model simply leaves it out). ``precision="bfloat16"`` computes the LSTMs
    in bfloat16 with float32 weights (Keras' mixed_bfloat16); the softmax stays float32.
    ``sequence_kernel``: ``SequenceLSTM`` layers instead of Keras' LSTM (the same weights and results;
    for training only). ``activations``: per LSTM layer, (activation, recurrent activation) by their
    names in ``ACTIVATIONS`` (an imported TensorFlow.js model's); None: Keras' defaults.
    """
    lstm = SequenceLSTM if sequence_kernel else layers.LSTM
    lstm_dtype = "mixed_bfloat16" if precision == "bfloat16" else None
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    # One-hot as a frozen identity embedding: a built-in layer that takes [batch, time] ids of any
    # length, also inside a traced function (CategoryEncoding cannot: it tests the time axis's size in
    # Python, which a [None, None] signature does not have).
    x = layers.Embedding(charset_size, charset_size, embeddings_initializer="identity", trainable=False,
                         name="one_hot")(ids)
    for i, units in enumerate(lstm_layer_sizes):
        last = i == len(lstm_layer_sizes) - 1
        # Default activations, no recurrent dropout, no mask: the conditions for the cuDNN kernel on a
        # GPU. Dropout between layers acts on the outputs only, which keeps them.
        activation, recurrent = activations[i] if activations else DEFAULT_ACTIVATIONS
        x = lstm(units, return_sequences=all_positions or not last, name=f"lstm_{i}", dtype=lstm_dtype,
                 activation=ACTIVATIONS[activation], recurrent_activation=ACTIVATIONS[recurrent])(x)
        if dropout > 0:
            x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
    probs = layers.Dense(charset_size, activation="softmax", name="next_char", dtype="float32")(x)
    return keras.Model(ids, probs, name="char_lstm")


def data_parallel(model, parts: int):
    """``model`` applied to ``parts`` slices of each batch side by side, as one train step.

    The slices are independent branches of one graph, which TensorFlow runs on separate threads: on
    2 CPU cores, two branches of one thread each trained 1.28x the examples per second of one branch
    with two threads per op at batch 128, where each small matmul of an LSTM step is split between
    threads; at batch 32 and 64, 1.03x to 1.08x in the trainer's loop (bench/results/train_recipes.md).
    Takes a list of ``parts`` input arrays and gives a list of outputs;
    its loss is the mean of the slices' losses, so training it is training ``model`` on the whole
    batch. It shares ``model``'s layers and optimizer (compile it with ``compile_data_parallel``).
    """
    inputs = [keras.Input(shape=(None,), dtype="int32", name=f"ids_{i}") for i in range(parts)]
    return keras.Model(inputs, [model(ids) for ids in inputs], name=f"{model.name}_x{parts}")


def compile_data_parallel(wrapper, model):
    """Compile ``data_parallel(model, parts)`` with ``model``'s optimizer and loss."""
    parts = len(wrapper.inputs)
    wrapper.compile(optimizer=model.optimizer, loss=[keras.losses.SparseCategoricalCrossentropy()] * parts,
                    loss_weights=[1.0 / parts] * parts)
    return wrapper


def resolve_precision(precision: str) -> str:
    """``"auto"`` -> ``"bfloat16"`` on a machine without a GPU whose CPU does bfloat16 natively, else
    ``"float32"`` (emulated bfloat16 is slower, and the GPU path is measured in float32 only)."""
    if precision != "auto":
        return precision
    from trainer.tf import tf

    if tf.config.list_physical_devices("GPU"):
        return "float32"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "float32"
    return "bfloat16" if any(flag in flags for flag in BF16_CPU_FLAGS) else "float32"


def lstm_layer_sizes(model) -> list[int]:
    return [layer.units for layer in model.layers if isinstance(layer, layers.LSTM)]


def lstm_activations(model) -> list[tuple[str, str]] | None:
    """Each LSTM layer's (activation, recurrent activation) names, or None when all are Keras' defaults."""
    names = {fn: name for name, fn in ACTIVATIONS.items()}
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.LSTM):
            pair = (layer.cell.activation, layer.cell.recurrent_activation)
            if any(fn not in names for fn in pair):
                raise ValueError(f"layer {layer.name} has an activation textgen does not know: {pair}")
            found.append((names[pair[0]], names[pair[1]]))
    return None if all(pair == DEFAULT_ACTIVATIONS for pair in found) else found


def charset_size(model) -> int:
    return int(model.get_layer("next_char").units)


def with_objective(model, all_positions: bool, dropout: float = 0.0, precision: str = "float32",
                   sequence_kernel: bool = False):
    """``model``'s weights in a model of the given shape (or ``model`` itself when it has that shape).

    ``with_objective(model, all_positions=False)`` is the serving model: float32, no dropout, Keras'
    own LSTM layers.
    """
    sizes = lstm_layer_sizes(model)
    returns_sequences = model.get_layer(f"lstm_{len(sizes) - 1}").return_sequences
    has_dropout = any(isinstance(layer, layers.Dropout) for layer in model.layers)
    in_bfloat16 = model.get_layer("lstm_0").dtype_policy.compute_dtype == "bfloat16"
    has_sequence_kernel = isinstance(model.get_layer("lstm_0"), SequenceLSTM)
    if ((returns_sequences, has_dropout, in_bfloat16, has_sequence_kernel)
            == (all_positions, dropout > 0, precision == "bfloat16", sequence_kernel)):
        if not has_dropout or all(layer.rate == dropout for layer in model.layers if isinstance(layer, layers.Dropout)):
            return model
    other = build_model(charset_size(model), sizes, all_positions, dropout, precision, sequence_kernel,
                        lstm_activations(model))
    other.set_weights(model.get_weights())
    return other


NEW_CHAR_LOGIT_GAP = 20.0  # a new character's first logit, below the least "most likely" logit seen


def grow_charset(model, old_chars: str, new_chars: str, probe_ids: np.ndarray):
    """``model`` (serving shape) for the larger charset ``new_chars`` (sorted, a superset of
    ``old_chars``), every learned weight kept.

    A new character's input row (its row of the first LSTM's kernel) is the mean of the old rows: it
    enters as an average character, not as silence. Its output unit has a zero kernel column and a
    bias ``NEW_CHAR_LOGIT_GAP`` nats below the smallest top logit the model gives on ``probe_ids``
    (int windows ``[n, time]`` of the new text, in ``new_chars`` ids): its probability starts at most
    e^-20 (2e-9) of the most likely character's in those contexts, so the old characters'
    probabilities, and text sampled from them, are what they were; the zero kernel column lets
    training raise it quickly where it belongs (bench/results/transfer.md measures both).
    """
    sizes = lstm_layer_sizes(model)
    place = np.array([new_chars.index(c) for c in old_chars])
    added = np.array([i for i, c in enumerate(new_chars) if c not in set(old_chars)], dtype=int)
    grown = build_model(len(new_chars), sizes, activations=lstm_activations(model))
    for i in range(len(sizes)):
        weights = model.get_layer(f"lstm_{i}").get_weights()
        if i == 0:
            kernel = np.empty((len(new_chars), weights[0].shape[1]), weights[0].dtype)
            kernel[place] = weights[0]
            kernel[added] = weights[0].mean(axis=0)
            weights = [kernel, *weights[1:]]
        grown.get_layer(f"lstm_{i}").set_weights(weights)
    old_kernel, old_bias = model.get_layer("next_char").get_weights()
    kernel = np.zeros((old_kernel.shape[0], len(new_chars)), old_kernel.dtype)
    kernel[:, place] = old_kernel
    bias = np.zeros(len(new_chars), old_bias.dtype)
    bias[place] = old_bias
    top = keras.Model(grown.inputs, grown.get_layer(f"lstm_{len(sizes) - 1}").output)
    hidden = top.predict(probe_ids, batch_size=512, verbose=0)
    least_top_logit = float(np.min(np.max(hidden @ old_kernel + old_bias, axis=-1)))
    bias[added] = least_top_logit - NEW_CHAR_LOGIT_GAP
    grown.get_layer("next_char").set_weights([kernel, bias])
    return grown


def calibrate_new_chars(model, new_ids, frequencies, probe_ids) -> None:
    """Set the output bias of each character in ``new_ids`` (just added by ``grow_charset``, its kernel
    column still zero) so that its mean probability over the windows ``probe_ids`` is its frequency
    in the text to train on (``frequencies``, by id): fine-tuning's first step. ``grow_charset`` alone
    leaves them about e^-20 below the old characters; from there the finetune recipe's rate needs
    thousands of steps to reach them (bench/results/transfer.md)."""
    sizes = lstm_layer_sizes(model)
    kernel, bias = model.get_layer("next_char").get_weights()
    new_ids = np.asarray(new_ids, dtype=int)
    old = np.setdiff1d(np.arange(len(bias)), new_ids)
    top = keras.Model(model.inputs, model.get_layer(f"lstm_{len(sizes) - 1}").output)
    logits = top.predict(probe_ids, batch_size=512, verbose=0) @ kernel[:, old] + bias[old]
    peak = logits.max(axis=-1, keepdims=True)
    log_z = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=-1))  # log of each window's old softmax sum
    # mean over windows of e^b / Z = frequency  =>  b = log(frequency) - log(mean(e^-log_z))
    neg = -log_z
    log_mean_inverse_z = neg.max() + np.log(np.mean(np.exp(neg - neg.max())))
    bias[new_ids] = np.log(np.maximum(np.asarray(frequencies)[new_ids], 1e-6)) - log_mean_inverse_z
    model.get_layer("next_char").set_weights([kernel, bias])


def upgraded(model):
    """A model loaded from a bundle written before the one-hot was a built-in layer, rebuilt with
    built-in layers only and the same LSTM and softmax weights."""
    if isinstance(model.get_layer("one_hot"), layers.Embedding):
        return model
    sizes = lstm_layer_sizes(model)
    returns_sequences = model.get_layer(f"lstm_{len(sizes) - 1}").return_sequences
    rebuilt = build_model(charset_size(model), sizes, all_positions=returns_sequences,
                          activations=lstm_activations(model))
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


def make_optimizer(config: TrainConfig):
    """The optimizer ``config`` names, at its learning rate; ``clip_norm`` > 0 clips the global norm
    of each step's gradients.

    The learning rate is a variable the training loop sets before each step (its schedule)."""
    clip = {"global_clipnorm": config.clip_norm} if config.clip_norm > 0 else {}
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=config.learning_rate, **clip)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate, **clip)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay, **clip)
    raise ValueError(f"optimizer must be one of rmsprop, adam, adamw, got {config.optimizer!r}")


def compile_model(model, config: TrainConfig | None = None):
    """Cross-entropy on integer targets (the original uses one-hot targets) with ``config``'s optimizer;
    the default is the original's: RMSprop at 1e-2, no clipping."""
    model.compile(optimizer=make_optimizer(config or TrainConfig()), loss=keras.losses.SparseCategoricalCrossentropy())
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
