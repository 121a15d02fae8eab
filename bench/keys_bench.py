"""What API keys cost a stream: the same server with keys on (TEXTGEN_AUTH=keys: the key looked up, its
scope checked, a stream place and its characters taken from Redis at the start and given back at the
end, usage counted) against keys off, in one run on this machine.

``python -m bench.keys_bench [--quick] [--results DIR]``. Trains a 128,128 model briefly on
tinyshakespeare, starts a redis-server and two ``python -m server`` processes on one models folder
(one with keys, one without), then, in alternating rounds so that both see the same machine: one
stream of STREAM_CHARS characters at a time (characters per second), and TTFC_REQUESTS short streams
(time to first chunk). Writes keys.json and keys.md to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402

from bench.decode_bench import CORPUS, LAYERS, SAMPLE_LEN, server_process  # noqa: E402
from textgen.v1 import textgen_pb2 as pb  # noqa: E402
from textgen.v1 import textgen_pb2_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAME = "keysbench"
PROMPT = "KING RICHARD III:\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.keys_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    rounds, stream_chars, ttfc_requests = (2, 500, 5) if args.quick else (8, 3000, 25)
    load_before = os.getloadavg()
    from textgen import keys
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    out = {"quick": args.quick, "lstm_layer_sizes": list(LAYERS), "rounds": rounds, "stream_chars": stream_chars,
           "ttfc_requests": ttfc_requests}
    with tempfile.TemporaryDirectory(prefix="keys-bench-") as tmp:
        tmp = Path(tmp)
        log("training a 128,128 model on tinyshakespeare (short)")
        config = TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, epochs=1, examples_per_epoch=256,
                             display_length=0, seed=1)
        result = train(CORPUS.read_text(encoding="utf-8"), config, corpus_name="tinyshakespeare")
        export.publish(result.model, result.meta, tmp / "data" / "models", NAME)
        redis = start_redis(tmp / "redis")
        try:
            import redis as redis_module

            _key, secret = keys.create(redis_module.Redis.from_url(redis[1]), "generate", name="bench")
            common = {"TEXTGEN_WARM_MODELS": "1", "TEXTGEN_BASE_MODEL": "off"}
            with server_process(tmp / "data", **common) as off, \
                    server_process(tmp / "data", TEXTGEN_AUTH="keys", REDIS_URL=redis[1], **common) as on:
                stubs = {"off": (stub(off), None), "on": (stub(on), (("authorization", f"Bearer {secret}"),))}
                for name, (textgen, metadata) in stubs.items():  # warm: XLA programs for both shapes
                    for _ in range(3):
                        generate(textgen, metadata, stream_chars)
                        generate(textgen, metadata, 64)
                rates = {"off": [], "on": []}
                ttfc = {"off": [], "on": []}
                for r in range(rounds):
                    order = ("off", "on") if r % 2 == 0 else ("on", "off")
                    for name in order:
                        textgen, metadata = stubs[name]
                        text, _first, seconds = generate(textgen, metadata, stream_chars, seed=r)
                        assert len(text) == stream_chars
                        rates[name].append(stream_chars / seconds)
                        ttfc[name] += [generate(textgen, metadata, 64, seed=i)[1] for i in range(ttfc_requests)]
                    log(f"round {r + 1}/{rounds}: off {rates['off'][-1]:.0f} chars/s, on {rates['on'][-1]:.0f}")
        finally:
            redis[0].terminate()
            redis[0].wait(10)
    for name in ("off", "on"):
        out[name] = {"chars_per_second_median": statistics.median(rates[name]), "chars_per_second": rates[name],
                     "ttfc_median_ms": 1000 * statistics.median(ttfc[name]),
                     "ttfc_p90_ms": 1000 * sorted(ttfc[name])[int(0.9 * len(ttfc[name]))]}
    out["rate_ratio"] = out["on"]["chars_per_second_median"] / out["off"]["chars_per_second_median"]
    out["ttfc_added_ms"] = out["on"]["ttfc_median_ms"] - out["off"]["ttfc_median_ms"]
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
                      "load_after": os.getloadavg()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "keys_quick" if args.quick else "keys"
    (args.results / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (args.results / f"{stem}.md").write_text(report(out), encoding="utf-8")
    print(report(out))
    return out


def start_redis(folder: Path):
    folder.mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)


def stub(server) -> textgen_pb2_grpc.TextGenStub:
    return textgen_pb2_grpc.TextGenStub(grpc.insecure_channel(server.addr))


def generate(textgen, metadata, length: int, seed: int = 0):
    """One stream: ``(text, seconds to the first text, total seconds)``."""
    request = pb.GenerateRequest(model=NAME, prompt=PROMPT, length=length, temperature=0.8, seed=seed)
    t0 = time.perf_counter()
    first, parts = None, []
    for response in textgen.Generate(request, metadata=metadata):
        if response.text and first is None:
            first = time.perf_counter() - t0
        parts.append(response.text)
    return "".join(parts), first, time.perf_counter() - t0


def report(out: dict) -> str:
    off, on = out["off"], out["on"]
    return "\n".join([
        "# API keys: their cost on one stream (keys on against keys off, same run)",
        "",
        f"A 128,128 LSTM; {out['rounds']} alternating rounds, each: one {out['stream_chars']}-character stream, "
        f"then {out['ttfc_requests']} 64-character streams for time to first chunk. Keys on: TEXTGEN_AUTH=keys, a "
        "generate key with the default limits (a stream place and its characters taken from Redis at the start, "
        "given back at the end; usage counted). `python -m bench.keys_bench`"
        + (" --quick" if out["quick"] else "") + ".",
        "",
        "| | keys off | keys on | on / off |",
        "|---|---:|---:|---:|",
        f"| one stream, characters per second (median) | {off['chars_per_second_median']:.0f} | "
        f"{on['chars_per_second_median']:.0f} | {out['rate_ratio']:.3f} |",
        f"| time to first chunk, median | {off['ttfc_median_ms']:.1f} ms | {on['ttfc_median_ms']:.1f} ms | "
        f"+{out['ttfc_added_ms']:.1f} ms |",
        f"| time to first chunk, 90th percentile | {off['ttfc_p90_ms']:.1f} ms | {on['ttfc_p90_ms']:.1f} ms | |",
        "",
        f"Machine: {out['machine']['platform']}, {out['machine']['cpus']} CPUs, load before "
        f"{out['machine']['load_before'][0]:.2f}.",
        "",
    ])


def log(message: str) -> None:
    print(f"[keys bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
