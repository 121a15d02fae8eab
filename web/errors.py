"""Errors of the HTTP API: one JSON shape, the gRPC status mapped to an HTTP status.

    {"error": {"code": "NOT_FOUND", "status": 404, "message": "no model named 'x'; ..."}}

``message`` is the gRPC server's message, unchanged; ``code`` its gRPC status code name.
"""
from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from client.api import TextgenError
from web.convert import http_status


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "status": http_status(code), "message": message}}


def error_response(code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=http_status(code))


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors in one line: ``temperature: Input should be a valid number (got 'hot')``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        got = f" (got {error['input']!r})" if "input" in error and error.get("type") != "missing" else ""
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}{got}")
    return "; ".join(parts)


async def textgen_error_handler(request: Request, exc: TextgenError) -> JSONResponse:
    return error_response(exc.code, exc.message)


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response("INVALID_ARGUMENT", validation_message(exc))
