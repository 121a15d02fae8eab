"""The ``client`` command (also ``python -m client``): train, follow jobs, generate, manage models.

    client submit-train --corpus tfjs-code --layers 128 --epochs 5
    client generate tfjs-code --prompt "function " --length 300 --temperature 0.5
    client score shakespeare nietzsche ./text.txt      # bits per character, the likeliest author first
    client models | client jobs | client corpora | client watch JOB_ID | client cancel JOB_ID
    client whoami | client usage [KEY] | client keys list|add|revoke   # API keys (TEXTGEN_AUTH=keys)

``--server`` (or TEXTGEN_SERVER) is the server to call; TEXTGEN_TOKEN and TEXTGEN_CA_CERT set the
token and TLS. A failed call prints one line, ``error: CODE: message``, on stderr and exits 1
(2 for a usage error, 130 when interrupted).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

from client.api import Client, TextgenError
from client.progress import follow, state_name
from textgen import schema
from textgen.args import Parser, UsageError, add_option_flags
from textgen.v1 import textgen_pb2 as pb

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
UPLOAD_ID = re.compile(r"upload-[0-9a-f]{16}")


def build_parser() -> argparse.ArgumentParser:
    server_help = "host:port of the server (default $TEXTGEN_SERVER or 127.0.0.1:50051)"
    common = Parser(add_help=False)  # --server before or after the command
    common.add_argument("--server", default=argparse.SUPPRESS, help=server_help)
    parser = Parser(prog="client", description="Call a textgen server: train models, follow jobs, generate text.")
    parser.add_argument("--server", default=None, help=server_help)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], **kwargs)

    _training_commands(command)
    _generation_commands(command)
    _model_commands(command)
    _key_commands(command)
    return parser


def _key_commands(command) -> None:
    command("whoami", help="the key this client sends (TEXTGEN_TOKEN): id, scopes, limits")
    usage = command("usage", help="a key's usage: requests, characters, training seconds, uploads")
    usage.add_argument("key", nargs="?", default="", metavar="KEY", help="id or name (default: your own; "
                                                                          "another's needs scope admin)")
    keys = command("keys", help="manage API keys (scope admin): list, add, revoke")
    action = keys.add_subparsers(dest="action", required=True, parser_class=Parser)
    action.add_parser("list", help="every key")
    add = action.add_parser("add", help="make a key; prints its secret last (shown once)")
    add.add_argument("--scopes", required=True, help="comma-separated: generate, train, admin")
    add.add_argument("--name", default="")
    for field in ("max_streams", "chars_per_minute", "max_jobs", "upload_bytes_per_day"):
        add.add_argument(f"--{field.replace('_', '-')}", dest=field, type=int, default=None, metavar="N",
                         help="limit (default: the server's; 0: none)")
    revoke = action.add_parser("revoke", help="delete a key; every replica refuses it within seconds")
    revoke.add_argument("key", metavar="ID_OR_NAME")


def _training_commands(command) -> None:
    submit = command("submit-train", help="train a model on a corpus (as a job on the server's workers)")
    submit.add_argument("--corpus", required=True,
                        help="a built-in corpus name, an upload id, or a local text file (uploaded first)")
    add_option_flags(submit)  # one flag per training option, as the proto declares them
    submit.add_argument("--name", default="", help="publish under this model name (default: --from's, else the corpus)")
    submit.add_argument("--from", dest="from_model", default="", metavar="MODEL",
                        help="fine-tune this model (NAME, NAME:VERSION or NAME@latest), e.g. base-english (the shipped general English model); "
                             "latest version unless given; recipe finetune unless --recipe is given")
    mode = submit.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="follow the job and exit non-zero unless it finishes")
    mode.add_argument("--detach", action="store_true", help="print the job id and return at once")

    watch = command("watch", help="follow a job's progress until it ends")
    watch.add_argument("job_id")

    jobs = command("jobs", help="list jobs, newest first")
    jobs.add_argument("--limit", type=int, default=0, help="how many (default 50)")

    cancel = command("cancel", help="cancel a job (a running one stops at its next batch)")
    cancel.add_argument("job_id")
    command("corpora", help="list built-in and uploaded corpora")
    upload = command("upload", help="upload a UTF-8 text file as a corpus; prints its id")
    upload.add_argument("path")
    upload.add_argument("--name", default="", help="display name (default: the file name)")


def _generation_commands(command) -> None:
    generate = command("generate", help="stream text from a model to stdout")
    generate.add_argument("model", metavar="MODEL", help="NAME, NAME:VERSION or NAME@latest")
    generate.add_argument("--prompt", default="", help="text to continue (default: one of the model's seed slices)")
    generate.add_argument("--length", type=int, default=200, help="characters to generate (default %(default)s)")
    generate.add_argument("--temperature", type=float, default=0.5, help=">= 0; 0 = greedy (default %(default)s)")
    generate.add_argument("--seed", type=int, default=None, help="the same seed gives the same text")
    generate.add_argument("--version", type=int, default=0, help="model version (default: latest)")
    generate.add_argument("--top-k", type=int, default=0,
                          help="draw only from the k most likely characters (default 0: off)")
    generate.add_argument("--top-p", type=float, default=None,
                          help="nucleus sampling: the fewest most likely characters with probability >= p, "
                               "0 < p <= 1 (default: off)")
    generate.add_argument("--stop", action="append", default=[], metavar="TEXT",
                          help="end just before this text (repeat for up to 4)")
    generate.add_argument("--logprobs", action="store_true",
                          help="after the text, print each character and its log-probability, one a line")
    generate.add_argument("--presence-penalty", type=float, default=None, metavar="P",
                          help="[-2, 2]: less likely once a character has been generated (default 0: off)")
    generate.add_argument("--frequency-penalty", type=float, default=None, metavar="F",
                          help="[-2, 2]: less likely the more often a character has been generated (default 0)")
    generate.add_argument("--repetition-penalty", type=float, default=None, metavar="R",
                          help="(0, 10]: characters of the prompt or the text less likely (default 1: off)")
    generate.add_argument("--bias", action="append", default=[], metavar="CHAR=B",
                          help="add B ([-100, 100]) to a character's log-probability; -100 bans it (repeatable)")

    score = command("score", help="a text's log-likelihood under one or more models, best first")
    score.add_argument("models", nargs="+", metavar="MODEL", help="NAME, NAME:VERSION or NAME@latest")
    score.add_argument("file", help="a UTF-8 text file ('-': standard input)")
    score.add_argument("--per-character", action="store_true",
                       help="also print each character's log-probability (one model only)")


def _model_commands(command) -> None:
    command("models", help="list models")
    imp = command("import-tfjs", help="import the original's model.json (TensorFlow.js) as a model")
    imp.add_argument("corpus", metavar="CORPUS_OR_FILE",
                     help="the text the model was trained on (the original saves no charset): a built-in corpus, "
                          "an upload id, or a local file (uploaded first)")
    imp.add_argument("model_json", metavar="MODEL_JSON", help="model.json, its weights file(s) beside it")
    imp.add_argument("--name", required=True, help="publish under this model name")
    exp = command("export-tfjs", help="download a model as the original's model.json + weights.bin")
    exp.add_argument("model", metavar="MODEL")
    exp.add_argument("--out", required=True, help="folder to write model.json and weights.bin into")
    exp.add_argument("--charset-order", default="", metavar="CORPUS_OR_FILE",
                     help="the original's charset order for this text, so its `yarn gen CORPUS model.json` reads it")
    delete = command("delete", help="delete a model version, or all of them")
    delete.add_argument("model")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, default=0)
    which.add_argument("--all", action="store_true", help="every version")


# ---- commands ---------------------------------------------------------------------------------------


def cmd_submit_train(client: Client, args) -> int:
    options = {name: getattr(args, name) for name in schema.NAMES}  # None: unset
    from_model, from_version = args.from_model, 0  # NAME, NAME:VERSION or NAME@latest: the server reads it
    corpus, corpus_id = _corpus_source(client, args.corpus)
    job = client.submit_train(corpus=corpus, corpus_id=corpus_id, options=options, model_name=args.name,
                              from_model=from_model, from_version=from_version)
    print(job.id, flush=True)
    if args.detach:
        return 0
    print(f"job {job.id}: training {job.model_name} on {job.corpus}"
          + (f" from {job.from_model}" if job.from_model else ""), file=sys.stderr)
    outcome = follow(client, job.id)
    return 0 if outcome == "finished" or not args.wait else EXIT_FAILED


def cmd_watch(client: Client, args) -> int:
    return 0 if follow(client, args.job_id) == "finished" else EXIT_FAILED


def cmd_jobs(client: Client, args) -> int:
    rows = [(j.id, state_name(j.state), j.model_name + (f" v{j.model_version}" if j.model_version else ""), j.corpus,
             f"{j.epoch}/{j.epochs}", _loss(j.loss), _loss(j.val_loss), str(j.attempts or ""), _when(j.enqueued_at),
             j.error)
            for j in client.list_jobs(args.limit)]
    _table(("ID", "STATE", "MODEL", "CORPUS", "EPOCH", "LOSS", "VAL LOSS", "ATTEMPTS", "SUBMITTED", "ERROR"), rows)
    return 0


def cmd_cancel(client: Client, args) -> int:
    job = client.cancel_job(args.job_id)
    state = state_name(job.state)
    if state == "cancelled":
        print(f"job {job.id} cancelled")
    else:
        print(f"job {job.id} is {state}: it stops at its next batch boundary (follow it: client watch {job.id})")
    return 0


def cmd_generate(client: Client, args) -> int:
    name, version = args.model, args.version  # a reference: the server reads NAME:VERSION and NAME@latest
    stream = client.generate(name, prompt=args.prompt, length=args.length, temperature=args.temperature,
                             seed=args.seed, version=version, top_k=args.top_k, top_p=args.top_p,
                             presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                             repetition_penalty=args.repetition_penalty, logit_bias=_bias(args.bias),
                             stop=args.stop, logprobs=args.logprobs)
    text = []
    for chunk in stream:
        text.append(chunk)
        sys.stdout.write(chunk)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if args.logprobs:
        sys.stdout.write("\n" + "".join(f"{char!r}\t{logprob:.4f}\n" for char, logprob in zip("".join(text), stream.logprobs)))
    if stream.end is None or stream.end.reason not in (pb.STOP_REASON_LENGTH, pb.STOP_REASON_STOP):
        produced = stream.end.characters if stream.end is not None else "an unknown number of"
        why = "it is shutting down" if stream.end is not None and stream.end.reason == pb.STOP_REASON_SHUTDOWN \
            else "the stream ended early"
        print(f"error: the server stopped after {produced} characters: {why}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_score(client: Client, args) -> int:
    if args.per_character and len(args.models) > 1:
        raise UsageError("--per-character takes one model")
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    scores = []
    for spec in args.models:
        name, version = spec, 0
        scores.append(client.score(name, text, version=version, per_character=args.per_character))
    if args.per_character:
        for char, logprob in zip(text[1:], scores[0].logprobs):
            print(f"{char!r}\t{logprob:.6f}")
    rows = [(s.model, s.version, s.characters, f"{s.log_likelihood:.1f}", f"{s.bits_per_char:.3f}")
            for s in sorted(scores, key=lambda s: s.bits_per_char)]
    _table(("MODEL", "VERSION", "CHARACTERS", "LOG-LIKELIHOOD(NATS)", "BITS/CHAR"), rows)
    return 0


def cmd_models(client: Client, args) -> int:
    rows = []
    for m in client.list_models():
        info = m.latest
        rows.append((m.name, ",".join(map(str, m.versions)), info.corpus, _loss(info.loss),
                     f"{info.bits_per_char:.3f}" if info.bits_per_char else "-", _when(info.created)))
    _table(("NAME", "VERSIONS", "CORPUS", "LOSS", "BPC", "CREATED"), rows)
    return 0


def cmd_corpora(client: Client, args) -> int:
    rows = [(c.id, c.name, "yes" if c.builtin else "no", _size(c.size) if c.size else "-",
             "yes" if c.available else "no", c.sha256[:16] or "-")
            for c in client.list_corpora()]
    _table(("ID", "NAME", "BUILT-IN", "SIZE", "AVAILABLE", "SHA256"), rows)
    return 0


def cmd_upload(client: Client, args) -> int:
    corpus = client.upload_corpus(args.path, name=args.name)
    print(corpus.id)
    print(f"uploaded {args.path} ({_size(corpus.size)}, sha256 {corpus.sha256}) as {corpus.id}", file=sys.stderr)
    return 0


def cmd_import_tfjs(client: Client, args) -> int:
    corpus, corpus_id = _corpus_source(client, args.corpus)
    done = client.import_tfjs(args.model_json, corpus=corpus, corpus_id=corpus_id, model_name=args.name)
    print(f"imported {args.model_json} as {done.model_name} version {done.model_version} ({done.charset_size} "
          f"characters, windows of {done.sample_len}, LSTM {','.join(map(str, done.lstm_layer_sizes))})")
    return 0


def cmd_export_tfjs(client: Client, args) -> int:
    name, version = args.model, 0
    corpus, corpus_id = _corpus_source(client, args.charset_order) if args.charset_order else ("", "")
    path = client.export_tfjs(name, args.out, version=version, corpus=corpus, corpus_id=corpus_id)
    print(f"wrote {path} and {path.parent / 'weights.bin'}")
    return 0


def cmd_whoami(client: Client, args) -> int:
    print(_key_line(client.whoami()))
    return 0


def cmd_usage(client: Client, args) -> int:
    u = client.usage(args.key)
    print(f"key {u.key_id}: {u.generated_characters} characters generated, {u.scored_characters} scored, "
          f"{u.training_seconds:.0f} s of training, {_size(u.upload_bytes)} uploaded ({_size(u.upload_bytes_today)} "
          f"today); now {u.open_streams} streams open, {u.active_jobs} jobs queued or running")
    _table(("METHOD", "CODE", "CALLS"), [(r.method, r.code, r.count) for r in u.requests])
    return 0


def cmd_keys(client: Client, args) -> int:
    if args.action == "list":
        for key in client.list_keys():
            print(_key_line(key))
    elif args.action == "add":
        limits = {f: getattr(args, f) for f in ("max_streams", "chars_per_minute", "max_jobs", "upload_bytes_per_day")}
        created = client.create_key([s.strip() for s in args.scopes.split(",") if s.strip()], args.name, **limits)
        print(_key_line(created.key))
        print(created.secret)
    else:
        print(f"revoked {client.revoke_key(args.key).id}")
    return 0


def _key_line(key: pb.KeyInfo) -> str:
    if key.auth == "off":
        return "this server needs no key (TEXTGEN_AUTH=off): every call may do everything"
    limits = key.limits
    return (f"{key.id}  name={key.name or '-'}  scopes={','.join(key.scopes)}  limits: max_streams="
            f"{limits.max_streams} chars_per_minute={limits.chars_per_minute} max_jobs={limits.max_jobs} "
            f"upload_bytes_per_day={limits.upload_bytes_per_day} (0: none)  source={key.source}")


def _bias(items: list[str]) -> dict:
    """``--bias CHAR=B`` flags as logit_bias ({character: bias}); ``\n`` and ``\t`` name those characters."""
    bias = {}
    for item in items:
        char, sep, value = item.rpartition("=")
        char = {"\\n": "\n", "\\t": "\t", "": ""}.get(char, char)
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or len(char) != 1 or number is None:
            raise UsageError(f"--bias takes CHAR=NUMBER, one character, e.g. 'e=-100' or '\\n=2'; got {item!r}")
        bias[char] = number
    return bias


def cmd_delete(client: Client, args) -> int:
    if not args.all and args.version < 1:
        raise UsageError(f"--version must be a version number >= 1, got {args.version}")
    deleted = client.delete_model(args.model, version=args.version, all_versions=args.all)
    print(f"deleted {args.model} version{'s' if len(deleted) != 1 else ''} {', '.join(map(str, deleted))}")
    return 0


COMMANDS = {"submit-train": cmd_submit_train, "watch": cmd_watch, "jobs": cmd_jobs, "cancel": cmd_cancel,
            "generate": cmd_generate, "score": cmd_score, "models": cmd_models, "corpora": cmd_corpora, "upload": cmd_upload,
            "delete": cmd_delete, "import-tfjs": cmd_import_tfjs, "export-tfjs": cmd_export_tfjs,
            "whoami": cmd_whoami, "usage": cmd_usage, "keys": cmd_keys}


# ---- helpers ----------------------------------------------------------------------------------------


def _corpus_source(client: Client, spec: str) -> tuple[str, str]:
    """(corpus, corpus_id) for a corpus argument: a local file is uploaded first."""
    if os.path.isfile(spec) or "/" in spec or os.sep in spec:
        if not os.path.isfile(spec):
            raise UsageError(f"{spec!r} looks like a file path but there is no such file")
        uploaded = client.upload_corpus(spec)
        print(f"uploaded {spec} as {uploaded.id}", file=sys.stderr)
        return "", uploaded.id
    if UPLOAD_ID.fullmatch(spec):
        return "", spec
    return spec, ""


def _loss(value: float) -> str:
    return f"{value:.4f}" if value else "-"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(header: tuple, rows: list[tuple]) -> None:
    if not rows:
        print("(none)")
        return
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        with Client(server=args.server) as client:
            return COMMANDS[args.command](client, args)
    except UsageError as exc:
        print(f"error: {exc} (see client --help)", file=sys.stderr)
        return EXIT_USAGE
    except TextgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted" + (": a submitted job keeps running (client jobs; client cancel JOB_ID)"
                               if argv[:1] == ["submit-train"] else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a command line user gets one line, never a traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
