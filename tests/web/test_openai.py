"""OpenAI-compatible /v1, used through OpenAI's own Python SDK against the real stack: the API key is
the textgen token, a token is a character, the text is what gRPC gives for the same seed."""
from __future__ import annotations

import openai
import pytest

from client.api import Client, TextgenError
from tests.web.conftest import TOKEN, stop_case


@pytest.fixture(scope="module")
def sdk(web_stack):
    with openai.OpenAI(base_url=f"{web_stack.url}/v1", api_key=TOKEN, max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def grpc_client(web_stack):
    with Client(server=f"127.0.0.1:{web_stack.grpc_port}", token=TOKEN) as client:
        yield client


def test_models_are_listed_in_openais_format(sdk, tiny_model, grpc_client):
    models = {m.id: m for m in sdk.models.list()}
    assert "tiny-web" in models
    assert models["tiny-web"].owned_by == "textgen"
    assert models["tiny-web"].created == int(grpc_client.get_model("tiny-web").created)
    assert sdk.models.retrieve("tiny-web:1").id == "tiny-web:1"


def test_a_completion_is_the_text_grpc_gives_for_the_same_seed(sdk, tiny_model, grpc_client):
    done = sdk.completions.create(model="tiny-web", prompt="function (", max_tokens=120, temperature=0.7, seed=42)
    direct = grpc_client.generate("tiny-web", prompt="function (", length=120, temperature=0.7, seed=42).text
    assert done.object == "text_completion" and done.model == "tiny-web" and done.id.startswith("cmpl-")
    assert [c.text for c in done.choices] == [direct]
    assert done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (10, 120, 130)
    pinned = sdk.completions.create(model="tiny-web:1", prompt="function (", max_tokens=120, temperature=0.7, seed=42)
    assert pinned.choices[0].text == direct


def test_a_streamed_completion_arrives_in_chunks_and_ends_with_the_reason(sdk, tiny_model, grpc_client):
    chunks = list(sdk.completions.create(model="tiny-web", prompt="var x", max_tokens=200, temperature=0.5,
                                         seed=9, stream=True))
    direct = grpc_client.generate("tiny-web", prompt="var x", length=200, temperature=0.5, seed=9).text
    assert len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == direct
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert len({c.id for c in chunks}) == 1


def test_errors_come_in_openais_format_with_the_servers_message(sdk, tiny_model, grpc_client):
    with pytest.raises(TextgenError) as expected:
        grpc_client.generate("tiny-web", length=10, temperature=-1).text
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, temperature=-1)
    assert caught.value.status_code == 400
    assert caught.value.body == {"message": expected.value.message, "type": "invalid_request_error",
                                 "param": None, "code": "invalid_argument"}
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.completions.create(model="no-such-model", prompt="a", max_tokens=10)
    assert caught.value.body["type"] == "not_found_error" and "no-such-model" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, n=2)
    assert caught.value.body["message"] == "n=2 is not supported by this server; leave it out (or 1)"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, extra_body={"top_q": 1})
    assert caught.value.body["message"] == ("unknown field 'top_q'; this server takes model, prompt, max_tokens, "
                                            "temperature, seed, stream, stop, top_p, logprobs and top_k")
    # OpenAI's fields that mean nothing here are taken at their neutral values
    neutral = sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, n=1, best_of=1, echo=False,
                                     presence_penalty=0, frequency_penalty=0)
    assert len(neutral.choices[0].text) == 10
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt=["a", "b"], max_tokens=10)
    assert caught.value.body["message"] == "prompt: give one prompt (a string or a list of one); got a list of 2"


def test_a_wrong_api_key_is_an_authentication_error(web_stack, tiny_model):
    with openai.OpenAI(base_url=f"{web_stack.url}/v1", api_key="not-the-token", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.completions.create(model="tiny-web", prompt="a", max_tokens=5)
    assert caught.value.body["message"] == "the bearer token is not valid for this server"


def test_a_stop_string_ends_the_completion_just_before_it(sdk, tiny_model, grpc_client):
    prompt = "function ("
    sampled = grpc_client.generate("tiny-web", prompt=prompt, length=200, temperature=1.0, seed=8).text
    stop, expected = stop_case(prompt, sampled)
    for value in (stop, [stop], [stop, "\u00a7never\u00a7"]):  # OpenAI's stop: a string or a list
        done = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=200, temperature=1.0, seed=8,
                                      stop=value)
        assert done.choices[0].text == expected, value
        assert done.choices[0].finish_reason == "stop"
        assert done.usage.completion_tokens == len(expected)
    chunks = list(sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=200, temperature=1.0, seed=8,
                                         stop=stop, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    # top_p passes through: a tiny nucleus is the likeliest character, the greedy text at any temperature
    greedy = grpc_client.generate("tiny-web", prompt=prompt, length=200, temperature=0).text
    nucleus = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=200, temperature=1.0, seed=3,
                                     top_p=0.01)
    assert nucleus.choices[0].text == greedy and nucleus.choices[0].finish_reason == "length"
    top_k = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=200, temperature=1.0, seed=3,
                                   extra_body={"top_k": 1})  # ours, beyond OpenAI's fields
    assert top_k.choices[0].text == greedy
    plain = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=200, temperature=1.0, seed=3)
    assert plain.choices[0].text != greedy


def test_logprobs_come_in_openais_legacy_format(sdk, tiny_model, grpc_client):
    prompt = "var x"
    direct = grpc_client.generate("tiny-web", prompt=prompt, length=120, temperature=0.7, seed=42, logprobs=True)
    text = direct.text
    done = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=120, temperature=0.7, seed=42,
                                  logprobs=2)
    lp = done.choices[0].logprobs
    assert done.choices[0].text == text
    assert "".join(lp.tokens) == text and len(lp.token_logprobs) == len(text) == 120
    # equal to float rounding: a later call may run the XLA program compiled meanwhile (server/programs.py)
    assert lp.token_logprobs == pytest.approx(direct.logprobs, rel=1e-5, abs=1e-6) and all(x <= 0 for x in lp.token_logprobs)
    assert lp.top_logprobs == [{t: x} for t, x in zip(lp.tokens, lp.token_logprobs)]
    assert lp.text_offset == list(range(len(prompt), len(prompt) + 120))
    zero = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=120, temperature=0.7, seed=42,
                                  logprobs=0).choices[0].logprobs
    assert zero.token_logprobs == pytest.approx(direct.logprobs, rel=1e-5, abs=1e-6) and zero.top_logprobs == [{}] * 120
    chunks = list(sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=120, temperature=0.7, seed=42,
                                         logprobs=1, stream=True))
    texts = [c.choices[0] for c in chunks[:-1]]
    assert all("".join(c.logprobs.tokens) == c.text for c in texts)
    assert [x for c in texts for x in c.logprobs.token_logprobs] == pytest.approx(direct.logprobs, rel=1e-5, abs=1e-6)
    assert [x for c in texts for x in c.logprobs.text_offset] == list(range(len(prompt), len(prompt) + 120))
    without = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=10)
    assert without.choices[0].logprobs is None


def test_bad_controls_are_refused_with_the_reason(sdk, tiny_model, grpc_client):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, logprobs=6)
    assert caught.value.body["message"] == "logprobs must be an integer from 0 to 5, got 6"
    for control in ({"top_p": 1.5}, {"stop": ["a", "b", "c", "d", "e"]}):
        with pytest.raises(TextgenError) as expected:
            grpc_client.generate("tiny-web", length=10, **control).text
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, **control)
        assert caught.value.body["message"] == expected.value.message
