"""The server's settings: environment variables with local defaults (ARCHITECTURE.md, "Configuration").

| variable                   | default          | meaning                                                  |
|----------------------------|------------------|----------------------------------------------------------|
| TEXTGEN_ADDR               | 127.0.0.1:50051  | listen address (port 0: any free port)                   |
| TEXTGEN_DATA_DIR           | ./var/data       | models are served from its models/ folder                |
| TEXTGEN_MAX_LENGTH         | 10000            | most characters one Generate call may ask for            |
| TEXTGEN_MAX_STREAMS        | 256              | most concurrent Generate streams                         |
| TEXTGEN_MAX_PROMPT         | 10000            | most characters in a prompt                              |
| TEXTGEN_MAX_SCORE_CHARS    | 100000           | most characters one Score call may score                 |
| TEXTGEN_METRICS_ADDR       | 127.0.0.1:9450   | /metrics (Prometheus); empty: none (textgen/metrics.py)  |
| TEXTGEN_MAX_MESSAGE_BYTES  | 4194304          | largest request message the server accepts               |
| TEXTGEN_MAX_UPLOAD_BYTES   | 52428800         | largest corpus UploadCorpus accepts                      |
| TEXTGEN_RELOAD_SECONDS     | 2                | how often the model store rescans models/                |
| TEXTGEN_GRACE_SECONDS      | 10               | on SIGTERM, how long in-flight streams may take to end   |
| TEXTGEN_XLA                | 1                | 1: compile the decode functions with XLA; 0: do not      |
| TEXTGEN_PROMPT_CACHE_MB    | 32               | started state of recent prompts kept per model version;  |
|                            |                  | 0: none (server/prompt_cache.py)                         |
| TEXTGEN_OLDER_VERSIONS     | 2                | versions besides each model's latest kept loaded once    |
|                            |                  | asked for (least recently used out); all: load every one |
| TEXTGEN_WARM_MODELS        | 8                | at start, one short stream on the latest version of this |
|                            |                  | many models before health says SERVING; 0: none          |
| TEXTGEN_AUTH               | off, or tokens   | off: no key needed; tokens: TEXTGEN_TOKENS_FILE's tokens |
|                            | with a tokens    | (each an all-scopes key); keys: API keys in Redis        |
|                            | file             | (``python -m server keys``) and the file's tokens        |
| TEXTGEN_TOKENS_FILE        | (none)           | one token per line; every RPC but health then needs      |
|                            |                  | metadata ``authorization: Bearer <token>``               |
| TEXTGEN_KEYS_REFRESH_SECONDS | 2              | how often a replica rereads the keys (a revoked key is   |
|                            |                  | refused by every replica within this)                    |
| TEXTGEN_KEY_MAX_STREAMS    | 16               | a key's default limits (0: none); a key may set its own: |
| TEXTGEN_KEY_CHARS_PER_MINUTE | 600000         | streams at once, generated characters per minute,        |
| TEXTGEN_KEY_MAX_JOBS       | 4                | training jobs queued or running, upload bytes per UTC    |
| TEXTGEN_KEY_UPLOAD_BYTES_PER_DAY | 1073741824 | day (server/limits.py)                                   |
| TEXTGEN_TLS_CERT/_KEY      | (none)           | PEM files: serve TLS instead of plaintext                |
| REDIS_URL                  | redis://localhost:6379/0 | the Training service's job queue                 |
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from textgen import config as shared_config
from textgen import metrics as shared_metrics
from textgen.config import ConfigError, env_int, env_path, env_seconds, env_switch
from textgen.keys import Limits

SettingsError = ConfigError  # a variable the server cannot use; the message names it

DEFAULT_ADDR = "127.0.0.1:50051"


def _older_versions(env, default: int) -> int | None:
    """TEXTGEN_OLDER_VERSIONS: an integer >= 0, or "all" (None: every version loaded)."""
    raw = env.get("TEXTGEN_OLDER_VERSIONS", "").strip()
    if raw.lower() == "all":
        return None
    try:
        return env_int(env, "TEXTGEN_OLDER_VERSIONS", default, least=0)
    except ConfigError:
        raise SettingsError(f"TEXTGEN_OLDER_VERSIONS must be an integer >= 0 or 'all', got {raw!r}") from None


@dataclasses.dataclass(frozen=True)
class Settings:
    addr: str = DEFAULT_ADDR
    data_dir: Path = Path(shared_config.DEFAULT_DATA_DIR)
    max_length: int = 10_000
    max_streams: int = 256
    max_prompt: int = 10_000
    max_score_chars: int = 100_000
    max_message_bytes: int = 4 * 1024 * 1024
    max_upload_bytes: int = shared_config.DEFAULT_MAX_UPLOAD_BYTES
    reload_seconds: float = 2.0
    grace_seconds: float = 10.0
    tokens_file: Path | None = None
    auth: str | None = None  # "off", "tokens" or "keys" (server/auth.py); None: tokens with a tokens file
    keys_refresh_seconds: float = 2.0
    key_limits: Limits = Limits(max_streams=16, chars_per_minute=600_000, max_jobs=4, upload_bytes_per_day=2**30)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    redis_url: str = shared_config.DEFAULT_REDIS_URL  # for the Training service's job queue
    metrics_addr: tuple[str, int] | None = shared_metrics.parse_addr(shared_metrics.SERVER_DEFAULT)  # None: off
    xla: bool = True  # compile the decode functions with XLA (server/programs.py)
    prompt_cache_mb: int = 32  # per model version (server/prompt_cache.py); 0: none
    warm_models: int = 8  # models whose latest version runs one short stream before health says SERVING
    older_versions: int | None = 2  # loaded besides each model's latest (server/store.py); None: all

    def __post_init__(self):
        if self.auth is None:
            object.__setattr__(self, "auth", "tokens" if self.tokens_file else "off")

    @property
    def models_dir(self) -> Path:
        return Path(self.data_dir) / "models"

    @classmethod
    def from_env(cls) -> "Settings":
        """Settings from ``os.environ``; raises SettingsError naming a variable with a bad value."""
        env = os.environ
        cert, key = env_path(env, "TEXTGEN_TLS_CERT"), env_path(env, "TEXTGEN_TLS_KEY")
        if (cert is None) != (key is None):
            raise SettingsError("TLS needs both TEXTGEN_TLS_CERT and TEXTGEN_TLS_KEY (PEM files); only one is set")
        try:
            metrics_addr = shared_metrics.addr_from_env(env, shared_metrics.SERVER_DEFAULT)
        except shared_metrics.MetricsAddrError as exc:
            raise SettingsError(str(exc)) from None
        tokens_file = env_path(env, "TEXTGEN_TOKENS_FILE")
        auth = env.get("TEXTGEN_AUTH", "").strip() or ("tokens" if tokens_file else "off")
        if auth not in ("off", "tokens", "keys"):
            raise SettingsError(f"TEXTGEN_AUTH must be off, tokens or keys, got {auth!r}")
        if auth == "tokens" and not tokens_file:
            raise SettingsError("TEXTGEN_AUTH=tokens needs TEXTGEN_TOKENS_FILE (a file with one token per line)")
        if auth == "off" and tokens_file:
            raise SettingsError("TEXTGEN_AUTH=off contradicts TEXTGEN_TOKENS_FILE: unset one of them")
        shared_config.redis_options(env)  # REDIS_PASSWORD_FILE and REDIS_CA_CERT readable, or say which is not
        defaults = cls.key_limits
        key_limits = Limits(
            max_streams=env_int(env, "TEXTGEN_KEY_MAX_STREAMS", defaults.max_streams, least=0),
            chars_per_minute=env_int(env, "TEXTGEN_KEY_CHARS_PER_MINUTE", defaults.chars_per_minute, least=0),
            max_jobs=env_int(env, "TEXTGEN_KEY_MAX_JOBS", defaults.max_jobs, least=0),
            upload_bytes_per_day=env_int(env, "TEXTGEN_KEY_UPLOAD_BYTES_PER_DAY", defaults.upload_bytes_per_day,
                                         least=0))
        return cls(
            addr=env.get("TEXTGEN_ADDR", DEFAULT_ADDR),
            data_dir=shared_config.data_dir(),
            max_length=env_int(env, "TEXTGEN_MAX_LENGTH", cls.max_length),
            max_streams=env_int(env, "TEXTGEN_MAX_STREAMS", cls.max_streams),
            max_prompt=env_int(env, "TEXTGEN_MAX_PROMPT", cls.max_prompt),
            max_score_chars=env_int(env, "TEXTGEN_MAX_SCORE_CHARS", cls.max_score_chars),
            max_message_bytes=env_int(env, "TEXTGEN_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            max_upload_bytes=shared_config.max_upload_bytes(env),
            reload_seconds=env_seconds(env, "TEXTGEN_RELOAD_SECONDS", cls.reload_seconds),
            grace_seconds=env_seconds(env, "TEXTGEN_GRACE_SECONDS", cls.grace_seconds),
            tokens_file=tokens_file,
            auth=auth,
            keys_refresh_seconds=env_seconds(env, "TEXTGEN_KEYS_REFRESH_SECONDS", cls.keys_refresh_seconds),
            key_limits=key_limits,
            tls_cert=cert,
            tls_key=key,
            redis_url=shared_config.redis_url(),
            metrics_addr=metrics_addr,
            xla=env_switch(env, "TEXTGEN_XLA", cls.xla),
            prompt_cache_mb=env_int(env, "TEXTGEN_PROMPT_CACHE_MB", cls.prompt_cache_mb, least=0),
            warm_models=env_int(env, "TEXTGEN_WARM_MODELS", cls.warm_models, least=0),
            older_versions=_older_versions(env, cls.older_versions),
        )
