"""The original example's command line, from Python: ``python -m trainer train|gen|worker``.

    python -m trainer train shakespeare --lstm-layer-size 128,128 --epochs 120 --save-path ./my-model
    python -m trainer gen shakespeare ./my-model --gen-length 250 --temperature 0.6

Every flag also takes the original's camelCase spelling (``--lstmLayerSize``, ``--savePath``,
``--genLength``...). A bad value ends with one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import math
import secrets
import sys
from pathlib import Path

from textgen.args import Parser, UsageError, add_option_flags, flag, integer, number

EXIT_ERROR = 1
EXIT_USAGE = 2
GEN_LENGTH = 200
GEN_TEMPERATURE = 0.5


def build_parser() -> argparse.ArgumentParser:
    from textgen.options import RECIPES

    parser = Parser(prog="python -m trainer", description="Train a character-level LSTM and generate text.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser(
        "train", help="train a model on a corpus",
        description="Train a model. A recipe sets several options at once; an option given with it wins. With "
                    "no options this is the original example's training. Recipes: "
                    + " ".join(f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()))
    train.add_argument("corpus", help="nietzsche, julesverne, shakespeare, tfjs-code, or a path to a text file")
    # The recipe is checked as the flags are read: the other flags are set over its settings.
    add_option_flags(train, camel=True, notes=recipe_notes(), parse_checks=("recipe",))
    flag(train, "save-path", default=None, help="write the model bundle to this directory")
    flag(train, "name", default=None, help="publish to $TEXTGEN_DATA_DIR/models/NAME/<next version>/")
    train.add_argument("--from", "--loadModelPath", dest="init_from", default=None,
                       help="fine-tune this model: base-english (the shipped general English model, "
                            "`python -m trainer install-base`), a bundle path, or NAME, NAME:VERSION or NAME@latest in the store; "
                            "the text's new characters are added to its charset; recipe finetune unless given")
    flag(train, "gpu", action="store_true", help="require a GPU")

    gen = commands.add_parser("gen", help="generate text from a trained model")
    gen.add_argument("paths", nargs="+", metavar="[CORPUS] MODEL",
                     help="optional corpus for the random seed slice, then the model (path or NAME, NAME:VERSION or NAME@latest)")
    flag(gen, "gen-length", type=integer, default=GEN_LENGTH, help="characters to generate (default %(default)s)")
    flag(gen, "temperature", type=number, default=GEN_TEMPERATURE, help=">= 0; 0 = greedy (default %(default)s)")
    flag(gen, "seed-text", default=None, help="start from this text instead of a slice of the corpus")
    flag(gen, "seed", type=integer, default=None, help="the same seed gives the same text")
    flag(gen, "gpu", action="store_true", help="require a GPU")

    base = commands.add_parser("base-model", help="retrain the shipped base model (base-english) from scratch",
                               description="Train the base model with its recorded recipe on its recorded texts "
                                           "(their sha256 checked) and write it where the project ships it.")
    flag(base, "corpora", default=None, help="folder with nietzsche.txt and tinyshakespeare.txt "
                                             "(default $TEXTGEN_BASE_CORPORA, else ../shared/corpora)")
    flag(base, "out", default=None, help="write model.keras and meta.json here (default trainer/base/english)")
    flag(base, "minutes", type=number, default=None, help="minutes of training (default: the recorded 25)")
    install = commands.add_parser("install-base", help="install the base model as base-english if absent",
                                  description="Publish the shipped base model into $TEXTGEN_DATA_DIR/models as "
                                              "NAME, unless a model of that name exists or was ever installed.")
    flag(install, "name", default="base-english", help="the model name (default %(default)s)")

    imp = commands.add_parser("import-tfjs", help="import the original's model.json (TensorFlow.js) as a model",
                              description="Make a textgen model of a TensorFlow.js layers model (model.json and its "
                                          "weights file beside it, as the original's --savePath writes them). The "
                                          "original saves no charset: give the text it was trained on.")
    imp.add_argument("paths", nargs="+", metavar="[CORPUS_OR_FILE] MODEL_JSON",
                     help="the text the model was trained on (a built-in corpus or a file; not needed for a "
                          "model.json that textgen exported, which carries its charset), then model.json")
    flag(imp, "name", required=True, help="publish as $TEXTGEN_DATA_DIR/models/NAME/<next version>/")
    exp = commands.add_parser("export-tfjs", help="write a model as the original's model.json + weights.bin",
                              description="Write a model in TensorFlow.js's layers format, as tfjs-node's "
                                          "model.save('file://DIR') does, for tf.loadLayersModel or the original's "
                                          "yarn gen.")
    exp.add_argument("model", help="a model: NAME, NAME:VERSION or NAME@latest in the store, or a bundle path")
    flag(exp, "out", required=True, help="the folder to write model.json and weights.bin into")
    flag(exp, "charset-order", default=None, metavar="CORPUS_OR_FILE",
         help="order the charset as the original does for this text (its first appearances), so that the "
              "original's `yarn gen CORPUS model.json` reads it; the text's characters must be the model's")

    worker = commands.add_parser("worker", help="run an RQ worker for training jobs")
    worker.add_argument("worker_args", nargs=argparse.REMAINDER)
    return parser


def recipe_notes() -> dict[str, str]:
    """``{option: "fast: 224,224"}``: what each recipe sets, for --help beside the default."""
    from textgen.options import MAX_EPOCHS, RECIPES

    notes: dict[str, list[str]] = {"epochs": [f"{MAX_EPOCHS} with a time budget"]}
    for name, recipe in RECIPES.items():
        for option, value in recipe.settings.items():
            shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" \
                if isinstance(value, float) else str(value)
            notes.setdefault(option, []).append(f"{name}: {shown}")
    return {option: "; ".join(parts) for option, parts in notes.items()}


def resolve_model(spec: str) -> Path:
    """A bundle path, or ``NAME``, ``NAME:VERSION`` or ``NAME@latest`` of a model in ``$TEXTGEN_DATA_DIR/models``."""
    from textgen import bundle, config
    from textgen.models_dir import ModelsDir, NoSuchModel, NoSuchVersion

    path = Path(spec)
    if path.exists() or "/" in spec or spec.startswith("."):
        return path
    name, number = bundle.parse_reference(spec)  # NAME, NAME:VERSION or NAME@latest (0: the latest)
    try:
        path, _number = ModelsDir(config.models_dir()).resolve(name, number)
    except (NoSuchModel, NoSuchVersion) as exc:
        if number:
            raise bundle.BundleError(
                f"model {name} has no version {number}; it has {exc.versions or 'none'}") from None
        raise bundle.BundleError(
            f"{spec} is neither a model bundle path nor a model in {config.models_dir()}") from None
    return path


def train_config(args):
    """The TrainConfig of the `train` flags: the recipe's settings, then every flag given over them."""
    from textgen import schema
    from textgen.options import TrainConfig

    options = {name: getattr(args, name) for name in schema.NAMES if getattr(args, name) is not None}
    return TrainConfig.from_dict(options, continuing=bool(getattr(args, "init_from", None)))


def cmd_train(args) -> int:
    from tqdm import tqdm

    from textgen import bundle, config, corpus

    cfg = train_config(args).validate()
    if args.name:
        bundle.validate_name(args.name)
    if args.save_path and Path(args.save_path).exists() and not bundle.is_bundle(Path(args.save_path)) \
            and any(Path(args.save_path).iterdir()):
        raise bundle.BundleError(f"--save-path {args.save_path} exists and is not a model bundle; refusing to overwrite it")
    init_from = resolve_model(args.init_from) if args.init_from else None
    if init_from is not None:
        bundle.read_meta(init_from)
    text_source = corpus.load_corpus(args.corpus)
    from trainer import export, training  # TensorFlow: once the flags, paths and corpus are known good

    training.use_threads_for(cfg)
    if args.gpu:
        training.require_gpu()
    if not (args.save_path or args.name):
        print("note: neither --save-path nor --name given: the model will not be saved", file=sys.stderr)

    bar = None
    of_epochs = "" if cfg.time_budget_minutes else f"/{cfg.epochs}"  # a budget run ends when its time is up

    def on_event(event):
        nonlocal bar
        kind = event["type"]
        if kind == "started":
            resumed = event["resumed_from_epoch"]
            print(f"training on {text_source.name} ({len(text_source.text):,} characters)"
                  + (f", resuming after epoch {resumed}" if resumed else ""), file=sys.stderr)
        elif kind == "batch":
            if bar is None:  # counts examples, so its rate reads as examples per second
                bar = tqdm(disable=None, total=cfg.examples_per_epoch, desc=f"epoch {event['epoch']}{of_epochs}",
                           unit="ex", file=sys.stderr, leave=False, dynamic_ncols=True)
            bar.update(min(cfg.batch_size, cfg.examples_per_epoch - bar.n))
            bar.set_postfix(loss=f"{event['loss']:.4f}", refresh=False)
        elif kind == "epoch":
            if bar is not None:
                bar.close()
                bar = None
            val = "n/a" if event["val_loss"] is None else f"{event['val_loss']:.4f} ({event['bits_per_char']:.3f} bits/char)"
            budget = (f" ({event['train_seconds'] / 60:.1f} of {cfg.time_budget_minutes:g} min)"
                      if cfg.time_budget_minutes else "")
            print(f"epoch {event['epoch']}{of_epochs}{budget}: loss {event['loss']:.4f}, validation loss {val}, "
                  f"{event['examples_per_second']:,.0f} examples/s", file=sys.stderr)
            for sample in event["samples"]:
                print(f"  [temperature {sample['temperature']:g}] {sample['text']!r}", file=sys.stderr)

    try:
        result = training.train(text_source.text, cfg, corpus_name=text_source.name,
                                corpus_sha256=text_source.sha256, on_event=on_event, init_from=init_from)
    finally:
        if bar is not None:
            bar.close()
    if args.save_path:
        path = export.save_to_path(result.model, result.meta, Path(args.save_path))
        print(f"saved model to {path}", file=sys.stderr)
    if args.name:
        path, version = export.publish(result.model, result.meta, config.models_dir(), args.name)
        print(f"published {args.name} version {version} at {path}", file=sys.stderr)
    return 0


def cmd_gen(args) -> int:
    import numpy as np

    from textgen import bundle, corpus
    from textgen.charset import Charset, describe_chars
    from textgen.options import OptionError
    from trainer.dataset import DatasetError

    if len(args.paths) > 2:
        raise UsageError(f"gen takes [CORPUS] MODEL, got {len(args.paths)} arguments")
    corpus_spec, model_spec = (args.paths if len(args.paths) == 2 else (None, args.paths[0]))
    if args.gen_length < 1:
        raise OptionError(f"gen length must be at least 1, got {args.gen_length}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise OptionError(f"temperature must be a finite number >= 0 (0 = greedy), got {args.temperature}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise OptionError(f"seed must be between 0 and {2**63 - 1}, got {args.seed}")
    model_path = resolve_model(model_spec)
    meta = bundle.read_meta(model_path)
    charset, sample_len = Charset(meta["charset"]), int(meta["sample_len"])
    seed = secrets.randbits(63) if args.seed is None else args.seed  # reported, so any run can be repeated
    rng = np.random.default_rng(seed)
    if args.seed_text is not None:
        seed_text = args.seed_text
        if not seed_text:
            raise OptionError("--seed-text must not be empty")
    elif corpus_spec is not None:
        text = corpus.load_corpus(corpus_spec).text
        if len(text) < sample_len + 1:
            raise DatasetError(f"the corpus has {len(text)} characters; a seed slice needs {sample_len}")
        start = int(rng.integers(0, len(text) - sample_len))  # the original's random slice
        seed_text = text[start : start + sample_len]
    else:
        seed_text = bundle.seed_slice(meta, seed)  # the server's rule: same seed, same text
        if seed_text is None:
            raise OptionError("the model stores no seed slices: pass a corpus or --seed-text")
    missing = charset.missing(seed_text)
    if missing:
        raise DatasetError(f"the seed text has characters the model does not know: {describe_chars(missing)}")
    from textgen.sampling import Uniforms  # TensorFlow: once the request is known good
    from trainer import export, training
    from trainer.decode import PipelinedDecoder

    if args.gpu:
        training.require_gpu()
    model, _ = export.load_keras(model_path)  # (its meta was read above, before TensorFlow)
    print(f"seed {seed}, seed text: {seed_text!r}", file=sys.stderr)
    chunks = training.generate_ids(PipelinedDecoder(model, sample_len), charset.encode(seed_text), args.gen_length,
                                   [args.temperature], [Uniforms(seed)], chunk=8)
    for ids in chunks:
        sys.stdout.write(charset.decode(ids[0]))
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_base_model(args) -> int:
    from trainer import base_model

    corpora = Path(args.corpora) if args.corpora else base_model.default_corpora_dir()
    out = Path(args.out) if args.out else base_model.SHIPPED

    def on_event(event):
        if event["type"] == "epoch":
            print(f"epoch {event['epoch']} ({event['train_seconds'] / 60:.1f} min): validation loss "
                  f"{event['val_loss']:.4f}, {event['examples_per_second']:,.0f} examples/s", file=sys.stderr)

    meta = base_model.build(corpora, out, on_event, args.minutes)
    print(f"wrote the base model to {out}: validation loss {meta['val_loss']:.4f} after "
          f"{meta['train_seconds'] / 60:.1f} minutes", file=sys.stderr)
    return 0


def cmd_install_base(args) -> int:
    from textgen import bundle, config
    from trainer import base_model

    bundle.validate_name(args.name)
    version = base_model.install(config.models_dir(), args.name)
    print(f"installed {args.name} version {version}" if version else
          f"{args.name} is already in {config.models_dir()} (or was installed and deleted): left as it is",
          file=sys.stderr)
    return 0


def cmd_import_tfjs(args) -> int:
    from textgen import config
    from trainer import tfjs

    if len(args.paths) > 2:
        raise UsageError(f"import-tfjs takes [CORPUS_OR_FILE] MODEL_JSON, got {len(args.paths)} arguments")
    corpus_spec, model_json = args.paths if len(args.paths) == 2 else (None, args.paths[0])
    doc, weights = tfjs.read_files(Path(model_json))
    path, version = tfjs.publish_imported(doc, weights, corpus_spec, args.name, config.models_dir())
    print(f"imported {model_json} as {args.name} version {version} at {path}", file=sys.stderr)
    return 0


def cmd_export_tfjs(args) -> int:
    from textgen import bundle, corpus
    from trainer import export, tfjs

    path = resolve_model(args.model)
    order = corpus.load_corpus(args.charset_order).text if args.charset_order else None
    tfjs.charset_order(bundle.read_meta(path), order)  # a text that does not fit: said before Keras loads
    model, meta = export.load_keras(path)
    path = tfjs.export_model(model, meta, Path(args.out), order)
    print(f"wrote {path} and {path.parent / tfjs.WEIGHTS_FILE}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:  # the worker owns its flags and its own errors
        from trainer import worker

        return worker.main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return {"train": cmd_train, "gen": cmd_gen, "base-model": cmd_base_model, "install-base": cmd_install_base,
                "import-tfjs": cmd_import_tfjs, "export-tfjs": cmd_export_tfjs}[args.command](args)
    except UsageError as exc:
        print(f"error: {exc} (see python -m trainer {argv[0] if argv else ''} --help)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: nothing was saved", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error a user can cause ends here as one line
        from trainer.failures import describe_failure

        message = describe_failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
