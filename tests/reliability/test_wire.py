"""Malformed bytes on the wire: raw TCP to the server port (no gRPC client), then a good request.

Garbage, HTTP/1.1, a truncated HTTP/2 preface, a valid preface followed by garbage frames, a frame
header announcing a 16 MiB frame, broken HPACK, protocol errors on stream 0, a PING flood and a pile of
idle half-open connections. After each, the server must answer a good request.
"""
from __future__ import annotations

import random
import socket
import struct
import time

import grpc
import pytest

from tests.reliability.conftest import figure
from tests.server_helpers import copy_models, running_server
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
IDLE_CONNECTIONS = 100
READ_SECONDS = 1.0


def frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    """An HTTP/2 frame; ``length`` may lie about the payload's size."""
    size = len(payload) if length is None else length
    return struct.pack(">I", size)[1:] + bytes([kind, flags]) + struct.pack(">I", stream & 0x7FFFFFFF) + payload


SETTINGS = frame(4, 0, 0, b"")
_rng = random.Random(7)
GARBAGE = _rng.randbytes(8192)

CASES = {
    "random garbage": GARBAGE,
    "HTTP/1.1 request": b"GET /textgen.v1.TextGen/ListModels HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "truncated preface": PREFACE[:11],
    "preface then garbage": PREFACE + GARBAGE,
    "preface, settings, garbage frames": PREFACE + SETTINGS + b"".join(
        frame(_rng.randrange(0, 256), _rng.randrange(0, 256), _rng.randrange(0, 2**31), _rng.randbytes(_rng.randrange(0, 64)))
        for _ in range(50)),
    "huge frame header (16 MiB DATA)": PREFACE + SETTINGS + frame(0, 0, 1, b"x" * 1000, length=2**24 - 1),
    "huge frame header (16 MiB HEADERS)": PREFACE + SETTINGS + frame(1, 4, 1, b"\x82" * 1000, length=2**24 - 1),
    "headers with broken HPACK": PREFACE + SETTINGS + frame(1, 5, 1, b"\xff\xff\xff\xff\xff\xff\x7f" + GARBAGE[:200]),
    "protocol errors on stream 0": PREFACE + SETTINGS + frame(4, 0, 0, b"\x00" * 7) + frame(8, 0, 0, b"\x00" * 4)
    + frame(6, 0, 0, b"\x00" * 3) + frame(3, 0, 0, b"\x00" * 4) + frame(0, 1, 0, b"data"),
    "continuation without headers": PREFACE + SETTINGS + frame(9, 4, 1, b"\x82"),
    "data on an idle stream": PREFACE + SETTINGS + frame(0, 1, 3, b"\x00\x00\x00\x00\x05hello"),
    "window update overflow": PREFACE + SETTINGS + frame(8, 0, 0, struct.pack(">I", 2**31 - 1)) * 3,
    "settings flood": PREFACE + SETTINGS * 5000,
    "ping flood": PREFACE + SETTINGS + frame(6, 0, 0, b"12345678") * 5000,
}


@pytest.fixture(scope="module")
def server(trained_bundles, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("wire")
    copy_models(trained_bundles, data_dir)
    with running_server(data_dir, xla=False) as server:
        yield server


def good_request(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = textgen_pb2_grpc.TextGenStub(channel)
        assert stub.GetModel(pb.GetModelRequest(model="shake-one"), timeout=10).version == 1
        responses = list(stub.Generate(pb.GenerateRequest(model="shake-one", prompt="KING ", length=20, seed=1),
                                       timeout=10))
        text = "".join(r.text for r in responses)
        assert len(text) == 20
        return text


def send_and_read(port: int, data: bytes) -> str:
    """Send ``data`` on a fresh connection, then read until the server closes it or READ_SECONDS pass.
    Returns how the connection ended: "closed", "reset", "open" (+ ", GOAWAY" when one came)."""
    got, ending = b"", "open"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return "reset while sending"
        deadline = time.monotonic() + READ_SECONDS
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                ending = "reset"
                break
            if not chunk:
                ending = "closed"
                break
            got += chunk
    return ending + (", GOAWAY" if _has_goaway(got) else "")


def _has_goaway(data: bytes) -> bool:
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 7:
            return True
        i += 9 + length
    return False


def test_garbage_on_the_wire_leaves_the_server_serving(server):
    reference = good_request(server.port)
    endings = {}
    for name, data in CASES.items():
        endings[name] = send_and_read(server.port, data)
        assert good_request(server.port) == reference, f"after {name!r} the server served different text"
    figure("wire", f"{len(CASES)} malformed connections, a good request after each: "
                   + "; ".join(f"{name}: {how}" for name, how in endings.items()))


def test_idle_half_open_connections_do_not_block_service(server):
    sockets = []
    try:
        for i in range(IDLE_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(PREFACE[: i % len(PREFACE)])  # from nothing to all but the last byte of the preface
            sockets.append(s)
        began = time.monotonic()
        good_request(server.port)
        served_in = time.monotonic() - began
    finally:
        for s in sockets:
            s.close()
    good_request(server.port)
    figure("wire", f"{IDLE_CONNECTIONS} idle half-open connections held: a good request served in {served_in:.2f} s")
    assert served_in < 5.0
