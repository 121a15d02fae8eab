"""What can go wrong with a request, in the server's own words, and the one mapping to gRPC statuses.

Each error class names its gRPC status (``code``); ``request_errors(context)`` ends a call that raised
one with that status, for both services. The engine, the store and the jobs raise these without
knowing gRPC.

Each message says what was wrong, the value received and what is allowed; it reaches the user as is.
A status message travels in gRPC metadata (8 KiB at most), so values are echoed shortened (``shown``)
and lists capped (``listed``).
"""
from __future__ import annotations

import contextlib

import grpc


class RequestError(Exception):
    """A request the server will not serve; subclasses say why, and with which gRPC status."""

    code = grpc.StatusCode.INTERNAL


class BadRequest(RequestError):
    """A value outside what is allowed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(RequestError):
    """No such model or version."""

    code = grpc.StatusCode.NOT_FOUND


class JobNotFound(RequestError):
    """No such job."""

    code = grpc.StatusCode.NOT_FOUND


class KeyNotFound(RequestError):
    """No API key with that id or name."""

    code = grpc.StatusCode.NOT_FOUND


class CorpusMissing(RequestError):
    """No such uploaded corpus."""

    code = grpc.StatusCode.NOT_FOUND


class TooManyStreams(RequestError):
    """The server is at its limit of concurrent streams."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class LimitExceeded(RequestError):
    """A key past one of its limits (server.limits); ``retry_after``: seconds until it may succeed,
    sent as trailing metadata ``retry-after``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class PermissionDenied(RequestError):
    """A key whose scopes do not cover what it asked for."""

    code = grpc.StatusCode.PERMISSION_DENIED


class KeysUnavailable(RequestError):
    """The API keys cannot be read (Redis unreachable since the server started)."""

    code = grpc.StatusCode.UNAVAILABLE


class ShuttingDown(RequestError):
    """The server is stopping and takes no new streams."""

    code = grpc.StatusCode.UNAVAILABLE


class QueueUnavailable(RequestError):
    """Redis cannot be reached (generation keeps working)."""

    code = grpc.StatusCode.UNAVAILABLE


class StorageFailed(RequestError):
    """The data volume refused a write (full, read-only); the message has the path."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PreconditionFailed(RequestError):
    """A request that cannot apply to things as they are (cancelling a job that has ended...)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unsupported(RequestError):
    """A control the model's bundle cannot do: it was exported before the control existed."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DecodeFailed(RequestError):
    """The model failed while generating; the server log has the details."""

    code = grpc.StatusCode.INTERNAL


def shown(value: str, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters (a status message must stay small)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def listed(items, limit: int = 20) -> str:
    """``a, b, c`` for a message, at most ``limit`` items and a count of the rest."""
    items = [str(item) for item in items]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


MAX_DETAILS = 2000  # characters; a status message travels in gRPC metadata, which is capped at 8 KiB


def abort(context, code, exc: Exception):
    """End the call with ``code`` and ``exc``'s message, cut to what gRPC metadata can carry."""
    details = str(exc)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        context.set_trailing_metadata((("retry-after", str(retry_after)),))
    if len(details) > MAX_DETAILS:
        details = details[:MAX_DETAILS] + "..."
    context.abort(code, details)


@contextlib.contextmanager
def request_errors(context):
    """Inside the ``with``, a RequestError ends the call with its status and message
    (``context.abort`` raises, so nothing after the ``with`` runs)."""
    try:
        yield
    except RequestError as exc:
        abort(context, exc.code, exc)
