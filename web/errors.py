"""Errors of the HTTP API: one JSON shape, the gRPC status mapped to an HTTP status.

    {"error": {"code": "NOT_FOUND", "status": 404, "message": "no model named 'x'; ..."}}

``message`` is the gRPC server's message, unchanged; ``code`` its gRPC status code name. A request
that does not fit its body model is INVALID_ARGUMENT with ``validation_message``'s one line.
"""
from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from web.convert import http_status


class Body(BaseModel):
    """A JSON request body: every field it takes is declared (so /docs and /openapi.json show it),
    and a field it does not declare is refused by name rather than ignored."""
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def unknown_fields(cls, names: list[str]) -> str:
        """The message for fields ``names`` that this body does not declare."""
        return f"unknown field {', '.join(map(repr, names))}; known fields: {', '.join(sorted(cls.model_fields))}"


def error_body(code: str, message: str, status: int | None = None) -> dict:
    """The error JSON; ``status``: the HTTP status when it is not the code's own (413, 415)."""
    return {"error": {"code": code, "status": status or http_status(code), "message": message}}


def error_response(code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=http_status(code))


def validation_message(exc: RequestValidationError, body: type[Body] | None = None) -> str:
    """FastAPI's validation errors in one line: ``temperature: Input should be a valid number (got 'hot')``.
    Fields the request's ``body`` model does not declare (pydantic's ``extra_forbidden``) come first,
    in ``body.unknown_fields``'s words."""
    unknown, parts = [], []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        if error.get("type") == "extra_forbidden":
            unknown.append(where)
            continue
        got = f" (got {error['input']!r})" if "input" in error and error.get("type") != "missing" else ""
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}{got}")
    if unknown:
        parts.insert(0, (body or Body).unknown_fields(unknown))
    return "; ".join(parts)
