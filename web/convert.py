"""gRPC messages (textgen.v1) as the JSON the HTTP API returns, and gRPC status codes as HTTP statuses.

One rule for every message: fields by their proto names; an optional field that is unset is left
out (it means "the default"); enums by their short lower-case name (``JOB_STATE_QUEUED`` ->
``"queued"``); 64-bit unsigned integers (seeds) as decimal strings, because JavaScript numbers lose
digits past 2**53; float32 values (temperatures) rounded to the digits a float32 holds.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

# Google's mapping of gRPC status codes to HTTP (google.rpc.Code); CANCELLED is nginx's 499.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


def http_status(code: str) -> int:
    """The HTTP status for a gRPC status code name (``"NOT_FOUND"`` -> 404); 500 for one unknown."""
    return HTTP_STATUS.get(code, 500)


def to_json(message) -> dict:
    """A protobuf message as a JSON-ready dict (see the module's docstring for the rule)."""
    out = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [_value(field, item) for item in value]
        else:
            out[field.name] = _value(field, value)
    return out


def job_event(event) -> dict:
    """A JobEvent as ``{"job_id", "id", "time", "type": "epoch", "epoch": {...}}``."""
    kind = event.WhichOneof("event")
    out = {"job_id": event.job_id, "id": event.id, "time": event.time, "type": kind}
    if kind:
        out[kind] = to_json(getattr(event, kind))
    return out


def enum_name(enum_type, number: int) -> str:
    """``JobState`` 2 -> ``"started"``: the value's name less the prefix all its values share."""
    names = [v.name for v in enum_type.values]
    prefix = _common_prefix(names)
    value = enum_type.values_by_number.get(number)
    return (value.name[len(prefix):] if value else str(number)).lower()


def _value(field, value):
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return to_json(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return str(value)
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return float(f"{value:.7g}")
    return value


def _common_prefix(names: list[str]) -> str:
    """The longest ``X_`` prefix shared by every name (``JOB_STATE_`` for JobState's values)."""
    if not names:
        return ""
    first = names[0]
    end = 0
    for i, ch in enumerate(first):
        if any(len(n) <= i or n[i] != ch for n in names):
            break
        if ch == "_":
            end = i + 1
    return first[:end]
