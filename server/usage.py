"""What each key used: Prometheus counters labelled by key id (this process), and totals in Redis
(``textgen:usage:<id>``, every replica and worker adding to them) for the Keys service's GetUsage.

Calls add to local counts; a thread adds them to Redis every FLUSH_SECONDS in one pipeline, so no
call waits on Redis for its usage. Calls made with auth off have no key and are not counted here
(the server's own metrics count them).
"""
from __future__ import annotations

import collections
import logging
import threading

from server import metrics
from server.redis_link import RedisLink
from textgen import keys

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0


class Usage:
    def __init__(self, link: RedisLink | None):
        self.link = link
        self._pending: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> "Usage":
        if self.link is not None:
            self._thread = threading.Thread(target=self._run, name="usage", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.flush()

    # ---- counting ---------------------------------------------------------------------------------

    def request(self, key_id: str, method: str, code: str) -> None:
        if key_id:
            metrics.KEY_REQUESTS.labels(key=key_id, method=method, code=code).inc()
            self._add(key_id, keys.request_field(method, code), 1)

    def generated(self, key_id: str, characters: int) -> None:
        if key_id and characters:
            metrics.KEY_GENERATED.labels(key=key_id).inc(characters)
            self._add(key_id, keys.GENERATED, characters)

    def scored(self, key_id: str, characters: int) -> None:
        if key_id and characters:
            metrics.KEY_SCORED.labels(key=key_id).inc(characters)
            self._add(key_id, keys.SCORED, characters)

    def uploaded(self, key_id: str, size: int) -> None:
        if key_id and size:
            metrics.KEY_UPLOADED.labels(key=key_id).inc(size)
            self._add(key_id, keys.UPLOADED, size)

    def _add(self, key_id: str, field: str, amount: int) -> None:
        if self.link is not None:
            with self._lock:
                self._pending[key_id][field] += amount

    # ---- Redis ------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Add the counts made since the last flush to Redis (kept for the next one when it is away)."""
        with self._lock:
            pending, self._pending = self._pending, collections.defaultdict(collections.Counter)
        if not pending or self.link is None:
            return
        try:
            with self.link.client.pipeline(transaction=False) as pipe:
                for key_id, counts in pending.items():
                    for field, amount in counts.items():
                        pipe.hincrby(keys.usage_key(key_id), field, amount)
                pipe.execute()
        except Exception as exc:  # noqa: BLE001  (Redis away: keep the counts, added up, for later)
            if not self._failing:
                log.warning("cannot add usage to Redis at %s (%s); keeping it until Redis is back",
                            self.link.address, exc)
            self._failing = True
            with self._lock:
                for key_id, counts in pending.items():
                    self._pending[key_id].update(counts)
            return
        if self._failing:
            log.info("usage reaches Redis at %s again", self.link.address)
        self._failing = False

    def read(self, key_id: str) -> dict:
        """The key's totals (textgen.keys.read_usage), this process's unflushed counts included."""
        self.flush()
        return self.link.call(keys.read_usage, self.link.client, key_id)
