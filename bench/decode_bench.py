"""Decode speed: the gRPC server, today's engine beside the engine before it, the reference loop and a naive port.

``python -m bench.decode_bench [--quick] [--results DIR]``. In one run on this machine: train a
128,128 LSTM on tinyshakespeare briefly, publish it in a temporary data directory, start two
``python -m server`` processes on loopback ports, one with this engine (joining streams admitted
beside the batch's step, XLA, prompt cache) and one with the engine before it (bench/baseline_engine.py:
16-character steps, joiners admitted between them, no XLA, no prompt cache), and measure, alternating
between them: time to first chunk on an idle server and while 63 other streams run; aggregate
characters per second through gRPC at 1, 64 and 256 streams, all with one prompt and each with its
own (``WORKLOADS``). Also the
machine's sgemm rate (a TF matmul of the decode step's shape) with each figure as a fraction of it,
bare ``advance`` calls (graph and XLA), the reference loop (one ``predict`` per character) and the
naive port (one Keras ``model.predict`` per character). Writes ``decode.json`` and ``decode.md`` to
bench/results/. ``--quick``: small runs that check everything works. ``BENCH_SERVER_LOG=FILE``
appends the servers' logs to FILE (default: discarded).
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
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from server.engine import CHUNK  # noqa: E402
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
STREAMS = (1, 64, 256)
# What the throughput rounds run: (key, streams, distinct prompts). The same prompt for every stream, as
# clients sharing a preamble (or the page's seed slices) send; and a prompt of its own for each stream,
# which the prompt cache cannot help.
WORKLOADS = (("1", 1, False), ("64", 64, False), ("256", 256, False), ("64d", 64, True), ("256d", 256, True))
BUSY = 64  # streams running while time to first chunk is measured under load (the probe and 63 others)
ENGINES = ("new", "fixed")  # today's engine; the engine before it (bench/baseline_engine.py)
NAMES = {"new": "this engine (admission aside, XLA, prompt cache)", "fixed": "before: fixed 16-character steps"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of everything to run."""

    train_epochs: int = 2  # of train_examples windows each: a short training
    train_examples: int = 4096
    one_stream_chars: int = 3000
    chars_per_stream: int = 400  # at 64 and 256 streams
    # The machine may be shared. Throughput is measured in rounds, each running every engine and
    # stream count once, alternating, so both engines meet similar interference; the table gives each
    # one's best round (other processes only ever slow a run down) and decode.json has every round.
    rounds: int = 3
    advance_seconds: float = 2.0
    ttfc_requests: int = 20
    reference_chars: int = 600  # greedy, also compared with the servers' greedy text
    naive_seconds: float = 10.0
    sgemm_seconds: float = 2.0


FULL = Plan()
QUICK = Plan(train_epochs=1, train_examples=512, one_stream_chars=500, chars_per_stream=100, rounds=1,
             advance_seconds=0.5, ttfc_requests=5, reference_chars=100, naive_seconds=2.0, sgemm_seconds=0.5)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    parser.add_argument("--serve-fixed-steps", action="store_true", help=argparse.SUPPRESS)  # the baseline server
    args = parser.parse_args(argv)
    if args.serve_fixed_steps:
        return serve_fixed_steps()
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        data_dir = Path(tmp)
        log("training a 128,128 model on tinyshakespeare (short)")
        text = CORPUS.read_text(encoding="utf-8")
        DISTINCT_PROMPTS[:] = distinct_prompts(text, max(STREAMS))
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
               "settings": {"temperature": TEMPERATURE, "chunk": CHUNK, "prompt_chars": len(PROMPT),
                            "streams": list(STREAMS), "busy_streams": BUSY}}
        out["sgemm"] = measure_sgemm(plan)

        store = ModelStore(data_dir / "models", reload_seconds=3600).start()
        model = store.get(MODEL_NAME)
        out["advance"] = measure_advance(model, plan)
        out["naive"] = measure_naive(result.model, model, plan)
        reference = measure_reference(model, plan)
        store.close()
        log("starting two servers: this engine and the fixed-step one")
        with server_process(data_dir) as new, server_process(data_dir, fixed_steps=True) as fixed:
            channels = {"new": grpc.insecure_channel(new.addr), "fixed": grpc.insecure_channel(fixed.addr)}
            stubs = {key: textgen_pb2_grpc.TextGenStub(channel) for key, channel in channels.items()}
            out["warm_up_passes"] = warm_up(stubs, plan, new)
            out["xla_compiles_warm_up"] = new.xla_compiles()
            out["throughput"] = measure_throughput(stubs, plan)
            out["xla_compiles_throughput"] = new.xla_compiles()
            out["ttfc"] = {key: measure_ttfc(stubs[key], key, plan) for key in ENGINES}
            greedy = {key: grpc_generate(stubs[key], plan.reference_chars, temperature=0.0, seed=0)[0]
                      for key in ENGINES}
            for channel in channels.values():
                channel.close()
        text = reference.pop("text")
        out["reference"] = {**reference, "greedy_equals_server": {key: text == greedy[key] for key in ENGINES}}

    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                      "tensorflow": tf.__version__, "grpc": grpc.__version__,
                      "load_average_before": load_before, "load_average_after": os.getloadavg()}
    out["flops_per_char"] = flops_per_char(LAYERS, SAMPLE_LEN, out["model"]["charset_size"])
    out["bench_seconds"] = time.perf_counter() - began
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "decode.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "decode.md").write_text(report(out))
    print(report(out))
    return out


# -- the machine's matmul rate ---------------------------------------------------------------------

def measure_sgemm(plan: Plan) -> dict:
    """GFLOP/s of a TF float32 matmul of the decode step's shape at 64 streams:
    ``[64 * sample_len, units] x [units, 4 * units]`` (the recurrent product of one layer)."""
    rows, units = 64 * SAMPLE_LEN, LAYERS[0]
    log(f"sgemm: [{rows},{units}] x [{units},{4 * units}] for {plan.sgemm_seconds:g} s")
    a = tf.random.uniform([rows, units])
    b = tf.random.uniform([units, 4 * units])
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    matmul(a, b).numpy()
    best = 0.0
    for _ in range(3):  # best of three: another process only ever slows one down
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < plan.sgemm_seconds / 3:
            matmul(a, b).numpy()
            calls += 1
        best = max(best, 2 * rows * units * 4 * units * calls / (time.perf_counter() - t0) / 1e9)
    return {"shape": [[rows, units], [units, 4 * units]], "gflops": best}


def flops_per_char(layers, sample_len: int, charset_size: int) -> float:
    """Matmul FLOPs the pipelined decoder spends per generated character: every layer's recurrent
    product over the ``sample_len`` windows, the input product of every layer but the first (a row
    lookup for one-hot input), and the dense layer on one window."""
    flops, below = 0, None
    for units in layers:
        flops += 2 * sample_len * units * 4 * units
        if below is not None:
            flops += 2 * sample_len * below * 4 * units
        below = units
    return float(flops + 2 * below * charset_size)


# -- the servers, through gRPC ---------------------------------------------------------------------

def serve_fixed_steps() -> int:
    """``python -m server`` with ``BaselineEngine``: the engine before this one."""
    from bench.baseline_engine import BaselineEngine
    from server import __main__ as server_main
    from server import app

    app.Engine = BaselineEngine
    return server_main.main()


class server_process:
    """``python -m server`` (or the fixed-step baseline) on a free loopback port, serving ``data_dir``;
    SIGTERM on exit. ``cpu``: pinned to that core (taskset)."""

    def __init__(self, data_dir: Path, fixed_steps: bool = False, cpu: int | None = None, **env):
        self.addr, self.metrics_addr = free_address(), free_address()
        env = dict(os.environ, TEXTGEN_ADDR=self.addr, TEXTGEN_DATA_DIR=str(data_dir), TEXTGEN_GRACE_SECONDS="2",
                   TEXTGEN_METRICS_ADDR=self.metrics_addr, **env)
        command = ["-m", "bench.decode_bench", "--serve-fixed-steps"] if fixed_steps else ["-m", "server"]
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.process = subprocess.Popen([*pin, sys.executable, *command], env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "a"))

    def __enter__(self) -> "server_process":
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
        return self

    def xla_compiles(self) -> dict:
        """XLA programs the server compiled so far, and their seconds, by function (from /metrics)."""
        text = urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=10).read().decode()
        found = {}
        for line in text.splitlines():
            for suffix, field in (("_count", "programs"), ("_sum", "seconds")):
                prefix = f"textgen_xla_compile_seconds{suffix}{{function=\""
                if line.startswith(prefix):
                    function = line[len(prefix):].split('"', 1)[0]
                    found.setdefault(function, {})[field] = float(line.rsplit(" ", 1)[1])
        return found


    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


DISTINCT_PROMPTS: list[str] = []  # one per stream of the distinct-prompt workloads (set from the corpus)


def distinct_prompts(text: str, count: int, chars: int = 80) -> list[str]:
    """``count`` prompts of ``chars`` characters from evenly spaced places in ``text``."""
    return [text[i : i + chars] for i in range(0, len(text) - chars, (len(text) - chars) // count)][:count]


def grpc_generate(stub, length: int, temperature: float = TEMPERATURE, seed: int | None = None,
                  prompt: str = PROMPT):
    """One Generate call: ``(text, seconds to the first text, total seconds)``."""
    request = pb.GenerateRequest(model=MODEL_NAME, prompt=prompt, length=length, temperature=temperature, seed=seed)
    t0 = time.perf_counter()
    first, parts = None, []
    for response in stub.Generate(request):
        if response.text and first is None:
            first = time.perf_counter() - t0
        parts.append(response.text)
    return "".join(parts), first, time.perf_counter() - t0


WARM_UP_PASSES = (3, 10)  # at least, at most
COMPILE_SETTLE_SECONDS = 3.0  # a pass is quiet when no XLA program was compiled in it nor this long after it


def warm_up(stubs: dict, plan: Plan, new: "server_process") -> int:
    """Run the measured calls on each server until the new server is in its steady state: at least
    WARM_UP_PASSES[0] passes, then more until a whole pass (and a short wait after it) compiles no XLA
    program, as on a server that has been up for a while. Returns the number of passes."""
    log("warming up both servers: the measured calls, until a pass compiles no XLA program")
    before = programs(new.xla_compiles())
    for passes in range(1, WARM_UP_PASSES[1] + 1):
        for key, stub in stubs.items():
            for _, streams, distinct in WORKLOADS:
                grpc_rate(stub, streams, plan.one_stream_chars if streams == 1 else plan.chars_per_stream,
                          distinct=distinct)
        time.sleep(COMPILE_SETTLE_SECONDS)
        after = programs(new.xla_compiles())
        log(f"warm-up pass {passes}: {after - before} XLA programs compiled")
        if passes >= WARM_UP_PASSES[0] and after == before:
            break
        before = after
    return passes


def programs(compiles: dict) -> int:
    return int(sum(c.get("programs", 0) for c in compiles.values()))


def measure_throughput(stubs: dict, plan: Plan) -> dict:
    """Aggregate characters per second of each engine for each workload, best of the plan's rounds."""
    runs = {f"{key}_{workload}": [] for workload, _, _ in WORKLOADS for key in ENGINES}
    for r in range(plan.rounds):
        log(f"throughput round {r + 1}/{plan.rounds}: {', '.join(w for w, _, _ in WORKLOADS)} streams, both engines")
        for workload, streams, distinct in WORKLOADS:
            for key in ENGINES if r % 2 == 0 else ENGINES[::-1]:
                chars = plan.one_stream_chars if streams == 1 else plan.chars_per_stream
                runs[f"{key}_{workload}"].append(grpc_rate(stubs[key], streams, chars, seed=1000 * r, distinct=distinct))
    return {key: {"best": max(rates), "rounds": rates} for key, rates in runs.items()}


def grpc_rate(stub, streams: int, chars: int, seed: int = 0, distinct: bool = False) -> float:
    """``streams`` Generate calls of ``chars`` started together: total characters over wall time.
    ``distinct``: each call with a prompt of its own (else all with PROMPT)."""
    prompts = DISTINCT_PROMPTS[:streams] if distinct else [PROMPT] * streams
    t0 = time.perf_counter()
    results = in_threads(lambda i: grpc_generate(stub, chars, seed=seed + i, prompt=prompts[i]), range(streams))
    seconds = time.perf_counter() - t0
    assert all(len(text) == chars for text, _, _ in results)
    return streams * chars / seconds


def measure_ttfc(stub, key: str, plan: Plan) -> dict:
    """Seconds from a Generate call to its first text, on an idle server and beside BUSY - 1 streams."""
    log(f"time to first chunk, {key}: {plan.ttfc_requests} requests on an idle server")
    idle = [grpc_generate(stub, 64, seed=i)[1] for i in range(plan.ttfc_requests)]

    log(f"time to first chunk, {key}: {plan.ttfc_requests} requests while {BUSY - 1} other streams run")
    stop = threading.Event()
    done = []

    def background(i):
        while not stop.is_set():
            text, _, seconds = grpc_generate(stub, plan.chars_per_stream, seed=1000 + i)
            done.append((len(text), seconds))

    threads = [threading.Thread(target=background, args=(i,)) for i in range(BUSY - 1)]
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


# -- bare advance calls, the reference loop and the naive port ---------------------------------------

def measure_advance(model, plan: Plan) -> dict:
    """The ceilings: the bundle's ``advance`` called back to back on a started batch, k = CHUNK, for
    ``advance_seconds``, nothing else (no start, no text, no queues), as exported and with XLA."""
    fn = model.functions
    xla = tf.function(lambda **inputs: fn.advance(**inputs), jit_compile=True)
    rates = {}
    for batch in STREAMS:
        log(f"bare advance calls, {batch} rows, graph and XLA")
        prompt = np.tile(model.encode(PROMPT[-SAMPLE_LEN:])[None, :], (batch, 1))
        start = dict(fn.start(prompt=tf.constant(prompt), lengths=tf.fill([batch], prompt.shape[1])))
        settings = dict(temperature=tf.fill([batch], TEMPERATURE),
                        uniforms=tf.constant(np.random.default_rng(0).random((batch, CHUNK), dtype=np.float32)))
        if model.controls:
            settings.update(top_k=tf.zeros([batch], tf.int32), top_p=tf.ones([batch]))
        for key, advance in (("graph", fn.advance), ("xla", xla)):
            advance(**start, **settings)["ids"].numpy()  # compile
            state, chars, t0 = start, 0, time.perf_counter()
            while time.perf_counter() - t0 < plan.advance_seconds:
                state = dict(advance(**state, **settings))
                state.pop("logprobs", None)
                state.pop("ids").numpy()
                chars += batch * CHUNK
            rates[f"{key}_{batch}"] = chars / (time.perf_counter() - t0)
    return rates


def measure_reference(model, plan: Plan) -> dict:
    """The reference loop's rate, and its greedy text (``text``) to compare with the servers'."""
    chars = plan.reference_chars
    log(f"reference loop: {chars} greedy characters, one predict call each")
    t0 = time.perf_counter()
    text = reference_generate(model, PROMPT, chars, 0.0, seed=0)
    seconds = time.perf_counter() - t0
    return {"chars_per_s": chars / seconds, "chars": chars, "seconds": seconds, "text": text}


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


def compiles_text(compiles: dict | None) -> str:
    if not compiles:
        return "no programs"
    return ", ".join(f"{c.get('programs', 0):.0f} of {function} ({c.get('seconds', 0):.1f} s)"
                     for function, c in sorted(compiles.items()))


def subtract(after: dict | None, before: dict | None) -> dict:
    after, before = after or {}, before or {}
    return {function: {field: value - before.get(function, {}).get(field, 0.0) for field, value in c.items()}
            for function, c in after.items()
            if c.get("programs", 0) - before.get(function, {}).get("programs", 0) > 0}


def report(out: dict) -> str:
    best = {key: value["best"] for key, value in out["throughput"].items()}
    plan, m, r, n, t = Plan(**out["plan"]), out["model"], out["reference"], out["naive"], out["ttfc"]
    machine, adv, sgemm = out["machine"], out["advance"], out["sgemm"]["gflops"]

    def of_sgemm(chars_per_s):
        return f"{chars_per_s * out['flops_per_char'] / 1e9 / sgemm:.0%}"

    def cell(value):
        return f"{value:,.0f} ({of_sgemm(value)})"

    streams_rows = [
        f"| {n_streams}{', a prompt each' if distinct else ''} | {cell(best[f'new_{workload}'])} | "
        f"{cell(best[f'fixed_{workload}'])} | **{best[f'new_{workload}'] / best[f'fixed_{workload}']:.2f}x** | "
        f"{cell(adv[f'graph_{n_streams}'])} | {cell(adv[f'xla_{n_streams}'])} |"
        for workload, n_streams, distinct in WORKLOADS if f"new_{workload}" in best
    ]
    greedy = r["greedy_equals_server"]
    return "\n".join([
        "# Decode benchmark" + (" (quick run: a check, not numbers to quote)" if out["quick"] else ""),
        "",
        f"Model: LSTM {','.join(map(str, m['lstm_layer_sizes']))}, sample_len {m['sample_len']}, "
        f"{m['charset_size']} characters, trained briefly on tinyshakespeare ({plan.train_epochs} epochs of "
        f"{plan.train_examples} windows, {m['train_seconds']:.0f} s; held-out {m['val_bits_per_char']:.2f} "
        "bits/char: enough for the text to look like text; the speed does not depend on the weights). "
        f"Temperature {TEMPERATURE}. Machine: {machine['cpus']} CPUs, "
        f"{machine['platform']}, TensorFlow {machine['tensorflow']}, grpcio {machine['grpc']}; load average "
        f"before/after {machine['load_average_before'][0]:.2f} / {machine['load_average_after'][0]:.2f} "
        "(the benchmark itself keeps the CPUs busy; a load well above their number means other work shared them).",
        "",
        "## Time to first chunk (call to first text message, median)",
        "",
        f"| engine | idle server | while {BUSY - 1} other streams run |",
        "|---|---:|---:|",
        *[f"| {NAMES[key]} | {t[key]['idle_median_ms']:.0f} ms | {t[key]['busy_median_ms']:.0f} ms |" for key in ENGINES],
        "",
        "## Aggregate characters per second through gRPC",
        "",
        f"The machine's sgemm rate, measured in this run: **{sgemm:,.0f} GFLOP/s** (TF float32 matmul "
        f"{' x '.join(str(s) for s in out['sgemm']['shape'])}, the decode step's recurrent product at 64 streams). "
        f"A character costs {out['flops_per_char'] / 1e6:.1f} MFLOP of matmuls, so each rate is also shown as a "
        "fraction of the sgemm rate (in parentheses).",
        "",
        "| streams | this engine | before (fixed 16-char steps) | this / before | bare `advance`, graph, "
        f"k = {CHUNK} | bare `advance`, XLA, k = {CHUNK} |",
        "|---:|---:|---:|---:|---:|---:|",
        *streams_rows,
        "",
        f"Reference loop (bundle `predict` per character, one stream): {r['chars_per_s']:,.0f} chars/s; naive port "
        f"(Keras `model.predict` per character): {n['chars_per_s']:,.1f} chars/s. This engine through gRPC, one "
        f"stream: {best['new_1'] / n['chars_per_s']:,.0f}x the naive port; {BUSY} streams: "
        f"{best[f'new_{BUSY}'] / n['chars_per_s']:,.0f}x.",
        "",
        f"Greedy text through gRPC equals the reference loop's ({r['chars']} characters): this engine "
        f"{'yes' if greedy['new'] else 'NO'}, before {'yes' if greedy['fixed'] else 'NO'}.",
        "",
        "How, all measured in this run, nothing extrapolated: each engine runs in its own `python -m server` "
        "subprocess on a loopback port (both loaded, one idle while the other is measured); the clients are "
        f"threads of the benchmark process, on the same CPUs. Both servers first run the measured calls "
        f"{out.get('warm_up_passes', '?')} times (a warm-up, repeated until a pass compiles no XLA program, as on a "
        "server that has been up for a while: the new server compiles its XLA programs then; "
        f"{compiles_text(out.get('xla_compiles_warm_up'))}, and "
        f"{compiles_text(subtract(out.get('xla_compiles_throughput'), out.get('xla_compiles_warm_up')))} during "
        "the throughput rounds). "
        "The XLA column is the bundle's `advance` wrapped in `tf.function(jit_compile=True)`, as "
        "`Engine(xla=True)` (the default) runs it. Throughput is measured in "
        f"{plan.rounds} rounds, each running both engines at every stream count, alternating which goes first; "
        "the table shows each one's best round, decode.json every round. "
        f"1 stream: one call of {plan.one_stream_chars} characters, from the call to its last message. "
        f"64 and 256 streams: that many calls of {plan.chars_per_stream} characters started together, total "
        "characters over wall time, prompt processing included; all with the same prompt (this engine reads it "
        "once: its prompt cache), or each with a prompt of its own (80 characters from evenly spaced places in "
        "the corpus), which no cache helps. Time to first chunk: "
        f"{plan.ttfc_requests} calls of 64 characters one after another on the idle server; then the same while "
        f"{BUSY - 1} other calls of {plan.chars_per_stream} characters run (each starting again when it ends). "
        f"Bare `advance`: back-to-back calls on a started batch for {plan.advance_seconds:g} s. "
        f"Naive port: as many characters as fit in {plan.naive_seconds:g} s, one stream.",
        "",
        f"Whole benchmark: {out['bench_seconds']:.0f} s.",
        "",
    ])


if __name__ == "__main__":
    main()
