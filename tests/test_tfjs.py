"""The original's model.json, both ways, against the real @tensorflow/tfjs 3.18.0 run by Node (issue 26).

tests/tfjs/original.js trains, predicts and decodes greedily as the original example does, with the
npm package the original pins (deploy/local/install-tfjs.sh installs it, as install-chromium.sh
installs Chromium for the browser tests). A model trained there is imported and served here; a model
trained here is exported and loaded there; both must agree to 1e-5 and give the same greedy text.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client.api import Client, TextgenError
from tests.conftest import corpus_text
from tests.server_helpers import MODELS, copy_models, running_server
from textgen.charset import Charset
from trainer import tfjs

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL_JS = ROOT / "tests" / "tfjs" / "original.js"
SAMPLE_LEN = 12
TOLERANCE = 1e-5


def node(*args) -> dict:
    done = subprocess.run(["node", str(ORIGINAL_JS), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def cli(data_dir: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEXTGEN_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def tfjs_installed():
    done = subprocess.run([str(ROOT / "deploy" / "local" / "install-tfjs.sh")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def js_model(tfjs_installed, tmp_path_factory):
    """A two-layer model trained by tf.js the original's way (default tf.layers.lstm: hard sigmoid gates)."""
    folder = tmp_path_factory.mktemp("tfjs")
    text_file = folder / "text.txt"
    text = corpus_text("tinyshakespeare", 6000)
    text_file.write_text(text, encoding="utf-8")
    node("train", "--text", text_file, "--out", folder / "model", "--sample-len", SAMPLE_LEN, "--layers", "24,16",
         "--epochs", 3, "--examples", 600, "--batch-size", 64, "--learning-rate", 0.01, "--seed", 7)
    return {"text": text, "text_file": text_file, "model_json": folder / "model" / "model.json", "folder": folder}


@pytest.fixture(scope="module")
def served(js_model, trained_bundles, tmp_path_factory):
    """A server with the shared small models and the tf.js model imported by the trainer CLI as js-import."""
    data_dir = tmp_path_factory.mktemp("data")
    copy_models(trained_bundles, data_dir)
    done = cli(data_dir, "import-tfjs", js_model["text_file"], js_model["model_json"], "--name", "js-import")
    assert done.returncode == 0, done.stderr
    assert "imported" in done.stderr and "js-import version 1" in done.stderr
    with running_server(data_dir) as server:
        with Client(f"127.0.0.1:{server.port}") as client:
            yield {"server": server, "client": client, "data_dir": data_dir}


def windows(text: str, n: int, every: int = 211) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text) - n - 1, every)]


def test_the_original_model_json_reads_as_tfjs_wrote_it(js_model):
    doc = json.loads(js_model["model_json"].read_text())
    layers = doc["modelTopology"]["config"]["layers"]
    assert [layer["class_name"] for layer in layers] == ["LSTM", "LSTM", "Dense"]
    assert [layer["config"]["recurrent_activation"] for layer in layers[:2]] == ["hard_sigmoid", "hard_sigmoid"]
    topology = tfjs.parse_topology(doc)
    assert topology["sample_len"] == SAMPLE_LEN and topology["charset_size"] == len(set(js_model["text"]))
    assert tfjs.js_charset("hello, world") == list("helo, wrd")  # first appearances, as data.js builds it


def test_a_tfjs_model_imported_and_served_gives_tfjs_probabilities_and_greedy_text(js_model, served):
    text, client = js_model["text"], served["client"]
    info = client.get_model("js-import")
    assert (info.sample_len, list(info.lstm_layer_sizes), info.charset_size) == (SAMPLE_LEN, [24, 16], len(set(text)))
    # Every next-character probability of a stretch of text, from tf.js's model.predict...
    stretch = text[1000:1400]
    wins = windows(stretch, SAMPLE_LEN, every=1)
    (js_model["folder"] / "w.json").write_text(json.dumps(wins))
    theirs = node("predict", "--model", js_model["model_json"], "--text", js_model["text_file"],
                  "--windows", js_model["folder"] / "w.json")
    order = theirs["charset"]
    expected = [theirs["probs"][i][order.index(stretch[i + SAMPLE_LEN])] for i in range(len(wins))]
    # ...equals what the server scores each character at, from the same window.
    scored = client.score("js-import", stretch[: SAMPLE_LEN + len(wins)], per_character=True)
    served_probs = np.exp(np.array(scored.logprobs[SAMPLE_LEN - 1 :]))
    np.testing.assert_allclose(served_probs, expected, atol=TOLERANCE, rtol=0)
    # The whole distribution, from the served bundle's own predict function.
    import tensorflow as tf

    bundle = tf.saved_model.load(str(served["data_dir"] / "models" / "js-import" / "1" / "saved_model"))
    charset = Charset(info.charset)
    ids = tf.constant(np.stack([charset.encode(w) for w in wins]))
    ours = bundle.predict(ids)["probs"].numpy()[:, [charset.chars.index(c) for c in order]]
    np.testing.assert_allclose(ours, np.array(theirs["probs"]), atol=TOLERANCE, rtol=0)
    # Greedy text: tf.js's own predict loop, and the server's stream at temperature 0.
    seed_text = text[2000 : 2000 + SAMPLE_LEN]
    js_text = node("greedy", "--model", js_model["model_json"], "--text", js_model["text_file"],
                   "--seed-text", seed_text, "--length", 150)["text"]
    assert client.generate("js-import", prompt=seed_text, length=150, temperature=0).text == js_text


def test_a_textgen_model_exported_loads_in_tfjs_with_our_probabilities_and_greedy_text(
        js_model, served, shakespeare_text, tmp_path):
    client = served["client"]
    text_file = tmp_path / "shakespeare.txt"
    text_file.write_text(shakespeare_text, encoding="utf-8")
    uploaded = client.upload_corpus(text_file)
    out = tmp_path / "export"
    path = client.export_tfjs(MODELS["two"], out, corpus_id=uploaded.id)  # the original's order for the text
    doc = json.loads(path.read_text())
    assert doc["format"] == "layers-model" and (out / "weights.bin").stat().st_size == 4 * sum(
        int(np.prod(w["shape"])) for w in doc["weightsManifest"][0]["weights"])
    info = client.get_model(MODELS["two"])
    wins = windows(shakespeare_text[5000:9000], info.sample_len, every=97)
    (tmp_path / "w.json").write_text(json.dumps(wins))
    theirs = node("predict", "--model", path, "--text", text_file, "--windows", tmp_path / "w.json")
    assert theirs["charset"] == tfjs.js_charset(shakespeare_text)
    import tensorflow as tf

    bundle = tf.saved_model.load(str(served["data_dir"] / "models" / MODELS["two"] / "1" / "saved_model"))
    charset = Charset(info.charset)
    ours = bundle.predict(tf.constant(np.stack([charset.encode(w) for w in wins])))["probs"].numpy()
    ours = ours[:, [charset.chars.index(c) for c in theirs["charset"]]]
    np.testing.assert_allclose(np.array(theirs["probs"]), ours, atol=TOLERANCE, rtol=0)
    seed_text = shakespeare_text[3000 : 3000 + info.sample_len]
    js_text = node("greedy", "--model", path, "--text", text_file, "--seed-text", seed_text, "--length", 150)["text"]
    assert js_text == client.generate(MODELS["two"], prompt=seed_text, length=150, temperature=0).text
    # The trainer's command line writes the same files.
    done = cli(served["data_dir"], "export-tfjs", f"{MODELS['two']}:1", "--out", tmp_path / "cli",
               "--charset-order", text_file)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli" / "weights.bin").read_bytes() == (out / "weights.bin").read_bytes()


def test_an_imported_model_through_the_api_is_served_as_soon_as_the_call_returns(js_model, served):
    client = served["client"]
    uploaded = client.upload_corpus(js_model["text_file"])
    done = client.import_tfjs(js_model["model_json"], corpus_id=uploaded.id, model_name="js-api")
    assert (done.model_name, done.model_version, done.sample_len) == ("js-api", 1, SAMPLE_LEN)
    seed_text = js_model["text"][:SAMPLE_LEN]
    assert (client.generate("js-api", prompt=seed_text, length=80, temperature=0).text
            == client.generate("js-import", prompt=seed_text, length=80, temperature=0).text)


def bad_model_files(js_model, root: Path) -> dict[str, tuple[Path, str]]:
    """Broken copies of the tf.js model, each with the words its error must say."""
    doc = json.loads(js_model["model_json"].read_text())
    weights = (js_model["model_json"].parent / "weights.bin").read_bytes()
    cases = {}

    def case(name, document, data, says):
        folder = root / name
        folder.mkdir()
        (folder / "model.json").write_text(json.dumps(document) if not isinstance(document, str) else document)
        if data is not None:
            (folder / "weights.bin").write_bytes(data)
        cases[name] = (folder / "model.json", says)

    case("graph-model", {**doc, "format": "graph-model"}, weights, "only a layers model")
    embedding = json.loads(json.dumps(doc))
    embedding["modelTopology"]["config"]["layers"].insert(0, {"class_name": "Embedding", "config": {"name": "e"}})
    case("embedding", embedding, weights, "not supported: Embedding")
    gru = json.loads(json.dumps(doc))
    gru["modelTopology"]["config"]["layers"][1]["class_name"] = "GRU"
    case("gru", gru, weights, "not supported: GRU")
    case("missing-weights", doc, None, "'weights.bin' named by model.json is missing")
    case("short-weights", doc, weights[:-40], "short or wrong weights file")
    case("not-json", "{ this is not json", weights, "is not a JSON file")
    return cases


def test_bad_model_json_files_are_refused_with_one_line_and_nothing_is_written(js_model, tmp_path):
    models_dir = tmp_path / "data" / "models"
    cases = bad_model_files(js_model, tmp_path)
    for name, (model_json, says) in cases.items():
        with pytest.raises(tfjs.TfjsError) as err:
            tfjs.publish_imported(*tfjs.read_files(model_json), str(js_model["text_file"]), name, models_dir)
        assert says in str(err.value) and "\n" not in str(err.value), (name, err.value)
    other = tmp_path / "other.txt"
    other.write_text(corpus_text("nietzsche", 6000), encoding="utf-8")
    # The command line: one line on stderr, exit 1 (a trainer process, so only two of the cases).
    for args, says in (((js_model["text_file"], cases["graph-model"][0]), "only a layers model"),
                       ((other, js_model["model_json"]), "import it with the text it was trained on")):
        done = cli(tmp_path / "data", "import-tfjs", *args, "--name", "bad")
        assert done.returncode == 1 and done.stderr.startswith("error: ") and says in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
    assert not models_dir.exists() or not any(models_dir.iterdir())


def test_bad_imports_and_exports_through_the_api_name_the_problem(js_model, served, tmp_path):
    client = served["client"]
    before = sorted(p.name for p in (served["data_dir"] / "models").iterdir())
    uploaded = client.upload_corpus(js_model["text_file"])
    for name, (model_json, says) in bad_model_files(js_model, tmp_path).items():
        if name == "missing-weights":
            continue  # the client itself refuses: it has no file to send
        with pytest.raises(TextgenError) as err:
            client.import_tfjs(model_json, corpus_id=uploaded.id, model_name=name)
        assert err.value.code == "INVALID_ARGUMENT", (name, err.value)
    with pytest.raises(TextgenError, match="model_name is required"):
        client.import_tfjs(js_model["model_json"], corpus_id=uploaded.id)
    nietzsche = tmp_path / "nietzsche.txt"
    nietzsche.write_text(corpus_text("nietzsche", 6000), encoding="utf-8")
    wrong = client.upload_corpus(nietzsche)
    with pytest.raises(TextgenError) as err:
        client.import_tfjs(js_model["model_json"], corpus_id=wrong.id, model_name="wrong-text")
    assert err.value.code == "INVALID_ARGUMENT" and "distinct characters" in err.value.message
    with pytest.raises(TextgenError) as err:
        client.export_tfjs(MODELS["one"], tmp_path / "x", corpus_id=wrong.id)
    assert err.value.code == "INVALID_ARGUMENT" and "the model's charset is not the text's" in err.value.message
    assert not (tmp_path / "x").exists()
    with pytest.raises(TextgenError) as err:
        client.export_tfjs("no-such-model", tmp_path / "y")
    assert err.value.code == "NOT_FOUND"
    assert sorted(p.name for p in (served["data_dir"] / "models").iterdir()) == before


def test_any_json_as_model_json_is_refused_as_a_tfjs_error_never_a_crash(js_model):
    """Random JSON values, and the real model.json with random parts replaced: TfjsError or a model."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    real = json.loads(js_model["model_json"].read_text())
    weights = (js_model["model_json"].parent / "weights.bin").read_bytes()
    leaves = st.none() | st.booleans() | st.integers(-3, 100) | st.text(max_size=8) | st.floats(allow_nan=False)
    values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["class_name", "config", "layers", "units", "batch_input_shape", "weightsManifest",
                         "paths", "weights", "shape", "dtype", "format", "modelTopology", "name"]), inner, max_size=4),
        max_leaves=20)

    def mutated(path, value):
        doc = json.loads(json.dumps(real))
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return doc

    paths = [("format",), ("modelTopology",), ("modelTopology", "config"), ("modelTopology", "config", "layers"),
             ("modelTopology", "config", "layers", 0), ("modelTopology", "config", "layers", 0, "config"),
             ("modelTopology", "config", "layers", 2, "config"), ("weightsManifest",), ("weightsManifest", 0),
             ("weightsManifest", 0, "weights", 1)]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(values, st.tuples(st.sampled_from(paths), values).map(lambda pv: mutated(*pv))))
    def check(doc):
        try:
            tfjs.import_model(doc, weights, js_model["text"])
        except tfjs.TfjsError as exc:
            assert str(exc) and "\n" not in str(exc)

    check()


def test_an_imported_model_fine_tunes_on_new_text_and_keeps_its_gates(js_model, served, tmp_path):
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.model import lstm_activations
    from trainer.training import train

    parent = served["data_dir"] / "models" / "js-import" / "1"
    config = TrainConfig.from_dict({"epochs": 1, "examples_per_epoch": 256, "display_length": 0, "seed": 1},
                                   continuing=True)
    extra = " {new} ~ {text} ~ "
    result = train(js_model["text"] + extra * 20, config, init_from=parent)
    assert lstm_activations(result.model) == [("tanh", "hard_sigmoid")] * 2
    added = result.meta["parent"]["characters_added"]
    assert added == "".join(sorted(set(extra) - set(js_model["text"]))) and "{" in added
    assert result.meta["epochs"] == 1
    path = tfjs.export_model(result.model, result.meta, tmp_path / "out")
    layers = json.loads(path.read_text())["modelTopology"]["config"]["layers"]
    assert [layer["config"].get("recurrent_activation") for layer in layers] == ["hard_sigmoid", "hard_sigmoid", None]
