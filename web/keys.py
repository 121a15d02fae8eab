"""API keys over HTTP: the calling key, usage, and (scope admin) key management, as the Keys RPCs.

    GET    /api/v1/whoami         the key this request carries: id, name, scopes, limits, the server's auth mode
    GET    /api/v1/usage?key=     a key's usage (yours by default; another's needs scope admin)
    GET    /api/v1/keys           every key (admin)
    POST   /api/v1/keys           {"scopes": ["generate"], "name": "...", "limits": {...}}: a new key; the reply's
                                  ``secret`` is shown this once (admin)
    DELETE /api/v1/keys/{key}     revoke a key by id or name (admin)
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from client.api import Client
from web.api import caller_client
from web.convert import to_json
from web.errors import Body

router = APIRouter(prefix="/api/v1", tags=["keys"])


class LimitsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_streams: int | None = Field(None, ge=0, description="Generate streams at once (0: none; unset: the server's)")
    chars_per_minute: int | None = Field(None, ge=0, description="generated characters per minute")
    max_jobs: int | None = Field(None, ge=0, description="training jobs queued or running")
    upload_bytes_per_day: int | None = Field(None, ge=0, description="bytes uploaded per UTC day")


class CreateKeyBody(Body):
    scopes: list[str] = Field(..., description="any of generate, train, admin", examples=[["generate", "train"]])
    name: str = Field("", description="optional, unique")
    limits: LimitsBody = Field(default_factory=LimitsBody)


@router.get("/whoami", summary="The key this request carries: id, name, scopes, limits")
def whoami(client: Client = Depends(caller_client)):
    return to_json(client.whoami())


@router.get("/usage", summary="A key's usage over every replica (yours by default; another's needs admin)")
def usage(key: str = Query("", description="id or name; empty: the calling key"),
          client: Client = Depends(caller_client)):
    return to_json(client.usage(key))


@router.get("/keys", summary="Every key (scope admin); secrets are never shown")
def list_keys(client: Client = Depends(caller_client)):
    return {"keys": [to_json(k) for k in client.list_keys()]}


@router.post("/keys", status_code=201, summary="A new key (scope admin); its secret is in this reply only")
def create_key(body: CreateKeyBody, client: Client = Depends(caller_client)):
    return to_json(client.create_key(body.scopes, body.name, **body.limits.model_dump()))


@router.delete("/keys/{key}", summary="Revoke a key by id or name (scope admin)")
def revoke_key(key: str, client: Client = Depends(caller_client)):
    return to_json(client.revoke_key(key))
