"""Training jobs in Redis, as the server and the worker both read and write them.

The server enqueues the trainer's job function by its dotted name (``JOB_FUNCTION``, which is
``trainer.job.run_training_job``) with RQ's JSON serializer; its one argument is plain JSON data
(``make_payload``)::

    {"format": "textgen-train/1", "corpus": "tfjs-code" | "upload-<16 hex>",
     "options": {...TrainConfig fields...}, "model_name": "tfjs-code",
     "from_model": {"name": "tfjs-code", "version": 3} | null}

Each job has, in Redis (``JOB_KEY`` and friends below):

- ``textgen:job:<id>``: a hash summing the job up (state, corpus, model name, options, epoch, loss,
  attempts, times...), updated with each event by the same script that appends the event;
- ``textgen:job:<id>:events``: a stream of events, field ``event`` = JSON of ``{"type": ..., "time":
  ..., ...}``: ``queued`` (written at submit), then from the worker ``started`` (attempt,
  resumed_from_epoch, epochs, batches_per_epoch), ``batch`` (at most ``BATCH_EVENTS_PER_SECOND``,
  plus the last of each epoch), ``epoch``, ``checkpoint``, and one of ``finished`` (model_name,
  model_version), ``failed`` (reason), ``cancelled``. Nothing is appended after one of those three;
- ``textgen:job:<id>:cancel``: set by CancelJob; the job checks it at batch boundaries;
- ``textgen:jobs``: a sorted set of job ids by submit time;
- ``textgen:jobs:owner:<key id>``: the same, for the jobs one API key submitted (the summary's
  ``owner``), and ``textgen:jobs:active:<key id>``: a set of its jobs that may not have ended yet
  (ended ones are taken out when the key's jobs are counted).

No TensorFlow and no training code here: the server imports this module.
"""
from __future__ import annotations

import json
import math
import re
import time

from textgen.bundle import NAME_PATTERN
from textgen.corpus import UPLOAD_ID

JOB_FUNCTION = "trainer.job.run_training_job"
FAILURE_CALLBACK = "trainer.job.on_job_failure"
PAYLOAD_FORMAT = "textgen-train/1"

KEY_PREFIX = "textgen"
JOBS_INDEX = f"{KEY_PREFIX}:jobs"
STATES = ("queued", "started", "finished", "failed", "cancelled")
TERMINAL_STATES = ("finished", "failed", "cancelled")
EVENT_TYPES = ("queued", "started", "batch", "epoch", "checkpoint", "finished", "failed", "cancelled")
RETENTION_SECONDS = 30 * 24 * 3600  # a job's record and events stay this long after it ends
BATCH_EVENTS_PER_SECOND = 5
STOP_CHECK_SECONDS = 0.2  # how often a running job looks at its cancel flag (at batch boundaries)
MAX_ATTEMPTS = 4  # the first run and up to 3 retries after a worker died (rq.Retry(max=3))



def owner_index(key_id: str) -> str:
    return f"{KEY_PREFIX}:jobs:owner:{key_id}"


def owner_active(key_id: str) -> str:
    return f"{KEY_PREFIX}:jobs:active:{key_id}"


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:events"


def cancel_key(job_id: str) -> str:
    return f"{KEY_PREFIX}:job:{job_id}:cancel"


class PayloadError(ValueError):
    """Job data that is not a training job this worker runs."""


# ---- the payload -------------------------------------------------------------------------------


def make_payload(corpus: str, options: dict, model_name: str, from_model: tuple[str, int] | None) -> dict:
    """The JSON job data for ``run_training_job`` (validated by the caller, checked again here)."""
    payload = {
        "format": PAYLOAD_FORMAT,
        "corpus": corpus,
        "options": dict(options),
        "model_name": model_name,
        "from_model": {"name": from_model[0], "version": int(from_model[1])} if from_model else None,
    }
    return parse_payload(payload)


def parse_payload(payload) -> dict:
    """``payload`` if it is well-formed training job data, else PayloadError saying what is wrong.

    Checks the shape only (corpus is a built-in name or an upload id, never a path; names are model
    names); option values are checked by ``TrainConfig.validate`` when the job runs.
    """
    if not isinstance(payload, dict):
        raise PayloadError(f"job data must be a JSON object, got {type(payload).__name__}")
    expected = {"format", "corpus", "options", "model_name", "from_model"}
    if set(payload) != expected:
        raise PayloadError(f"job data must have exactly the keys {sorted(expected)}, got {sorted(payload)}")
    if payload["format"] != PAYLOAD_FORMAT:
        raise PayloadError(f"job data format must be {PAYLOAD_FORMAT!r}, got {payload['format']!r}")
    corpus = payload["corpus"]
    if not isinstance(corpus, str) or not (re.fullmatch(r"[a-z0-9-]{1,64}", corpus) or UPLOAD_ID.fullmatch(corpus)):
        raise PayloadError(f"job corpus must be a built-in corpus name or an upload id, got {corpus!r}")
    if not isinstance(payload["options"], dict) or not all(isinstance(k, str) for k in payload["options"]):
        raise PayloadError("job options must be a JSON object")
    if not isinstance(payload["model_name"], str) or not NAME_PATTERN.fullmatch(payload["model_name"]):
        raise PayloadError(f"job model name is not a valid model name: {payload['model_name']!r}")
    parent = payload["from_model"]
    if parent is not None:
        if (not isinstance(parent, dict) or set(parent) != {"name", "version"}
                or not isinstance(parent["name"], str) or not NAME_PATTERN.fullmatch(parent["name"])
                or isinstance(parent["version"], bool) or not isinstance(parent["version"], int)
                or parent["version"] < 1):
            raise PayloadError(f"job from_model must be {{'name': model name, 'version': >= 1}}, got {parent!r}")
    return payload


# ---- the record: events and the summary ------------------------------------------------------------

# Appends one event and updates the summary atomically; refuses anything after a terminal event, so a
# job ends exactly once even when a late worker, a failure callback and a canceller all race.
# KEYS: job hash, events stream. ARGV: event JSON, retention seconds (0: keep), field/value pairs.
_APPEND_EVENT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'finished' or state == 'failed' or state == 'cancelled' then return false end
local id = redis.call('XADD', KEYS[2], '*', 'event', ARGV[1])
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return id
"""


def record_event(redis, job_id: str, event: dict) -> str | None:
    """Append ``event`` to the job's stream and fold it into its summary; returns the stream id,
    or None when the job had already ended (nothing is written then)."""
    if event.get("type") not in EVENT_TYPES:
        raise ValueError(f"unknown job event type {event.get('type')!r}")
    event = _finite({**event, "time": event.get("time", time.time())})
    fields = _summary_fields(event)
    terminal = event["type"] in TERMINAL_STATES
    args = [json.dumps(event, ensure_ascii=False, allow_nan=False, default=_json_default),
            RETENTION_SECONDS if terminal else 0]
    for name, value in fields.items():
        args += [name, _to_field(value)]
    result = redis.register_script(_APPEND_EVENT)(keys=[job_key(job_id), events_key(job_id)], args=args)
    if result and terminal:
        redis.expire(cancel_key(job_id), RETENTION_SECONDS)
    return result.decode() if isinstance(result, bytes) else result


def create_record(redis, job_id: str, corpus: str, model_name: str, options: dict,
                  from_model: tuple[str, int] | None, owner: str = "") -> None:
    """Write a new job's summary, index it and append its ``queued`` event (before it is enqueued).
    ``owner``: the id of the API key that submitted it ("" with auth off)."""
    now = time.time()
    with redis.pipeline() as pipe:
        pipe.hset(job_key(job_id), mapping={
            "id": job_id, "corpus": corpus, "model_name": model_name,
            "options": json.dumps(options), "from_model": f"{from_model[0]}:{from_model[1]}" if from_model else "",
            "enqueued_at": now, "attempts": 0, "owner": owner,
        })
        pipe.zadd(JOBS_INDEX, {job_id: now})
        if owner:
            pipe.zadd(owner_index(owner), {job_id: now})
            pipe.sadd(owner_active(owner), job_id)
        pipe.execute()
    record_event(redis, job_id, {"type": "queued", "time": now})


def read_summary(redis, job_id: str) -> dict | None:
    """The job's summary as typed values, or None when there is no such job."""
    raw = redis.hgetall(job_key(job_id))
    if not raw:
        return None
    s = {_text(k): _text(v) for k, v in raw.items()}
    out = {"id": s.get("id", job_id), "state": s.get("state", "queued"), "corpus": s.get("corpus", ""),
           "model_name": s.get("model_name", ""), "from_model": s.get("from_model", ""),
           "error": s.get("error", ""), "owner": s.get("owner", "")}
    out["options"] = json.loads(s["options"]) if s.get("options") else {}
    for name in ("enqueued_at", "started_at", "ended_at", "loss", "val_loss"):
        out[name] = float(s[name]) if s.get(name) not in (None, "") else None
    for name in ("attempts", "epoch", "epochs", "model_version"):
        out[name] = int(s[name]) if s.get(name) not in (None, "") else 0
    return out


def read_events(redis, job_id: str, after: str = "-", block_ms: int | None = None, count: int = 1000):
    """``[(stream id, event dict)]`` after the stream id ``after`` ("-": from the first); with
    ``block_ms``, waits up to that long for new ones when there are none."""
    if block_ms is None:
        start = after if after == "-" else f"({after}"
        entries = redis.xrange(events_key(job_id), min=start, count=count)
    else:
        reply = redis.xread({events_key(job_id): "0-0" if after == "-" else after}, count=count, block=block_ms)
        entries = reply[0][1] if reply else []
    return [(_text(entry_id), json.loads(fields[b"event"] if b"event" in fields else fields["event"]))
            for entry_id, fields in entries]


def request_cancel(redis, job_id: str) -> None:
    redis.set(cancel_key(job_id), 1, ex=RETENTION_SECONDS)


def _summary_fields(event: dict) -> dict:
    kind, t = event["type"], event["time"]
    if kind == "queued":
        return {"state": "queued"}
    if kind == "started":
        return {"state": "started", "started_at": t, "attempts": event.get("attempt", 1),
                "epochs": event.get("epochs", 0), "epoch": event.get("resumed_from_epoch", 0)}
    if kind == "epoch":
        return {"epoch": event["epoch"], "epochs": event["epochs"], "loss": event.get("loss"),
                "val_loss": event.get("val_loss")}
    if kind == "finished":
        return {"state": "finished", "ended_at": t, "model_version": event["model_version"]}
    if kind == "failed":
        return {"state": "failed", "ended_at": t, "error": event["reason"]}
    if kind == "cancelled":
        return {"state": "cancelled", "ended_at": t}
    return {}


def _finite(value):
    """``value`` with NaN and infinities (a diverging loss) as None, which JSON can carry."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _to_field(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value)


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
