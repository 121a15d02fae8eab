"""The decode engine and the model store, called directly (no gRPC), on real trained bundles."""
from __future__ import annotations

import json
import logging
import random
import threading

import numpy as np
import pytest
import tensorflow as tf

from bench.baseline_engine import BaselineBatch, BaselineEngine
from server import engine as engine_module
from server import programs
from server.engine import Engine, SamplingParams
from server.errors import BadRequest, ModelNotFound, ShuttingDown, TooManyStreams
from server.prompt_cache import PromptCache
from server.reference import reference_generate
from server.store import ModelStore

from .server_helpers import MODELS, copy_models, run_threads, wait_for

SAMPLE_LEN = 20  # the fixture's models
SHORT, EXACT, LONG = "KING ", "ROMEO: what say you ", "First Citizen: we are accounted poor citizens, the patricians good"
assert len(EXACT) == SAMPLE_LEN and len(SHORT) < SAMPLE_LEN < len(LONG)


@pytest.fixture(scope="module")
def store(trained_bundles, tmp_path_factory):
    store = ModelStore(copy_models(trained_bundles, tmp_path_factory.mktemp("engine-data")), reload_seconds=60)
    yield store.start()
    store.close()


@pytest.fixture
def engine():
    engine = Engine()
    yield engine
    engine.shutdown(timeout=0)


def text_of(engine, model, prompt, length, temperature, seed):
    stream = engine.submit(model, prompt, SamplingParams(length, temperature, seed))
    return "".join(stream), stream


def admitting_between_steps(engine: Engine) -> Engine:
    """``engine`` with the baseline's batch: joiners started by the stepper between its steps."""
    engine.batch_class = BaselineBatch
    return engine


@pytest.mark.parametrize("key", ["one", "two"])
@pytest.mark.parametrize("prompt", [SHORT, EXACT, LONG], ids=["shorter", "equal", "longer"])
def test_greedy_text_equals_the_reference_loop_character_for_character(store, engine, key, prompt):
    model = store.get(MODELS[key])
    text, stream = text_of(engine, model, prompt, 150, 0.0, seed=1)
    assert text == reference_generate(model, prompt, 150, 0.0, seed=1)
    assert (stream.stop_reason, stream.produced) == (engine_module.LENGTH, 150)


@pytest.mark.parametrize("key", ["one", "two"])
def test_seeded_sampling_equals_the_reference_and_ignores_63_other_streams(store, engine, key):
    model = store.get(MODELS[key])
    alone, _ = text_of(engine, model, SHORT, 200, 0.8, seed=1234)
    assert alone == reference_generate(model, SHORT, 200, 0.8, seed=1234)

    rng = random.Random(5)
    others = [(rng.choice([SHORT, LONG, ""]), rng.randint(20, 400), rng.choice([0.0, 0.5, 1.0, 1.5]), rng.randrange(2**63))
              for _ in range(63)]
    jobs = others[:30] + [(SHORT, 200, 0.8, 1234)] + others[30:]
    streams = [engine.submit(model, prompt, SamplingParams(*job)) for prompt, *job in jobs]
    texts = run_threads(lambda s: "".join(s), [(s,) for s in streams])
    assert texts[30] == alone
    assert [len(t) for t in texts] == [job[1] for job in jobs]


def test_text_does_not_depend_on_how_steps_are_chunked(store):
    model = store.get(MODELS["two"])
    texts = []
    engines = [BaselineEngine(), admitting_between_steps(Engine(chunk=7, first_chunk=1, xla=False)),
               Engine(chunk=64, first_chunk=64), Engine(chunk=1, first_chunk=1), Engine(chunk=5, first_chunk=3)]
    for engine in engines:
        texts.append(text_of(engine, model, LONG, 101, 0.9, seed=77)[0])
        engine.shutdown(0)
    assert texts == [texts[0]] * len(engines)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_the_xla_compiled_step_draws_what_the_bundles_graph_function_draws(store, temperature):
    model = store.get(MODELS["two"])
    functions = programs.Functions(model, programs.Compiler())
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, len(model.charset), size=(64, SAMPLE_LEN)).astype(np.int32)
    state = functions.start(prompt, np.full([64], SAMPLE_LEN, np.int32))
    inputs = dict(state, temperature=tf.fill([64], temperature), uniforms=tf.constant(rng.random((64, 16), np.float32)),
                  top_k=tf.zeros([64], tf.int32), top_p=tf.ones([64]))
    functions._compile(("advance", (64, 16)), inputs)
    compiled = functions.advance(inputs)
    graph = model.functions.advance(**inputs)
    np.testing.assert_array_equal(compiled["ids"].numpy(), graph["ids"].numpy())
    np.testing.assert_allclose(compiled["probs"].numpy(), graph["probs"].numpy(), atol=1e-5)


def test_the_xla_compiled_start_of_a_padded_group_reads_prompts_as_the_bundles_graph_function(store):
    model = store.get(MODELS["two"])
    functions = programs.Functions(model, programs.Compiler())
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, len(model.charset), size=(5, SAMPLE_LEN)).astype(np.int32)
    lengths = np.array([SAMPLE_LEN, 1, 7, SAMPLE_LEN - 1, 3], np.int32)
    graph = {key: value.numpy() for key, value in model.functions.start(prompt=prompt, lengths=lengths).items()}
    for _ in range(functions.HOT["start"]):  # a shape used this often gets its program (8 rows: 5 padded)
        functions.start(prompt, lengths)
    assert wait_for(lambda: ("start", (8, SAMPLE_LEN)) in functions._compiled, timeout=60)
    compiled = functions.start(prompt, lengths)
    assert {key: value.shape[0] for key, value in compiled.items()} == {key: 5 for key in graph}
    np.testing.assert_array_equal(compiled["phase"].numpy(), graph["phase"])
    np.testing.assert_allclose(compiled["state"].numpy(), graph["state"], atol=1e-5)
    np.testing.assert_allclose(compiled["probs"].numpy(), graph["probs"], atol=1e-5)


def test_a_full_block_is_compiled_when_a_model_gets_its_first_stream_and_every_engine_uses_it(store):
    model = store.get(MODELS["one"])
    first, second = Engine(), Engine()
    try:
        assert "".join(first.submit(model, SHORT, SamplingParams(5, 0.5, seed=1)))
        functions = first._functions_of(model)
        block = ("advance", (programs.BLOCK_ROWS, engine_module.CHUNK))
        assert wait_for(lambda: block in functions._compiled, timeout=120)  # 64 streams: compiled before they come
        assert second._functions_of(model) is functions
        assert Engine(xla=False)._functions_of(model) is not functions  # the graph functions only
    finally:
        first.shutdown(0)
        second.shutdown(0)


def test_the_fixed_step_baseline_stays_itself_whatever_the_server_passes():
    engine = BaselineEngine(8, 100, 50, xla=True, chunk=4, first_chunk=1, prompt_cache_bytes=2**20)
    assert (engine.max_streams, engine.max_length, engine.max_prompt) == (8, 100, 50)
    assert (engine.chunk, engine.first_chunk, engine.batch_class, engine.xla, engine.prompt_cache_bytes) == (
        engine_module.CHUNK, 4, BaselineBatch, False, 0)


def test_batches_keep_few_block_shapes_so_xla_compiles_few_programs():
    capacity, blocks = programs.row_capacity, programs.row_blocks
    assert [capacity(n) for n in (1, 2, 3, 5, 8, 9, 63, 64, 65, 67, 70, 250, 256, 257)] == [
        1, 2, 4, 8, 8, 16, 64, 64, 65, 68, 72, 256, 256, 257]
    assert blocks(200) == [(0, 64), (64, 128), (128, 192), (192, 200)]
    sizes = {end - first for n in range(1, 1025) for first, end in blocks(capacity(n))}
    assert sizes == {1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64}
    assert all(0 <= capacity(n) - n <= 7 for n in range(1, 1025))


@pytest.mark.parametrize("length", [1, 3, 4, 5, 16, 17, 33])
def test_a_stream_produces_exactly_the_length_asked_for(store, engine, length):
    text, stream = text_of(engine, store.get(MODELS["one"]), SHORT, length, 0.5, seed=3)
    assert len(text) == stream.produced == length
    assert stream.stop_reason == engine_module.LENGTH


def test_empty_prompt_uses_the_seed_slice_the_seed_picks(store, engine):
    model = store.get(MODELS["one"])
    slices = model.meta["seed_slices"]
    for seed in (0, 1, 2, 7):
        text, stream = text_of(engine, model, "", 40, 0.0, seed=seed)
        assert stream.prompt == slices[seed % len(slices)]
        assert text == reference_generate(model, stream.prompt, 40, 0.0, seed=seed)


def test_a_stream_without_seed_reports_the_one_drawn_and_it_reproduces_the_text(store, engine):
    model = store.get(MODELS["one"])
    text, stream = text_of(engine, model, SHORT, 80, 1.0, seed=None)
    assert isinstance(stream.seed, int) and stream.seed >= 0
    assert text_of(engine, model, SHORT, 80, 1.0, seed=stream.seed)[0] == text


def test_200_streams_cancelled_midway_leave_no_active_stream(store, engine):
    model = store.get(MODELS["two"])
    streams = [engine.submit(model, SHORT, SamplingParams(10_000, 0.7, seed=i)) for i in range(200)]
    firsts = [next(iter(s)) for s in streams[::10]]  # let some of them produce text first
    assert all(firsts)
    for stream in streams:
        stream.cancel()
    assert all(s.stop_reason == engine_module.CANCELLED for s in streams)
    assert wait_for(lambda: engine.active_streams() == 0, timeout=10)
    assert all(s.produced < 10_000 for s in streams)


def test_streams_past_the_limit_are_refused_until_a_slot_frees(store):
    engine = Engine(max_streams=2)
    model = store.get(MODELS["one"])
    running = [engine.submit(model, SHORT, SamplingParams(10_000, 0.5, seed=i)) for i in range(2)]
    with pytest.raises(TooManyStreams, match="limit of concurrent streams is 2"):
        engine.submit(model, SHORT, SamplingParams(10, 0.5))
    running[0].cancel()  # frees its slot at once, before the engine's next step
    assert len("".join(engine.submit(model, SHORT, SamplingParams(10, 0.5)))) == 10
    engine.shutdown(0)


@pytest.mark.parametrize("change, message", [
    (dict(length=0), "length must be between 1 and 100 characters, got 0"),
    (dict(length=101), "length must be between 1 and 100 characters, got 101"),
    (dict(temperature=-0.5), "temperature must be a finite number >= 0 (0 = greedy), got -0.5"),
    (dict(temperature=float("nan")), "got nan"),
    (dict(temperature=float("inf")), "got inf"),
    (dict(prompt="x" * 51), "the prompt has 51 characters, at most 50 are allowed"),
    (dict(prompt="café\t"), "'\\t' (U+0009), 'é' (U+00E9)"),
    (dict(seed=-1), "seed must be between 0 and 2**64 - 1, got -1"),
])
def test_bad_values_are_refused_naming_the_value(store, change, message):
    engine = Engine(max_length=100, max_prompt=50)
    request = dict(prompt=SHORT, length=10, temperature=0.5, seed=1) | change
    prompt = request.pop("prompt")
    with pytest.raises(BadRequest) as caught:  # when the params are made, or when submitted
        engine.submit(store.get(MODELS["one"]), prompt, SamplingParams(**request))
    assert message in str(caught.value)
    assert engine.active_streams() == 0
    engine.shutdown(0)


def test_shutdown_ends_running_streams_with_reason_shutdown_and_refuses_new_ones(store):
    engine = Engine(max_length=10**7)
    model = store.get(MODELS["one"])
    stream = engine.submit(model, SHORT, SamplingParams(10**7, 0.5, seed=1))
    first = next(iter(stream))
    engine.shutdown(timeout=0.2)
    rest = "".join(stream)
    assert stream.stop_reason == engine_module.SHUTDOWN
    assert 0 < len(first + rest) == stream.produced < 10**7
    with pytest.raises(ShuttingDown):
        engine.submit(model, SHORT, SamplingParams(10, 0.5))


def test_shutdown_lets_streams_that_finish_in_time_finish(store):
    engine = Engine()
    stream = engine.submit(store.get(MODELS["one"]), SHORT, SamplingParams(300, 0.5, seed=1))
    threading.Thread(target=engine.shutdown, args=(10.0,)).start()
    assert len("".join(stream)) == 300 and stream.stop_reason == engine_module.LENGTH


# -- the store -------------------------------------------------------------------------------------

def test_store_serves_complete_bundles_and_skips_broken_and_temporary_ones(trained_bundles, tmp_path, caplog):
    models_dir = copy_models(trained_bundles, tmp_path)
    broken = models_dir / "broken" / "1"
    (broken / "saved_model").mkdir(parents=True)
    (broken / "meta.json").write_text(json.dumps({"charset": "ab", "sample_len": 3}))
    (models_dir / "shake-one" / ".tmp-staged-1234").mkdir()
    (models_dir / "shake-one" / "2").mkdir()  # a version being claimed: not complete yet
    (models_dir / ".tmp-x").mkdir()
    with caplog.at_level(logging.ERROR, logger="server.store"):
        store = ModelStore(models_dir).start()
    try:
        assert [(name, [m.version for m in versions]) for name, versions in store.list_models()] == [
            ("shake-one", [1]), ("shake-two", [1])]
        assert "skipping model broken version 1" in caplog.text
        with pytest.raises(ModelNotFound, match="no model named 'broken'; available models: shake-one, shake-two"):
            store.get("broken")
        store.rescan()  # a broken bundle that did not change is not retried (nor logged) again
        assert caplog.text.count("skipping model broken") == 1
    finally:
        store.close()


@pytest.mark.parametrize("name", ["../shake-one", "Shake", ".tmp-x", "", "a" * 65, "shake one", "/etc"])
def test_store_refuses_bad_names_before_building_a_path(store, name):
    with pytest.raises(BadRequest, match="invalid model name"):
        store.get(name)
    with pytest.raises(BadRequest, match="invalid model name"):
        store.delete(name, 1)


@pytest.mark.parametrize("aside", [True, False], ids=["admitted-aside", "fixed-steps"])
def test_a_joining_stream_gets_its_first_text_without_waiting_for_the_step_in_progress(store, aside):
    model = store.get(MODELS["two"])
    # One long step (4,000 characters at once) runs while a second stream joins.
    engine = Engine(chunk=4000, first_chunk=2, xla=False)
    if not aside:
        admitting_between_steps(engine)
    try:
        running = engine.submit(model, SHORT, SamplingParams(8000, 0.5, seed=1))
        chunks = iter(running)
        assert len(next(chunks)) == 2  # admitted; its 4,000-character step now runs
        joiner = engine.submit(model, LONG, SamplingParams(10, 0.5, seed=2))
        first = next(iter(joiner))
        in_step = running.produced == 2  # the running stream's step had not ended yet
        assert len(first) == 2
        assert in_step is aside  # the fixed-step engine admits only between steps
        assert "".join(joiner) and joiner.produced == 10
        assert joiner.stop_reason == engine_module.LENGTH
    finally:
        engine.shutdown(0)


# -- prompts read once -------------------------------------------------------------------------------

def counting_starts(engine, model) -> list[int]:
    """Record the rows of every call of the bundle's ``start`` that ``engine`` makes for ``model``."""
    functions = engine._functions_of(model)
    rows, start = [], functions.start
    functions.start = lambda prompt, lengths: (rows.append(len(prompt)), start(prompt, lengths))[1]
    return rows


def test_a_prompt_seen_again_is_not_read_again_and_gives_the_same_text(store):
    model = store.get(MODELS["one"])
    engine = Engine(xla=False)
    try:
        reads = counting_starts(engine, model)
        first, _ = text_of(engine, model, LONG, 120, 0.8, seed=11)
        again, _ = text_of(engine, model, LONG, 120, 0.8, seed=12)
        assert reads == [1]  # the second stream's prompt window was found started
        assert (first, again) == (reference_generate(model, LONG, 120, 0.8, seed=11),
                                  reference_generate(model, LONG, 120, 0.8, seed=12))
        # Only the last sample_len characters are the window: a longer prompt ending the same way is a hit.
        text_of(engine, model, "Second Citizen says: " + LONG, 10, 0.8, seed=13)
        assert reads == [1]
        text_of(engine, model, SHORT, 10, 0.8, seed=14)
        assert reads == [1, 1]
    finally:
        engine.shutdown(0)


def test_64_streams_with_one_prompt_read_it_once_and_each_gets_its_own_text(store):
    model = store.get(MODELS["two"])
    engine = Engine(xla=False)
    try:
        reads = counting_starts(engine, model)
        streams = [engine.submit(model, EXACT, SamplingParams(60, 1.0, seed)) for seed in range(64)]
        texts = run_threads(lambda s: "".join(s), [(s,) for s in streams])
        assert sum(reads) == 1
        assert texts[7] == reference_generate(model, EXACT, 60, 1.0, seed=7)
        assert texts[63] == reference_generate(model, EXACT, 60, 1.0, seed=63)
        assert len(set(texts)) > 32  # different seeds, different texts: rows were copied, not shared
    finally:
        engine.shutdown(0)


def test_without_the_prompt_cache_every_prompt_is_read():
    assert BaselineEngine().prompt_cache_bytes == 0


def test_the_prompt_cache_drops_the_least_recently_used_rows_past_its_bytes():
    row = {"state": tf.zeros([1, 4, 8]), "phase": tf.zeros([1], tf.int32), "probs": tf.zeros([1, 6])}
    size = (32 + 1 + 6) * 4
    cache = PromptCache(capacity=2 * size)
    cache.put(b"a", row)
    cache.put(b"b", row)
    assert cache.get(b"a") is row  # a is now the most recently used
    cache.put(b"c", row)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (row, None, row)
    assert len(cache) == 2
    small = PromptCache(capacity=size - 1)
    assert small.put(b"a", row) is row and small.get(b"a") is None  # too big: not kept


def test_prompts_refused_before_any_read_leave_the_cache_alone(store):
    model = store.get(MODELS["one"])
    engine = Engine(xla=False)
    try:
        reads = counting_starts(engine, model)
        with pytest.raises(BadRequest):
            engine.submit(model, LONG, SamplingParams(0, 0.5))
        assert reads == [] and len(engine._prompts_of(model)) == 0
    finally:
        engine.shutdown(0)


def test_a_burst_joins_as_one_batch_instead_of_stepping_the_first_stream_alone_beside_its_start(store):
    model = store.get(MODELS["two"])
    engine = Engine(xla=False)
    try:
        functions = engine._functions_of(model)
        steps, advance = [], functions.advance
        functions.advance = lambda inputs, compiled=True: (
            steps.append((threading.current_thread().name[:6], inputs["uniforms"].shape[0])), advance(inputs, compiled))[1]
        first = engine.submit(model, SHORT, SamplingParams(3000, 0.5, seed=1))
        chunks = iter(first)
        next(chunks)  # admitted and stepping alone
        rng = random.Random(3)
        prompts = ["".join(rng.choices(model.charset.chars, k=SAMPLE_LEN)) for _ in range(150)]  # a long start
        with engine._lock:  # the burst arrives at once: the admitter takes it as one group
            burst = [engine.submit(model, prompt, SamplingParams(16, 0.5, seed=i)) for i, prompt in enumerate(prompts)]
            since = len(steps)
        run_threads(lambda s: "".join(s), [(s,) for s in burst])
        first.cancel()
        stepped = [rows for thread, rows in steps[since:] if thread == "decode"]
        joined = next(i for i, rows in enumerate(stepped) if rows > 1)
        # One step may be under way when the burst arrives, and one more may start before the
        # admitter has taken it; none beside the burst's start.
        assert joined <= 2 and stepped[joined] == 151, steps[since:]
    finally:
        engine.shutdown(0)
