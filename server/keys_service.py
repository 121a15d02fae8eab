"""The Keys gRPC service: the calling key (WhoAmI), usage, and key management (admin).

Key management writes Redis (textgen.keys); a new or revoked key reaches every replica at its next
refresh (TEXTGEN_KEYS_REFRESH_SECONDS), and this replica at once.
"""
from __future__ import annotations

from server.auth import KeyRing, caller_of
from server.errors import BadRequest, PreconditionFailed, KeyNotFound, PermissionDenied, request_errors
from server.limits import Quota
from server.redis_link import RedisLink
from server.usage import Usage
from textgen import keys
from textgen.keys import ADMIN, Key, KeyProblem, Limits
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc


class KeysServicer(textgen_pb2_grpc.KeysServicer):
    def __init__(self, mode: str, ring: KeyRing | None, link: RedisLink | None, quota: Quota, usage: Usage,
                 count_active_jobs=None):
        self.mode, self.ring, self.link, self.quota, self.usage = mode, ring, link, quota, usage
        self.count_active_jobs = count_active_jobs or (lambda key_id: 0)

    def WhoAmI(self, request, context):
        return self.key_info(caller_of(context))

    def GetUsage(self, request, context):
        with request_errors(context):
            caller = caller_of(context)
            key = caller
            if request.key and request.key not in (caller.id, caller.name):
                if not caller.has(ADMIN):
                    raise PermissionDenied(f"another key's usage needs a key with scope 'admin'; key {caller.label} "
                                           f"has scopes: {', '.join(keys.ordered(caller.scopes))}")
                key = self._find(request.key)
            if not key.id:
                raise PreconditionFailed("usage is kept per API key, and this server runs with TEXTGEN_AUTH=off")
            totals = self.usage.read(key.id)
            return pb.Usage(
                key_id=key.id,
                requests=[pb.RequestCount(method=m, code=c, count=n) for (m, c), n in sorted(totals["requests"].items())],
                generated_characters=totals[keys.GENERATED], scored_characters=totals[keys.SCORED],
                training_seconds=totals[keys.TRAINING_SECONDS], upload_bytes=totals[keys.UPLOADED],
                upload_bytes_today=self.quota.uploaded_today(key), open_streams=self.quota.open_streams(key),
                active_jobs=self.count_active_jobs(key.id), limits=limits_message(self.quota.limits(key)))

    def CreateKey(self, request, context):
        with request_errors(context):
            redis = self._redis()
            try:
                limits = limits_from(request.limits)
                key, secret = self.link.call(keys.create, redis, list(request.scopes), request.name, limits)
            except KeyProblem as exc:
                raise BadRequest(str(exc)) from None
            self.ring.refresh()
            return pb.CreatedKey(key=self.key_info(key), secret=secret)

    def ListKeys(self, request, context):
        with request_errors(context):
            found = self.link.call(keys.load, self._redis()) if self.mode == "keys" else {}
            listed = sorted(found.values(), key=lambda k: k.created)
            tokens = self.ring.token_keys() if self.ring is not None else []
            return pb.ListKeysResponse(keys=[self.key_info(k) for k in tokens + listed])

    def RevokeKey(self, request, context):
        with request_errors(context):
            key = self._find(request.key)
            if key.source == "tokens-file":
                raise PreconditionFailed(f"{key.id} is a token of TEXTGEN_TOKENS_FILE: remove it from the file and "
                                         "restart the server to revoke it")
            self.link.call(keys.revoke, self._redis(), key.id)
            self.ring.refresh()
            return self.key_info(key)

    # ---- helpers -----------------------------------------------------------------------------------

    def _redis(self):
        if self.mode != "keys" or self.link is None:
            raise PreconditionFailed(f"keys are managed in Redis when the server runs with TEXTGEN_AUTH=keys; "
                                     f"this one runs with TEXTGEN_AUTH={self.mode}")
        return self.link.client

    def _find(self, id_or_name: str) -> Key:
        for key in (self.ring.token_keys() if self.ring is not None else []):
            if id_or_name == key.id:
                return key
        try:
            return self.link.call(keys.find, self._redis(), id_or_name)
        except KeyProblem as exc:
            raise KeyNotFound(str(exc)) from None

    def key_info(self, key: Key) -> pb.KeyInfo:
        return pb.KeyInfo(id=key.id, name=key.name, scopes=keys.ordered(key.scopes),
                          limits=limits_message(self.quota.limits(key)) if key.id else None,
                          created=key.created, source=key.source, auth=self.mode)


def limits_message(limits: Limits) -> pb.KeyLimits:
    return pb.KeyLimits(**{f: v or 0 for f, v in ((f, getattr(limits, f)) for f in Limits.FIELDS)})


def limits_from(message: pb.KeyLimits) -> Limits:
    """The limits a request sets (unset fields: the server's defaults)."""
    return Limits(**{f: int(getattr(message, f)) for f in Limits.FIELDS if message.HasField(f)})
