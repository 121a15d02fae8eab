"""Serving metrics in Prometheus' text format over HTTP: the part the server and the worker share.

``TEXTGEN_METRICS_ADDR`` says where a process serves ``/metrics`` (any path answers):

- unset: the process's default, ``127.0.0.1:9450`` for the server and ``127.0.0.1:9451`` for a
  worker (containers set ``0.0.0.0:9450`` / ``0.0.0.0:9451``; replicas of a worker, one per
  container, share the port number);
- ``host:port``: there; port 0 takes any free port (logged at start), for several workers on one host;
- empty: no metrics endpoint.

A port that is already taken does not stop the process: generation and training matter more than
their metrics. The process logs one error naming the address and runs without the endpoint.
"""
from __future__ import annotations

import logging

from prometheus_client import disable_created_metrics, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)
disable_created_metrics()  # no ``*_created`` series next to every counter: nothing here reads them

ENV = "TEXTGEN_METRICS_ADDR"
SERVER_DEFAULT = "127.0.0.1:9450"
WORKER_DEFAULT = "127.0.0.1:9451"


class MetricsAddrError(ValueError):
    """A ``TEXTGEN_METRICS_ADDR`` that is not ``host:port``; the message names it."""


def parse_addr(raw: str | None) -> tuple[str, int] | None:
    """``(host, port)`` from ``host:port`` (``[::1]:9450`` for IPv6); None for empty (metrics off)."""
    raw = (raw or "").strip()
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise MetricsAddrError(
            f"{ENV} must be host:port (port 0 = any free port) or empty for no metrics, got {raw!r}"
        )
    return host, int(port)


def addr_from_env(environ, default: str) -> tuple[str, int] | None:
    """The metrics address ``environ`` asks for (``default`` when unset); raises MetricsAddrError."""
    return parse_addr(environ.get("TEXTGEN_METRICS_ADDR", default))


class Endpoint:
    """A running ``/metrics`` HTTP endpoint (a daemon thread); ``port`` is the port it listens on."""

    def __init__(self, httpd):
        self._httpd = httpd
        self.port = httpd.server_port

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve(registry: CollectorRegistry, addr: tuple[str, int] | None, process: str) -> Endpoint | None:
    """Serve ``registry`` on ``addr`` (None: don't). Returns the endpoint, or None when off or when
    the address cannot be bound (logged as an error naming it: the process goes on without metrics)."""
    if addr is None:
        return None
    host, port = addr
    try:
        httpd, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("%s metrics: cannot listen on %s:%d (%s): %s; running without a metrics endpoint "
                  "(give each process its own port, or port 0)", process, host, port, ENV, exc.strerror or exc)
        return None
    endpoint = Endpoint(httpd)
    log.info("%s metrics on http://%s:%d/metrics", process, host, endpoint.port)
    return endpoint


class Joined(Collector):
    """Collects each of ``collectors`` in turn: process-wide metrics next to one instance's."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()
