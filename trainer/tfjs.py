"""The original example's models, both ways: TensorFlow.js layers models (``model.json`` + weights).

The original (``yarn train ... --savePath DIR``, tfjs-node's ``model.save('file://DIR')``) writes a
``Sequential`` of LSTM layers and a softmax ``Dense``, its input one-hot ``[sampleLen, charSetSize]``.
It saves no charset: ``TextData`` rebuilds it from the training text in order of first appearance,
iterating JavaScript string code units (``js_charset``). A textgen model's charset is sorted
(``textgen.charset``), so import and export permute the first LSTM's input rows and the softmax's
units between the two orders; nothing else changes.

tf.js's LSTM defaults to ``recurrentActivation: 'hard_sigmoid'``, ``clip(0.2 x + 0.5, 0, 1)``; each
layer's activations are read from ``model.json`` and kept (``trainer.model.ACTIVATIONS``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen.charset import Charset, describe_chars
from trainer.failures import UserError

FORMAT = "layers-model"
GENERATED_BY = "textgen (TensorFlow.js layers format, as tfjs-layers v3.18.0 writes it)"
WEIGHTS_FILE = "weights.bin"
# The LSTM activations textgen reproduces (trainer.model.ACTIVATIONS has their functions).
SUPPORTED_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "softsign")


class TfjsError(UserError, ValueError):
    """A model.json textgen cannot import, or a model or text it cannot export with."""


@dataclass
class Imported:
    model: object  # the Keras model (serving shape), rows and units in the sorted charset's order
    meta: dict  # charset, sample_len, lstm_layer_sizes, lstm_activations, tfjs (what came in)


def js_charset(text: str) -> list[str]:
    """The original's charset of ``text``: its UTF-16 code units in order of first appearance (data.js,
    ``TextData``). A character outside the Basic Multilingual Plane is two code units there; textgen's
    charset holds whole characters, so such a text is refused."""
    wide = sorted({c for c in text if ord(c) > 0xFFFF})
    if wide:
        raise TfjsError(f"the text has {len(wide)} characters outside the Basic Multilingual Plane "
                        f"({describe_chars(''.join(wide))}), which TensorFlow.js splits into two UTF-16 code units "
                        "each; textgen's charset holds whole characters")
    return list(dict.fromkeys(text))


# ---- import -----------------------------------------------------------------------------------

def read_model_json(path: Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TfjsError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TfjsError(f"{path} is not a JSON file: {exc}") from None
    return doc


def weights_bytes(doc: dict, folder: Path) -> bytes:
    """The weights files of ``doc``'s weightsManifest, from the folder of model.json, concatenated in
    the manifest's order."""
    data = []
    for group in _manifest(doc):
        for name in group.get("paths") or []:
            file = Path(folder) / str(name)
            if Path(str(name)).name != name or not file.is_file():
                raise TfjsError(f"the weights file {name!r} named by model.json is missing from {folder}")
            data.append(file.read_bytes())
    return b"".join(data)


def split_weights(doc: dict, data: bytes) -> list[np.ndarray]:
    """The weights of ``doc``'s weightsManifest, in its order, from ``data`` (its files concatenated)."""
    arrays, offset = [], 0
    for group in _manifest(doc):
        for spec in group.get("weights") or []:
            if spec.get("dtype", "float32") != "float32" or "quantization" in spec:
                raise TfjsError(f"weight {spec.get('name')!r} is {'quantized ' if 'quantization' in spec else ''}"
                                f"{spec.get('dtype')}: only float32 weights are supported")
            shape = [int(d) for d in spec["shape"]]
            size = int(np.prod(shape)) * 4
            if offset + size > len(data):
                raise TfjsError(f"the weights hold {len(data):,} bytes; the weights model.json names need "
                                f"{_needed(doc):,} (a short or wrong weights file)")
            arrays.append(np.frombuffer(data, "<f4", count=size // 4, offset=offset).reshape(shape).copy())
            offset += size
    if offset != len(data):
        raise TfjsError(f"the weights hold {len(data):,} bytes; the weights model.json names need {offset:,} "
                        "(a wrong weights file)")
    return arrays


def _needed(doc: dict) -> int:
    return sum(int(np.prod([int(d) for d in spec["shape"]])) * 4 for group in _manifest(doc)
               for spec in group.get("weights") or [])


def parse_topology(doc: dict) -> dict:
    """From model.json: sample_len, charset_size, and per LSTM layer its units and activations."""
    if doc.get("format") not in (None, FORMAT):
        raise TfjsError(f"model.json has format {doc.get('format')!r}: only a layers model ({FORMAT!r}) can be "
                        "imported (a graph model from the converter has no layers to read)")
    topology = doc.get("modelTopology")
    if isinstance(topology, dict) and "model_config" in topology:
        topology = topology["model_config"]
    if not isinstance(topology, dict) or "class_name" not in topology:
        raise TfjsError("model.json has no modelTopology: it is not a TensorFlow.js layers model")
    if topology["class_name"] != "Sequential":
        raise TfjsError(f"the model is a {topology['class_name']!r}; textgen imports the original's Sequential "
                        "of LSTM layers and a softmax Dense layer")
    config = topology.get("config")
    layer_list = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(layer_list, list) or not layer_list:
        raise TfjsError("model.json's Sequential model lists no layers")
    kinds = [layer.get("class_name") for layer in layer_list]
    if kinds and kinds[0] == "InputLayer":
        input_config, layer_list, kinds = layer_list[0].get("config", {}), layer_list[1:], kinds[1:]
    else:
        input_config = (layer_list[0].get("config") or {}) if layer_list else {}
    unsupported = sorted({k for k in kinds if k not in ("LSTM", "Dense")})
    if unsupported or len(kinds) < 2 or kinds[-1] != "Dense" or "Dense" in kinds[:-1]:
        raise TfjsError(f"the model's layers are {', '.join(map(str, kinds))}; textgen imports LSTM layers "
                        "followed by one Dense layer"
                        + (f" (not supported: {', '.join(map(str, unsupported))})" if unsupported else ""))
    shape = input_config.get("batch_input_shape") or input_config.get("batchInputShape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(d, int) for d in shape[1:])):
        raise TfjsError(f"the model's input shape is {shape}; the original's is [null, sampleLen, charSetSize]")
    sample_len, charset_size = shape[1], shape[2]
    lstms = []
    for i, layer in enumerate(layer_list[:-1]):
        c = layer.get("config") or {}
        name = c.get("name", f"layer {i}")
        for key in ("go_backwards", "stateful", "return_state"):
            if c.get(key):
                raise TfjsError(f"LSTM layer {name} has {key} set, which textgen does not support")
        last = i == len(layer_list) - 2
        if bool(c.get("return_sequences")) == last:
            raise TfjsError(f"LSTM layer {name} has return_sequences {c.get('return_sequences')}: every LSTM "
                            "layer but the last must return sequences, the last must not")
        pair = (c.get("activation", "tanh"), c.get("recurrent_activation", "hard_sigmoid"))
        for what in pair:
            if what not in SUPPORTED_ACTIVATIONS:
                raise TfjsError(f"LSTM layer {name} has activation {what!r}; supported: "
                                f"{', '.join(SUPPORTED_ACTIVATIONS)}")
        lstms.append({"units": int(c["units"]), "activations": pair, "use_bias": c.get("use_bias", True)})
    dense = layer_list[-1].get("config") or {}
    if dense.get("activation") != "softmax" or int(dense.get("units", -1)) != charset_size:
        raise TfjsError(f"the last layer must be a softmax Dense of {charset_size} units (the charset), got "
                        f"{dense.get('units')} units with activation {dense.get('activation')!r}")
    return {"sample_len": sample_len, "charset_size": charset_size, "lstms": lstms,
            "dense_bias": dense.get("use_bias", True)}


def import_model(doc: dict, weights: bytes, text: str | None) -> Imported:
    """The tf.js model of ``doc`` (model.json's content) and ``weights`` (its weights files' bytes,
    concatenated) as a textgen model, its charset rebuilt from ``text`` the original's way, or the
    charset a textgen export wrote into the file (``userDefinedMetadata.textgen``), which wins over any
    text. Raises TfjsError."""
    if not isinstance(doc, dict):
        raise TfjsError("model.json holds no JSON object: it is not a TensorFlow.js layers model")
    try:
        return _import(doc, weights, text)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, TfjsError):
            raise
        raise TfjsError(f"model.json is not a layers model textgen can read ({type(exc).__name__}: {exc})") from None


def _import(doc: dict, weights: bytes, text: str | None) -> Imported:
    topo = parse_topology(doc)
    if _has_exported_charset(doc):  # the file's own order: it wins over any text
        order = _exported_charset(doc)
    elif text is None:
        raise TfjsError("give the text the model was trained on: the original saves no charset, and this "
                        "model.json carries none (only a textgen export does)")
    else:
        order = js_charset(text)
    if len(order) != topo["charset_size"]:
        raise TfjsError(f"the text has {len(order)} distinct characters; the model was trained on a text with "
                        f"{topo['charset_size']} (its output size): import it with the text it was trained on")
    weights = split_weights(doc, weights)
    expected = sum(2 + lstm["use_bias"] for lstm in topo["lstms"]) + 1 + topo["dense_bias"]
    if len(weights) != expected:
        raise TfjsError(f"model.json's weightsManifest lists {len(weights)} weights; its layers have {expected}")
    charset = Charset("".join(order))
    perm = np.array([order.index(c) for c in charset.chars])  # sorted position -> the original's index
    sizes = [lstm["units"] for lstm in topo["lstms"]]
    activations = [lstm["activations"] for lstm in topo["lstms"]]
    it = iter(weights)
    layer_weights, inputs = [], len(charset)
    for i, lstm in enumerate(topo["lstms"]):
        units = lstm["units"]
        kernel, recurrent = next(it), next(it)
        bias = next(it) if lstm["use_bias"] else np.zeros(4 * units, np.float32)
        _expect_shape(f"LSTM layer {i + 1}'s kernel", kernel, (inputs, 4 * units))
        _expect_shape(f"LSTM layer {i + 1}'s recurrent kernel", recurrent, (units, 4 * units))
        _expect_shape(f"LSTM layer {i + 1}'s bias", bias, (4 * units,))
        layer_weights.append([kernel[perm] if i == 0 else kernel, recurrent, bias])
        inputs = units
    kernel = next(it)
    bias = next(it) if topo["dense_bias"] else np.zeros(len(charset), np.float32)
    _expect_shape("the Dense layer's kernel", kernel, (inputs, len(charset)))
    _expect_shape("the Dense layer's bias", bias, (len(charset),))
    from trainer.model import build_model  # Keras, once the files are known to be good

    model = build_model(len(charset), sizes, activations=activations)
    for i, lstm_weights in enumerate(layer_weights):
        model.get_layer(f"lstm_{i}").set_weights(lstm_weights)
    model.get_layer("next_char").set_weights([kernel[:, perm], bias[perm]])
    meta = {"charset": charset.chars, "sample_len": topo["sample_len"], "lstm_layer_sizes": sizes,
            "lstm_activations": [list(a) for a in activations], "objective": "last",
            "tfjs": {"generated_by": doc.get("generatedBy"), "charset_order": "".join(order)}}
    return Imported(model, meta)


def _manifest(doc: dict) -> list:
    manifest = doc.get("weightsManifest")
    if not isinstance(manifest, list):
        raise TfjsError("model.json has no weightsManifest: it names no weights files")
    return manifest


def _expect_shape(what: str, array: np.ndarray, shape: tuple) -> None:
    if tuple(array.shape) != tuple(shape):
        raise TfjsError(f"{what} has shape {list(array.shape)}, expected {list(shape)}")


def read_files(model_json: Path) -> tuple[dict, bytes]:
    """model.json's content and its weights files' bytes, from the folder it is in."""
    doc = read_model_json(model_json)
    if not isinstance(doc, dict):
        raise TfjsError(f"{model_json} holds no JSON object: it is not a TensorFlow.js layers model")
    return doc, weights_bytes(doc, Path(model_json).parent)


def publish_imported(doc: dict, weights: bytes, corpus_spec: str | None, name: str,
                     models_dir: Path) -> tuple[Path, int]:
    """Import a tf.js model (``import_model``) with the text of ``corpus_spec`` (a built-in corpus, an
    upload id or a file; None: a textgen export's own charset) and publish it as the next version of
    ``name``; nothing is written when it fails."""
    from textgen import bundle, corpus

    bundle.validate_name(name)
    source = corpus.load_corpus(corpus_spec) if corpus_spec is not None else None
    imported = import_model(doc, weights, source.text if source is not None else None)
    from trainer import export

    text = source.text if source is not None else ""
    meta = {**imported.meta, "training": None, "epochs": 0, "history": [],
            "corpus": ({"name": source.name, "sha256": source.sha256, "characters": len(source.text)}
                       if source is not None else {"name": "", "sha256": "", "characters": 0}),
            "seed_slices": _seed_slices(text, imported.meta) if text else []}
    return export.publish(imported.model, meta, Path(models_dir), name)


def _has_exported_charset(doc: dict) -> bool:
    metadata = doc.get("userDefinedMetadata")
    return isinstance(metadata, dict) and isinstance(metadata.get("textgen"), dict) and "charset" in metadata["textgen"]


def _exported_charset(doc: dict) -> list[str]:
    """The charset a textgen export recorded in model.json, in the file's order."""
    chars = doc["userDefinedMetadata"]["textgen"]["charset"]
    if not (isinstance(chars, list) and chars and all(isinstance(c, str) and len(c) == 1 for c in chars)
            and len(set(chars)) == len(chars)):
        raise TfjsError("model.json's userDefinedMetadata.textgen.charset is not a list of distinct characters")
    return chars


def _seed_slices(text: str, meta: dict) -> list[str]:
    """Four slices of the text, a window long each, for a prompt-less generation (as trained models have)."""
    n = int(meta["sample_len"])
    if len(text) <= n:
        return [text]
    return [text[i : i + n] for i in np.linspace(0, len(text) - n - 1, 4).astype(int)]


# ---- export -----------------------------------------------------------------------------------

def charset_order(meta: dict, charset_text: str | None = None) -> list[str]:
    """The exported file's charset: the model's (sorted), or the original's order for ``charset_text``,
    whose characters must be exactly the model's."""
    chars = Charset(meta["charset"]).chars
    if charset_text is None:
        return list(chars)
    order = js_charset(charset_text)
    extra, lacking = set(order) - set(chars), set(chars) - set(order)
    if extra or lacking:
        said = [f"the text has {describe_chars(''.join(sorted(extra)))}, which the model lacks" if extra else "",
                f"the model has {describe_chars(''.join(sorted(lacking)))}, which the text lacks" if lacking else ""]
        raise TfjsError("the model's charset is not the text's: " + "; ".join(part for part in said if part)
                        + " (export with --charset-order the text the model was trained on, or without it)")
    return order


def export_model(model, meta: dict, out: Path, charset_text: str | None = None) -> Path:
    """Write ``model`` as ``out/model.json`` + ``out/weights.bin``, as tfjs-node's ``model.save`` does.

    The units follow the model's sorted charset, or with ``charset_text`` the original's
    first-appearance order for that text (so the original's ``yarn gen CORPUS model.json`` decodes them
    right); that text's characters must be exactly the model's. Returns the model.json path.
    """
    from trainer.model import lstm_activations, lstm_layer_sizes

    charset = Charset(meta["charset"])
    order = charset_order(meta, charset_text)
    perm = np.array([charset.chars.index(c) for c in order])  # the file's index -> the model's
    sizes = lstm_layer_sizes(model)
    activations = lstm_activations(model) or [("tanh", "sigmoid")] * len(sizes)
    sample_len = int(meta["sample_len"])
    layers, specs, blobs = [], [], []
    for i, units in enumerate(sizes):
        kernel, recurrent, bias = model.get_layer(f"lstm_{i}").get_weights()
        if i == 0:
            kernel = kernel[perm]
        name = f"lstm_LSTM{i + 1}"
        config = {"name": name, "trainable": True}
        if i == 0:
            config.update(batch_input_shape=[None, sample_len, len(order)], dtype="float32")
        config.update(units=units, activation=activations[i][0], recurrent_activation=activations[i][1],
                      use_bias=True, unit_forget_bias=None, dropout=0, recurrent_dropout=0, implementation=None,
                      return_sequences=i < len(sizes) - 1, return_state=False, go_backwards=False, stateful=False,
                      unroll=False)
        layers.append({"class_name": "LSTM", "config": config})
        for suffix, array in (("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)):
            specs.append({"name": f"{name}/{suffix}", "shape": list(array.shape), "dtype": "float32"})
            blobs.append(array)
    kernel, bias = model.get_layer("next_char").get_weights()
    layers.append({"class_name": "Dense", "config": {"units": len(order), "activation": "softmax", "use_bias": True,
                                                     "name": "dense_Dense1", "trainable": True}})
    for suffix, array in (("kernel", kernel[:, perm]), ("bias", bias[perm])):
        specs.append({"name": f"dense_Dense1/{suffix}", "shape": list(array.shape), "dtype": "float32"})
        blobs.append(array)
    doc = {
        "modelTopology": {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layers},
                          "keras_version": "tfjs-layers 3.18.0", "backend": "tensor_flow.js"},
        "weightsManifest": [{"paths": [WEIGHTS_FILE], "weights": specs}],
        "format": FORMAT, "generatedBy": GENERATED_BY, "convertedBy": None,
        "userDefinedMetadata": {"textgen": {"charset": order, "sample_len": sample_len,
                                            "name": meta.get("name"), "version": meta.get("version")}},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHTS_FILE).write_bytes(b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in blobs))
    (out / "model.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return out / "model.json"
