"""What went wrong, in the user's words: the one line the trainer's CLI prints and a job records.

No TensorFlow here: a command that fails on bad input says so without the seconds of importing it.
"""
from __future__ import annotations


class UserError(Exception):
    """A failure the user can act on, said in its message (a bad model.json, missing base texts...)."""


class TrainingError(UserError):
    """Training cannot go on; the message says why."""


OUT_OF_MEMORY = "out of memory: try smaller layers (--lstm-layer-size) or a smaller --batch-size"


def describe_failure(exc: BaseException) -> str | None:
    """The one-line message for a failure the user can act on (bad input, missing file, no memory),
    or None for a bug. The CLI prints it; the RQ job records it as the job's reason."""
    from textgen import bundle, charset, corpus, options
    from trainer import dataset

    if isinstance(exc, (corpus.CorpusError, dataset.DatasetError, charset.CharsetError, options.OptionError,
                        bundle.BundleError, UserError)):
        return str(exc)
    if isinstance(exc, MemoryError) or _is_tensorflow("ResourceExhaustedError", exc):
        return OUT_OF_MEMORY
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return None


def _is_tensorflow(name: str, exc: BaseException) -> bool:
    """``exc`` is TensorFlow's error class ``name`` (or a subclass), without importing TensorFlow."""
    return any(cls.__name__ == name and cls.__module__.startswith("tensorflow") for cls in type(exc).__mro__)
