"""The web process: the page at /, the JSON API under /api/v1, OpenAI-compatible /v1, docs at /docs.

It holds no model and no training code: every request becomes gRPC calls to the textgen server
through one ``client.Client`` (one connection, shared by every request; each caller's token rides
on its own calls).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from client.api import Client, TextgenError
from web import api, chat, completions, keys, tfjs
from web.errors import Body, error_response, validation_message
from web.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"

# The page loads nothing from elsewhere and runs no inline script: model output can never become code.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(client: Client | None = None, settings: Settings | None = None) -> "FastAPIOffline":
    """The ASGI app, talking to the server through ``client`` (default: ``Client()``, which reads
    TEXTGEN_SERVER, TEXTGEN_TOKEN and TEXTGEN_CA_CERT), with ``settings`` (default: from the
    environment, which raises textgen.config.ConfigError for a bad value) on ``app.state.settings``."""
    settings = settings if settings is not None else Settings.from_env()
    app = FastAPIOffline(
        title="textgen",
        version="1",
        summary="Character-level LSTM text generation: the HTTP side of the textgen gRPC server.",
        description="`/api/v1`: the whole gRPC API as JSON and Server-Sent Events. `/v1`: OpenAI-compatible "
                    "completions (a token is a character). A server with tokens needs "
                    "`Authorization: Bearer <token>`; gRPC status codes map to HTTP statuses, and an error "
                    "carries the server's message.",
        static_url="/docs-static",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.client = client if client is not None else Client()
    app.include_router(api.router)
    app.include_router(tfjs.router)
    app.include_router(completions.router)
    app.include_router(chat.router)
    app.include_router(keys.router)

    @app.exception_handler(TextgenError)
    async def on_textgen_error(request: Request, exc: TextgenError):
        response = _error(request, exc.code, exc.message)
        if exc.retry_after is not None:  # a key past one of its limits (429)
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        return _error(request, "INVALID_ARGUMENT", validation_message(exc, _body_model(request)))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def page_headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(PAGE_HEADERS)
        return response

    return app


@contextlib.asynccontextmanager
async def _lifespan(app):
    yield
    app.state.client.close()


def _body_model(request: Request) -> type[Body] | None:
    """The JSON body model of the route ``request`` matched (GenerateBody...), if it has one."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    return model if isinstance(model, type) and issubclass(model, Body) else None


def _error(request: Request, code: str, message: str):
    if request.url.path.startswith("/v1/"):
        return completions.openai_error(code, message)
    return error_response(code, message)
