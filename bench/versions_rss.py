"""Server memory against the number of versions on disk: the version policy (each model's latest
loaded, older ones on request, at most TEXTGEN_OLDER_VERSIONS=2 kept) against loading every version
(TEXTGEN_OLDER_VERSIONS=all, what the store did before it had a policy), in one run on this machine.

``python -m bench.versions_rss [--quick] [--results DIR]``. Trains a 128,128 model (the original's sizes)
briefly on tinyshakespeare and publishes it as versions 1..N of one model (copies: the memory of a
loaded version does not depend on its weights' values), for N in 1, 5 and 20. For each N and policy it
starts ``python -m server``, waits for health SERVING (the latest version warmed), and reads the
process's resident memory; then asks for every version once (a 50-character stream from each) and
reads it again. Writes versions_rss.json and versions_rss.md to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
NAME = "versions"
POLICIES = {"all": "all", "latest": "2"}  # TEXTGEN_OLDER_VERSIONS of each


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.versions_rss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    counts = (1, 3) if args.quick else (1, 5, 20)
    began, load_before = time.perf_counter(), os.getloadavg()
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    out = {"quick": args.quick, "lstm_layer_sizes": list(LAYERS), "rows": []}
    with tempfile.TemporaryDirectory(prefix="versions-bench-") as tmp:
        tmp = Path(tmp)
        log("training a 128,128 model on tinyshakespeare (short)")
        config = TrainConfig(lstm_layer_sizes=LAYERS, sample_len=SAMPLE_LEN, epochs=1, examples_per_epoch=256,
                             display_length=0, seed=1)
        result = train(CORPUS.read_text(encoding="utf-8"), config, corpus_name="tinyshakespeare")
        bundle, _ = export.publish(result.model, result.meta, tmp / "source", NAME)
        for count in counts:
            data = tmp / f"data-{count}"
            for version in range(1, count + 1):
                shutil.copytree(bundle, data / "models" / NAME / str(version))
            for policy, setting in POLICIES.items():
                row = measure(data, count, policy, setting)
                out["rows"].append(row)
                log(f"{count} versions, policy {policy}: {row['rss_mb_serving']:.0f} MB when serving, "
                    f"{row['rss_mb_after_each']:.0f} MB after a call to each version")
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                      "load_before": load_before, "load_after": os.getloadavg()}
    out["seconds"] = round(time.perf_counter() - began, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "versions_rss.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "versions_rss.md").write_text(report(out))
    log(f"wrote {args.results / 'versions_rss.md'}")
    return out


def measure(data: Path, count: int, policy: str, setting: str) -> dict:
    began = time.perf_counter()
    with server_process(data, TEXTGEN_OLDER_VERSIONS=setting) as server:
        ready_s = time.perf_counter() - began
        time.sleep(1.0)
        serving = rss_mb(server.process.pid)
        with grpc.insecure_channel(server.addr) as channel:
            stub = textgen_pb2_grpc.TextGenStub(channel)
            for version in range(1, count + 1):
                request = pb.GenerateRequest(model=NAME, version=version, prompt="ROMEO:", length=50, seed=version)
                text = "".join(r.text for r in stub.Generate(request, timeout=120))
                assert len(text) == 50, text
        time.sleep(1.0)
        after = rss_mb(server.process.pid)
    return {"versions": count, "policy": policy, "TEXTGEN_OLDER_VERSIONS": setting, "start_to_serving_s": ready_s,
            "rss_mb_serving": serving, "rss_mb_after_each": after}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def log(message: str) -> None:
    print(f"[versions_rss] {message}", file=sys.stderr, flush=True)


def report(out: dict) -> str:
    lines = [
        "# Server memory and the version policy",
        "",
        f"`python -m bench.versions_rss{' --quick' if out['quick'] else ''}`: one model of "
        f"{','.join(map(str, out['lstm_layer_sizes']))} LSTM units, N versions on disk, `python -m server` "
        f"resident memory (VmRSS) once health says SERVING, and again after one 50-character stream from "
        f"each version. **latest**: the policy (`TEXTGEN_OLDER_VERSIONS=2`, the default: the latest loaded, "
        f"older ones on request, two kept); **all**: every version loaded (`TEXTGEN_OLDER_VERSIONS=all`, the "
        f"store before the policy). Machine: {out['machine']['cpus']} CPUs, {out['machine']['platform']}; "
        f"{out['seconds']:.0f} s in all.",
        "",
        "| versions on disk | policy | start to SERVING | RSS when serving | RSS after a call to each |",
        "|---:|---|---:|---:|---:|",
    ]
    for row in out["rows"]:
        lines.append(f"| {row['versions']} | {row['policy']} | {row['start_to_serving_s']:.1f} s | "
                     f"{row['rss_mb_serving']:.0f} MB | {row['rss_mb_after_each']:.0f} MB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
