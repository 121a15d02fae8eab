"""A model's decode functions (``start`` and ``advance``), and their XLA programs.

With ``xla=True`` (the engine's default) the bundle's ``advance`` is also compiled with XLA
(``jit_compile``: the same function, fused, about 1.3x faster per character on a quiet 2-core machine
at 64 streams, FINDINGS.md). XLA compiles one program per input shape, so the batch then keeps its
rows in a few fixed sizes (``row_capacity``; ended streams leave free rows until the batch fits a
smaller size). Programs are compiled on one background thread of the process and shared by its
engines: a full block's as soon as a model gets its first stream, the other shapes once they recur.
Until a shape is ready the step runs the bundle's own graph function, which computes the same thing.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref

import numpy as np
import tensorflow as tf

from server import metrics
from server.store import ServedModel

log = logging.getLogger(__name__)

BLOCK_ROWS = 64  # with XLA, larger batches are stepped in blocks of this many rows (measured: 1.25x
# faster at 256 streams than one 256-row program, whose state no longer fits the caches)


def row_capacity(rows: int) -> int:
    """The batch size the state is kept at for ``rows`` streams (with XLA): whole blocks of
    BLOCK_ROWS, then the rest rounded up to 1, 2 or 4, or else to a multiple of 8. So every block is
    one of 11 sizes (XLA compiles few programs) and padding wastes at most 7 rows."""
    whole, rest = divmod(rows, BLOCK_ROWS)
    if rest == 0:
        return max(rows, 1)
    if rest <= 4:
        return whole * BLOCK_ROWS + (1 << (rest - 1).bit_length())
    return whole * BLOCK_ROWS + -(-rest // 8) * 8


def row_blocks(rows: int) -> list[tuple[int, int]]:
    """The ``(first, end)`` rows of each block XLA steps apart: BLOCK_ROWS each, the last the rest."""
    return [(first, min(first + BLOCK_ROWS, rows)) for first in range(0, rows, BLOCK_ROWS)]


def prompt_matrix(windows: list[np.ndarray], sample_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``start``'s inputs for prompt windows: int32 ``[len(windows), sample_len]``, each window
    right-aligned, and their lengths (int32 ``[len(windows)]``)."""
    prompt = np.zeros([len(windows), sample_len], np.int32)
    for row, window in zip(prompt, windows):
        row[sample_len - len(window):] = window
    return prompt, np.array([len(window) for window in windows], np.int32)


class Compiler:
    """One background thread that compiles XLA programs, so no step waits for a compile."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xla-compile", daemon=True)
        self._thread.start()
        # A compile still running when the interpreter finalizes aborts the process (its thread is
        # unwound through TensorFlow's C++ frames): at exit, let the one in progress end, skip the rest.
        atexit.register(self.stop)

    def stop(self) -> None:
        self._stopping.set()
        self._jobs.put(None)
        self._thread.join()

    def submit(self, job) -> None:
        """Run ``job()`` (no arguments) on the compile thread, after the jobs before it."""
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return
            try:
                job()
            except Exception:  # the graph function keeps serving that shape
                log.exception("compiling a decode step with XLA failed")


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ServedModel -> Functions with XLA
_COMPILED_LOCK = threading.Lock()
_COMPILER: list[Compiler] = []  # the process's one compile thread, once needed


def compiled_functions(model: ServedModel) -> "Functions":
    """The process's XLA-compiling decode functions of ``model`` (a program compiled once serves
    every engine; they go when the model is unloaded)."""
    with _COMPILED_LOCK:
        functions = _COMPILED.get(model)
        if functions is None:
            if not _COMPILER:
                _COMPILER.append(Compiler())
            functions = _COMPILED[model] = Functions(model, _COMPILER[0])
        return functions


class Functions:
    """A model's ``start`` and ``advance``, also compiled with XLA for the shapes that recur
    (``compiler``: the thread that compiles them; None: the bundle's graph functions only).

    Each runs the XLA program when its input shape has one. Otherwise it runs the bundle's graph
    function, and once a shape has been used ``HOT`` times its program is compiled in the background
    (a compile costs a second or two of CPU: only for shapes worth it). ``start`` pads its rows to
    ``row_capacity``, so that prompts arriving in groups of any size need few programs.
    """

    HOT = {"advance": 4, "start": 4, "advance_penalized": 4}

    def __init__(self, model: ServedModel, compiler: Compiler | None):
        # Not the model itself: a value that refers to its key would keep the weak-keyed caches above
        # (and the engine's) from ever letting an unloaded model go.
        self.sample_len = model.sample_len
        self.controls = model.controls
        self._graph = {"advance": model.functions.advance, "start": model.functions.start}
        if model.penalties:
            self._graph["advance_penalized"] = model.functions.advance_penalized
        self._compiler = compiler
        self._lock = threading.Lock()
        self._compiled: set[tuple] = set()  # (function, shape) with an XLA program
        self._submitted: set[tuple] = set()  # (function, shape) sent to the compiler
        self._uses: dict[tuple, int] = {}  # graph calls by (function, shape)
        if compiler is not None:
            self._xla = {name: _jit(fn) for name, fn in self._graph.items()}

    def prepare_advance(self, rows: int, k: int) -> None:
        """Compile ``advance`` for ``rows`` streams and ``k`` characters now, in the background."""
        if self._compiler is not None:
            self._submit(("advance", (rows, k)), lambda: self._example_advance(rows, k))

    def _example_advance(self, rows: int, k: int) -> dict:
        """``advance``'s inputs for ``rows`` streams started from an empty prompt, ``k`` characters."""
        sample_len = self.sample_len
        state = self._graph["start"](prompt=tf.zeros([1, sample_len], tf.int32), lengths=tf.ones([1], tf.int32))
        inputs = {name: tf.repeat(value, rows, axis=0) for name, value in state.items()}
        inputs.update(temperature=tf.ones([rows]), uniforms=tf.zeros([rows, k]))
        if self.controls:
            inputs.update(top_k=tf.zeros([rows], tf.int32), top_p=tf.ones([rows]))
        return inputs

    def start_windows(self, windows: list[np.ndarray]) -> dict:
        """State rows for prompt ``windows`` (int32 ids, each at most ``sample_len``), one row per
        window, each read (the prompt cache decides which windows need reading)."""
        return self.start(*prompt_matrix(windows, self.sample_len))

    def start(self, prompt: np.ndarray, lengths: np.ndarray) -> dict:
        """The bundle's ``start``: state rows for ``prompt``'s rows (int32 ``[rows, sample_len]``,
        right-aligned, ``lengths`` of each)."""
        rows = len(prompt)
        if self._compiler is not None and row_capacity(rows) > rows:  # a free row: the shortest prompt
            pad = row_capacity(rows) - rows
            prompt = np.concatenate([prompt, np.zeros([pad, prompt.shape[1]], np.int32)])
            lengths = np.concatenate([lengths, np.ones([pad], np.int32)])
        state = self._blocks("start", dict(prompt=tf.constant(prompt), lengths=tf.constant(lengths)), "prompt")
        return state if len(prompt) == rows else {key: value[:rows] for key, value in state.items()}

    def advance_penalized(self, inputs: dict, compiled: bool = True) -> dict:
        """The bundle's ``advance_penalized`` (penalties and bias), compiled with XLA as ``advance`` is."""
        return self._blocks("advance_penalized", inputs, "uniforms", compiled)

    def advance(self, inputs: dict, compiled: bool = True) -> dict:
        """The bundle's ``advance`` on ``inputs``; ``compiled``: XLA may run it (or be compiled for it)."""
        return self._blocks("advance", inputs, "uniforms", compiled)

    def _blocks(self, name: str, inputs: dict, shaped: str, compiled: bool = True) -> dict:
        """``name`` on ``inputs``; with XLA, in blocks of at most BLOCK_ROWS rows (``shaped``: the
        input whose shape names the program)."""
        rows = inputs[shaped].shape[0]
        if self._compiler is None or not compiled or rows <= BLOCK_ROWS:
            return self._call(name, inputs, tuple(inputs[shaped].shape), compiled)
        outs = []
        for first, end in row_blocks(rows):
            block = {key: value[first:end] for key, value in inputs.items()}
            outs.append(self._call(name, block, tuple(block[shaped].shape)))
        return {key: tf.concat([out[key] for out in outs], axis=0) for key in outs[0]}

    def _call(self, name: str, inputs: dict, shape: tuple, compiled: bool = True) -> dict:
        key = (name, shape)
        if key in self._compiled:
            return dict(self._xla[name](**inputs))
        if compiled and self._compiler is not None:
            with self._lock:
                uses = self._uses[key] = self._uses.get(key, 0) + 1
            if uses >= self.HOT[name]:
                self._submit(key, lambda: inputs)
        return dict(self._graph[name](**inputs))

    def _submit(self, key: tuple, inputs) -> None:
        """Compile ``key``'s program in the background (once), on what ``inputs()`` returns."""
        with self._lock:
            if key in self._submitted:
                return
            self._submitted.add(key)
        self._compiler.submit(lambda: self._compile(key, inputs()))

    def _compile(self, key: tuple, inputs: dict) -> None:
        began = time.perf_counter()
        self._xla[key[0]](**inputs)  # the first call with a shape compiles it
        metrics.COMPILE_SECONDS.labels(function=key[0]).observe(time.perf_counter() - began)
        self._compiled.add(key)


def _jit(fn):
    """``fn`` (a bundle's function) compiled with XLA, one program per input shape."""
    return tf.function(lambda **inputs: fn(**inputs), jit_compile=True, reduce_retracing=True, autograph=False)
