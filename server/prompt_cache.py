"""Prompts are read once: the started state rows of recent prompt windows, per model version.

The state rows ``start`` gives for a prompt window (its last ``sample_len`` characters, all that the
model sees of it) are kept per model in a small LRU (the engine's ``prompt_cache_bytes``), and a group
of joiners with the same window reads it once. Empty prompts use one of a model's few seed slices,
and clients often share a preamble, so many prompts are seen again; the rows are the ones ``start``
computed, so the text is the same as without the cache.
"""
from __future__ import annotations

import threading

import cachetools
import numpy as np
import tensorflow as tf

from server import metrics
from server.programs import Functions


def row_bytes(row: dict) -> int:
    """The bytes of ``row``'s tensors (a state row: name -> tensor with one row)."""
    return sum(value.shape.num_elements() * value.dtype.size for value in row.values())


class PromptCache:
    """The started state rows of recent prompt windows of one model version, least recently used
    dropped first past ``capacity`` bytes (0: keep none). Safe from any thread."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._rows = cachetools.LRUCache(maxsize=capacity, getsizeof=row_bytes)  # window bytes -> row
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of rows kept."""
        with self._lock:
            return len(self._rows)

    def get(self, key: bytes) -> dict | None:
        """The row kept for ``key`` (it becomes the most recently used), or None."""
        with self._lock:
            return self._rows.get(key)

    def put(self, key: bytes, row: dict) -> dict:
        """Keep ``row`` (tensors with one row each) for ``key``, unless it alone is over the capacity;
        returns it."""
        if row_bytes(row) > self.capacity:
            return row
        with self._lock:
            if key not in self._rows:  # a row already kept stays (it is the same)
                self._rows[key] = row  # drops the least recently used rows until it fits
        return row

    def start(self, windows: list[np.ndarray], functions: Functions) -> dict:
        """State rows for prompt ``windows`` (int32 ids, each at most ``sample_len``), one per window
        in order, from ``functions.start_windows``: each distinct window is read once, and not at all
        when its rows are kept (with no cache: each window is read)."""
        if not self.capacity:
            return functions.start_windows(windows)
        keys = [window.tobytes() for window in windows]
        unique = list(dict.fromkeys(keys))
        found = {key: self.get(key) for key in unique}
        missing = [key for key in unique if found[key] is None]
        metrics.observe_prompts(hits=len(keys) - len(missing), misses=len(missing))
        fresh = None
        if missing:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}
            fresh = functions.start_windows([windows[first[key]] for key in missing])
            for i, key in enumerate(missing):
                found[key] = self.put(key, {name: value[i : i + 1] for name, value in fresh.items()})
            if len(missing) == len(keys):  # all distinct and new: the rows as started
                return fresh
        rows = {name: tf.concat([found[key][name] for key in unique], axis=0) for name in found[unique[0]]}
        position = {key: i for i, key in enumerate(unique)}
        return {name: tf.gather(value, [position[key] for key in keys]) for name, value in rows.items()}
