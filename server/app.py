"""Wiring: the gRPC server with TextGen, Training, health and reflection; graceful shutdown on SIGTERM."""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server import handlers, metrics, training_service
from server.auth import Authenticator, KeyRing, caller_of, read_tokens, token_keys
from server.config import Settings
from server.engine import Engine, SamplingParams
from server.keys_service import KeysServicer
from server.limits import Quota
from server.redis_link import RedisLink
from server.service import TextGenServicer
from server.store import ModelStore
from server.usage import Usage
from textgen import metrics as shared_metrics
from textgen.v1 import textgen_pb2, textgen_pb2_grpc

log = logging.getLogger(__name__)

TEXTGEN_SERVICE = textgen_pb2.DESCRIPTOR.services_by_name["TextGen"].full_name
TRAINING_SERVICE = textgen_pb2.DESCRIPTOR.services_by_name["Training"].full_name
KEYS_SERVICE = textgen_pb2.DESCRIPTOR.services_by_name["Keys"].full_name
GENERATE_METHOD = f"/{TEXTGEN_SERVICE}/Generate"
# Streams wait on their queues, not on the CPU: give every allowed stream a thread, plus some for
# the unary calls.
SPARE_THREADS = 64  # threads beyond max_streams, for WatchJob, uploads and unary calls


class StartupError(RuntimeError):
    """The server cannot start (address in use, unreadable TLS files); the message says which."""


class TextGenServer:
    """A built server: ``start()`` it, ``stop()`` it; ``port`` is the port it listens on."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = ModelStore(settings.models_dir, settings.reload_seconds, settings.older_versions)
        self.engine = Engine(settings.max_streams, settings.max_length, settings.max_prompt, xla=settings.xla,
                             prompt_cache_bytes=settings.prompt_cache_mb * 2**20)
        # Keys, their limits and their usage live in Redis when auth is on (server/auth.py).
        link = RedisLink(settings.redis_url) if settings.auth != "off" else None
        tokens = token_keys(read_tokens(settings.tokens_file)) if settings.tokens_file else []
        self.keyring = KeyRing(tokens, link if settings.auth == "keys" else None, settings.keys_refresh_seconds)
        self.quota = Quota(link, settings.key_limits)
        self.usage = Usage(link)
        interceptors = [RequestMetrics(self.usage)]  # first: it sees every call's final status, refusals included
        if settings.auth != "off":
            interceptors.append(Authenticator(self.keyring))
        interceptors.append(MalformedRequests())
        # Every open call holds a thread (streams wait on their queue, WatchJob on Redis). Past the
        # pool's size a call is refused with RESOURCE_EXHAUSTED at once rather than queued unseen.
        threads = settings.max_streams + SPARE_THREADS
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=threads,
            options=[("grpc.max_receive_message_length", settings.max_message_bytes)],
        )
        textgen_pb2_grpc.add_TextGenServicer_to_server(
            TextGenServicer(self.store, self.engine, settings.max_score_chars, quota=self.quota, usage=self.usage),
            self.grpc_server)
        self.training = training_service.register(self.grpc_server, settings, self.store, self.quota, self.usage)
        textgen_pb2_grpc.add_KeysServicer_to_server(
            KeysServicer(settings.auth, self.keyring, link, self.quota, self.usage,
                         count_active_jobs=self.training.jobs.count_active if self.training is not None else None),
            self.grpc_server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        served = [TEXTGEN_SERVICE] + ([TRAINING_SERVICE] if self.training is not None else []) + [KEYS_SERVICE]
        reflection.enable_server_reflection(
            served + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.grpc_server,
        )
        self.services = served
        self.port = self._listen(settings)
        self.metrics_endpoint: shared_metrics.Endpoint | None = None  # serving once started
        self.warmed: list[str] = []  # name:version of the models warm_up ran, once started

    def _listen(self, settings: Settings) -> int:
        try:
            if settings.tls_cert:
                key, cert = settings.tls_key.read_bytes(), settings.tls_cert.read_bytes()
                port = self.grpc_server.add_secure_port(settings.addr, grpc.ssl_server_credentials([(key, cert)]))
            else:
                port = self.grpc_server.add_insecure_port(settings.addr)
        except OSError as exc:
            raise StartupError(f"cannot read the TLS files (TEXTGEN_TLS_CERT/TEXTGEN_TLS_KEY): {exc}") from None
        except RuntimeError as exc:  # grpc's "failed to bind"
            raise StartupError(f"cannot listen on {settings.addr} (TEXTGEN_ADDR): {exc}") from None
        if not port:
            raise StartupError(f"cannot listen on {settings.addr} (TEXTGEN_ADDR)")
        return port

    def start(self) -> "TextGenServer":
        """Load the models, then take calls; health says SERVING once the models are warm."""
        self.store.start()
        self.keyring.start()
        self.usage.start()
        for service in ["", *self.services]:
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.grpc_server.start()
        self.warmed = warm_up(self.engine, self.store, self.settings.warm_models)
        for service in ["", *self.services]:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.metrics_endpoint = shared_metrics.serve(
            metrics.registry_for(self.engine, self.store), self.settings.metrics_addr, "server")
        return self

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls at once; let streams finish for up to ``grace`` seconds (default: the
        settings'); streams still running near the end get STOP_REASON_SHUTDOWN."""
        grace = self.settings.grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        stopped = self.grpc_server.stop(grace)
        # End the streams a little before gRPC cancels them, so they can still send their last message.
        self.engine.shutdown(max(0.0, grace - min(1.0, grace / 5)))
        stopped.wait()
        close_training = getattr(self.training, "close", None)
        if callable(close_training):
            close_training()
        self.store.close()
        self.keyring.close()
        self.quota.close()
        self.usage.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


class RequestMetrics(grpc.ServerInterceptor):
    """Counts every call by method and final status code, and measures Generate's streams
    (server.metrics); with a key, counts it for that key too (server.usage). A stream the client
    abandons counts as CANCELLED."""

    def __init__(self, usage: Usage | None = None):
        self.usage = usage

    def observe(self, method: str, context, code) -> None:
        metrics.observe_call(method, code)
        if self.usage is not None:
            self.usage.request(caller_of(context).id, method.rsplit("/", 1)[-1], code.name)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        def unary(behavior):
            def call(request, context):
                code = grpc.StatusCode.UNKNOWN
                try:
                    reply = behavior(request, context)
                    code = grpc.StatusCode.OK
                    return reply
                finally:
                    self.observe(method, context, context.code() or code)
            return call

        def streaming(behavior):
            def call(request, context):
                code, began = grpc.StatusCode.CANCELLED, time.perf_counter()
                try:
                    responses = behavior(request, context)
                    if method == GENERATE_METHOD:
                        responses = metrics.observe_generate(responses, began)
                    yield from responses
                    code = grpc.StatusCode.OK if context.is_active() else grpc.StatusCode.CANCELLED
                except Exception:
                    code = grpc.StatusCode.UNKNOWN
                    raise
                finally:  # GeneratorExit (the client went away) leaves CANCELLED
                    self.observe(method, context, context.code() or code)
            return call

        wrapped = (streaming if handler.response_streaming else unary)(handlers.behavior(handler))
        return handlers.rebuilt(handler, wrapped)


class MalformedRequests(grpc.ServerInterceptor):
    """Answers a request that is not a valid message of its method (a truncated field, invalid UTF-8
    in a string) with INVALID_ARGUMENT; grpcio's own answer would be INTERNAL."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method, parse = handler_call_details.method, handler.request_deserializer

        def parsed(raw, context):
            try:
                return parse(raw)
            except Exception as exc:  # protobuf's DecodeError, or a UnicodeDecodeError from a string field
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"the request is not a valid {method} message ({type(exc).__name__}: {exc})")

        if handler.request_streaming:
            def wrap(behavior):
                return lambda requests, context: behavior((parsed(raw, context) for raw in requests), context)
        else:
            def wrap(behavior):
                return lambda request, context: behavior(parsed(request, context), context)

        return handlers.rebuilt(handler, wrap(handlers.behavior(handler)), request_deserializer=None)


def warm_up(engine: Engine, store: ModelStore, models: int) -> list[str]:
    """One short seeded stream on the latest version of the first ``models`` models, so that a
    replica's first calls do not pay for the model's first steps (graph and kernel set-up) and its
    XLA programs start compiling; a balancer sends it calls only after (health says SERVING then).
    Returns the models warmed, as name:version; a model that fails here is left to fail its calls."""
    warmed = []
    for name, versions in store.list_models()[:models]:
        model = versions[-1]
        try:
            for _ in engine.submit(model, "", SamplingParams(length=2 * engine.chunk, temperature=1.0, seed=0)):
                pass
        except Exception:  # noqa: BLE001  (a bundle without seed slices, a broken model: its calls say why)
            log.warning("could not warm %s version %d", name, model.version, exc_info=True)
            continue
        warmed.append(f"{name}:{model.version}")
    return warmed


def build_server(settings: Settings) -> TextGenServer:
    """The server for ``settings``, bound to its address but not started."""
    return TextGenServer(settings)


def serve(settings: Settings | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    settings = settings or Settings.from_env()
    server = build_server(settings).start()
    log.info("serving %s on port %d; models from %s (warmed: %s)", ", ".join(server.services), server.port,
             settings.models_dir, ", ".join(server.warmed) or "none")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    log.info("shutting down: streams have %.0f s to finish", settings.grace_seconds)
    server.stop()
    log.info("stopped")
