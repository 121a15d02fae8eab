"""``make gpu-check``: on a machine with an NVIDIA GPU, check and measure the GPU path end to end.

``python -m bench.gpu_check [--epochs N] [--results DIR] [--cpu-dry-run]``. In one run:

1. trains a 128,128 LSTM on tinyshakespeare for a few epochs with ``python -m trainer train --gpu``
   (and the same without the GPU, ``CUDA_VISIBLE_DEVICES=``, for the CPU figures of this machine);
2. checks that the trained model's LSTM layers run on the cuDNN kernel (a ``CudnnRNN*`` op in the
   traced training step on the GPU);
3. decodes with 1 and with 256 concurrent streams through the server's decode engine;
4. scores a held-out text with the server's Score path;
5. writes ``bench/results/gpu.md`` (and ``gpu.json``): every figure on the GPU beside the CPU's.

Without a GPU it stops at once with a message saying what is missing (exit status 1).
``--cpu-dry-run`` runs every step on the CPU only and writes to ``--results`` (default a temporary
folder): a check of this script on a machine without a GPU, not a measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CORPORA = [Path(os.environ["TEXTGEN_SHARED_CORPORA"])] if os.environ.get("TEXTGEN_SHARED_CORPORA") else \
    [ROOT.parent / "shared" / "corpora", ROOT.parents[1] / "shared" / "corpora"]  # a checkout, or a worktree
CORPUS = next((c / "tinyshakespeare.txt" for c in CORPORA if (c / "tinyshakespeare.txt").is_file()),
              CORPORA[0] / "tinyshakespeare.txt")

LAYERS = "128,128"
EPOCHS = 3
DECODE_STREAMS = (1, 256)
DECODE_LENGTH = 400  # characters per stream
SCORE_CHARS = 20_000
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"


class NoGpu(RuntimeError):
    """The machine has no GPU TensorFlow can use; the message says what is missing."""


def preflight() -> dict:
    """The GPU's name and driver, or NoGpu saying what is missing."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise NoGpu("make gpu-check needs an NVIDIA GPU: nvidia-smi is not installed on this machine")
    listed = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                            capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        raise NoGpu(f"make gpu-check needs an NVIDIA GPU: nvidia-smi finds none "
                    f"({(listed.stderr or listed.stdout).strip() or 'no output'})")
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; print(tf.__version__, len(tf.config.list_physical_devices('GPU')))"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if probe.returncode != 0:
        raise NoGpu(f"make gpu-check: TensorFlow does not import: {probe.stderr.strip().splitlines()[-1:]}")
    version, gpus = probe.stdout.split()
    if int(gpus) == 0:
        raise NoGpu(f"make gpu-check: the machine has {listed.stdout.strip()}, but TensorFlow {version} sees no GPU; "
                    "install the GPU build into the venv (.venv/bin/pip install -e '.[gpu]') and try again")
    return {"gpu": listed.stdout.strip().splitlines()[0], "tensorflow": version}


def run_device(device: str, work: Path, epochs: int) -> dict:
    """Every figure for ``device`` ("gpu" or "cpu"), measured in child processes that see only it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    model_dir = work / f"{device}-model"
    command = [sys.executable, "-m", "trainer", "train", str(CORPUS), "--lstm-layer-size", LAYERS,
               "--epochs", str(epochs), "--display-length", "0", "--seed", "1", "--save-path", str(model_dir)]
    if device == "gpu":
        command.append("--gpu")
    print(f"[gpu-check] {device}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    began = time.perf_counter()
    trained = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if trained.returncode != 0:
        raise RuntimeError(f"training on the {device} failed: {trained.stderr.strip()[-2000:]}")
    train_seconds = time.perf_counter() - began
    history = json.loads((model_dir / "meta.json").read_text())["history"]
    measured = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--measure", str(model_dir)],
                              cwd=ROOT, env=env, capture_output=True, text=True)
    if measured.returncode != 0:
        raise RuntimeError(f"measuring on the {device} failed: {measured.stderr.strip()[-2000:]}")
    figures = json.loads(measured.stdout.strip().splitlines()[-1])
    figures["train"] = {
        "epochs": len(history), "wall_seconds": train_seconds,
        # the first epoch includes tracing and, on a GPU, kernel selection: the last is the steady rate
        "examples_per_second_last_epoch": history[-1]["examples_per_second"],
        "examples_per_second_first_epoch": history[0]["examples_per_second"],
        "val_bits_per_char": history[-1]["bits_per_char"],
    }
    return figures


def measure(model_dir: Path) -> dict:
    """In a child process: cuDNN check, decode and score figures for the device it sees."""
    import tensorflow as tf

    from server.engine import Engine, SamplingParams
    from server.scoring import predict_logprobs, score_text
    from server.store import load_model
    from trainer.export import load_keras

    keras_model, meta = load_keras(model_dir)
    step = tf.function(lambda ids: keras_model(ids, training=True))
    graph = step.get_concrete_function(tf.TensorSpec([None, meta["sample_len"]], tf.int32)).graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    out = {"device": tf.config.list_logical_devices("GPU")[0].name if tf.config.list_logical_devices("GPU") else "CPU",
           "cudnn_ops": sorted(op for op in ops if op.startswith("CudnnRNN"))}

    model = load_model(model_dir, "gpu-check", 1)
    engine = Engine(max_streams=max(DECODE_STREAMS))
    out["decode"] = {}
    for streams in DECODE_STREAMS:
        for warm in (True, False):  # the first round traces the functions for this batch shape
            began = time.perf_counter()
            running = [engine.submit(model, PROMPT, SamplingParams(DECODE_LENGTH, 0.5, seed))
                       for seed in range(streams)]
            produced = sum(len("".join(stream)) for stream in running)
            seconds = time.perf_counter() - began
        out["decode"][str(streams)] = {"characters": produced, "seconds": seconds,
                                       "characters_per_second": produced / seconds}
    engine.shutdown(1.0)

    text = CORPUS.read_text(encoding="utf-8")[-SCORE_CHARS:]  # the held-out tail
    text = "".join(c for c in text if c in model.charset)
    score_text(model, text[:200], SCORE_CHARS)  # trace
    began = time.perf_counter()
    scored = score_text(model, text, SCORE_CHARS)
    seconds = time.perf_counter() - began
    began = time.perf_counter()
    predict_logprobs(model.functions, model.encode(text), model.sample_len)  # how bundles without score go
    predict_seconds = time.perf_counter() - began
    out["score"] = {"characters": scored.characters, "seconds": seconds,
                    "characters_per_second": scored.characters / seconds, "bits_per_char": scored.bits_per_char,
                    "predict_characters_per_second": scored.characters / predict_seconds}
    return out


def report(machine: dict, gpu: dict | None, cpu: dict, epochs: int) -> str:
    def cell(figures, *path, fmt="{:,.0f}"):
        if figures is None:
            return "-"
        value = figures
        for key in path:
            value = value[key]
        return fmt.format(value) if not isinstance(value, (list, str)) else (", ".join(value) or "none")

    rows = [
        ("training, examples/s (last epoch)", ("train", "examples_per_second_last_epoch")),
        ("training, examples/s (first epoch, with tracing)", ("train", "examples_per_second_first_epoch")),
        ("training, wall seconds (process start to bundle written)", ("train", "wall_seconds")),
        ("held-out bits per character after training", ("train", "val_bits_per_char")),
        ("cuDNN ops in the training step", ("cudnn_ops",)),
        *[(f"decode, {n} stream{'s' if n > 1 else ''}, characters/s (aggregate)",
           ("decode", str(n), "characters_per_second")) for n in DECODE_STREAMS],
        ("score, characters/s", ("score", "characters_per_second")),
        ("score through predict (bundles without score), characters/s", ("score", "predict_characters_per_second")),
        ("score, bits per character of the held-out tail", ("score", "bits_per_char")),
    ]
    lines = [
        "# GPU check (`make gpu-check`)", "",
        f"Machine: {machine['gpu']}; CPU: {machine['cpu']} ({machine['cores']} cores); "
        f"TensorFlow {machine['tensorflow']}; {machine['date']}; load average before the run "
        f"{machine['load']:.2f}.", "",
        f"Model: LSTM {LAYERS} on tinyshakespeare, {epochs} epochs of 10,000 examples, sample_len 60. "
        f"Decode: {DECODE_LENGTH} characters per stream at temperature 0.5, through the server's engine. "
        f"Score: the last {SCORE_CHARS:,} characters of the corpus. CPU: the same machine with "
        "`CUDA_VISIBLE_DEVICES=` (no GPU visible).", "",
        "| figure | GPU | CPU |", "| --- | ---: | ---: |",
    ]
    for label, path in rows:
        fmt = "{:.3f}" if path[-1] in ("val_bits_per_char", "bits_per_char") else \
              "{:.1f}" if path[-1] == "wall_seconds" else "{:,.0f}"
        lines.append(f"| {label} | {cell(gpu, *path, fmt=fmt)} | {cell(cpu, *path, fmt=fmt)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--results", type=Path, default=None, help="where gpu.md and gpu.json go")
    parser.add_argument("--cpu-dry-run", action="store_true", help="run every step on the CPU only (no GPU needed)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    if args.cpu_dry_run:
        machine = {"gpu": "none (--cpu-dry-run)", "tensorflow": __import__("tensorflow").__version__}
    else:
        try:  # the GPU first: without one nothing else matters
            machine = preflight()
        except NoGpu as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if not CORPUS.is_file():
        print(f"error: the corpus {CORPUS} does not exist; set TEXTGEN_SHARED_CORPORA to the folder that holds "
              "tinyshakespeare.txt", file=sys.stderr)
        return 1
    machine.update(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load=os.getloadavg()[0])
    results = args.results or (Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.cpu_dry_run else RESULTS)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        gpu = None if args.cpu_dry_run else run_device("gpu", Path(work), args.epochs)
        if gpu is not None and not gpu["cudnn_ops"]:
            print("error: the training step on the GPU does not use the cuDNN LSTM kernel (no CudnnRNN op)",
                  file=sys.stderr)
        cpu = run_device("cpu", Path(work), args.epochs)
    results.mkdir(parents=True, exist_ok=True)
    (results / "gpu.json").write_text(json.dumps({"machine": machine, "gpu": gpu, "cpu": cpu}, indent=2) + "\n")
    (results / "gpu.md").write_text(report(machine, gpu, cpu, args.epochs))
    print((results / "gpu.md").read_text())
    print(f"[gpu-check] wrote {results / 'gpu.md'}", file=sys.stderr)
    return 1 if gpu is not None and not gpu["cudnn_ops"] else 0


if __name__ == "__main__":
    sys.exit(main())
