"""Taking a gRPC method handler apart and putting it back together, for the server's interceptors."""
from __future__ import annotations

import grpc

_KINDS = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


def behavior(handler: grpc.RpcMethodHandler):
    """The function that serves ``handler``'s calls: ``(request or request iterator, context)``."""
    return getattr(handler, _KINDS[(handler.request_streaming, handler.response_streaming)][1])


def rebuilt(handler: grpc.RpcMethodHandler, new_behavior, request_deserializer=...) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and serializers that serves with ``new_behavior`` (and
    ``request_deserializer`` when given)."""
    make = _KINDS[(handler.request_streaming, handler.response_streaming)][0]
    deserializer = handler.request_deserializer if request_deserializer is ... else request_deserializer
    return make(new_behavior, request_deserializer=deserializer, response_serializer=handler.response_serializer)
