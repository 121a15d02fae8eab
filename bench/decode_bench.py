"""Decode speed: the gRPC server against the reference loop and a naive port.

``python -m bench.decode_bench [--quick] [--results DIR]``. In one run on this machine: train a
128,128 LSTM on tinyshakespeare briefly, publish it in a temporary data directory, start
``python -m server`` on a loopback port, and measure characters per second for one stream and for 64
concurrent streams through gRPC, the same in-process (the engine without gRPC, and bare ``advance``
calls: the ceiling), the reference loop (one ``predict`` per character), the naive port (one Keras
``model.predict`` per character) and the time to first chunk. Writes ``decode.json`` and
``decode.md`` to bench/results/. ``--quick``: small runs that check everything works.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from server.engine import CHUNK, Engine  # noqa: E402
from server.reference import reference_generate  # noqa: E402
from server.store import ModelStore  # noqa: E402
from textgen.v1 import textgen_pb2 as pb  # noqa: E402
from textgen.v1 import textgen_pb2_grpc  # noqa: E402
from textgen.options import TrainConfig  # noqa: E402
from textgen.sampling import Uniforms, sample_ids  # noqa: E402
from trainer import export  # noqa: E402
from trainer.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CORPUS = Path(os.environ.get("TEXTGEN_SHARED_CORPORA", ROOT.parent / "shared" / "corpora")) / "tinyshakespeare.txt"

MODEL_NAME = "shakespeare-128"
LAYERS = (128, 128)
SAMPLE_LEN = 60
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun."
TEMPERATURE = 0.5
STREAMS = 64
DECODERS = ("grpc", "engine", "advance")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    train_epochs: int = 2  # of train_examples windows each: a short training
    train_examples: int = 4096
    one_stream_chars: int = 3000
    chars_per_stream: int = 600
    # The machine may be shared. Throughput is measured in rounds, each running every decoder once,
    # so all meet similar interference; the table gives each decoder's best round (other processes
    # only ever slow a run down) and decode.json has every round.
    rounds: int = 3
    advance_seconds: float = 2.0
    ttfc_requests: int = 20
    reference_chars: int = 600  # greedy, also compared with the server's greedy text
    naive_seconds: float = 10.0


FULL = Plan()
QUICK = Plan(train_epochs=1, train_examples=512, one_stream_chars=500, chars_per_stream=100, rounds=1,
             advance_seconds=0.5, ttfc_requests=5, reference_chars=100, naive_seconds=2.0)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        data_dir = Path(tmp)
        log("training a 128,128 model on tinyshakespeare (short)")
        text = CORPUS.read_text(encoding="utf-8")
        t0 = time.perf_counter()
        config = TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, epochs=plan.train_epochs,
                             examples_per_epoch=plan.train_examples, display_length=0, seed=1)
        result = train(text, config, corpus_name="tinyshakespeare")
        train_seconds = time.perf_counter() - t0
        export.publish(result.model, result.meta, data_dir / "models", MODEL_NAME)
        out = {"quick": args.quick, "plan": dataclasses.asdict(plan),
               "model": {"name": MODEL_NAME, "lstm_layer_sizes": list(LAYERS), "sample_len": SAMPLE_LEN,
                         "charset_size": len(result.meta["charset"]), "val_bits_per_char": result.meta["bits_per_char"],
                         "train_seconds": train_seconds},
               "settings": {"temperature": TEMPERATURE, "chunk": CHUNK, "prompt_chars": len(PROMPT), "streams": STREAMS}}

        store = ModelStore(data_dir / "models", reload_seconds=3600).start()
        model = store.get(MODEL_NAME)
        log("starting python -m server")
        with server_process(data_dir) as addr:
            channel = grpc.insecure_channel(addr)
            stub = textgen_pb2_grpc.TextGenStub(channel)
            grpc_generate(stub, 200)  # warm up
            out["throughput"] = measure_throughput(stub, model, plan)
            out["ttfc"] = measure_ttfc(stub, plan)
            server_greedy = grpc_generate(stub, plan.reference_chars, temperature=0.0, seed=0)[0]
            channel.close()
        out["reference"] = measure_reference(model, server_greedy, plan)
        out["naive"] = measure_naive(result.model, model, plan)
        store.close()

    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                      "tensorflow": tf.__version__, "grpc": grpc.__version__,
                      "load_average_before": load_before, "load_average_after": os.getloadavg()}
    best = {key: value["best"] for key, value in out["throughput"].items()}
    naive = out["naive"]["chars_per_s"]
    out["ratios"] = {
        "grpc_1_over_naive": best["grpc_1"] / naive,
        f"grpc_{STREAMS}_over_naive": best[f"grpc_{STREAMS}"] / naive,
        "grpc_1_over_reference": best["grpc_1"] / out["reference"]["chars_per_s"],
        "grpc_1_over_advance_1": best["grpc_1"] / best["advance_1"],
        f"grpc_{STREAMS}_over_advance_{STREAMS}": best[f"grpc_{STREAMS}"] / best[f"advance_{STREAMS}"],
    }
    out["bench_seconds"] = time.perf_counter() - began
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "decode.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "decode.md").write_text(report(out))
    print(report(out))
    return out


# -- the server, through gRPC ----------------------------------------------------------------------

class server_process:
    """``python -m server`` on a free loopback port, serving ``data_dir``; SIGTERM on exit."""

    def __init__(self, data_dir: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.addr = f"127.0.0.1:{sock.getsockname()[1]}"
        env = dict(os.environ, TEXTGEN_ADDR=self.addr, TEXTGEN_DATA_DIR=str(data_dir), TEXTGEN_GRACE_SECONDS="2")
        self.process = subprocess.Popen([sys.executable, "-m", "server"], env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> str:
        channel = grpc.insecure_channel(self.addr)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:
            try:
                request = health_pb2.HealthCheckRequest(service="textgen.v1.TextGen")
                if health.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the server did not come up")
            time.sleep(0.2)
        channel.close()
        return self.addr

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def grpc_generate(stub, length: int, temperature: float = TEMPERATURE, seed: int | None = None):
    """One Generate call: ``(text, seconds to the first text, total seconds)``."""
    request = pb.GenerateRequest(model=MODEL_NAME, prompt=PROMPT, length=length, temperature=temperature, seed=seed)
    t0 = time.perf_counter()
    first, parts = None, []
    for response in stub.Generate(request):
        if response.text and first is None:
            first = time.perf_counter() - t0
        parts.append(response.text)
    return "".join(parts), first, time.perf_counter() - t0


def measure_throughput(stub, model, plan: Plan) -> dict:
    """Characters per second of each decoder, 1 stream and STREAMS streams, best of the plan's rounds."""
    engine = Engine(max_length=100_000)
    runs = {f"{decoder}_{n}": [] for n in (1, STREAMS) for decoder in DECODERS}
    for r in range(plan.rounds):
        log(f"throughput round {r + 1}/{plan.rounds}: gRPC, engine in-process, bare advance; 1 and {STREAMS} streams")
        runs["grpc_1"].append(plan.one_stream_chars / grpc_generate(stub, plan.one_stream_chars, seed=r)[2])
        runs["engine_1"].append(engine_rate(engine, model, 1, plan.one_stream_chars))
        runs["advance_1"].append(advance_rate(model, 1, plan.advance_seconds))
        runs[f"grpc_{STREAMS}"].append(grpc_rate(stub, STREAMS, plan.chars_per_stream))
        runs[f"engine_{STREAMS}"].append(engine_rate(engine, model, STREAMS, plan.chars_per_stream))
        runs[f"advance_{STREAMS}"].append(advance_rate(model, STREAMS, plan.advance_seconds))
    engine.shutdown(0)
    return {key: {"best": max(rates), "rounds": rates} for key, rates in runs.items()}


def grpc_rate(stub, streams: int, chars: int) -> float:
    """``streams`` Generate calls of ``chars`` started together: total characters over wall time."""
    t0 = time.perf_counter()
    results = in_threads(lambda i: grpc_generate(stub, chars, seed=i), range(streams))
    seconds = time.perf_counter() - t0
    assert all(len(text) == chars for text, _, _ in results)
    return streams * chars / seconds


def engine_rate(engine, model, streams: int, chars: int) -> float:
    """The same through the engine in this process, without gRPC."""
    t0 = time.perf_counter()
    started = [engine.submit(model, PROMPT, chars, TEMPERATURE, seed=i) for i in range(streams)]
    in_threads(lambda s: "".join(s), started)
    return streams * chars / (time.perf_counter() - t0)


def advance_rate(model, batch: int, seconds: float) -> float:
    """The ceiling: the bundle's ``advance`` called back to back on a started batch, k = CHUNK,
    for ``seconds``, nothing else (no start, no text, no queues)."""
    fn = model.functions
    prompt = np.tile(model.encode(PROMPT[-SAMPLE_LEN:])[None, :], (batch, 1))
    state = fn.start(prompt=tf.constant(prompt), lengths=tf.fill([batch], prompt.shape[1]))
    temperature = tf.fill([batch], TEMPERATURE)
    uniforms = tf.constant(np.random.default_rng(0).random((batch, CHUNK), dtype=np.float32))
    chars, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        state = dict(fn.advance(**state, temperature=temperature, uniforms=uniforms))
        state.pop("ids").numpy()
        chars += batch * CHUNK
    return chars / (time.perf_counter() - t0)


def measure_ttfc(stub, plan: Plan) -> dict:
    """Seconds from a Generate call to its first text, on an idle server and beside STREAMS - 1 streams."""
    log(f"time to first chunk: {plan.ttfc_requests} requests on an idle server")
    idle = [grpc_generate(stub, 64, seed=i)[1] for i in range(plan.ttfc_requests)]

    log(f"time to first chunk: {plan.ttfc_requests} requests while {STREAMS - 1} other streams run")
    stop = threading.Event()

    def background(i):
        while not stop.is_set():
            grpc_generate(stub, plan.chars_per_stream, seed=1000 + i)

    threads = [threading.Thread(target=background, args=(i,)) for i in range(STREAMS - 1)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    busy = []
    for i in range(plan.ttfc_requests):
        busy.append(grpc_generate(stub, 64, seed=i)[1])
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    return {"idle_median_ms": 1000 * statistics.median(idle), "idle_ms": [1000 * t for t in idle],
            "busy_median_ms": 1000 * statistics.median(busy), "busy_ms": [1000 * t for t in busy]}


# -- the reference loop and the naive port ---------------------------------------------------------

def measure_reference(model, server_greedy: str, plan: Plan) -> dict:
    chars = plan.reference_chars
    log(f"reference loop: {chars} greedy characters, one predict call each")
    t0 = time.perf_counter()
    text = reference_generate(model, PROMPT, chars, 0.0, seed=0)
    seconds = time.perf_counter() - t0
    return {"chars_per_s": chars / seconds, "chars": chars, "seconds": seconds,
            "greedy_equals_server": text == server_greedy}


def measure_naive(keras_model, model, plan: Plan) -> dict:
    """The original's loop ported as is: one Keras ``model.predict`` per character, for a bounded time."""
    log(f"naive port: Keras model.predict per character for {plan.naive_seconds:g} s")
    ids = list(model.encode(PROMPT))
    uniforms = Uniforms(0)
    temperature = tf.constant([TEMPERATURE])
    keras_model.predict(np.array([ids[-SAMPLE_LEN:]], np.int32), verbose=0)  # build the predict function
    chars, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < plan.naive_seconds:
        probs = keras_model.predict(np.array([ids[-SAMPLE_LEN:]], np.int32), verbose=0)
        ids.append(int(sample_ids(probs, temperature, uniforms.take(1))[0]))
        chars += 1
    seconds = time.perf_counter() - t0
    return {"chars_per_s": chars / seconds, "chars": chars, "seconds": seconds}


# -- helpers ---------------------------------------------------------------------------------------

def in_threads(fn, items) -> list:
    items = list(items)
    results = [None] * len(items)

    def run(i):
        results[i] = fn(items[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def log(message: str) -> None:
    print(f"[decode_bench] {message}", file=sys.stderr, flush=True)


def report(out: dict) -> str:
    best = {key: value["best"] for key, value in out["throughput"].items()}
    plan, m, r, n, t = Plan(**out["plan"]), out["model"], out["reference"], out["naive"], out["ttfc"]
    machine, ratios = out["machine"], out["ratios"]
    rows = [
        ("gRPC server (`python -m server`, client on the same machine)", best["grpc_1"], best[f"grpc_{STREAMS}"]),
        ("decode engine in-process (no gRPC)", best["engine_1"], best[f"engine_{STREAMS}"]),
        (f"bare SavedModel `advance` calls, k = {CHUNK} (ceiling)", best["advance_1"], best[f"advance_{STREAMS}"]),
        ("reference loop (bundle `predict` per character)", r["chars_per_s"], None),
        ("naive port (Keras `model.predict` per character)", n["chars_per_s"], None),
    ]

    def cell(value):
        return "not run" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"

    return "\n".join([
        "# Decode benchmark" + (" (quick run: a check, not numbers to quote)" if out["quick"] else ""),
        "",
        f"Model: LSTM {','.join(map(str, m['lstm_layer_sizes']))}, sample_len {m['sample_len']}, "
        f"{m['charset_size']} characters, trained briefly on tinyshakespeare ({plan.train_epochs} epochs of "
        f"{plan.train_examples} windows, {m['train_seconds']:.0f} s; held-out {m['val_bits_per_char']:.2f} "
        "bits/char: enough for the text to look like text; the speed does not depend on the weights). "
        f"Temperature {TEMPERATURE}, steps of {CHUNK} characters. Machine: {machine['cpus']} CPUs, "
        f"{machine['platform']}, TensorFlow {machine['tensorflow']}, grpcio {machine['grpc']}; load average "
        f"before/after {machine['load_average_before'][0]:.2f} / {machine['load_average_after'][0]:.2f}.",
        "",
        f"| decoder | 1 stream, chars/s | {STREAMS} streams, aggregate chars/s |",
        "|---|---:|---:|",
        *[f"| {name} | {cell(one)} | {cell(many)} |" for name, one, many in rows],
        "",
        f"**Engine through gRPC vs the naive port: {ratios['grpc_1_over_naive']:,.0f}x for one stream, "
        f"{ratios[f'grpc_{STREAMS}_over_naive']:,.0f}x in aggregate for {STREAMS} streams** (vs the reference "
        f"loop: {ratios['grpc_1_over_reference']:,.1f}x for one stream). Through gRPC the server keeps "
        f"{100 * ratios['grpc_1_over_advance_1']:.0f}% (1 stream) and "
        f"{100 * ratios[f'grpc_{STREAMS}_over_advance_{STREAMS}']:.0f}% ({STREAMS} streams) of the bare `advance` rate.",
        "",
        f"Time to first chunk (call to first text message, median of {plan.ttfc_requests}): "
        f"{t['idle_median_ms']:.0f} ms on an idle server, {t['busy_median_ms']:.0f} ms while {STREAMS - 1} "
        "other streams run.",
        "",
        f"Greedy text through gRPC equals the reference loop's ({r['chars']} characters): "
        f"{'yes' if r['greedy_equals_server'] else 'NO'}.",
        "",
        "How, all measured in this run, nothing extrapolated: the server runs as a subprocess on a loopback "
        "port and the clients are threads of the benchmark process, on the same CPUs. Throughput is measured in "
        f"{plan.rounds} rounds, each running every decoder once (so all meet similar interference from whatever "
        "else runs on the machine); the table shows each decoder's best round, decode.json every round. "
        f"1 stream: one call of {plan.one_stream_chars} characters, from the call to its last message. "
        f"{STREAMS} streams: {STREAMS} calls of {plan.chars_per_stream} characters started together, total "
        f"characters over wall time, prompt processing included (`start` costs about {m['sample_len']} steps, "
        f"so about {100 * m['sample_len'] / (m['sample_len'] + plan.chars_per_stream):.0f}% of each such stream's "
        "work). Bare `advance`: back-to-back calls on a started batch for "
        f"{plan.advance_seconds:g} s. Reference loop: {r['chars']} characters of one stream "
        f"(it batches nothing, so {STREAMS} streams were not run through it). Naive port: as many characters "
        f"as fit in {plan.naive_seconds:g} s, one stream.",
        "",
        f"Whole benchmark: {out['bench_seconds']:.0f} s.",
        "",
    ])


if __name__ == "__main__":
    main()
