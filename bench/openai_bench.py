"""What OpenAI's per-character controls cost: ``logprobs=5`` (the five likeliest characters at each
place, from Score) and penalties (presence, frequency and repetition: the bundle's ``advance_penalized``),
each against the same completion without them, through ``/v1/completions`` (stream=true), in one run.

``python -m bench.openai_bench [--quick] [--results DIR]``. Trains a 128,128 LSTM on tinyshakespeare
briefly, starts ``python -m server`` and ``python -m web``; then, in alternating rounds: one stream of
STREAM characters (characters per second), and 64 streams of STREAMS_64 characters started together
(aggregate characters per second), for each of: off, logprobs=5, penalties. Writes openai.json and
openai.md to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import httpx2 as httpx  # noqa: E402

from bench.decode_bench import CORPUS, LAYERS, MODEL_NAME, PROMPT, SAMPLE_LEN, TEMPERATURE, server_process  # noqa: E402
from bench.web_bench import web_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CONFIGS = {"off": {}, "logprobs5": {"logprobs": 5},
           "penalties": {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.2}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.openai_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    rounds, stream_chars, streams, chars_each = (1, 200, 8, 50) if args.quick else (5, 2000, 64, 200)
    load_before = os.getloadavg()
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    out = {"quick": args.quick, "lstm_layer_sizes": list(LAYERS), "rounds": rounds, "stream_chars": stream_chars,
           "streams": streams, "chars_each": chars_each, "configs": CONFIGS}
    with tempfile.TemporaryDirectory(prefix="openai-bench-") as tmp:
        data_dir = Path(tmp)
        log("training a 128,128 model on tinyshakespeare (short)")
        config = TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, epochs=1, examples_per_epoch=256,
                             display_length=0, seed=1)
        result = train(CORPUS.read_text(encoding="utf-8"), config, corpus_name="tinyshakespeare")
        export.publish(result.model, result.meta, data_dir / "models", MODEL_NAME)
        with server_process(data_dir, TEXTGEN_BASE_MODEL="off") as server, web_process(server.addr) as url:
            http = httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=streams + 8))
            for name in CONFIGS:  # warm: connections, XLA programs, the first penalized and scored calls
                stream(http, name, stream_chars // 4, 0)
                together(http, name, streams, chars_each, 0)
            one = {name: [] for name in CONFIGS}
            many = {name: [] for name in CONFIGS}
            for r in range(rounds):
                order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))
                for name in order:
                    one[name].append(stream_chars / stream(http, name, stream_chars, 10 + r))
                    many[name].append(together(http, name, streams, chars_each, 100 * r))
                    log(f"round {r + 1}/{rounds} {name}: one stream {one[name][-1]:.0f} chars/s, "
                        f"{streams} streams {many[name][-1]:.0f} chars/s")
            http.close()
    out["results"] = {name: {"one_stream_chars_per_s": statistics.median(one[name]), "one_rounds": one[name],
                             "aggregate_chars_per_s": statistics.median(many[name]), "aggregate_rounds": many[name]}
                      for name in CONFIGS}
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load_before": load_before,
                      "load_after": os.getloadavg()}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = "openai_quick" if args.quick else "openai"
    (args.results / f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (args.results / f"{stem}.md").write_text(report(out), encoding="utf-8")
    print(report(out))
    return out


def stream(http, name: str, length: int, seed: int) -> float:
    """Seconds for one streamed completion of ``length`` characters with config ``name``."""
    body = {"model": MODEL_NAME, "prompt": PROMPT, "max_tokens": length, "temperature": TEMPERATURE, "seed": seed,
            "stream": True, **CONFIGS[name]}
    t0 = time.perf_counter()
    got = 0
    with http.stream("POST", "/v1/completions", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                data = json.loads(line[5:])
                got += sum(len(c["text"]) for c in data.get("choices", []))
    assert got == length, (name, got)
    return time.perf_counter() - t0


def together(http, name: str, count: int, length: int, seed: int) -> float:
    """Aggregate characters per second of ``count`` streamed completions started at once."""
    seconds = [0.0] * count
    go = threading.Barrier(count + 1)

    def one(i):
        go.wait()
        seconds[i] = stream(http, name, length, seed + i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return count * length / (time.perf_counter() - t0)


def report(out: dict) -> str:
    r = out["results"]
    off1, off64 = r["off"]["one_stream_chars_per_s"], r["off"]["aggregate_chars_per_s"]
    rows = [f"| {name} | {r[name]['one_stream_chars_per_s']:.0f} | {r[name]['one_stream_chars_per_s'] / off1:.2f} | "
            f"{r[name]['aggregate_chars_per_s']:.0f} | {r[name]['aggregate_chars_per_s'] / off64:.2f} |"
            for name in CONFIGS]
    return "\n".join([
        "# OpenAI controls: the cost of logprobs=5 and of penalties (on against off, same run)",
        "",
        f"`/v1/completions`, stream=true, a 128,128 LSTM, temperature {TEMPERATURE}. One stream of "
        f"{out['stream_chars']} characters, and {out['streams']} streams of {out['chars_each']} characters started "
        f"together; medians of {out['rounds']} alternating rounds. logprobs=5: {CONFIGS['logprobs5']}; penalties: "
        f"{CONFIGS['penalties']}. `python -m bench.openai_bench`" + (" --quick" if out["quick"] else "") + ".",
        "",
        "| config | one stream, chars/s | vs off | " + f"{out['streams']} streams, chars/s | vs off |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Machine: {out['machine']['platform']}, {out['machine']['cpus']} CPUs, load before "
        f"{out['machine']['load_before'][0]:.2f}.",
        "",
    ])


def log(message: str) -> None:
    print(f"[openai bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
