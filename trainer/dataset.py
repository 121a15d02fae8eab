"""Text to character ids, and the original example's training windows.

The original (tfjs-examples/lstm-text-generation/data.js) builds, for each epoch, a fresh shuffle of
the window starts ``0, sample_step, 2 * sample_step, ... < len(text) - sample_len - 1`` and takes the
first ``examples_per_epoch`` of them (wrapping around when there are fewer). A window is
``sample_len`` character ids; its target is the character that follows it.

We hold out the tail of the text (``validation_split`` of it) for validation instead of a slice of
each epoch's own examples, so validation measures text the model has not trained on.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from textgen.charset import Charset, CharsetError
from textgen.options import EXAMPLES_PER_EPOCH, SAMPLE_LEN, SAMPLE_STEP, VALIDATION_SPLIT, min_text_length


class DatasetError(ValueError):
    """A text that cannot be turned into training windows (too short, unknown characters)."""


def window_starts(text_len: int, sample_len: int, sample_step: int) -> np.ndarray:
    """The original's example begin indices, in order: ``range(0, text_len - sample_len - 1, step)``."""
    return np.arange(0, max(text_len - sample_len - 1, 0), sample_step, dtype=np.int64)


@dataclasses.dataclass
class TextDataset:
    """A text split into a training head and a held-out validation tail, as character ids.

    ``train_ids``: int32 ``[n_train]``; ``val_ids``: int32 ``[n_val]``; both encoded with ``charset``.
    """

    charset: Charset
    train_ids: np.ndarray
    val_ids: np.ndarray
    sample_len: int = SAMPLE_LEN
    sample_step: int = SAMPLE_STEP

    @classmethod
    def from_text(
        cls,
        text: str,
        sample_len: int = SAMPLE_LEN,
        sample_step: int = SAMPLE_STEP,
        validation_split: float = VALIDATION_SPLIT,
        charset: Charset | None = None,
    ) -> "TextDataset":
        """Split ``text``; ``charset`` defaults to the text's own (a continued model passes its own)."""
        if sample_len < 1:
            raise DatasetError(f"sample length must be at least 1, got {sample_len}")
        if sample_step < 1:
            raise DatasetError(f"sample step must be at least 1, got {sample_step}")
        if not 0.0 <= validation_split < 1.0:
            raise DatasetError(f"validation split must be in [0, 1), got {validation_split}")
        # The original needs one full window and its target: len(text) >= sample_len + 2 gives at
        # least one start in range(0, len - sample_len - 1).
        if len(text) < min_text_length(sample_len):
            raise DatasetError(
                f"the corpus has {len(text)} characters; training with sample length {sample_len} "
                f"needs at least {min_text_length(sample_len)}"
            )
        charset = charset or Charset.of_text(text)
        try:
            ids = charset.encode(text)
        except CharsetError as exc:
            raise DatasetError(str(exc)) from None
        n_val = int(len(ids) * validation_split)
        if n_val and n_val < sample_len + 2:
            n_val = 0  # too short to hold a single validation window: validate on nothing
        n_train = len(ids) - n_val
        if n_train < min_text_length(sample_len):
            raise DatasetError(
                f"after holding out {n_val} characters for validation, {n_train} are left to train "
                f"on; sample length {sample_len} needs at least {min_text_length(sample_len)}"
            )
        return cls(charset, ids[:n_train], ids[n_train:], sample_len, sample_step)

    def epoch_starts(self, examples_per_epoch: int, rng: np.random.Generator) -> np.ndarray:
        """This epoch's window starts: the first ``examples_per_epoch`` of a fresh shuffle (wrapping)."""
        starts = window_starts(len(self.train_ids), self.sample_len, self.sample_step)
        rng.shuffle(starts)
        return np.resize(starts, examples_per_epoch)

    def windows(self, ids: np.ndarray, starts: np.ndarray, all_positions: bool = False):
        """Windows at ``starts``: ``x`` int32 ``[n, sample_len]`` and its targets.

        Targets are ``[n]`` (the character after each window, the original objective) or, with
        ``all_positions``, ``[n, sample_len]`` (the character after every position of the window).
        """
        offsets = starts[:, None] + np.arange(self.sample_len)[None, :]
        x = ids[offsets]
        y = ids[offsets + 1] if all_positions else ids[starts + self.sample_len]
        return x, y

    def validation_windows(self, max_windows: int = 2048):
        """Evenly spaced windows over the held-out tail: ``(x [n, sample_len], y [n])``; n may be 0."""
        starts = window_starts(len(self.val_ids), self.sample_len, 1)
        if len(starts) > max_windows:
            starts = starts[np.linspace(0, len(starts) - 1, max_windows).astype(np.int64)]
        return self.windows(self.val_ids, starts)

    def seed_slices(self, count: int = 4) -> list[str]:
        """``count`` evenly spaced ``sample_len``-character slices of the training text (as text)."""
        last = len(self.train_ids) - self.sample_len
        positions = np.linspace(0, last, count).astype(np.int64) if count > 1 else [0]
        return [self.charset.decode(self.train_ids[p : p + self.sample_len]) for p in positions]
