"""Scale-out: one server replica pinned to one core against two replicas pinned to one core each, both
behind the load balancer, in one run on this machine.

``python -m bench.capacity [--quick] [--results DIR]``. For each model size (the original's 128,128 and
the fast recipe's 224,224): train briefly on tinyshakespeare, publish it, start two ``python -m server``
replicas (``taskset -c 0`` and ``-c 1``) and two nginx balancers with deploy/lb/nginx.conf (the one
compose runs), one passing to the first replica only, one to both. Then, in alternating rounds so that
both setups meet the same interference, hold 64 concurrent seeded streams through a balancer for a
fixed window, each stream followed at once by the next: aggregate characters per second over the
window and the time from each call to its first text. The load generator (this process) and nginx are
not pinned: with two replicas they share the two cores with them. Needs nginx (Debian's nginx-core;
``make bench`` installs it where it can). Writes capacity.json and capacity.md to bench/results/.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402

from bench.balancer import balancer, find_nginx, nginx_version  # noqa: E402
from bench.decode_bench import CORPUS, SAMPLE_LEN, TEMPERATURE, distinct_prompts, server_process  # noqa: E402
from textgen.v1 import textgen_pb2 as pb  # noqa: E402
from textgen.v1 import textgen_pb2_grpc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIZES = {"original": (128, 128), "fast": (224, 224)}  # the original's sizes and the fast recipe's
SETUPS = ("one replica", "two replicas")


@dataclasses.dataclass(frozen=True)
class Plan:
    train_examples: int = 2048
    streams: int = 64
    stream_chars: int = 120
    lead_in_s: float = 4.0  # each round's calls start spread over this long before its window opens
    window_s: float = 15.0
    warm_s: float = 6.0
    rounds: int = 4
    sizes: tuple[str, ...] = ("original", "fast")


FULL = Plan()
QUICK = Plan(train_examples=256, lead_in_s=1.0, window_s=3.0, warm_s=2.0, rounds=1, sizes=("original",))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs that check the bench works")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("bench.capacity needs nginx (the balancer): deploy/local/install-nginx.sh installs it")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("bench.capacity needs two cores (one per replica)")
    began, load_before = time.perf_counter(), os.getloadavg()
    text = CORPUS.read_text(encoding="utf-8")
    prompts = distinct_prompts(text, plan.streams, chars=40)
    out = {"quick": args.quick, "plan": dataclasses.asdict(plan), "nginx": nginx_version(nginx), "sizes": {}}
    for size in plan.sizes:
        with tempfile.TemporaryDirectory(prefix="capacity-bench-") as tmp:
            out["sizes"][size] = measure_size(size, plan, text, prompts, Path(tmp), nginx)
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                      "load_before": load_before, "load_after": os.getloadavg()}
    out["seconds"] = round(time.perf_counter() - began, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "capacity.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "capacity.md").write_text(report(out))
    log(f"wrote {args.results / 'capacity.md'}")
    return out


def measure_size(size: str, plan: Plan, text: str, prompts: list[str], tmp: Path, nginx: str) -> dict:
    from textgen.options import TrainConfig
    from trainer import export
    from trainer.training import train

    layers = SIZES[size]
    name = f"capacity-{size}"
    log(f"{size} ({','.join(map(str, layers))}): training briefly on tinyshakespeare")
    config = TrainConfig(lstm_layer_sizes=layers, sample_len=SAMPLE_LEN, epochs=1,
                         examples_per_epoch=plan.train_examples, display_length=0, seed=1)
    result = train(text, config, corpus_name="tinyshakespeare")
    export.publish(result.model, result.meta, tmp / "data" / "models", name)
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(server_process(tmp / "data", cpu=cpu, TEXTGEN_MAX_STREAMS="256"))
                    for cpu in (0, 1)]
        balancers = {SETUPS[0]: stack.enter_context(balancer(nginx, tmp / "lb1", [replicas[0].addr])),
                     SETUPS[1]: stack.enter_context(balancer(nginx, tmp / "lb2", [r.addr for r in replicas]))}
        log(f"{size}: replicas on cores 0 and 1 ready; warming up")
        passes = warm_up(replicas, balancers, name, prompts, plan)
        log(f"{size}: warm after {passes} passes of {plan.warm_s:.0f} s per setup (the last compiled no XLA program)")
        pids = {"replicas": [r.process.pid for r in replicas]}
        rounds = {setup: [] for setup in SETUPS}
        for i in range(plan.rounds):
            for setup in SETUPS:
                pids["nginx"] = nginx_pids()
                figures = asyncio.run(load(balancers[setup], name, prompts, plan, plan.lead_in_s, plan.window_s, pids))
                rounds[setup].append(figures)
                log(f"{size} round {i + 1}, {setup}: {figures['chars_per_s']:.0f} chars/s, time to first chunk "
                    f"median {figures['ttfc_median_ms']:.0f} ms, p90 {figures['ttfc_p90_ms']:.0f} ms "
                    f"({figures['calls']} calls); cores busy: replicas {figures['cpu']['replicas']:.2f}, "
                    f"load generator {figures['cpu']['load generator']:.2f}, nginx {figures['cpu']['nginx']:.2f}")
    # Each setup's best round (as the decode bench takes its best of three): this 2-core machine's other
    # load drags single rounds down by up to a third; every round is in the JSON and the report.
    best = {setup: max(rounds[setup], key=lambda r: r["chars_per_s"]) for setup in SETUPS}
    mean = {setup: statistics.mean(r["chars_per_s"] for r in rounds[setup]) for setup in SETUPS}
    ttfc = {setup: statistics.median(r["ttfc_median_ms"] for r in rounds[setup]) for setup in SETUPS}
    return {"lstm_layer_sizes": list(layers), "rounds": rounds, "best": best, "mean_chars_per_s": mean,
            "ttfc_median_of_rounds_ms": ttfc,
            "scale_out": best[SETUPS[1]]["chars_per_s"] / best[SETUPS[0]]["chars_per_s"],
            "scale_out_of_means": mean[SETUPS[1]] / mean[SETUPS[0]],
            "chars_per_s_per_core": best[SETUPS[0]]["chars_per_replica_cpu_s"]}


WARM_UP_PASSES = (2, 8)  # at least, at most


def warm_up(replicas, balancers: dict, name: str, prompts: list[str], plan: Plan) -> int:
    """Run each setup's load in passes until a whole pass compiled no XLA program on either replica
    (a compile takes a second or more of the replica's one core): the steady state of a replica that
    has been up a while. Returns the number of passes."""
    def programs() -> float:
        return sum(found.get("programs", 0) for r in replicas for found in r.xla_compiles().values())

    for passes in range(1, WARM_UP_PASSES[1] + 1):
        before = programs()
        for setup in SETUPS:
            asyncio.run(load(balancers[setup], name, prompts, plan, 0.0, plan.warm_s))
        time.sleep(2.0)  # a compile submitted at the end of the pass
        if passes >= WARM_UP_PASSES[0] and programs() == before:
            return passes
    return passes


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nginx_pids() -> list[int]:
    """The machine's nginx processes (the bench's own two balancers, masters and workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "nginx":
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


async def load(addr: str, model: str, prompts: list[str], plan: Plan, lead_in: float, seconds: float,
               pids: dict | None = None) -> dict:
    """``plan.streams`` concurrent Generate calls through ``addr``, each followed at once by the next,
    for ``lead_in`` seconds and then a window of ``seconds``: the characters received in the window per
    second, the time to first text of each call started in it, and the cores each part kept busy."""
    chars, firsts, calls = 0, [], 0
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = textgen_pb2_grpc.TextGenStub(channel)
        start = time.perf_counter() + lead_in
        end = start + seconds

        async def cpu_at(moment: float) -> dict:
            await asyncio.sleep(max(0.0, moment - time.perf_counter()))
            return {part: sum(map(cpu_seconds, part_pids)) for part, part_pids in (pids or {}).items()} | \
                {"load generator": time.process_time()}

        async def worker(i: int) -> None:
            nonlocal chars, calls
            seed = i * 1000
            await asyncio.sleep(lead_in * i / plan.streams)  # no window starts with every call at once
            while time.perf_counter() < end:
                seed += 1
                request = pb.GenerateRequest(model=model, prompt=prompts[i % len(prompts)],
                                             length=plan.stream_chars, temperature=TEMPERATURE, seed=seed)
                t0 = time.perf_counter()
                first = None
                call = stub.Generate(request)
                async for response in call:
                    now = time.perf_counter()
                    if now > end:
                        call.cancel()
                        break
                    if response.text:
                        if now >= start:
                            chars += len(response.text)
                        if first is None:
                            first = now - t0
                            if t0 >= start:
                                firsts.append(first)
                calls += t0 >= start

        opened, closed, *_ = await asyncio.gather(cpu_at(start), cpu_at(end), *(worker(i) for i in range(plan.streams)))
    firsts.sort()
    cpu = {part: (closed[part] - opened[part]) / seconds for part in opened}
    if not firsts:
        raise RuntimeError(f"no call started in the {seconds:.0f} s window got its first text: a longer window")
    return {"chars_per_s": chars / seconds, "calls": calls, "ttfc_median_ms": 1000 * statistics.median(firsts),
            "ttfc_p90_ms": 1000 * firsts[int(0.9 * (len(firsts) - 1))], "cpu": cpu,
            "chars_per_replica_cpu_s": chars / seconds / cpu["replicas"] if cpu.get("replicas") else 0.0}


def log(message: str) -> None:
    print(f"[capacity] {message}", file=sys.stderr, flush=True)


def report(out: dict) -> str:
    plan = out["plan"]
    lines = [
        "# Capacity: one replica on one core against two replicas on one core each, behind the balancer",
        "",
        f"`python -m bench.capacity{' --quick' if out['quick'] else ''}`: {plan['streams']} concurrent seeded "
        f"streams of {plan['stream_chars']} characters (each followed at once by the next; time to first chunk "
        f"of the calls started in the window, while the others run) through nginx "
        f"with deploy/lb/nginx.conf ({out['nginx']}), {plan['rounds']} alternating rounds of "
        f"{plan['window_s']:.0f} s per setup (each after {plan['lead_in_s']:.0f} s over which the streams' first "
        f"calls start, so that no window starts with every call at once), after warm-up passes of "
        f"{plan['warm_s']:.0f} s per setup until a pass compiled no XLA program; replicas pinned with "
        f"`taskset -c 0` / `-c 1`; the load generator and nginx unpinned (with two replicas they share the "
        f"two cores with them). Machine: {out['machine']['cpus']} CPUs, {out['machine']['platform']}, "
        f"load average before {out['machine']['load_before'][0]:.2f}; {out['seconds']:.0f} s in all.",
        "",
        "Each setup's best round (the decode bench's best of three, for the same reason: other load on this "
        "2-core machine drags single rounds down by up to a third); the mean of all rounds beside it.",
        "",
        "| model (LSTM sizes) | setup | characters/s, best round | time to first chunk, median (p90) | cores busy: "
        "replicas, load generator, nginx | characters per replica CPU second | two / one | mean of rounds | "
        "two / one, means | time to first chunk, median of rounds |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size, found in out["sizes"].items():
        for setup in SETUPS:
            best, cpu = found["best"][setup], found["best"][setup]["cpu"]
            ratio, ratio_of_means = (f"**{found['scale_out']:.2f}x**", f"{found['scale_out_of_means']:.2f}x") \
                if setup == SETUPS[1] else ("", "")
            lines.append(
                f"| {size} ({','.join(map(str, found['lstm_layer_sizes']))}) | {setup} | {best['chars_per_s']:,.0f} | "
                f"{best['ttfc_median_ms']:.0f} ms ({best['ttfc_p90_ms']:.0f} ms) | "
                f"{cpu['replicas']:.2f}, {cpu['load generator']:.2f}, {cpu['nginx']:.2f} | "
                f"{best['chars_per_replica_cpu_s']:,.0f} | {ratio} | {found['mean_chars_per_s'][setup]:,.0f} | "
                f"{ratio_of_means} | {found['ttfc_median_of_rounds_ms'][setup]:.0f} ms |")
    lines += ["", "Rounds (characters/s; time to first chunk, median):", ""]
    for size, found in out["sizes"].items():
        for setup in SETUPS:
            lines.append(f"- {size}, {setup}: " + ", ".join(
                f"{r['chars_per_s']:,.0f} ({r['ttfc_median_ms']:.0f} ms)" for r in found["rounds"][setup]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
