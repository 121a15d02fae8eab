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
    # which models take chat: those whose charset has the template's characters (tfjs-code has them)
    assert models["tiny-web"].model_extra["capabilities"] == {"completion": True, "chat": True}


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
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, suffix="}")
    assert caught.value.body["message"] == ("suffix='}' is not supported: a character model continues a text; it "
                                            "cannot write toward a suffix; leave it out")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, n=17)
    assert caught.value.body["message"] == "n must be between 1 and 16, got 17"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, extra_body={"top_q": 1})
    assert caught.value.body["message"] == (
        "unknown field 'top_q'; this server takes model, prompt, max_tokens, temperature, seed, stream, "
        "stream_options, stop, top_p, logprobs, top_k, n, best_of, echo, user, presence_penalty, frequency_penalty, "
        "repetition_penalty and logit_bias")
    # OpenAI's fields at their defaults are taken
    neutral = sdk.completions.create(model="tiny-web", prompt="a", max_tokens=10, n=1, best_of=1, echo=False,
                                     presence_penalty=0, frequency_penalty=0, user="someone")
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
    assert [len(top) for top in lp.top_logprobs] == [2] * 120
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


def test_logprobs_3_gives_the_three_likeliest_characters_as_score_does(sdk, tiny_model, grpc_client):
    prompt = "function add(a, b) {"
    done = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=60, temperature=0.8, seed=4, logprobs=3)
    lp = done.choices[0].logprobs
    text = done.choices[0].text
    info = grpc_client.get_model("tiny-web")
    window = info.sample_len
    full = prompt + text
    for i, (char, chosen, top) in enumerate(zip(text, lp.token_logprobs, lp.top_logprobs)):
        at = len(prompt) + i
        context = full[max(0, at - window):at + 1]
        score = grpc_client.score("tiny-web", context, per_character=True, top_logprobs=3)
        expected = score.top_logprobs[-1]
        assert list(top) == list(expected.characters), i
        assert list(top.values()) == pytest.approx(list(expected.logprobs), rel=1e-5, abs=1e-6)
        assert chosen == pytest.approx(score.logprobs[-1], rel=1e-4, abs=1e-5)  # Score's, for the chosen one
        assert list(top.values()) == sorted(top.values(), reverse=True)
        if char in top:
            assert top[char] == pytest.approx(chosen, rel=1e-4, abs=1e-5)
        if i == 5:
            break
    assert all(len(t) == 3 for t in lp.top_logprobs) and len(lp.top_logprobs) == 60


def test_n_choices_with_a_seed_differ_from_each_other_and_come_again(sdk, tiny_model, grpc_client):
    ask = dict(model="tiny-web", prompt="var ", max_tokens=40, temperature=1.0, seed=11, n=2)
    first = sdk.completions.create(**ask)
    again = sdk.completions.create(**ask)
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert texts[0] != texts[1] and texts == [c.text for c in again.choices]
    assert texts == [grpc_client.generate("tiny-web", prompt="var ", length=40, temperature=1.0, seed=s).text
                     for s in (11, 12)]  # choice i is seed + i
    assert first.usage.completion_tokens == 80 and first.usage.prompt_tokens == 4
    streamed = list(sdk.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    by_index = {0: "", 1: ""}
    for chunk in streamed[:-1]:
        for choice in chunk.choices:
            by_index[choice.index] += choice.text
    assert [by_index[0], by_index[1]] == texts
    assert streamed[-1].choices == [] and streamed[-1].usage.completion_tokens == 80
    best = sdk.completions.create(model="tiny-web", prompt="var ", max_tokens=40, temperature=1.0, seed=11, n=1,
                                  best_of=3)
    candidates = [grpc_client.generate("tiny-web", prompt="var ", length=40, temperature=1.0, seed=s, logprobs=True)
                  for s in (11, 12, 13)]
    read = [(c.text, sum(c.logprobs)) for c in candidates]
    assert best.choices[0].text == max(read, key=lambda pair: pair[1])[0]


def test_echo_returns_the_prompt_with_its_logprobs_from_score(sdk, tiny_model, grpc_client):
    prompt = "return x;"
    done = sdk.completions.create(model="tiny-web", prompt=prompt, max_tokens=10, seed=2, echo=True, logprobs=1)
    choice = done.choices[0]
    assert choice.text.startswith(prompt) and len(choice.text) == len(prompt) + 10
    score = grpc_client.score("tiny-web", prompt, per_character=True)
    assert choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[1:len(prompt)] == pytest.approx(list(score.logprobs), rel=1e-5, abs=1e-6)
    assert choice.logprobs.text_offset == list(range(len(prompt) + 10))


def test_chat_completions_write_the_messages_as_a_script_and_continue_it(sdk, tiny_model, grpc_client):
    messages = [{"role": "system", "content": "Write code."}, {"role": "user", "content": "a function"}]
    script = "System: Write code.\nUser: a function\nAssistant:"
    done = sdk.chat.completions.create(model="tiny-web", messages=messages, max_tokens=80, temperature=0.9, seed=6,
                                       user="tester")
    direct = grpc_client.generate("tiny-web", prompt=script, length=80, temperature=0.9, seed=6,
                                  stop=["\nUser:", "\nAssistant:"])
    text = direct.text
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert done.choices[0].message.role == "assistant" and done.choices[0].message.content == text
    assert done.choices[0].finish_reason == ("length" if len(text) == 80 else "stop")
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (len(script), len(text))
    chunks = list(sdk.chat.completions.create(model="tiny-web", messages=messages, max_tokens=80, temperature=0.9,
                                              seed=6, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices) == text
    assert chunks[-2].choices[0].finish_reason == done.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(text)
    with_lp = sdk.chat.completions.create(model="tiny-web", messages=messages, max_tokens=20, temperature=0.9, seed=6,
                                          logprobs=True, top_logprobs=2)
    content = with_lp.choices[0].logprobs.content
    assert "".join(t.token for t in content) == with_lp.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.bytes == list(t.token.encode()) for t in content)
    renamed = sdk.chat.completions.create(model="tiny-web", messages=messages, max_tokens=30, seed=6,
                                          extra_body={"roles": {"user": "Me", "assistant": "You"}})
    assert renamed.choices[0].message.content == grpc_client.generate(
        "tiny-web", prompt="System: Write code.\nMe: a function\nYou:", length=30, temperature=1.0, seed=6,
        stop=["\nMe:", "\nYou:"]).text
    penalized = sdk.chat.completions.create(model="tiny-web", messages=messages, max_tokens=60, temperature=0.9,
                                            seed=6, frequency_penalty=1.0)
    assert penalized.choices[0].message.content == grpc_client.generate(
        "tiny-web", prompt=script, length=60, temperature=0.9, seed=6, stop=["\nUser:", "\nAssistant:"],
        frequency_penalty=1.0).text


def test_penalties_and_logit_bias_change_the_text_reproducibly_as_grpc_does(sdk, tiny_model, grpc_client):
    ask = dict(model="tiny-web", prompt="function ", max_tokens=150, temperature=1.0, seed=21)
    plain = sdk.completions.create(**ask).choices[0].text
    for controls in (dict(presence_penalty=1.5), dict(frequency_penalty=1.2),
                     dict(extra_body={"repetition_penalty": 2.0})):
        first = sdk.completions.create(**ask, **controls).choices[0].text
        assert first != plain and first == sdk.completions.create(**ask, **controls).choices[0].text
        grpc_controls = controls.get("extra_body", controls)
        assert first == grpc_client.generate("tiny-web", prompt="function ", length=150, temperature=1.0, seed=21,
                                             **grpc_controls).text
    common = max(set(plain), key=plain.count)
    index = grpc_client.get_model("tiny-web").charset.index(common)
    for bias in ({common: -100}, {str(index): -100}) if not common.isdigit() else ({str(index): -100},):
        banned = sdk.completions.create(model="tiny-web", prompt="function ", max_tokens=600, temperature=1.5,
                                        seed=5, logit_bias=bias).choices[0].text
        assert common not in banned and len(banned) == 600, bias
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(**ask, logit_bias={"ab": 5})
    assert caught.value.body["message"] == ("logit_bias key 'ab' is neither a charset index (a decimal string) nor a "
                                            "single character")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(**ask, presence_penalty=3)
    assert caught.value.body["message"] == "presence_penalty must be between -2 and 2 (0 = off), got 3"
