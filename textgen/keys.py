"""API keys: what a key is, how it is kept in Redis, and the per-key usage record.

A key has an ``id`` (``key-`` and 12 hex digits: shown in logs, metrics, job records and models),
an optional unique ``name``, ``scopes`` (``SCOPES``) and ``limits`` (``Limits``: unset ones take the
server's defaults). Its ``secret`` (``tgk_`` and 43 URL-safe characters: 256 random bits) is shown
once, when the key is made; Redis keeps only its SHA-256. A secret that random needs no slow hash:
nobody can guess a preimage, and the digest is what a lookup compares.

Redis (every replica reads the same keys; the server refreshes its copy every
``TEXTGEN_KEYS_REFRESH_SECONDS``):

- ``textgen:keys``: a hash, key id -> the key's JSON record (``to_record``);
- ``textgen:keys:changed``: a counter bumped by every change, so a replica reloads only then;
- ``textgen:usage:<id>``: a hash of the key's usage totals (``USAGE_FIELDS``, and
  ``requests:<Method>:<CODE>`` counts), written by the servers and the workers.

No gRPC, no TensorFlow: the server, its ``keys`` command and the training worker import this module.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import time

KEYS_HASH = "textgen:keys"
KEYS_CHANGED = "textgen:keys:changed"
USAGE_PREFIX = "textgen:usage"

GENERATE, TRAIN, ADMIN = "generate", "train", "admin"
SCOPES = (GENERATE, TRAIN, ADMIN)
SECRET_PREFIX = "tgk_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ID = re.compile(r"key-[0-9a-f]{12}")

# Usage totals besides the request counts (textgen:usage:<id> fields).
GENERATED, SCORED, TRAINING_SECONDS, UPLOADED = (
    "generated_characters", "scored_characters", "training_seconds", "upload_bytes")
USAGE_FIELDS = (GENERATED, SCORED, TRAINING_SECONDS, UPLOADED)


class KeyProblem(ValueError):
    """A key request that cannot be met (a bad scope or name, no such key); the message says why."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """A key's limits; None: the server's default (``TEXTGEN_KEY_*``); 0: no limit.

    ``max_streams``: Generate streams at once; ``chars_per_minute``: generated characters (a token
    bucket that holds a minute's worth); ``max_jobs``: training jobs queued or running;
    ``upload_bytes_per_day``: corpus and model bytes uploaded per UTC day."""

    max_streams: int | None = None
    chars_per_minute: int | None = None
    max_jobs: int | None = None
    upload_bytes_per_day: int | None = None

    FIELDS = ("max_streams", "chars_per_minute", "max_jobs", "upload_bytes_per_day")

    def __post_init__(self):
        for field in self.FIELDS:
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise KeyProblem(f"limit {field} must be an integer >= 0 (0 = no limit), got {value!r}")

    def over(self, defaults: "Limits") -> "Limits":
        """These limits, with ``defaults``' values where these are unset."""
        return Limits(**{f: getattr(self, f) if getattr(self, f) is not None else getattr(defaults, f)
                         for f in self.FIELDS})

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.FIELDS if getattr(self, f) is not None}


@dataclasses.dataclass(frozen=True)
class Key:
    """A key as the server knows it (never its secret)."""

    id: str
    name: str
    scopes: frozenset
    sha256: str
    limits: Limits = Limits()
    created: float = 0.0
    source: str = "redis"  # "redis", or "tokens-file" for a token of TEXTGEN_TOKENS_FILE

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def label(self) -> str:
        """How messages name the key: its id, and its name when it has one."""
        return f"{self.id} ({self.name})" if self.name else self.id


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_scopes(raw) -> frozenset:
    """``"generate,train"`` or a list -> a frozenset of scopes; KeyProblem naming a scope not in SCOPES."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = {str(s).strip() for s in items if str(s).strip()}
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise KeyProblem(f"unknown scope {', '.join(map(repr, unknown))}; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise KeyProblem(f"a key needs at least one scope: {', '.join(SCOPES)}")
    return frozenset(scopes)


def ordered(scopes) -> list[str]:
    return [s for s in SCOPES if s in scopes]


def to_record(key: Key) -> str:
    return json.dumps({"id": key.id, "name": key.name, "scopes": ordered(key.scopes), "sha256": key.sha256,
                       "limits": key.limits.to_dict(), "created": key.created})


def from_record(raw) -> Key:
    data = json.loads(raw)
    return Key(id=data["id"], name=data.get("name", ""), scopes=frozenset(data["scopes"]), sha256=data["sha256"],
               limits=Limits(**data.get("limits", {})), created=float(data.get("created", 0.0)))


# ---- the keys in Redis --------------------------------------------------------------------------


def load(redis) -> dict[str, Key]:
    """Every key in Redis, by id."""
    return {key.id: key for key in map(from_record, redis.hgetall(KEYS_HASH).values())}


def changed(redis) -> int:
    """The change counter: equal values mean the same keys."""
    return int(redis.get(KEYS_CHANGED) or 0)


def create(redis, scopes, name: str = "", limits: Limits = Limits()) -> tuple[Key, str]:
    """A new key in Redis; returns it and its secret (which is not kept anywhere)."""
    scopes = parse_scopes(scopes)
    if name:
        if not NAME.fullmatch(name):
            raise KeyProblem(f"a key name is 1-64 characters from A-Z, a-z, 0-9, '.', '_', '-' starting with a "
                            f"letter or digit, got {name!r}")
        if name.startswith("key-") or any(k.name == name for k in load(redis).values()):
            raise KeyProblem(f"there is already a key named {name!r}; names are unique and may not start with 'key-'")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = Key(id=f"key-{secrets.token_hex(6)}", name=name, scopes=scopes, sha256=digest(secret), limits=limits,
              created=time.time())
    with redis.pipeline() as pipe:
        pipe.hset(KEYS_HASH, key.id, to_record(key))
        pipe.incr(KEYS_CHANGED)
        pipe.execute()
    return key, secret


def find(redis, id_or_name: str) -> Key:
    """The key with that id or name; KeyProblem when there is none."""
    for key in load(redis).values():
        if id_or_name in (key.id, key.name):
            return key
    raise KeyProblem(f"no key with id or name {id_or_name!r} (see `keys list`)")


def revoke(redis, id_or_name: str) -> Key:
    """Delete the key: every replica refuses it at its next refresh. Returns it."""
    key = find(redis, id_or_name)
    with redis.pipeline() as pipe:
        pipe.hdel(KEYS_HASH, key.id)
        pipe.incr(KEYS_CHANGED)
        pipe.execute()
    return key


# ---- usage ---------------------------------------------------------------------------------------


def usage_key(key_id: str) -> str:
    return f"{USAGE_PREFIX}:{key_id}"


def request_field(method: str, code: str) -> str:
    return f"requests:{method}:{code}"


def read_usage(redis, key_id: str) -> dict:
    """``{"requests": {(method, code): count}, GENERATED: n, SCORED: n, TRAINING_SECONDS: s, UPLOADED: n}``."""
    raw = {k.decode() if isinstance(k, bytes) else k: v for k, v in redis.hgetall(usage_key(key_id)).items()}
    out = {"requests": {}}
    for field in USAGE_FIELDS:
        value = float(raw.get(field, 0) or 0)
        out[field] = value if field == TRAINING_SECONDS else int(value)
    for field, value in raw.items():
        if field.startswith("requests:"):
            _, method, code = field.split(":", 2)
            out["requests"][(method, code)] = int(value)
    return out


def add_training_seconds(redis, key_id: str, seconds: float) -> None:
    if key_id and seconds > 0:
        redis.hincrbyfloat(usage_key(key_id), TRAINING_SECONDS, round(seconds, 3))
