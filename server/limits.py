"""Per-key limits, held in Redis so that every replica together grants each key no more than its limit.

- **streams**: Generate streams at once. Each stream holds a lease in ``textgen:limits:<id>:streams``
  (a sorted set, score = expiry); the server renews its leases every LEASE_SECONDS / 3, so the leases
  of a replica that died expire within LEASE_SECONDS.
- **characters per minute**: a token bucket in ``textgen:limits:<id>:chars`` holding a minute's worth,
  refilled continuously (Redis' clock, the same for every replica). A stream takes the characters it
  asks for when it starts and gives back what it did not generate when it ends.
- **training jobs** queued or running: counted under a short per-key lock, so two replicas cannot
  both take the last place.
- **upload bytes per UTC day**: ``textgen:limits:<id>:upload:<date>``, counted chunk by chunk and
  given back when the upload fails.

A call past a limit gets LimitExceeded (RESOURCE_EXHAUSTED) with a message naming the limit and a
``retry_after``. Calls made with auth off (``server.auth.OPEN``) have no limits. When Redis cannot be
reached, limits are not enforced (logged) and generation goes on: Redis is then checked at most every
REDIS_RETRY_SECONDS.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import math
import threading
import time
import uuid

from server.errors import LimitExceeded
from server.redis_link import RedisLink
from textgen.keys import Key, Limits

log = logging.getLogger(__name__)

PREFIX = "textgen:limits"
LEASE_SECONDS = 30.0
REDIS_RETRY_SECONDS = 5.0
JOB_LOCK_MS = 10_000
SECONDS_PER_DAY = 86_400

# KEYS: the key's stream leases. ARGV: limit, lease id, lease seconds. Returns -1 (taken) or the count.
_TAKE_STREAM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then return n end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return -1
"""

# KEYS: the key's stream leases. ARGV: lease seconds, lease ids. Pushes the leases' expiry on.
_RENEW_STREAMS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 1)
return 1
"""

# KEYS: the key's bucket. ARGV: capacity, refill per second, amount (> 0 takes, < 0 gives back).
# Returns {1, tokens left} or {0, seconds until ``amount`` is there}, as strings (Lua numbers are doubles).
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cap, rate, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]) or cap, tonumber(v[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - at) * rate)
local ok = 1
if amount > tokens then ok = 0 else tokens = math.min(cap, tokens - amount) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(cap / rate) + 60)
if ok == 1 then return {1, tostring(tokens)} end
return {0, tostring((amount - tokens) / rate)}
"""

# KEYS: today's upload count. ARGV: bytes, limit. Returns {1, total} or {0, total before}.
_ADD_UPLOAD = """
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = redis.call('INCRBY', KEYS[1], amount)
if used > limit then
  redis.call('DECRBY', KEYS[1], amount)
  return {0, used - amount}
end
redis.call('EXPIRE', KEYS[1], 2 * 86400)
return {1, used}
"""


def key_of(key_id: str, what: str) -> str:
    return f"{PREFIX}:{key_id}:{what}"


class StreamLease:
    """One stream's place and characters, held until ``close(generated)``."""

    def __init__(self, quota: "Quota | None" = None, key: Key | None = None, lease: str = "", reserved: int = 0):
        self.quota, self.key, self.lease, self.reserved = quota, key, lease, reserved
        self._closed = False

    def close(self, generated: int) -> None:
        """Give back the place, and the characters reserved but not generated (idempotent)."""
        if self._closed or self.quota is None:
            return
        self._closed = True
        self.quota._release_stream(self, generated)


class Quota:
    """Every key's limits (``defaults`` where a key sets none) in the Redis of ``link``."""

    NO_LIMITS = Limits(0, 0, 0, 0)

    def __init__(self, link: RedisLink | None, defaults: Limits):
        self.link, self.defaults = link, defaults
        self._leases: dict[str, set[str]] = {}  # zset key -> lease ids this server holds
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._scripts: dict[str, object] = {}  # Lua source -> redis-py Script (its SHA computed once)

    def _script(self, redis, source: str):
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = redis.register_script(source)
        return script

    def limits(self, key: Key) -> Limits:
        """``key``'s limits in force (0: none)."""
        return key.limits.over(self.defaults)

    def close(self) -> None:
        self._stop.set()

    # ---- streams and characters ------------------------------------------------------------------

    def open_stream(self, key: Key, characters: int) -> StreamLease:
        """A place for one more stream of ``key`` and ``characters`` from its bucket, or LimitExceeded."""
        limits = self.limits(key)
        if not key.id or self.link is None or not (limits.max_streams or limits.chars_per_minute):
            return StreamLease()
        per_minute = limits.chars_per_minute
        if per_minute and characters > per_minute:
            raise LimitExceeded(
                f"the request asks for {characters} characters, more than key {key.label}'s limit of {per_minute} "
                f"generated characters per minute (chars_per_minute): ask for at most {per_minute}", 60)
        lease = uuid.uuid4().hex
        streams = key_of(key.id, "streams")
        with self._redis() as redis:
            if redis is None:
                return StreamLease()
            if limits.max_streams:
                count = self._script(redis, _TAKE_STREAM)(keys=[streams], args=[limits.max_streams, lease,
                                                                                  LEASE_SECONDS])
                if count >= 0:
                    raise LimitExceeded(
                        f"key {key.label} has {count} streams open, its limit (max_streams {limits.max_streams}); "
                        "retry when one of them ends", 1)
                self._hold(streams, lease)
            if per_minute:
                ok, value = self._script(redis, _BUCKET)(
                    keys=[key_of(key.id, "chars")], args=[per_minute, per_minute / 60.0, characters])
                if not int(ok):
                    self._drop(redis, streams, lease)
                    wait = math.ceil(float(value))
                    raise LimitExceeded(
                        f"key {key.label} has used its {per_minute} generated characters per minute "
                        f"(chars_per_minute); {characters} more are there in {wait} s", wait)
        return StreamLease(self, key, lease if limits.max_streams else "", characters if per_minute else 0)

    def _release_stream(self, held: StreamLease, generated: int) -> None:
        limits = self.limits(held.key)
        with self._redis() as redis:
            if redis is None:
                return
            if held.lease:
                self._drop(redis, key_of(held.key.id, "streams"), held.lease)
            unused = held.reserved - max(0, generated)
            if unused > 0 and limits.chars_per_minute:
                self._script(redis, _BUCKET)(keys=[key_of(held.key.id, "chars")],
                                               args=[limits.chars_per_minute, limits.chars_per_minute / 60.0, -unused])

    def _hold(self, streams: str, lease: str) -> None:
        with self._lock:
            self._leases.setdefault(streams, set()).add(lease)
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew, name="stream-leases", daemon=True)
                self._renewer.start()

    def _drop(self, redis, streams: str, lease: str) -> None:
        with self._lock:
            self._leases.get(streams, set()).discard(lease)
        redis.zrem(streams, lease)

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            with self._lock:
                held = {streams: sorted(leases) for streams, leases in self._leases.items() if leases}
                self._leases = {streams: set(leases) for streams, leases in held.items()}
            with self._redis() as redis:
                if redis is not None and held:
                    script = self._script(redis, _RENEW_STREAMS)
                    for streams, leases in held.items():
                        script(keys=[streams], args=[LEASE_SECONDS, *leases])

    # ---- training jobs -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def job_slot(self, key: Key, count_active):
        """Around submitting a job for ``key``: LimitExceeded when ``count_active()`` (its jobs queued
        or running) is at its limit. Replicas take turns per key, so the count cannot go stale."""
        limit = self.limits(key).max_jobs
        if not key.id or self.link is None or not limit:
            yield
            return
        lock, token = key_of(key.id, "jobs-lock"), uuid.uuid4().hex
        redis = self.link.client
        deadline = time.monotonic() + JOB_LOCK_MS / 1000
        while not self.link.call(redis.set, lock, token, nx=True, px=JOB_LOCK_MS):
            if time.monotonic() > deadline:
                raise LimitExceeded(f"key {key.label} is submitting another job right now; retry in a moment", 1)
            time.sleep(0.02)
        try:
            active = count_active()
            if active >= limit:
                raise LimitExceeded(
                    f"key {key.label} has {active} training jobs queued or running, its limit (max_jobs {limit}); "
                    "retry when one ends, or cancel one", 60)
            yield
        finally:
            if self.link.call(redis.get, lock) == token.encode():
                self.link.call(redis.delete, lock)

    # ---- uploads -------------------------------------------------------------------------------------

    def counted_upload(self, key: Key, chunks, size=len):
        """``chunks`` passed through, their bytes (``size(chunk)``) counted against the key's upload
        bytes per day; LimitExceeded past it. Returns (iterator, giveback): call ``giveback()`` when the
        upload failed, so that it does not count."""
        limit = self.limits(key).upload_bytes_per_day
        counted = [0]
        if not key.id or self.link is None or not limit:
            return iter(chunks), lambda: None
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        today = key_of(key.id, f"upload:{day}")

        def passing():
            for chunk in chunks:
                amount = size(chunk)
                if amount:
                    with self._redis() as redis:
                        if redis is not None:
                            ok, used = self._script(redis, _ADD_UPLOAD)(keys=[today], args=[amount, limit])
                            if not int(ok):
                                raise LimitExceeded(
                                    f"key {key.label} may upload {limit} bytes a day (upload_bytes_per_day) and has "
                                    f"{int(used)} bytes today; "
                                    f"this upload would pass it (the day ends at 00:00 UTC)", _until_midnight())
                            counted[0] += amount
                yield chunk

        def giveback():
            if counted[0]:
                with self._redis() as redis:
                    if redis is not None:
                        redis.decrby(today, counted[0])
                counted[0] = 0

        return passing(), giveback

    def uploaded_today(self, key: Key) -> int:
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        with self._redis() as redis:
            return int(redis.get(key_of(key.id, f"upload:{day}")) or 0) if redis is not None else 0

    def open_streams(self, key: Key) -> int:
        with self._redis() as redis:
            if redis is None:
                return 0
            now = time.time()
            return int(redis.zcount(key_of(key.id, "streams"), now, "+inf"))

    # ---- Redis, failing open --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _redis(self):
        """Yields the Redis client, or None while Redis is away (limits are then not enforced)."""
        import redis as redis_module

        if self._down_since is not None and time.monotonic() - self._down_since < REDIS_RETRY_SECONDS:
            yield None
            return
        try:
            yield self.link.client
        except redis_module.exceptions.RedisError as exc:
            if self._down_since is None:
                log.warning("cannot reach Redis at %s for the keys' limits (%s); not enforcing them until it is back",
                            self.link.address, exc)
            self._down_since = time.monotonic()
            return
        if self._down_since is not None:
            log.info("Redis at %s is back: enforcing the keys' limits again", self.link.address)
        self._down_since = None


def _until_midnight() -> int:
    now = datetime.datetime.now(datetime.timezone.utc)
    return SECONDS_PER_DAY - (now.hour * 3600 + now.minute * 60 + now.second)
