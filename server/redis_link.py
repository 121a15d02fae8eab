"""The Training service's Redis: reached lazily, so the server starts and generates text without it,
and every failure to reach it is one QueueUnavailable naming its address (never its password)."""
from __future__ import annotations

from server.errors import QueueUnavailable
from textgen import config

READ_TIMEOUT_S = 6.0  # longer than WatchJob's blocking read of a job's events (server.jobs.WATCH_POLL_MS)


class RedisLink:
    """The Redis at ``url`` and the RQ training queue on it."""

    def __init__(self, url: str | None = None):
        self.url = url or config.redis_url()
        self.address = config.redis_address(self.url)
        self._client = None

    @property
    def client(self):
        """The client (created on first use; it connects on its first command)."""
        if self._client is None:
            try:
                self._client = config.redis_client(self.url, socket_connect_timeout=2, socket_timeout=READ_TIMEOUT_S)
            except config.ConfigError as exc:
                raise QueueUnavailable(str(exc)) from None
            except ValueError as exc:
                raise QueueUnavailable(f"REDIS_URL is not a usable Redis URL ({exc})") from None
        return self._client

    def queue(self):
        """RQ's training queue, with the JSON serializer (never pickle)."""
        from rq import Queue
        from rq.serializers import JSONSerializer

        return Queue(config.QUEUE_NAME, connection=self.client, serializer=JSONSerializer)

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, with Redis' errors as QueueUnavailable."""
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise QueueUnavailable(
                f"training is unavailable: cannot reach Redis at {self.address} ({type(exc).__name__}: {exc}); "
                "generation keeps working") from None
