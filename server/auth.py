"""Optional token auth: every RPC but the health service needs ``authorization: Bearer <token>``."""
from __future__ import annotations

import hmac
from pathlib import Path

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"  # load balancers and orchestrators probe without a token


class TokenFileError(ValueError):
    """A tokens file that cannot be used; the message names it."""


def read_tokens(path: Path) -> list[str]:
    """The tokens in ``path``: one per line; blank lines and lines starting with '#' are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TokenFileError(f"cannot read the tokens file {path} (TEXTGEN_TOKENS_FILE): {exc.strerror}") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise TokenFileError(f"the tokens file {path} (TEXTGEN_TOKENS_FILE) has no tokens; every call would be refused")
    return tokens


class TokenAuth(grpc.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, calls whose bearer token is not one of ``tokens``."""

    def __init__(self, tokens: list[str]):
        self._tokens = [token.encode("utf-8") for token in tokens]

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        return handler if problem is None else _refusing(handler, problem)

    def _problem(self, metadata) -> str | None:
        """What is wrong with the call's credentials, or None when they are good."""
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return "this server needs metadata 'authorization: Bearer <token>'; the call had none"
        if len(values) != 1 or not isinstance(values[0], str):
            return "give exactly one 'authorization: Bearer <token>' metadata entry"
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "the authorization metadata must read 'Bearer <token>'"
        presented = token.strip().encode("utf-8")
        # Compare with every token, so the time taken says nothing about which one came close.
        if sum(hmac.compare_digest(presented, known) for known in self._tokens) == 0:
            return "the bearer token is not valid for this server"
        return None


def _refusing(handler: grpc.RpcMethodHandler, problem: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call with UNAUTHENTICATED."""

    def refuse(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
