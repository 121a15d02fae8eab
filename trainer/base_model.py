"""The base model that ships with the project: a general English character model to fine-tune from.

``python -m trainer base-model`` (``make base-model``) trains it from scratch with the recipe recorded
here, on public-domain English text whose sha256 it checks first, and writes ``model.keras`` and
``meta.json`` into ``trainer/base/english/`` (the repository ships those two files, 2.9 MB). ``install``
publishes it as model ``base-english`` into a models folder that has no model of that name: the
worker does it when it starts (``TEXTGEN_BASE_MODEL``), so ``make up``, ``make demo`` and compose's
data volume get it, and ``python -m trainer install-base`` does it by hand.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from textgen.models_dir import ModelsDir
from trainer.failures import UserError

SHIPPED = Path(__file__).resolve().parent / "base" / "english"
NAME = "base-english"
HELD_OUT = 0.05  # the last 5% of each text is kept out of training, to score the model on


@dataclass(frozen=True)
class Text:
    file: str
    sha256: str
    source: str
    licence: str


# Public-domain English; the files of the shared corpora folder (../shared/corpora/README.md).
TEXTS = (
    Text("nietzsche.txt", "dea01ca2da603db6736fd856c585d073ccf3dca68efe4a59c5e73242cdf0b028",
         "Nietzsche, Beyond Good and Evil (Zimmern's translation), as the tfjs-examples "
         "lstm-text-generation example serves it (Project Gutenberg #4363)", "public domain"),
    Text("tinyshakespeare.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
         "Shakespeare's plays, Karpathy's char-rnn tinyshakespeare/input.txt", "public domain"),
)

# The recorded recipe: the fast recipe (224,224, every position, cosine decay, dropout 0.2) for 25
# minutes of training steps, seed 1.
OPTIONS = {"recipe": "fast", "time_budget_minutes": 25.0, "seed": 1, "validation_split": 0.02}
COMMAND = "python -m trainer base-model --corpora ../shared/corpora"


class BaseModelError(UserError):
    """The base model's texts are missing or not the recorded ones, or it cannot be installed."""


def default_corpora_dir() -> Path:
    raw = os.environ.get("TEXTGEN_BASE_CORPORA", "").strip()
    return Path(raw) if raw else Path(__file__).resolve().parents[2] / "shared" / "corpora"


def read_texts(corpora: Path) -> dict[str, str]:
    """Each recorded text by file name, its sha256 checked."""
    texts = {}
    for t in TEXTS:
        path = Path(corpora) / t.file
        if not path.is_file():
            raise BaseModelError(f"{path} is missing: the base model trains on {', '.join(x.file for x in TEXTS)} "
                                 f"({t.file}: {t.source}); pass --corpora DIR with them")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != t.sha256:
            raise BaseModelError(f"{path} has sha256 {digest}, not the recorded {t.sha256}: "
                                 "the base model is trained on the recorded texts only")
        texts[t.file] = data.decode("utf-8").replace("\r\n", "\n")
    return texts


def split(text: str) -> tuple[str, str]:
    """(training part, held-out last HELD_OUT of the text)."""
    cut = int(len(text) * (1 - HELD_OUT))
    return text[:cut], text[cut:]


def training_text(texts: dict[str, str]) -> str:
    return "\n\n".join(split(texts[t.file])[0] for t in TEXTS)


def build(corpora: Path, out: Path = SHIPPED, on_event=None, minutes: float | None = None) -> dict:
    """Train the base model from scratch on the recorded texts; write model.keras and meta.json to ``out``."""
    from textgen.options import TrainConfig
    from trainer import export, training

    texts = read_texts(corpora)
    text = training_text(texts)
    options = dict(OPTIONS, **({"time_budget_minutes": minutes} if minutes else {}))
    cfg = TrainConfig.from_dict(options)
    training.use_threads_for(cfg)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    # Checkpointed after each epoch beside ``out``: a run that fails (or is stopped) resumes there.
    checkpoints = Path(out).parent / f".{Path(out).name}-checkpoint"
    result = training.train(text, cfg, corpus_name="english (nietzsche + tinyshakespeare)", corpus_sha256=digest,
                            on_event=on_event, checkpoint_dir=checkpoints)
    meta = {**result.meta, "base": {"command": COMMAND, "options": options, "held_out": HELD_OUT,
                                    "texts": [{"file": t.file, "sha256": t.sha256, "source": t.source,
                                               "licence": t.licence} for t in TEXTS]}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export.save_to_path(result.model, meta, Path(tmp) / "bundle")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("model.keras", "meta.json"):
            shutil.copyfile(bundle / name, out / name)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return meta


def load(source: Path = SHIPPED):
    """The shipped model and its meta (only model.keras and meta.json ship: the SavedModel is written
    when it is installed)."""
    from trainer.model import upgraded
    from trainer.tf import keras

    meta = json.loads((Path(source) / "meta.json").read_text(encoding="utf-8"))
    return upgraded(keras.saving.load_model(Path(source) / "model.keras", safe_mode=True)), meta


def install(models_dir: Path, name: str = NAME, source: Path = SHIPPED) -> int | None:
    """Publish the shipped base model as ``name`` (version 1) unless the models folder has, or ever had,
    a model of that name; returns the version published, or None. Safe when several workers start at
    once on one folder: one installs, the others see it there."""
    from trainer import export

    models = ModelsDir(Path(models_dir))
    models.root.mkdir(parents=True, exist_ok=True)
    marker = models.root / f".installed-{name}"  # a user who deleted it does not get it back
    with open(models.root / f".install-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() or models.model_dir(name).exists():
            return None
        model, meta = load(source)
        for key in ("name", "version", "job_id", "created", "format"):
            meta.pop(key, None)
        _path, version = export.publish(model, meta, models.root, name)
        marker.write_text(json.dumps({"version": version}) + "\n")
        return version
