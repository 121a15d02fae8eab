"""`python -m trainer train|gen`: the original's command line, its flags and its errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import main

from .conftest import corpus_text

TINY_FLAGS = ["--lstm-layer-size", "16", "--sample-len", "10", "--epochs", "1",
              "--examples-per-epoch", "128", "--batch-size", "64", "--display-length", "10"]


@pytest.fixture
def corpus_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "shake.txt"
    path.write_text(corpus_text("tinyshakespeare", 20_000), encoding="utf-8")
    return path


def run_cli(args, env_data_dir):
    env = {**os.environ, "TEXTGEN_DATA_DIR": str(env_data_dir)}
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)


def test_train_then_gen_from_the_command_line(corpus_file, tmp_path, capsys):
    model_dir = tmp_path / "my-model"
    # The original's camelCase spellings are accepted too.
    trained = run_cli(["train", str(corpus_file), "--lstmLayerSize", "16", "--sampleLen", "10", "--epochs", "2",
                       "--examplesPerEpoch", "128", "--batchSize", "64", "--displayLength", "10",
                       "--savePath", str(model_dir)], tmp_path / "data")
    assert trained.returncode == 0, trained.stderr
    assert "epoch 2/2: loss" in trained.stderr and "[temperature 0.75]" in trained.stderr
    assert (model_dir / "meta.json").is_file() and (model_dir / "saved_model").is_dir()

    first = run_cli(["gen", str(corpus_file), str(model_dir), "--genLength", "50", "--temperature", "0.6",
                     "--seed", "11"], tmp_path / "data")
    assert first.returncode == 0, first.stderr
    # The same command in this process (the commands above are the processes a user starts): the same
    # seed gives the same text, whether the model is named by its folder or its model.json.
    assert main(["gen", str(corpus_file), str(model_dir / "model.json"), "--gen-length", "50",
                 "--temperature", "0.6", "--seed", "11"]) == 0
    again = capsys.readouterr().out
    assert len(first.stdout) == 51 and first.stdout == again  # 50 characters and a newline
    assert main(["gen", str(model_dir), "--gen-length", "20", "--seed-text", "First Citizen"]) == 0
    assert len(capsys.readouterr().out) == 21


def test_train_publishes_numbered_versions_under_a_name(corpus_file, tmp_path, capsys):
    assert main(["train", str(corpus_file), *TINY_FLAGS, "--name", "shake"]) == 0
    assert main(["train", str(corpus_file), *TINY_FLAGS, "--epochs", "1", "--name", "shake",
                 "--from", "shake"]) == 0
    assert sorted(p.name for p in (tmp_path / "data/models/shake").iterdir()) == [".last-version", "1", "2"]
    assert "published shake version 2" in capsys.readouterr().err
    assert main(["gen", "shake:1", "--gen-length", "5", "--temperature", "0"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--lstm-layer-size", "0"], "lstm layer size must be between 1 and 4096, got 0"),
    (["--lstm-layer-size", "-3"], "lstm layer size must be between 1 and 4096, got -3"),
    (["--lstm-layer-size", "12x"], "lstm layer sizes must be positive integers separated by commas (e.g. 128,128), got '12x'"),
    (["--epochs", "0"], "epochs must be between 1 and 100000, got 0"),
    (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
    (["--sample-len", "0"], "sample length must be between 1 and 1000, got 0"),
    (["--learning-rate", "inf"], "learning rate must be a finite number, got inf"),
    (["--objective", "first"], "objective must be one of last, all, got 'first'"),
    (["--name", "../up"], "invalid model name '../up'"),
])
def test_bad_train_flags_end_with_one_line(corpus_file, capsys, args, message):
    code = main(["train", str(corpus_file), *TINY_FLAGS, *args])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_bad_corpora_and_model_paths_end_with_one_line(corpus_file, tmp_path, capsys):
    cases = [
        (["train", "moby-dick", *TINY_FLAGS], "nietzsche"),
        (["train", str(tmp_path / "missing.txt"), *TINY_FLAGS], "missing.txt"),
        (["train", str(corpus_file), *TINY_FLAGS, "--sample-len", "30000"], "sample length must be between 1 and 1000"),
        (["gen", str(tmp_path), "--gen-length", "5"], "is not a model bundle"),
        (["gen", str(tmp_path / "nope"), "--gen-length", "5"], "does not exist"),
        (["gen", str(corpus_file), "--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["gen", str(corpus_file), "--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["gen", str(corpus_file), "--gen-length", "0"], "gen length must be at least 1, got 0"),
        (["fly"], "invalid choice: 'fly'"),
    ]
    for args, message in cases:
        code = main(args)
        err = capsys.readouterr().err
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_a_corpus_shorter_than_a_window_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TEXTGEN_DATA_DIR", str(tmp_path / "data"))
    short = tmp_path / "short.txt"
    short.write_text("tiny text", encoding="utf-8")
    assert main(["train", str(short), *TINY_FLAGS, "--save-path", str(tmp_path / "m")]) == 1
    assert "the corpus has 9 characters; training with sample length 10 needs at least 12" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_gpu_flag_without_a_gpu_says_so(corpus_file, capsys):
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    assert main(["train", str(corpus_file), *TINY_FLAGS, "--gpu"]) == 1
    assert "--gpu was given but TensorFlow sees no GPU" in capsys.readouterr().err


def test_errors_never_show_a_traceback(tmp_path):
    result = run_cli(["train", "no-such-corpus", "--epochs", "-1"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: epochs must be between 1 and 100000, got -1"]


def test_a_refused_command_says_so_before_importing_tensorflow(corpus_file, tmp_path):
    """Bad flags, a missing corpus or model, a broken model.json: the one line comes without the seconds of
    importing TensorFlow (which only a command that will run imports)."""
    (tmp_path / "model.json").write_text('{"format": "graph-model", "weightsManifest": []}')
    driver = "import sys; from trainer.cli import main; code = main(sys.argv[1:]); print('tensorflow' in sys.modules, code)"
    for args in (["train", str(corpus_file), "--epochs", "0"], ["train", "no-such-corpus"],
                 ["train", str(corpus_file), "--name", "../up"], ["gen", str(tmp_path / "nope")],
                 ["gen", str(corpus_file), "--temperature", "-1"],
                 ["import-tfjs", str(corpus_file), str(tmp_path / "model.json"), "--name", "x"]):
        done = subprocess.run([sys.executable, "-c", driver, *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TEXTGEN_DATA_DIR": str(tmp_path / "data")})
        imported, code = done.stdout.split()
        assert (imported, code != "0") == ("False", True), (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, (args, done.stderr)
