"""What can go wrong with a request, in the server's own words (the gRPC layer maps them to codes).

Each message says what was wrong, the value received and what is allowed; it reaches the user as is.
A status message travels in gRPC metadata (8 KiB at most), so values are echoed shortened (``shown``)
and lists capped (``listed``).
"""


class RequestError(Exception):
    """A request the server will not serve; subclasses say why."""


class BadRequest(RequestError):
    """A value outside what is allowed (gRPC INVALID_ARGUMENT)."""


class ModelNotFound(RequestError):
    """No such model or version (gRPC NOT_FOUND)."""


class TooManyStreams(RequestError):
    """The server is at its limit of concurrent streams (gRPC RESOURCE_EXHAUSTED)."""


class ShuttingDown(RequestError):
    """The server is stopping and takes no new streams (gRPC UNAVAILABLE)."""


class StorageFailed(RequestError):
    """The data volume refused a write (full, read-only): gRPC FAILED_PRECONDITION, with the path."""


class DecodeFailed(RequestError):
    """The model failed while generating (gRPC INTERNAL); the server log has the details."""


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
    if len(details) > MAX_DETAILS:
        details = details[:MAX_DETAILS] + "..."
    context.abort(code, details)
