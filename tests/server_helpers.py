"""Helpers for the server tests: a real server on a free loopback port, over copies of real bundles."""
from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path

import grpc

from server.app import build_server
from server.config import Settings
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

MODELS = {"one": "shake-one", "two": "shake-two"}  # trained_bundles' keys and the names they carry


def copy_models(trained_bundles, data_dir: Path) -> Path:
    """Copy the fixture's models into ``data_dir/models`` (so tests may add and delete freely)."""
    models_dir = Path(data_dir) / "models"
    for name in MODELS.values():
        shutil.copytree(trained_bundles["models_dir"] / name, models_dir / name)
    return models_dir


@contextlib.contextmanager
def running_server(data_dir: Path, **settings):
    """A started server on 127.0.0.1 (a free port) serving ``data_dir/models``; stopped on exit.

    Tests whose subject is not decoding (bad input, jobs, faults, security, scoring, metrics, the wire,
    limits and versions) pass ``xla=False``: the bundle's graph functions compute the same text, and
    compiling XLA programs in the background cost those modules about a fifth of their CPU. The XLA path
    is tested end to end where decoding is the subject: test_server_engine, test_server_grpc's module
    server, test_controls, test_tfjs, test_load, test_resume, and the `python -m server` processes of
    test_core, test_stack and test_server_grpc (tests/web's runs the graph functions).

    The warm-up at start (``warm_models``, TEXTGEN_WARM_MODELS) is off here unless a test asks for it: it
    costs each in-process server an XLA compile per model. test_server_grpc's server and every server
    process (python -m server, tests/reliability's ServerProcess) warm up as in production."""
    settings.setdefault("metrics_addr", None)  # no /metrics unless the test asks for one
    settings.setdefault("warm_models", 0)  # no warm-up streams (and their XLA compiles) unless asked for
    server = build_server(Settings(addr="127.0.0.1:0", data_dir=Path(data_dir), **settings)).start()
    try:
        yield server
    finally:
        server.stop(grace=0.5)


def connect(server):
    """A channel to ``server`` and a TextGen stub on it."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, textgen_pb2_grpc.TextGenStub(channel)


def generate(stub, metadata=None, **request):
    """Run one Generate call to its end: ``(start, text, end, responses)``."""
    responses = list(stub.Generate(pb.GenerateRequest(**request), metadata=metadata))
    text = "".join(r.text for r in responses)
    return responses[0].start, text, responses[-1].end, responses


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def run_threads(target, args_list):
    """Call ``target(*args)`` for each args in a thread of its own, all at once; returns the results."""
    results = [None] * len(args_list)
    errors = []

    def run(i, args):
        try:
            results[i] = target(*args)
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, args)) for i, args in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
