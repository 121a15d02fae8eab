"""Fine-tuning the shipped base model against training from scratch, on small texts it never saw.

    python -m bench.transfer [--quick] [--minutes 2,5]

Two texts, each split into its first 90% (trained on) and its last 10% (scored):
- English prose: the GNU GPL version 3 (35 KB), /usr/share/common-licenses/GPL-3 from Debian's
  base-files (verbatim copying is permitted by its own terms);
- code: the first 40,000 characters of Python 3.11's argparse.py (PSF licence), from the running Python.
For each text and each budget, a model from scratch (the fast recipe: 224,224) and base-english
fine-tuned (the finetune recipe), each for that many minutes of training steps, one run at a time.
Scores: nats per character of every held-out character that both models' charsets have, from the 60
characters before it (the original's window), and a sample at temperature 0.6 from the same
prompt. Also the base model's own held-out scores on its corpora (trainer.base_model).
Writes bench/results/transfer.md and transfer.json.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PROSE = Path("/usr/share/common-licenses/GPL-3")
CODE_CHARS = 40_000
SAMPLE_TEMPERATURE = 0.6
SAMPLE_CHARS = 200


def texts() -> dict[str, dict]:
    import argparse as stdlib_argparse

    code = Path(inspect.getsourcefile(stdlib_argparse)).read_text(encoding="utf-8")[:CODE_CHARS]
    found = {"code": {"text": code, "source": f"Python {platform.python_version()} argparse.py, first "
                                               f"{CODE_CHARS:,} characters (PSF licence)"}}
    if PROSE.is_file():
        found["prose"] = {"text": PROSE.read_text(encoding="utf-8"),
                          "source": "GNU GPL v3, /usr/share/common-licenses/GPL-3 (Debian base-files)"}
    for item in found.values():
        item["sha256"] = hashlib.sha256(item["text"].encode("utf-8")).hexdigest()
    return dict(sorted(found.items(), key=lambda kv: kv[0] != "prose"))


def split(text: str) -> tuple[str, str]:
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def held_out_score(model, meta: dict, held: str, keep: set[str]) -> tuple[float, int]:
    """Mean nats per character of ``held``'s characters after its first sample_len, each from the
    sample_len characters before it, over the positions whose character and context are all in ``keep``."""
    from textgen.charset import Charset

    charset, n = Charset(meta["charset"]), int(meta["sample_len"])
    rows, targets = [], []
    for j in range(n, len(held)):  # full windows: the original's model always sees sample_len characters
        context = held[j - n : j]
        if held[j] in keep and all(c in keep for c in context):
            rows.append(charset.encode(context))
            targets.append(charset.chars.index(held[j]))
    x, y = np.stack(rows), np.array(targets)
    probs = model.predict(x, batch_size=512, verbose=0)
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)))), len(y)


def sample(model, meta: dict, prompt: str, seed: int = 1) -> str:
    from textgen.charset import Charset
    from textgen.sampling import Uniforms
    from trainer.decode import PipelinedDecoder
    from trainer.training import generate_ids

    charset = Charset(meta["charset"])
    prompt = "".join(c for c in prompt if c in charset)
    ids = generate_ids(PipelinedDecoder(model, int(meta["sample_len"])), charset.encode(prompt), SAMPLE_CHARS,
                       [SAMPLE_TEMPERATURE], [Uniforms(seed)])
    return charset.decode(ids[0])


def run(text: str, minutes: float, base: Path | None, seed: int = 1):
    from textgen.options import TrainConfig
    from trainer import training

    options = {"time_budget_minutes": minutes, "seed": seed, "validation_split": 0.05, "display_length": 0}
    if base is None:
        config = TrainConfig.from_recipe("fast", **options)
    else:
        config = TrainConfig.from_dict(options, continuing=True)
    began = time.perf_counter()
    result = training.train(text, config, init_from=base)
    return result, time.perf_counter() - began


def base_scores(base: Path) -> list[dict]:
    from trainer import base_model, export

    model, meta = export.load_keras(base)
    rows = []
    try:
        corpora = base_model.read_texts(base_model.default_corpora_dir())
    except base_model.BaseModelError as exc:
        return [{"error": str(exc)}]
    for t in base_model.TEXTS:
        held = base_model.split(corpora[t.file])[1]
        score, count = held_out_score(model, meta, held, set(meta["charset"]))
        rows.append({"text": t.file, "held_out_characters": count, "nats_per_char": score})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.2-minute runs that check the bench works")
    parser.add_argument("--minutes", default="2,5", help="training budgets, comma-separated (default 2,5)")
    args = parser.parse_args(argv)
    budgets = [0.2] if args.quick else [float(m) for m in args.minutes.split(",")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer import base_model, export
    from trainer.training import use_threads_for
    from textgen.options import TrainConfig

    use_threads_for(TrainConfig.from_recipe("fast"))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base-english"
        model, meta = base_model.load()
        export.save_to_path(model, meta, base)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        load_before = os.getloadavg()
        rows = []
        for name, item in texts().items():
            train_part, held = split(item["text"])
            for minutes in budgets:
                pair = {}
                for how, init in (("scratch", None), ("fine-tuned", base)):
                    print(f"[transfer] {name}: {how}, {minutes:g} min", file=sys.stderr, flush=True)
                    result, seconds = run(train_part, minutes, init)
                    pair[how] = (result, seconds)
                keep = set(pair["scratch"][0].meta["charset"]) & set(pair["fine-tuned"][0].meta["charset"])
                for how, (result, seconds) in pair.items():
                    score, count = held_out_score(result.model, result.meta, held, keep)
                    rows.append({"text": name, "minutes": minutes, "how": how, "nats_per_char": score,
                                 "bits_per_char": score / math.log(2), "held_out_characters": count,
                                 "examples_seen": result.meta["examples_seen"], "seconds": seconds,
                                 "sample": sample(result.model, result.meta, held[:60])})
        own = base_scores(base)
    report = {"started": started, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "load_before": load_before, "load_after": os.getloadavg()},
              "texts": {name: {k: v for k, v in item.items() if k != "text"} | {"characters": len(item["text"])}
                        for name, item in texts().items()},
              "base_model": {"meta_training": meta.get("training"), "train_seconds": meta.get("train_seconds"),
                             "examples_seen": meta.get("examples_seen"), "val_loss": meta.get("val_loss"),
                             "size_bytes": (base_model.SHIPPED / "model.keras").stat().st_size,
                             "held_out": own},
              "runs": rows}
    write(report, quick=args.quick)
    return 0


def write(report: dict, quick: bool = False) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = "transfer_quick" if quick else "transfer"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    lines = ["# Fine-tuning base-english against training from scratch",
             "", f"`python -m bench.transfer` on {report['started']}: {report['machine']['cpus']} CPUs, load average "
             f"{' / '.join(f'{x:.1f}' for x in report['machine']['load_before'])} before, "
             f"{' / '.join(f'{x:.1f}' for x in report['machine']['load_after'])} after.", "",
             "Held-out score: nats per character of the last 10% of each text (every character both models know, "
             "from the 60 characters before it). Scratch: the fast recipe (224,224); fine-tuned: base-english "
             "with the finetune recipe. Minutes are minutes of training steps.", "",
             "| text | minutes | scratch | fine-tuned | fine-tuned - scratch | examples (scratch / fine-tuned) |",
             "|---|---:|---:|---:|---:|---:|"]
    runs = report["runs"]
    for text_name in report["texts"]:
        for minutes in sorted({r["minutes"] for r in runs if r["text"] == text_name}):
            pair = {r["how"]: r for r in runs if r["text"] == text_name and r["minutes"] == minutes}
            s, f = pair["scratch"], pair["fine-tuned"]
            lines.append(f"| {text_name} | {minutes:g} | {s['nats_per_char']:.3f} | {f['nats_per_char']:.3f} | "
                         f"**{f['nats_per_char'] - s['nats_per_char']:+.3f}** | "
                         f"{s['examples_seen']:,} / {f['examples_seen']:,} |")
    lines += ["", "Texts:", ""]
    for name, item in report["texts"].items():
        lines.append(f"- {name}: {item['source']}, {item['characters']:,} characters, sha256 `{item['sha256']}`")
    base = report["base_model"]
    lines += ["", "## The base model", "",
              f"model.keras {base['size_bytes'] / 2**20:.2f} MiB; {base['train_seconds'] / 60:.1f} minutes of "
              f"training steps, {base['examples_seen']:,} examples; recipe {json.dumps(base['meta_training'])[:400]}",
              "", "| its corpus (held-out last 5%) | characters | nats per character |", "|---|---:|---:|"]
    for row in base["held_out"]:
        if "error" in row:
            lines.append(f"| {row['error']} | | |")
        else:
            lines.append(f"| {row['text']} | {row['held_out_characters']:,} | {row['nats_per_char']:.3f} |")
    lines += ["", f"## Samples (temperature {SAMPLE_TEMPERATURE}, {SAMPLE_CHARS} characters after the first 60 "
                  "held-out characters)", ""]
    for r in runs:
        lines += [f"**{r['text']}, {r['minutes']:g} min, {r['how']}:**", "", "```", r["sample"], "```", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
