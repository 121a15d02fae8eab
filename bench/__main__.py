"""Run every benchmark: ``python -m bench [--quick] [--minutes M] [--only train|decode]``.

The training bench runs first, then the decode bench (``bench.decode_bench``, skipped with a message
while it does not exist). ``--quick`` goes to both; ``--minutes`` to the training bench; any other
flags go to the decode bench.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs that check the benches work")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training minutes per objective for the training bench's curve")
    parser.add_argument("--only", choices=("train", "decode"), help="run one bench only")
    args, rest = parser.parse_known_args(argv)
    if rest and args.only == "train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    quick = ["--quick"] if args.quick else []

    if args.only != "decode":
        from bench import train_bench

        train_bench.main(quick + (["--minutes", repr(args.minutes)] if args.minutes is not None else []))
    if args.only != "train":
        run_decode(quick + rest)
    return 0


def run_decode(argv: list[str]) -> None:
    if importlib.util.find_spec("bench.decode_bench") is None:
        print("[bench] bench/decode_bench.py does not exist yet: decode bench skipped", file=sys.stderr, flush=True)
        return
    module = importlib.import_module("bench.decode_bench")
    if not hasattr(module, "main"):
        print("[bench] bench.decode_bench has no main(): decode bench skipped", file=sys.stderr, flush=True)
        return
    print("[bench] decode bench", file=sys.stderr, flush=True)
    if inspect.signature(module.main).parameters:
        module.main(argv)
        return
    saved = sys.argv
    sys.argv = ["python -m bench.decode_bench", *argv]  # a main() that reads sys.argv sees our flags
    try:
        module.main()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
