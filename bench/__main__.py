"""Run every benchmark: ``python -m bench [--quick] [--minutes M] [--only train|decode|web|capacity|versions|keys|openai|transfer]``.

The training bench runs first, then the decode bench, the web bench (HTTP/SSE against gRPC), the
capacity bench (two one-core replicas behind the balancer against one), the version-policy memory
bench, the keys bench (a stream with API keys on against off), the OpenAI controls bench (logprobs=5 and
penalties against neither) and the transfer bench (fine-tuning base-english against training from scratch, 30 minutes).
``--quick`` goes to all; ``--minutes`` to the training bench; any other flags go to the decode bench.
Each writes its results to bench/results/.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs that check the benches work")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training minutes per recipe for the training bench's time to quality")
    parser.add_argument("--only", choices=("train", "decode", "web", "capacity", "versions", "keys", "openai", "transfer"), help="run one bench only")
    args, rest = parser.parse_known_args(argv)
    if rest and args.only in ("train", "web", "capacity", "versions", "keys", "openai", "transfer"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    quick = ["--quick"] if args.quick else []

    if args.only in (None, "train"):
        from bench import train_bench

        print("[bench] training bench", file=sys.stderr, flush=True)
        train_bench.main(quick + (["--minutes", repr(args.minutes)] if args.minutes is not None else []))
    if args.only in (None, "decode"):
        from bench import decode_bench

        print("[bench] decode bench", file=sys.stderr, flush=True)
        decode_bench.main(quick + rest)
    if args.only in (None, "web"):
        from bench import web_bench

        print("[bench] web bench", file=sys.stderr, flush=True)
        web_bench.main(quick)
    if args.only in (None, "capacity"):
        from bench import capacity

        print("[bench] capacity bench", file=sys.stderr, flush=True)
        capacity.main(quick)
    if args.only in (None, "versions"):
        from bench import versions_rss

        print("[bench] version policy memory bench", file=sys.stderr, flush=True)
        versions_rss.main(quick)
    if args.only in (None, "keys"):
        from bench import keys_bench

        print("[bench] keys bench", file=sys.stderr, flush=True)
        keys_bench.main(quick)
    if args.only in (None, "openai"):
        from bench import openai_bench

        print("[bench] OpenAI controls bench", file=sys.stderr, flush=True)
        openai_bench.main(quick)
    if args.only in (None, "transfer"):
        from bench import transfer

        print("[bench] transfer bench", file=sys.stderr, flush=True)
        transfer.main(quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
