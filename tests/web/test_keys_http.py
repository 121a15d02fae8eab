"""API keys over HTTP (the web stack runs TEXTGEN_AUTH=keys): every route against every scope, key
management and usage routes, and a key past its limit answered 429 with Retry-After (OpenAI's error
format under /v1)."""
from __future__ import annotations

import httpx2 as httpx
import pytest

from client.api import Client
from web.app import create_app

# Every route of the HTTP side: (method, path, JSON body or None, the scopes that may call it; () = any key).
ROUTES = [
    ("GET", "/api/v1/models", None, {"generate"}),
    ("GET", "/api/v1/models/no-such-model", None, {"generate"}),
    ("DELETE", "/api/v1/models/no-such-model?all=true", None, {"admin"}),
    ("POST", "/api/v1/generate", {"model": "no-such-model", "length": 5}, {"generate"}),
    ("GET", "/api/v1/jobs", None, {"train", "admin"}),
    ("POST", "/api/v1/jobs", {"corpus": "no-such-corpus"}, {"train"}),
    ("GET", "/api/v1/jobs/no-such-job", None, {"train", "admin"}),
    ("POST", "/api/v1/jobs/no-such-job/cancel", None, {"train", "admin"}),
    ("GET", "/api/v1/jobs/no-such-job/events", None, {"train", "admin"}),
    ("GET", "/api/v1/corpora", None, {"train"}),
    ("POST", "/api/v1/corpora?name=x.txt", b"", {"train"}),
    ("POST", "/api/v1/models/import-tfjs", None, {"train"}),
    ("GET", "/api/v1/models/no-such-model/tfjs", None, {"generate"}),
    ("GET", "/v1/models", None, {"generate"}),
    ("GET", "/v1/models/no-such-model", None, {"generate"}),
    ("POST", "/v1/completions", {"model": "no-such-model", "prompt": "a", "max_tokens": 2}, {"generate"}),
    ("POST", "/v1/chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "a"}]},
     {"generate"}),
    ("GET", "/api/v1/whoami", None, set()),
    ("GET", "/api/v1/usage", None, set()),
    ("GET", "/api/v1/keys", None, {"admin"}),
    ("POST", "/api/v1/keys", {"scopes": []}, {"admin"}),
    ("DELETE", "/api/v1/keys/no-such-key", None, {"admin"}),
]
PUBLIC = {("GET", "/api/v1/recipes")}  # the training recipes: the web process' own table, no server call


@pytest.fixture(scope="module")
def scoped(web_stack):
    """Keys of each scope, made through POST /api/v1/keys with the stack's all-scopes token."""
    out = {}
    for name, scopes in (("gen", ["generate"]), ("trn", ["train"]), ("adm", ["admin"])):
        reply = web_stack.http.post("/api/v1/keys", json={"scopes": scopes, "name": f"web-{name}"})
        assert reply.status_code == 201, reply.text
        out[name] = reply.json()
    return out


def _as(web_stack, secret):
    return httpx.Client(base_url=web_stack.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60)


def test_the_route_table_is_every_route():
    paths = create_app(Client("127.0.0.1:1")).openapi()["paths"]
    served = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    listed = {(method, path.split("?")[0].replace("no-such-model", "{model}").replace("no-such-job", "{job_id}")
               .replace("no-such-key", "{key}")) for method, path, _, _ in ROUTES}
    assert served == listed | PUBLIC


def test_every_route_checks_the_keys_scope(web_stack, scoped):
    for name, made in scoped.items():
        scopes = set(made["key"]["scopes"])
        with _as(web_stack, made["secret"]) as http:
            for method, path, body, needs in ROUTES:
                kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
                if path.endswith("import-tfjs"):
                    kwargs = {"files": [("model_json", ("model.json", b"{}")), ("weights", ("weights.bin", b""))],
                              "data": {"name": "x", "corpus": "y"}}
                reply = http.request(method, path, **kwargs)
                if needs and not needs & scopes:
                    assert reply.status_code == 403, (name, method, path, reply.text)
                    error = reply.json()["error"]
                    wanted = " or ".join(repr(s) for s in ("generate", "train", "admin") if s in needs)
                    assert f"needs a key with scope {wanted}; key {made['key']['id']} (web-{name})" in error["message"]
                    if path.startswith("/v1/"):
                        assert (error["type"], error["code"]) == ("permission_error", "permission_denied")
                    else:
                        assert error["code"] == "PERMISSION_DENIED"
                else:
                    assert reply.status_code not in (401, 403), (name, method, path, reply.text)
    for secret in (None, "tgk_" + "x" * 43):
        with httpx.Client(base_url=web_stack.url, timeout=60,
                          headers={"Authorization": f"Bearer {secret}"} if secret else {}) as http:
            for method, path, body, _ in ROUTES:
                reply = http.request(method, path, json=body if isinstance(body, dict) else None)
                if path.endswith("/api/v1/models/import-tfjs") or (method, path) == ("POST", "/api/v1/corpora?name=x.txt"):
                    assert reply.status_code in (400, 401, 422), (method, path, reply.text)
                    continue
                assert reply.status_code == 401, (secret, method, path, reply.text)


def test_whoami_usage_and_revoking_over_http(web_stack, scoped):
    gen = scoped["gen"]
    with _as(web_stack, gen["secret"]) as http:
        who = http.get("/api/v1/whoami").json()
        assert (who["id"], who["name"], who["scopes"], who["auth"]) == (gen["key"]["id"], "web-gen", ["generate"], "keys")
        assert http.get("/api/v1/models").status_code == 200
        usage = http.get("/api/v1/usage").json()
        assert usage["key_id"] == gen["key"]["id"]
        listed = web_stack.http.get("/api/v1/keys").json()["keys"]
        assert gen["key"]["id"] in [k["id"] for k in listed] and gen["secret"] not in str(listed)
        revoked = web_stack.http.delete("/api/v1/keys/web-gen")
        assert revoked.status_code == 200 and revoked.json()["id"] == gen["key"]["id"]
        assert httpx_eventually(lambda: http.get("/api/v1/models").status_code == 401)


def httpx_eventually(condition, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_key_past_its_limit_gets_429_with_retry_after(web_stack, tiny_model):
    made = web_stack.http.post("/api/v1/keys", json={"scopes": ["generate"], "name": "web-limited",
                                                      "limits": {"chars_per_minute": 100}}).json()
    with _as(web_stack, made["secret"]) as http:
        first = http.post("/v1/completions", json={"model": "tiny-web", "prompt": "a", "max_tokens": 90, "seed": 1})
        assert first.status_code == 200, first.text
        refused = http.post("/v1/completions", json={"model": "tiny-web", "prompt": "a", "max_tokens": 50})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 30
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "resource_exhausted")
        assert "(chars_per_minute)" in error["message"]
        api = http.post("/api/v1/generate", json={"model": "tiny-web", "length": 50})
        assert api.status_code == 429 and api.headers["Retry-After"].isdigit()
        assert api.json()["error"]["code"] == "RESOURCE_EXHAUSTED"


def test_a_job_and_its_model_record_the_key_and_its_training_seconds_count(web_stack, tiny_model):
    job, _events = tiny_model
    assert job["owner"] == "token-1"  # the stack's tokens file's first token, an all-scopes key
    assert web_stack.http.get("/api/v1/models/tiny-web").json()["trained_by"] == "token-1"
    usage = web_stack.http.get("/api/v1/usage").json()
    assert usage["key_id"] == "token-1" and usage["training_seconds"] > 0
    counts = {(r["method"], r["code"]): r["count"] for r in usage["requests"]}
    assert counts[("SubmitTrain", "OK")] >= 1
