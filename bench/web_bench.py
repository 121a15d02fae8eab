"""The HTTP side against direct gRPC: one stream's characters per second and time to first chunk.

``python -m bench.web_bench [--quick] [--results DIR]``. In one run on this machine: train a 128,128
LSTM on tinyshakespeare briefly (as the decode bench does), publish it in a temporary data directory,
start ``python -m server`` and ``python -m web`` on loopback ports, then, in alternating rounds so that
every path meets the same interference, measure one stream of N characters and the time from the
request to the first text through (1) gRPC directly, (2) /api/v1/generate as Server-Sent Events and
(3) OpenAI-compatible /v1/completions with stream=true. Writes ``web.json`` and ``web.md`` to
bench/results/. ``--quick``: small runs that check everything works.
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
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import httpx2 as httpx  # noqa: E402

from bench.decode_bench import CORPUS, LAYERS, MODEL_NAME, PROMPT, SAMPLE_LEN, TEMPERATURE, server_process  # noqa: E402
from textgen.v1 import textgen_pb2 as pb  # noqa: E402
from textgen.v1 import textgen_pb2_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PATHS = ("grpc", "sse", "openai")
LABELS = {"grpc": "gRPC `Generate`, direct", "sse": "HTTP `/api/v1/generate`, Server-Sent Events",
          "openai": "HTTP `/v1/completions`, stream=true (OpenAI's format)"}


@dataclasses.dataclass(frozen=True)
class Plan:
    train_epochs: int = 1
    train_examples: int = 2048
    stream_chars: int = 5000
    rounds: int = 5
    ttfc_requests: int = 30
    ttfc_chars: int = 64


FULL = Plan()
QUICK = Plan(train_examples=512, stream_chars=500, rounds=1, ttfc_requests=5)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.web_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    began = time.perf_counter()
    load_before = os.getloadavg()
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        data_dir = Path(tmp)
        log("training a 128,128 model on tinyshakespeare (short)")
        config = TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, epochs=plan.train_epochs,
                             examples_per_epoch=plan.train_examples, display_length=0, seed=1)
        result = train(CORPUS.read_text(encoding="utf-8"), config, corpus_name="tinyshakespeare")
        export.publish(result.model, result.meta, data_dir / "models", MODEL_NAME)
        out = {"quick": args.quick, "plan": dataclasses.asdict(plan),
               "model": {"name": MODEL_NAME, "lstm_layer_sizes": list(LAYERS), "sample_len": SAMPLE_LEN},
               "settings": {"temperature": TEMPERATURE, "prompt_chars": len(PROMPT)}}
        log("starting python -m server and python -m web")
        with server_process(data_dir) as addr, web_process(addr) as url:
            channel = grpc.insecure_channel(addr)
            stub = textgen_pb2_grpc.TextGenStub(channel)
            http = httpx.Client(base_url=url, timeout=120)
            calls = {"grpc": lambda n, seed: grpc_stream(stub, n, seed),
                     "sse": lambda n, seed: sse_stream(http, n, seed),
                     "openai": lambda n, seed: openai_stream(http, n, seed)}
            for call in calls.values():  # warm up every path (connections, first requests)
                call(200, 0)
            texts = {name: call(300, 7)[0] for name, call in calls.items()}
            out["same_text"] = len(set(texts.values())) == 1
            rates = {name: [] for name in PATHS}
            firsts = {name: [] for name in PATHS}
            for r in range(plan.rounds):
                log(f"round {r + 1}/{plan.rounds}: one stream of {plan.stream_chars} characters on each path")
                for name in PATHS:
                    text, _, seconds = calls[name](plan.stream_chars, 100 + r)
                    assert len(text) == plan.stream_chars, (name, len(text))
                    rates[name].append(plan.stream_chars / seconds)
            log(f"time to first chunk: {plan.ttfc_requests} requests on each path, interleaved")
            for i in range(plan.ttfc_requests):
                for name in PATHS:
                    firsts[name].append(calls[name](plan.ttfc_chars, 1000 + i)[1])
            http.close()
            channel.close()
    out["paths"] = {name: {"chars_per_s_best": max(rates[name]), "chars_per_s_median": statistics.median(rates[name]),
                           "chars_per_s_rounds": rates[name],
                           "ttfc_median_ms": 1000 * statistics.median(firsts[name]),
                           "ttfc_ms": [1000 * t for t in firsts[name]]} for name in PATHS}
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                      "grpc": grpc.__version__, "load_average_before": load_before,
                      "load_average_after": os.getloadavg()}
    out["bench_seconds"] = time.perf_counter() - began
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "web.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "web.md").write_text(report(out))
    print(report(out))
    return out


class web_process:
    """``python -m web`` on a free loopback port, dialling ``addr``; SIGTERM on exit."""

    def __init__(self, addr: str):
        self.grpc_addr = addr

    def __enter__(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            web_addr = f"127.0.0.1:{sock.getsockname()[1]}"
        env = dict(os.environ, TEXTGEN_SERVER=self.grpc_addr, TEXTGEN_WEB_ADDR=web_addr)
        self.process = subprocess.Popen([sys.executable, "-m", "web"], env=env, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://{web_addr}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/api/v1/models", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the web process did not come up")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def grpc_stream(stub, length: int, seed: int):
    """``(text, seconds to the first text, total seconds)`` of one Generate call."""
    request = pb.GenerateRequest(model=MODEL_NAME, prompt=PROMPT, length=length, temperature=TEMPERATURE, seed=seed)
    t0 = time.perf_counter()
    first, parts = None, []
    for response in stub.Generate(request):
        if response.text and first is None:
            first = time.perf_counter() - t0
        parts.append(response.text)
    return "".join(parts), first, time.perf_counter() - t0


def _sse_texts(http, path: str, body: dict, text_of):
    t0 = time.perf_counter()
    first, parts = None, []
    with http.stream("POST", path, json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            text = text_of(json.loads(line[5:]))
            if text:
                if first is None:
                    first = time.perf_counter() - t0
                parts.append(text)
    return "".join(parts), first, time.perf_counter() - t0


def sse_stream(http, length: int, seed: int):
    body = {"model": MODEL_NAME, "prompt": PROMPT, "length": length, "temperature": TEMPERATURE, "seed": seed}
    return _sse_texts(http, "/api/v1/generate", body, lambda data: data.get("text"))


def openai_stream(http, length: int, seed: int):
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": length, "temperature": TEMPERATURE, "seed": seed,
            "stream": True}
    return _sse_texts(http, "/v1/completions", body, lambda data: data["choices"][0]["text"])


def log(message: str) -> None:
    print(f"[web_bench] {message}", file=sys.stderr, flush=True)


def report(out: dict) -> str:
    plan, paths, machine = Plan(**out["plan"]), out["paths"], out["machine"]
    grpc_rate, grpc_ttfc = paths["grpc"]["chars_per_s_best"], paths["grpc"]["ttfc_median_ms"]
    lines = [
        "# Web benchmark: HTTP/SSE against direct gRPC",
        "",
        f"Model: LSTM {','.join(map(str, out['model']['lstm_layer_sizes']))}, sample_len "
        f"{out['model']['sample_len']}, trained briefly on tinyshakespeare (the speed does not depend on the "
        f"weights). Temperature {out['settings']['temperature']}. Machine: {machine['cpus']} CPUs, "
        f"{machine['platform']}, grpcio {machine['grpc']}; load average before/after "
        f"{machine['load_average_before'][0]:.2f} / {machine['load_average_after'][0]:.2f}"
        f"{' (QUICK RUN: not for quoting)' if out['quick'] else ''}.",
        "",
        f"| path | 1 stream of {plan.stream_chars:,} chars, chars/s (best of {plan.rounds}) | vs gRPC "
        f"| time to first chunk, median of {plan.ttfc_requests} | vs gRPC |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in PATHS:
        p = paths[name]
        lines.append(f"| {LABELS[name]} | {p['chars_per_s_best']:,.0f} | {p['chars_per_s_best'] / grpc_rate:.0%} "
                     f"| {p['ttfc_median_ms']:.1f} ms | {p['ttfc_median_ms'] - grpc_ttfc:+.1f} ms |")
    lines += [
        "",
        f"The same seed gives the same text on all three paths: {'yes' if out['same_text'] else 'NO'}.",
        "",
        "How, all measured in this run: `python -m server` and `python -m web` run as subprocesses on loopback "
        "ports; the clients (a gRPC channel, one keep-alive HTTP connection) are in the benchmark process on "
        "the same CPUs. Throughput: in each round one stream per path, back to back, from the request to the "
        "last chunk; the table shows each path's best round (other processes only ever slow a run down), "
        "web.json every round. Time to first chunk: from the request to the first text, "
        f"{plan.ttfc_chars}-character requests interleaved across the paths.",
        "",
        f"Whole benchmark: {out['bench_seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
