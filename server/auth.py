"""Who is calling, and may they: API keys with scopes (TEXTGEN_AUTH).

- ``off``: no key needed; every call is served as ``OPEN`` (all scopes, no limits, no owner).
- ``tokens`` (the default when TEXTGEN_TOKENS_FILE is set): the file's tokens, each an all-scopes key
  (id ``token-N``, N its place in the file).
- ``keys``: the keys in Redis (``python -m server keys add``, or the Keys service), refreshed every
  TEXTGEN_KEYS_REFRESH_SECONDS, plus the tokens file's tokens when it is set (to move from one to
  the other).

Every RPC but the health service then needs ``authorization: Bearer <secret>``: without a good one,
UNAUTHENTICATED; with a key whose scopes do not cover the method (``METHOD_SCOPES``), PERMISSION_DENIED
naming the scope needed. A method missing from the table needs ``admin``. The servicers read the
caller with ``caller_of(context)``.

A secret is found by its SHA-256 (a dict lookup on a digest says nothing about how close a guess
came), and the stored digest is then compared with ``hmac.compare_digest``, for unknown secrets too.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
from pathlib import Path

import grpc

from server import handlers
from server.errors import KeysUnavailable
from server.redis_link import RedisLink
from textgen import keys as keyring
from textgen.keys import ADMIN, GENERATE, SCOPES, TRAIN, Key

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"  # load balancers and orchestrators probe without a key
CALLER_ATTR = "textgen_caller"  # set on the grpc context for the servicers
OPEN = Key(id="", name="", scopes=frozenset(SCOPES), sha256="", source="off")  # the caller when auth is off
MODES = ("off", "tokens", "keys")
_NO_DIGEST = "0" * 64  # compared against when a secret matches no key, so both paths do the same work

_TG, _TR, _KEYS, _REFL = "/textgen.v1.TextGen/", "/textgen.v1.Training/", "/textgen.v1.Keys/", \
    "/grpc.reflection.v1alpha.ServerReflection/"
# The scopes that may call each method (any one of them). () : any valid key.
METHOD_SCOPES = {
    _TG + "Generate": (GENERATE,), _TG + "Score": (GENERATE,), _TG + "ListModels": (GENERATE,),
    _TG + "GetModel": (GENERATE,), _TG + "ExportTfjs": (GENERATE,),
    _TG + "DeleteModel": (ADMIN,),
    _TR + "SubmitTrain": (TRAIN,), _TR + "UploadCorpus": (TRAIN,), _TR + "ListCorpora": (TRAIN,),
    _TR + "ImportTfjs": (TRAIN,),
    # a train key sees its own jobs, an admin key every job (server.jobs filters by owner)
    _TR + "GetJob": (TRAIN, ADMIN), _TR + "ListJobs": (TRAIN, ADMIN), _TR + "WatchJob": (TRAIN, ADMIN),
    _TR + "CancelJob": (TRAIN, ADMIN),
    _KEYS + "WhoAmI": (), _KEYS + "GetUsage": (),  # another key's usage needs admin (server.keys_service)
    _KEYS + "CreateKey": (ADMIN,), _KEYS + "ListKeys": (ADMIN,), _KEYS + "RevokeKey": (ADMIN,),
    _REFL + "ServerReflectionInfo": (),
}


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


def token_keys(tokens: list[str]) -> list[Key]:
    """The tokens file's tokens as all-scopes keys ``token-1``, ``token-2``... (by their place)."""
    return [Key(id=f"token-{n}", name="", scopes=frozenset(SCOPES), sha256=keyring.digest(token),
                source="tokens-file") for n, token in enumerate(tokens, 1)]


class KeyRing:
    """The keys this server accepts: ``tokens`` (from the tokens file) and, with ``link``, the keys in
    that Redis, reloaded when its change counter moves (checked every ``refresh_seconds`` by a thread).
    While Redis cannot be reached the keys last read stay in force; before the first read, a secret
    that is not a token gets KeysUnavailable (UNAVAILABLE), never a wrong "not valid"."""

    def __init__(self, tokens: list[Key] = (), link: RedisLink | None = None, refresh_seconds: float = 2.0):
        self.link, self.refresh_seconds = link, refresh_seconds
        self._tokens = {key.sha256: key for key in tokens}
        self._keys: dict[str, Key] = {}  # by digest, from Redis
        self._version: int | None = None  # None: never read
        self._failing = False
        self._last_try = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def token_keys(self) -> list[Key]:
        """The tokens file's keys, in the file's order."""
        return sorted(self._tokens.values(), key=lambda k: int(k.id.split("-")[1]))

    def start(self) -> "KeyRing":
        if self.link is not None:
            self._last_try = time.monotonic()
            self.refresh()
            self._thread = threading.Thread(target=self._run, name="keyring", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def refresh(self) -> bool:
        """Reload the keys if they changed; False when Redis could not be read (logged once)."""
        try:
            redis = self.link.client
            version = keyring.changed(redis)
            if version != self._version:
                keys = keyring.load(redis)
                self._keys, self._version = {key.sha256: key for key in keys.values()}, version
        except Exception as exc:  # noqa: BLE001  (redis errors, a bad URL: the last keys stay)
            if not self._failing:
                log.warning("cannot read the API keys from Redis at %s (%s: %s); the keys read last stay in force",
                            self.link.address, type(exc).__name__, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("reading the API keys from Redis at %s again", self.link.address)
        self._failing = False
        return True

    def lookup(self, secret: str) -> Key | None:
        """The key whose secret this is, or None; KeysUnavailable while Redis' keys were never read."""
        unread = self.link is not None and self._version is None
        if unread and time.monotonic() - self._last_try >= 1.0:  # at most one try a second while Redis is away
            self._last_try = time.monotonic()
            unread = not self.refresh()
        found = keyring.digest(secret)
        key = self._tokens.get(found) or self._keys.get(found)
        if not hmac.compare_digest(found, key.sha256 if key is not None else _NO_DIGEST):
            key = None
        if key is None and unread:
            raise KeysUnavailable(f"cannot check API keys: Redis at {self.link.address} cannot be reached; "
                                  "try again shortly")
        return key


class Authenticator(grpc.ServerInterceptor):
    """Refuses calls without a valid key (UNAUTHENTICATED) or outside its scopes (PERMISSION_DENIED);
    puts the caller's Key on the context of the others."""

    def __init__(self, ring: KeyRing):
        self.ring = ring

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        try:
            caller, problem = self._caller(handler_call_details.invocation_metadata or ())
        except KeysUnavailable as exc:
            return _refusing(handler, grpc.StatusCode.UNAVAILABLE, str(exc))
        if caller is None:
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, problem)
        needed = METHOD_SCOPES.get(method, (ADMIN,))
        if needed and not any(caller.has(scope) for scope in needed):
            return _refusing(handler, grpc.StatusCode.PERMISSION_DENIED, scope_problem(method, needed, caller))
        serve = handlers.behavior(handler)

        def with_caller(request, context):
            setattr(context, CALLER_ATTR, caller)
            return serve(request, context)

        return handlers.rebuilt(handler, with_caller)

    def _caller(self, metadata) -> tuple[Key | None, str]:
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return None, "this server needs metadata 'authorization: Bearer <token>'; the call had none"
        if len(values) != 1 or not isinstance(values[0], str):
            return None, "give exactly one 'authorization: Bearer <token>' metadata entry"
        scheme, _, secret = values[0].partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None, "the authorization metadata must read 'Bearer <token>'"
        key = self.ring.lookup(secret.strip())
        if key is None:
            return None, "the bearer token is not valid for this server"
        return key, ""


def scope_problem(method: str, needed, caller: Key) -> str:
    name = method.rsplit("/", 1)[-1]
    wanted = " or ".join(repr(s) for s in needed)
    has = ", ".join(keyring.ordered(caller.scopes)) or "none"
    return f"{name} needs a key with scope {wanted}; key {caller.label} has scopes: {has}"


def caller_of(context) -> Key:
    """The key that made this call (``OPEN`` when auth is off)."""
    return getattr(context, CALLER_ATTR, OPEN)


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, problem: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call with ``code``."""

    def refuse(request_or_iterator, context):
        context.abort(code, problem)

    return handlers.rebuilt(handler, refuse)
