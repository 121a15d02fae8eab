"""``python -m server keys``: manage the API keys in the Redis at REDIS_URL, no restart needed.

    python -m server keys add --scopes generate,train [--name NAME] [--max-streams N] ...
    python -m server keys list
    python -m server keys revoke ID_OR_NAME
    python -m server keys usage ID_OR_NAME

``add`` prints the key and, as its last line, the secret: it is shown this once (Redis keeps only its
SHA-256). Servers with TEXTGEN_AUTH=keys take a new key, and refuse a revoked one, within
TEXTGEN_KEYS_REFRESH_SECONDS. A bad argument or an unreachable Redis is one line on stderr, exit 2.
"""
from __future__ import annotations

import sys
import time

from server.errors import QueueUnavailable
from server.redis_link import RedisLink
from textgen import keys
from textgen.args import Parser, UsageError, integer
from textgen.keys import KeyProblem, Limits

LIMIT_FLAGS = {"max_streams": "Generate streams at once", "chars_per_minute": "generated characters per minute",
               "max_jobs": "training jobs queued or running", "upload_bytes_per_day": "bytes uploaded per UTC day"}


def build_parser() -> Parser:
    parser = Parser(prog="python -m server keys", description="Manage the API keys (TEXTGEN_AUTH=keys) in the "
                                                               "Redis at REDIS_URL.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add = commands.add_parser("add", help="make a key; its secret is the last line printed (shown once)")
    add.add_argument("--scopes", required=True, help=f"comma-separated, from: {', '.join(keys.SCOPES)}")
    add.add_argument("--name", default="", help="a unique name for the key (optional)")
    for field, what in LIMIT_FLAGS.items():
        add.add_argument(f"--{field.replace('_', '-')}", dest=field, type=integer, default=None, metavar="N",
                         help=f"limit: {what} (default: the server's TEXTGEN_KEY_{field.upper()}; 0: no limit)")
    commands.add_parser("list", help="the keys: id, name, scopes, limits set, created")
    revoke = commands.add_parser("revoke", help="delete a key: every server refuses it within seconds")
    revoke.add_argument("key", metavar="ID_OR_NAME")
    usage = commands.add_parser("usage", help="a key's usage over every replica")
    usage.add_argument("key", metavar="ID_OR_NAME")
    return parser


def main(argv: list[str]) -> int:
    import redis

    link = None
    try:
        args = build_parser().parse_args(argv)
        link = RedisLink()
        return COMMANDS[args.command](args, link)
    except (UsageError, KeyProblem, QueueUnavailable) as exc:  # QueueUnavailable: REDIS_URL or its files
        print(f"server keys: {exc}", file=sys.stderr)
    except (redis.exceptions.RedisError, ValueError) as exc:
        print(f"server keys: cannot reach Redis at {link.address} (REDIS_URL): {type(exc).__name__}: {exc}",
              file=sys.stderr)
    return 2


def add(args, link: RedisLink) -> int:
    limits = Limits(**{field: getattr(args, field) for field in LIMIT_FLAGS if getattr(args, field) is not None})
    key, secret = keys.create(link.client, args.scopes, args.name, limits)
    print(describe(key))
    print("the secret below is shown once; give it as 'authorization: Bearer <secret>' (TEXTGEN_TOKEN for the client)")
    print(secret)
    return 0


def list_keys(args, link: RedisLink) -> int:
    found = sorted(keys.load(link.client).values(), key=lambda k: k.created)
    if not found:
        print("no keys (make one with: python -m server keys add --scopes generate)")
    for key in found:
        print(describe(key))
    return 0


def revoke(args, link: RedisLink) -> int:
    key = keys.revoke(link.client, args.key)
    print(f"revoked {key.label}")
    return 0


def usage(args, link: RedisLink) -> int:
    key = keys.find(link.client, args.key)
    totals = keys.read_usage(link.client, key.id)
    print(f"key {key.label}")
    for field in keys.USAGE_FIELDS:
        print(f"  {field}: {totals[field]:g}" if field == keys.TRAINING_SECONDS else f"  {field}: {totals[field]}")
    for (method, code), count in sorted(totals["requests"].items()):
        print(f"  requests {method} {code}: {count}")
    return 0


def describe(key: keys.Key) -> str:
    limits = ", ".join(f"{f}={v}" for f, v in key.limits.to_dict().items()) or "server defaults"
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(key.created))
    return (f"{key.id}  name={key.name or '-'}  scopes={','.join(keys.ordered(key.scopes))}  limits: {limits}  "
            f"created {created}")


COMMANDS = {"add": add, "list": list_keys, "revoke": revoke, "usage": usage}
