"""The shared core: which package stands on which, and what a bundle promises to whoever reads it.

The arrows point one way: client -> textgen <- server, trainer -> textgen. A bundle's model.keras is
plain Keras (built-in layers only) and bundles written before this layout keep loading and serving.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import corpus_text

REPO = Path(__file__).resolve().parents[1]
OLD_BUNDLE = REPO / "tests" / "fixtures" / "bundle-v1"  # written by the exporter before the shared core
PACKAGES = ("textgen", "trainer", "server", "client")


def package_files(package: str):
    return sorted(p for p in (REPO / package).rglob("*.py") if "v1" not in p.relative_to(REPO / package).parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function; ``from pkg import sub`` counts
    as ``pkg.sub`` when ``sub`` is a module of the project."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                candidate = REPO.joinpath(*node.module.split("."), alias.name)
                if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                    found.add(f"{node.module}.{alias.name}")
    return found


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("package", ["server", "client"])
def test_server_and_client_import_nothing_from_trainer(package):
    offenders = {module_name(f): sorted(m for m in imported_modules(f) if top(m) == "trainer")
                 for f in package_files(package)}
    assert {m: bad for m, bad in offenders.items() if bad} == {}


def test_the_server_code_uses_no_keras_api():
    uses = {}
    for f in package_files("server"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        names = {m for m in imported_modules(f) if top(m) == "keras"}
        names |= {f"{ast.unparse(n)}" for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "keras"}
        if names:
            uses[module_name(f)] = sorted(names)
    assert uses == {}


CLIENT_SIDE_CORE = {"textgen", "textgen.v1", "textgen.v1.textgen_pb2", "textgen.v1.textgen_pb2_grpc",
                    "textgen.schema", "textgen.args"}


def test_the_client_uses_only_the_generated_code_and_the_schema_read_from_it():
    used = {m for f in package_files("client") for m in imported_modules(f) if top(m) == "textgen"}
    assert used <= CLIENT_SIDE_CORE, sorted(used - CLIENT_SIDE_CORE)
    for name in ("schema", "args"):  # and those stand on nothing but the generated code and the standard library
        path = REPO / "textgen" / f"{name}.py"
        project = {m for m in imported_modules(path) if top(m) in ("textgen", "trainer", "server", "client", "web")}
        assert project <= CLIENT_SIDE_CORE, (name, sorted(project - CLIENT_SIDE_CORE))
        assert not {m for m in imported_modules(path) if top(m) in ("tensorflow", "keras", "numpy", "grpc")}


def test_the_shared_core_stands_on_no_other_package_and_no_keras():
    offenders = {module_name(f): sorted(m for m in imported_modules(f) if top(m) in ("trainer", "server", "client", "keras"))
                 for f in package_files("textgen")}
    assert {m: bad for m, bad in offenders.items() if bad} == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles_inside_a_package(package):
    modules = {module_name(f): f for f in package_files(package)}
    graph = {m: sorted(i for i in imported_modules(f) if i in modules and i != m and i != package)
             for m, f in modules.items()}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for nxt in graph[module]:
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


SERVE_AND_REPORT = """
import json, sys
from pathlib import Path
import grpc
from server.app import build_server
from server.config import Settings
from textgen.v1 import textgen_pb2 as pb, textgen_pb2_grpc

server = build_server(Settings(addr="127.0.0.1:0", data_dir=Path(sys.argv[1]))).start()
stub = textgen_pb2_grpc.TextGenStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
texts = {name: "".join(r.text for r in stub.Generate(pb.GenerateRequest(
             model=name, prompt="To be", length=40, temperature=0.0)))
         for name in ("old", "new")}
server.stop(0)
print(json.dumps({"texts": texts, "trainer": sorted(m for m in sys.modules if m.split(".")[0] == "trainer")}))
"""


def test_a_fresh_server_process_serves_old_and_new_bundles_without_importing_trainer(tmp_path, trained_bundles):
    models = tmp_path / "data" / "models"
    shutil.copytree(OLD_BUNDLE, models / "old" / "1")
    shutil.copytree(trained_bundles["one"], models / "new" / "1")
    done = subprocess.run([sys.executable, "-c", SERVE_AND_REPORT, str(tmp_path / "data")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["trainer"] == []
    assert {name: len(text) for name, text in report["texts"].items()} == {"old": 40, "new": 40}

    from server.reference import reference_generate
    from server.store import load_model
    old = load_model(models / "old" / "1", "old", 1)
    assert report["texts"]["old"] == reference_generate(old, "To be", 40, 0.0, None)


STOCK_KERAS_PREDICT = """
import json, sys
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
probs = model.predict(np.array(json.loads(sys.argv[2]), dtype="int32"), verbose=0)
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("textgen", "trainer", "server", "client"))
print(json.dumps({"probs": probs.tolist(), "ours": ours}))
"""


def stock_keras_predict(keras_file: Path, windows: np.ndarray, cwd: Path) -> np.ndarray:
    """``model.keras`` loaded by stock Keras in a process that imports nothing of this project."""
    done = subprocess.run([sys.executable, "-c", STOCK_KERAS_PREDICT, str(keras_file), json.dumps(windows.tolist())],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ours"] == []
    return np.array(report["probs"], dtype=np.float32)


def saved_model_predict(bundle: Path, windows: np.ndarray) -> np.ndarray:
    loaded = tf.saved_model.load(str(bundle / "saved_model"))  # kept alive while its function runs
    return loaded.predict(ids=tf.constant(windows, tf.int32))["probs"].numpy()


def test_a_new_bundles_keras_file_loads_in_stock_keras_and_predicts_as_its_saved_model(tmp_path, trained_bundles):
    bundle = trained_bundles["two"]
    meta = json.loads((bundle / "meta.json").read_text(encoding="utf-8"))
    from textgen.charset import Charset
    text = corpus_text("tinyshakespeare", 2_000)
    windows = np.stack([Charset(meta["charset"]).encode(text[i : i + meta["sample_len"]]) for i in (0, 500, 1000)])
    ours = saved_model_predict(bundle, windows)
    np.testing.assert_allclose(stock_keras_predict(bundle / "model.keras", windows, tmp_path), ours, atol=1e-6)
    assert ours.shape == (3, len(meta["charset"]))


def test_an_old_bundle_keeps_training_and_its_successor_loads_in_stock_keras(tmp_path):
    from trainer.cli import main
    from trainer.export import load_keras

    old_model, meta = load_keras(OLD_BUNDLE)  # the old one-hot layer, rebuilt with built-in layers
    windows = np.stack([np.arange(20) % len(meta["charset"]), np.arange(20, 40) % len(meta["charset"])]).astype(np.int32)
    np.testing.assert_allclose(old_model.predict(windows, verbose=0), saved_model_predict(OLD_BUNDLE, windows), atol=1e-6)

    text = tmp_path / "more.txt"
    text.write_text(corpus_text("tinyshakespeare", 4_000), encoding="utf-8")  # the text it was trained on
    out = tmp_path / "continued"
    assert main(["train", str(text), "--from", str(OLD_BUNDLE), "--epochs", "1", "--examples-per-epoch", "128",
                 "--display-length", "0", "--save-path", str(out)]) == 0
    continued = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert continued["charset"] == meta["charset"] and continued["lstm_layer_sizes"] == [16, 16]
    np.testing.assert_allclose(stock_keras_predict(out / "model.keras", windows, tmp_path),
                               saved_model_predict(out, windows), atol=1e-6)


def test_a_finished_job_is_served_at_once_not_at_the_next_rescan(tmp_path):
    """The server rescans models/ only hourly here: what a user sees right after "finished" must come
    from the job itself (WatchJob loads the model before saying so; ListModels and GetModel look)."""
    from tests.test_jobs import TINY, Stack

    stack = Stack(tmp_path, reload_seconds=3600)
    try:
        cli = [sys.executable, "-m", "client", "--server", stack.address]
        done = subprocess.run(cli + ["submit-train", "--corpus", "tfjs-code", "--layers", "16", "--sample-len", "10",
                                     "--epochs", "1", "--examples-per-epoch", "128", "--display-length", "0",
                                     "--name", "fresh", "--wait"],
                              cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        models = subprocess.run(cli + ["models"], cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=60)
        assert models.returncode == 0 and models.stdout.splitlines()[1].split()[:2] == ["fresh", "1"], models.stdout
        generated = subprocess.run(cli + ["generate", "fresh", "--prompt", "function ", "--length", "25"],
                                   cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=60)
        assert generated.returncode == 0 and len(generated.stdout) == 25 + 1, generated.stderr  # the text, then a newline

        job = stack.client.submit_train(corpus="tfjs-code", options=TINY, model_name="fresh")
        last = [event.WhichOneof("event") for event in stack.client.watch_job(job.id)][-1]
        assert last == "finished"
        assert stack.client.get_model("fresh").version == 2
        assert [(m.name, list(m.versions)) for m in stack.client.list_models()] == [("fresh", [1, 2])]
        gen = stack.client.generate("fresh", prompt="function ", length=10, temperature=0)
        assert len("".join(gen)) == 10 and gen.start.version == 2
    finally:
        stack.close()
