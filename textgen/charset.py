"""The charset: the sorted set of characters of a training text; a character's id is its position.

A model carries its own charset (``meta.json``'s ``charset``); the trainer encodes windows with it, the
server encodes prompts and decodes sampled ids with it.
"""
from __future__ import annotations

import numpy as np


class CharsetError(ValueError):
    """Text with characters a charset lacks, or a charset that repeats a character."""


class Charset:
    """The sorted set of characters of a training text; ids are positions in it."""

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise CharsetError("a charset must not repeat characters")
        self.chars = "".join(sorted(chars))
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def of_text(cls, text: str) -> "Charset":
        return cls("".join(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Charset) and self.chars == other.chars

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def grown(self, text: str) -> "Charset":
        """This charset with the characters of ``text`` it lacks (a fine-tuned model's charset)."""
        return Charset(self.chars + self.missing(text))

    def missing(self, text: str) -> str:
        """The characters of ``text`` this charset lacks, sorted, each once."""
        return "".join(sorted(set(text) - self._index.keys()))

    def encode(self, text: str) -> np.ndarray:
        """``text`` as int32 ids ``[len(text)]``; raises CharsetError naming unknown characters."""
        missing = self.missing(text)
        if missing:
            raise CharsetError(f"characters not in the charset: {describe_chars(missing)}")
        return np.fromiter((self._index[c] for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def describe_chars(chars: str, limit: int = 20) -> str:
    """A readable list of characters for error messages: ``'é' (U+00E9), '\\t' (U+0009)``."""
    shown = [f"{c!r} (U+{ord(c):04X})" for c in chars[:limit]]
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(shown) + more
