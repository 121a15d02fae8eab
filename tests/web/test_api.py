"""The JSON HTTP API (/api/v1) against the real stack: every RPC through HTTP, the same answers as gRPC,
errors as HTTP statuses carrying the server's message, SSE for generation and job events, and a
client that goes away freeing its stream."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile

import httpx2 as httpx
import pytest

from client.api import Client, TextgenError
from tests.web.conftest import REPO, TINY, TOKEN, parse_sse, stop_case


@pytest.fixture(scope="module")
def grpc_client(web_stack):
    with Client(server=f"127.0.0.1:{web_stack.grpc_port}", token=TOKEN) as client:
        yield client


def grpc_error(call) -> TextgenError:
    with pytest.raises(TextgenError) as caught:
        call()
    return caught.value


def test_a_job_submitted_over_http_trains_and_its_events_stream_from_the_start(web_stack, tiny_model):
    job, events = tiny_model
    assert job["state"] == "queued" and job["model_name"] == "tiny-web" and job["corpus"] == "tfjs-code"
    assert job["options"]["lstm_layer_sizes"] == [16] and job["options"]["seed"] == "1"
    kinds = [name for name, _ in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "finished"
    assert kinds.count("epoch") == TINY["epochs"]
    epochs = [data["epoch"] for name, data in events if name == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(e["val_loss"] > 0 for e in epochs)
    assert [s["temperature"] for s in epochs[0]["samples"]] == [0, 0.25, 0.5, 0.75]
    assert events[-1][1]["finished"] == {"model_name": "tiny-web", "model_version": 1}
    # A late watcher gets the same events again, from the first.
    assert web_stack.sse("GET", f"/api/v1/jobs/{job['id']}/events") == events
    done = web_stack.http.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["state"] == "finished" and done["model_version"] == 1 and done["epoch"] == 2
    assert job["id"] in [j["id"] for j in web_stack.http.get("/api/v1/jobs").json()["jobs"]]


def test_models_over_http_are_what_grpc_says(web_stack, tiny_model, grpc_client):
    listed = web_stack.http.get("/api/v1/models").json()["models"]
    tiny = next(m for m in listed if m["name"] == "tiny-web")
    info = grpc_client.get_model("tiny-web")
    assert tiny["versions"] == [1]
    assert tiny["latest"]["charset"] == info.charset and tiny["latest"]["lstm_layer_sizes"] == [16]
    got = web_stack.http.get("/api/v1/models/tiny-web", params={"version": 1}).json()
    assert got == tiny["latest"]
    assert got["bits_per_char"] == info.bits_per_char and got["sample_len"] == 10 and got["objective"] == "last"


def test_generate_streams_the_same_text_as_grpc_for_the_same_seed(web_stack, tiny_model, grpc_client):
    request = {"model": "tiny-web", "prompt": "function (", "length": 300, "temperature": 0.7, "seed": 42}
    events = web_stack.sse("POST", "/api/v1/generate", json=request)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "end" and set(names[1:-1]) == {"text"} and len(names) > 3
    assert events[0][1] == {"model": "tiny-web", "version": 1, "prompt": "function (", "seed": "42"}
    assert events[-1][1] == {"reason": "length", "characters": 300}
    text = "".join(data["text"] for name, data in events if name == "text")
    direct = grpc_client.generate("tiny-web", prompt="function (", length=300, temperature=0.7, seed=42).text
    assert text == direct and len(text) == 300
    # Without streaming: one JSON answer, the same text.
    whole = web_stack.http.post("/api/v1/generate", json={**request, "stream": False}).json()
    assert whole == {"text": direct, "start": events[0][1], "end": events[-1][1]}


def test_a_seed_beyond_javascripts_integers_comes_back_exactly(web_stack, tiny_model):
    seed = 2**64 - 3
    whole = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "length": 5, "seed": str(seed),
                                                          "stream": False}).json()
    assert whole["start"]["seed"] == str(seed)


def test_generation_controls_work_through_the_sse_api(web_stack, tiny_model, grpc_client):
    prompt = "function ("
    greedy = grpc_client.generate("tiny-web", prompt=prompt, length=200, temperature=0).text

    def text_of(events):
        return "".join(data["text"] for name, data in events if name == "text")

    # top_k 1 or a tiny top_p leaves only the likeliest character: the greedy text at any temperature
    for control in ({}, {"top_k": 1}, {"top_p": 0.01}):
        events = web_stack.sse("POST", "/api/v1/generate", json={"model": "tiny-web", "prompt": prompt, "length": 200,
                                                                 "temperature": 1.0, "seed": 5, **control})
        assert (text_of(events) == greedy) == bool(control), control  # without a control: not greedy
        assert events[-1] == ("end", {"reason": "length", "characters": 200})
    # a stop string ends the stream just before it, with the reason "stop"; one string is one stop string
    sampled = grpc_client.generate("tiny-web", prompt=prompt, length=200, temperature=1.0, seed=8).text
    stop, expected = stop_case(prompt, sampled)
    for value in ([stop], stop):
        events = web_stack.sse("POST", "/api/v1/generate", json={"model": "tiny-web", "prompt": prompt, "length": 200,
                                                                 "temperature": 1.0, "seed": 8, "stop": value})
        assert text_of(events) == expected
        assert events[-1] == ("end", {"reason": "stop", "characters": len(expected)})
    # logprobs: each text event carries one per character, the same as gRPC's for the same seed
    direct = grpc_client.generate("tiny-web", prompt=prompt, length=150, temperature=0.7, seed=42, logprobs=True)
    direct_text = direct.text
    events = web_stack.sse("POST", "/api/v1/generate", json={"model": "tiny-web", "prompt": prompt, "length": 150,
                                                             "temperature": 0.7, "seed": 42, "logprobs": True})
    texts = [data for name, data in events if name == "text"]
    assert all(len(data["logprobs"]) == len(data["text"]) for data in texts)
    assert text_of(events) == direct_text
    # equal to float rounding: a later call may run the XLA program compiled meanwhile (server/programs.py)
    assert [lp for data in texts for lp in data["logprobs"]] == pytest.approx(direct.logprobs, rel=1e-5, abs=1e-6)
    assert all(lp <= 0 for lp in direct.logprobs) and len(direct.logprobs) == 150
    whole = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "prompt": prompt, "length": 150,
                                                          "temperature": 0.7, "seed": 42, "logprobs": True,
                                                          "stream": False}).json()
    assert whole["text"] == direct_text and whole["logprobs"] == pytest.approx(direct.logprobs, rel=1e-5, abs=1e-6)
    # without logprobs, text events are just text
    assert all(set(data) == {"text"} for name, data in web_stack.sse(
        "POST", "/api/v1/generate", json={"model": "tiny-web", "length": 20}) if name == "text")


@pytest.mark.parametrize("control", [{"top_p": 1.5}, {"stop": ["a", "b", "c", "d", "e"]}, {"top_k": -1}])
def test_a_bad_generation_control_is_400_with_the_servers_message(web_stack, tiny_model, grpc_client, control):
    expected = grpc_error(lambda: grpc_client.generate("tiny-web", length=10, **control).text)
    reply = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "length": 10, **control})
    assert reply.status_code == 400
    assert reply.json() == {"error": {"code": "INVALID_ARGUMENT", "status": 400, "message": expected.message}}


def test_recipes_are_listed_with_what_they_set(web_stack):
    from textgen.options import RECIPES, TrainConfig

    reply = web_stack.http.get("/api/v1/recipes").json()
    assert [r["name"] for r in reply["recipes"]] == list(RECIPES)
    fast = next(r for r in reply["recipes"] if r["name"] == "fast")
    assert fast == {"name": "fast", "headline": RECIPES["fast"].headline, "description": RECIPES["fast"].summary,
                    "settings": {**RECIPES["fast"].settings, "lstm_layer_sizes": [224, 224]}}
    assert reply["recommended"] == "fast" and reply["default"] == "original"
    assert reply["defaults"]["epochs"] == TrainConfig().epochs and reply["defaults"]["objective"] == "last"


@pytest.mark.parametrize("request_body, status, grpc_call", [
    ({"model": "tiny-web", "length": 10, "temperature": -1}, 400,
     lambda c: c.generate("tiny-web", length=10, temperature=-1).text),
    ({"model": "no-such-model", "length": 10}, 404, lambda c: c.generate("no-such-model", length=10).text),
    ({"model": "tiny-web", "length": 0}, 400, lambda c: c.generate("tiny-web", length=0).text),
    ({"model": "tiny-web", "length": 5, "prompt": "\u00e9\u00e8"}, 400,
     lambda c: c.generate("tiny-web", length=5, prompt="\u00e9\u00e8").text),
])
def test_a_refused_generation_is_an_http_status_with_the_servers_message(web_stack, tiny_model, grpc_client,
                                                                          request_body, status, grpc_call):
    expected = grpc_error(lambda: grpc_call(grpc_client))
    reply = web_stack.http.post("/api/v1/generate", json=request_body)
    assert reply.status_code == status
    assert reply.json() == {"error": {"code": expected.code, "status": status, "message": expected.message}}


def test_errors_of_every_kind_of_call_carry_the_grpc_status_and_message(web_stack, grpc_client):
    cases = [
        (lambda: web_stack.http.get("/api/v1/models/nothing-here"), lambda: grpc_client.get_model("nothing-here")),
        (lambda: web_stack.http.delete("/api/v1/models/nothing-here", params={"version": 1}),
         lambda: grpc_client.delete_model("nothing-here", 1)),
        (lambda: web_stack.http.get("/api/v1/jobs/not-a-job"), lambda: grpc_client.get_job("not-a-job")),
        (lambda: web_stack.http.post("/api/v1/jobs/not-a-job/cancel"), lambda: grpc_client.cancel_job("not-a-job")),
        (lambda: web_stack.http.get("/api/v1/jobs/not-a-job/events"), lambda: list(grpc_client.watch_job("not-a-job"))),
        (lambda: web_stack.http.post("/api/v1/jobs", json={"corpus": "tfjs-code",
                                                          "options": {"lstm_layer_sizes": [0]}}),
         lambda: grpc_client.submit_train(corpus="tfjs-code", options={"lstm_layer_sizes": [0]})),
        (lambda: web_stack.http.post("/api/v1/jobs", json={"corpus": "no-such-corpus"}),
         lambda: grpc_client.submit_train(corpus="no-such-corpus")),
    ]
    for http_call, grpc_call in cases:
        expected = grpc_error(grpc_call)
        reply = http_call()
        assert reply.json() == {"error": {"code": expected.code, "status": reply.status_code,
                                          "message": expected.message}}
        assert reply.status_code == {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400}[expected.code]


def test_malformed_requests_are_400_naming_the_field(web_stack):
    reply = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "temperature": "hot"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "temperature: Input should be a valid number, unable to parse " \
                                               "string as a number (got 'hot')"
    reply = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "top_q": 3})
    assert reply.status_code == 400 and reply.json()["error"]["message"] == \
        "unknown field 'top_q'; known fields: frequency_penalty, length, logit_bias, logprobs, model, " \
        "presence_penalty, prompt, repetition_penalty, seed, stop, stream, temperature, top_k, top_logprobs, top_p, " \
        "version"
    reply = web_stack.http.post("/api/v1/jobs", json={"corpus": "tfjs-code", "epochs": 3})
    assert reply.status_code == 400 and reply.json()["error"]["message"] == \
        "unknown field 'epochs'; known fields: corpus, corpus_id, from_model, from_version, model_name, options"
    reply = web_stack.http.post("/api/v1/jobs", json={"corpus": "tfjs-code", "options": {"epochz": 3}})
    assert reply.status_code == 400 and reply.json()["error"]["message"].startswith("unknown training options epochz")
    reply = web_stack.http.post("/api/v1/jobs", json={"corpus": "tfjs-code", "options": {"lstm_layer_sizes": "12,x"}})
    assert reply.json()["error"]["message"] == \
        "lstm_layer_sizes must be whole numbers separated by commas, like 128,128; got '12,x'"


def test_without_the_token_every_call_is_401_and_the_token_is_never_logged(web_stack):
    for method, path in (("GET", "/api/v1/models"), ("GET", "/api/v1/jobs"), ("GET", "/api/v1/corpora"),
                         ("POST", "/api/v1/generate")):
        reply = httpx.request(method, web_stack.url + path, json={"model": "tiny-web"} if method == "POST" else None)
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
    reply = httpx.get(web_stack.url + "/api/v1/models", headers={"Authorization": "Bearer wrong-token"})
    assert reply.json()["error"] == {"code": "UNAUTHENTICATED", "status": 401,
                                     "message": "the bearer token is not valid for this server"}
    assert TOKEN not in web_stack.log("web").read_text()


@pytest.fixture(scope="module")
def uploaded(web_stack):
    """A text uploaded over HTTP, and the reply; then a model ``dickens`` trained on it."""
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom. " * 30).encode()
    reply = web_stack.http.post("/api/v1/corpora", params={"name": "dickens.txt"}, content=text,
                                headers={"Content-Type": "text/plain"})
    assert reply.status_code == 201, reply.text
    corpus = reply.json()
    job = web_stack.http.post("/api/v1/jobs", json={"corpus_id": corpus["id"], "model_name": "dickens",
                                                    "options": {**TINY, "epochs": 1}}).json()
    events = web_stack.sse("GET", f"/api/v1/jobs/{job['id']}/events", timeout=180)
    return text, corpus, events


def test_an_uploaded_text_is_listed_and_trains_a_model(web_stack, uploaded):
    text, corpus, events = uploaded
    assert corpus["name"] == "dickens.txt" and corpus["size"] == len(text) and corpus["builtin"] is False
    listed = web_stack.http.get("/api/v1/corpora").json()["corpora"]
    assert corpus in listed
    assert {"nietzsche", "julesverne", "shakespeare", "tfjs-code"} <= {c["id"] for c in listed if c["builtin"]}
    assert events[-1][0] == "finished" and events[-1][1]["finished"]["model_name"] == "dickens"
    assert web_stack.http.get("/api/v1/models/dickens").json()["corpus"] == corpus["id"]


def test_cancelling_a_job_over_http(web_stack):
    job = web_stack.http.post("/api/v1/jobs", json={"corpus": "tfjs-code", "model_name": "never",
                                                    "options": {**TINY, "epochs": 500}}).json()
    cancelled = web_stack.http.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["id"] == job["id"]
    events = web_stack.sse("GET", f"/api/v1/jobs/{job['id']}/events", timeout=120)
    assert events[-1][0] == "cancelled"
    assert web_stack.http.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "cancelled"


def test_a_client_that_goes_away_frees_its_stream_on_the_server(web_stack, tiny_model):
    """The server has 4 stream slots (TEXTGEN_MAX_STREAMS=4): four long streams fill them; once their
    HTTP clients close, the slots come back without waiting for the streams' 4,000,000 characters."""
    long = {"model": "tiny-web", "length": 4_000_000, "temperature": 1.0}
    clients = [httpx.Client(base_url=web_stack.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
               for _ in range(4)]
    streams, readers = [], []
    try:
        for client in clients:
            stream = client.stream("POST", "/api/v1/generate", json=long)
            reply = stream.__enter__()
            streams.append(stream)
            assert reply.status_code == 200
            events = parse_sse(reply.iter_lines())
            readers.append(events)  # kept: closing a line iterator closes the response
            assert next(events)[0] == "start"
        full = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "length": 5})
        assert full.status_code == 429 and full.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()
    deadline = time.monotonic() + 10
    while True:
        reply = web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "length": 5, "stream": False})
        if reply.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply.status_code == 200, reply.text
    # and all four at once again
    for _ in range(4):
        assert web_stack.http.post("/api/v1/generate", json={"model": "tiny-web", "length": 5,
                                                             "stream": False}).status_code == 200


def test_deleting_a_model_over_http(web_stack, uploaded, grpc_client):
    reply = web_stack.http.delete("/api/v1/models/dickens", params={"all": "true"})
    assert reply.status_code == 200 and reply.json() == {"deleted_versions": [1]}
    assert "dickens" not in [m.name for m in grpc_client.list_models()]
    assert web_stack.http.get("/api/v1/models/dickens").json()["error"]["code"] == "NOT_FOUND"


def test_a_model_downloads_for_tfjs_as_a_zip_and_imports_back_from_a_form(web_stack, tiny_model, grpc_client):
    reply = web_stack.http.get("/api/v1/models/tiny-web/tfjs")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    assert reply.headers["content-disposition"] == 'attachment; filename="tiny-web-v1-tfjs.zip"'
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    assert archive.namelist() == ["model.json", "weights.bin"]
    info = grpc_client.get_model("tiny-web")
    doc = json.loads(archive.read("model.json"))
    assert doc["userDefinedMetadata"]["textgen"]["charset"] == list(info.charset)  # the model's own order
    files = [("model_json", ("model.json", archive.read("model.json"), "application/json")),
             ("weights", ("weights.bin", archive.read("weights.bin"), "application/octet-stream"))]
    # A textgen export carries its charset: it imports back with no text.
    reply = web_stack.http.post("/api/v1/models/import-tfjs", files=files, data={"name": "tiny-back"})
    assert reply.status_code == 201, reply.text
    assert reply.json() == {"model_name": "tiny-back", "model_version": 1, "charset_size": len(info.charset),
                            "sample_len": info.sample_len, "lstm_layer_sizes": [16]}
    prompt = info.charset[-5:] * 3
    assert (grpc_client.generate("tiny-back", prompt=prompt, length=120, temperature=0).text
            == grpc_client.generate("tiny-web", prompt=prompt, length=120, temperature=0).text)
    # Bad forms: the server's message, as a 400. tfjs-code's text has a character outside the Basic
    # Multilingual Plane, which the original splits into two code units: no charset of the original's fits.
    broken = [("model_json", ("model.json", b"{not json", "application/json")), files[1]]
    reply = web_stack.http.post("/api/v1/models/import-tfjs", files=broken, data={"name": "x"})
    assert reply.status_code == 400 and "not a model.json" in reply.json()["error"]["message"]
    reply = web_stack.http.post("/api/v1/models/import-tfjs", files=files[:1], data={"name": "x"})
    assert reply.status_code == 400 and "weights" in reply.json()["error"]["message"]
    bare = dict(doc)
    del bare["userDefinedMetadata"]  # as the original writes it: the charset comes from the text
    original = [("model_json", ("model.json", json.dumps(bare).encode(), "application/json")), files[1]]
    reply = web_stack.http.post("/api/v1/models/import-tfjs", files=original, data={"name": "x"})
    assert reply.status_code == 400 and "give the text the model was trained on" in reply.json()["error"]["message"]
    reply = web_stack.http.post("/api/v1/models/import-tfjs", files=original, data={"name": "x", "corpus": "tfjs-code"})
    assert reply.status_code == 400 and "outside the Basic Multilingual Plane" in reply.json()["error"]["message"]
    reply = web_stack.http.get("/api/v1/models/tiny-web/tfjs", params={"charset_order": "tfjs-code"})
    assert reply.status_code == 400 and "outside the Basic Multilingual Plane" in reply.json()["error"]["message"]
    reply = web_stack.http.get("/api/v1/models/no-such-model/tfjs")
    assert reply.status_code == 404


def test_the_openapi_document_and_docs_page_work_offline(web_stack):
    schema = web_stack.http.get("/openapi.json").json()
    assert {"/api/v1/generate", "/api/v1/jobs/{job_id}/events", "/v1/completions"} <= set(schema["paths"])
    # every field a body takes is in the document, with what it means; no others are taken
    for path in ("/api/v1/generate", "/v1/completions", "/api/v1/jobs"):
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert body["additionalProperties"] is False, path
        assert all(field.get("description") for field in body["properties"].values()), path
        if path != "/api/v1/jobs":
            assert {"top_k", "top_p", "stop", "logprobs"} <= set(body["properties"]), path
    docs = web_stack.http.get("/docs").text
    assert "/docs-static/swagger-ui-bundle.js" in docs and "https://" not in docs
    assert web_stack.http.get("/docs-static/swagger-ui-bundle.js").status_code == 200


@pytest.mark.parametrize("addr, message", [
    ("nonsense", "web: TEXTGEN_WEB_ADDR='nonsense': give host:port, like 127.0.0.1:8080 or 0.0.0.0:8080"),
    ("127.0.0.1:99999", "web: TEXTGEN_WEB_ADDR='127.0.0.1:99999': give host:port, like 127.0.0.1:8080 or 0.0.0.0:8080"),
])
def test_a_bad_listen_address_is_one_line_on_stderr(addr, message):
    done = run_web(addr)
    assert done.returncode == 2 and done.stderr == message + "\n" and done.stdout == ""


def test_a_bad_upload_limit_is_one_line_on_stderr():
    done = run_web("127.0.0.1:0", TEXTGEN_MAX_UPLOAD_BYTES="50MB")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "web: TEXTGEN_MAX_UPLOAD_BYTES must be a positive integer, got '50MB'\n"


def test_an_upload_over_the_limit_is_413_before_it_reaches_the_server():
    from fastapi.testclient import TestClient

    from web.app import create_app
    from web.settings import Settings

    app = create_app(Client(server="127.0.0.1:1"), Settings(max_upload_bytes=10))  # no server: never called
    reply = TestClient(app).post("/api/v1/corpora", content=b"x" * 11, headers={"Content-Type": "text/plain"})
    assert reply.status_code == 413
    assert reply.json()["error"]["message"] == "the text is larger than 10 bytes (TEXTGEN_MAX_UPLOAD_BYTES)"


def test_a_port_in_use_is_one_line_on_stderr():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_web(addr)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"web: cannot listen on {addr} (TEXTGEN_WEB_ADDR): Address already in use\n"


def run_web(addr: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "web"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TEXTGEN_WEB_ADDR": addr, **env})


def test_a_multipart_upload_stores_exactly_the_files_bytes_and_other_types_are_415(web_stack, tmp_path):
    """What `curl -F`, a browser's FormData and requests' files= send: the stored corpus is the file's
    bytes (no boundary, no part headers), as its size and sha256 say."""
    import hashlib

    text = "Call me Ishmael. Some years ago — never mind how long precisely — I thought I would sail.\r\n" * 30
    data = text.encode("utf-8")
    path = tmp_path / "moby.txt"
    path.write_bytes(data)
    curl = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {TOKEN}", "-F", f"file=@{path}",
                           f"{web_stack.url}/api/v1/corpora"], capture_output=True, text=True, timeout=60)
    by_curl = json.loads(curl.stdout)
    assert (by_curl["name"], by_curl["size"], by_curl["sha256"]) == ("moby.txt", len(data),
                                                                    hashlib.sha256(data).hexdigest()), curl.stdout
    import requests

    by_requests = requests.post(f"{web_stack.url}/api/v1/corpora", params={"name": "ishmael.txt"},
                                headers={"Authorization": f"Bearer {TOKEN}"},
                                files={"text": ("whatever.txt", data, "text/plain")}, timeout=60).json()
    assert (by_requests["name"], by_requests["size"], by_requests["sha256"]) == (
        "ishmael.txt", len(data), hashlib.sha256(data).hexdigest())
    assert by_requests["id"] == by_curl["id"]  # the same bytes: the same corpus
    wrong = web_stack.http.post("/api/v1/corpora", content=data, headers={"Content-Type": "application/json"})
    assert wrong.status_code == 415
    assert wrong.json()["error"] == {
        "code": "INVALID_ARGUMENT", "status": 415,
        "message": "cannot take a corpus sent as 'application/json': send the text as the body (Content-Type: "
                   "text/plain, as `curl --data-binary @my.txt -H 'Content-Type: text/plain'`) or as a form with "
                   "one file field (multipart/form-data, as `curl -F file=@my.txt`)"}
    two = web_stack.http.post("/api/v1/corpora", files={"a": ("a.txt", b"aaa"), "b": ("b.txt", b"bbb")})
    assert two.status_code == 400 and "exactly one file field, got 2" in two.json()["error"]["message"]


def test_generate_over_http_takes_penalties_bias_and_alternatives(web_stack, tiny_model):
    body = {"model": "tiny-web", "prompt": "function ", "length": 300, "temperature": 1.5, "seed": 3}
    plain = web_stack.http.post("/api/v1/generate", json={**body, "stream": False}).json()["text"]
    common = max(set(plain), key=plain.count)
    reply = web_stack.http.post("/api/v1/generate", json={**body, "stream": False, "logit_bias": {common: -100},
                                                          "frequency_penalty": 0.5, "top_logprobs": 2}).json()
    assert common not in reply["text"] and len(reply["text"]) == 300
    assert len(reply["logprobs"]) == len(reply["top_logprobs"]) == 300
    assert all(len(top) == 2 for top in reply["top_logprobs"])
    events = web_stack.sse("POST", "/api/v1/generate", json={**body, "top_logprobs": 1, "length": 40})
    texts = [data for event, data in events if event == "text"]
    assert all(len(e["top_logprobs"]) == len(e["logprobs"]) == len(e["text"]) for e in texts)
    bad = web_stack.http.post("/api/v1/generate", json={**body, "logit_bias": {"xy": 1}})
    assert bad.status_code == 400 and "logit_bias key 'xy'" in bad.json()["error"]["message"]
