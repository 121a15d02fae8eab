"""Bad input: property-based requests to every RPC of TextGen and Training.

At least REQUESTS_PER_RPC generated requests per RPC (hypothesis, derandomized: the same requests on
every run) with out-of-range numbers, values of the right wire type but the wrong kind (numbers as
names, names as job ids), empty, huge (over the server's 1 MiB message limit) and path-like values
(``../../etc/passwd``, ``/etc/passwd``, ``..``, ``%2e%2e``, NUL bytes), non-UTF-8 bytes for uploads,
unknown fields and junk metadata. Each must end with a status other than UNKNOWN or INTERNAL (OK is
fine where the request is valid), and the server must still serve a good request afterwards.

One real server on loopback (in this process), a real redis-server with no worker (valid training
jobs just queue), and a tiny trained model.
"""
from __future__ import annotations

import math
import reprlib
import shutil
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import corpus_text
from tests.redis_helpers import RedisServer
from tests.reliability.conftest import figure
from tests.reliability.helpers import copy_bundle
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

REQUESTS_PER_RPC = 1000
DRAWN_TOGETHER = 10  # requests per Hypothesis example
MAX_LENGTH = 32  # the server's generation limit here: valid requests stay cheap
MAX_PROMPT = 500
MAX_MESSAGE = 1 << 20
MAX_UPLOAD = 64 * 1024
UNARY_TIMEOUT_S = 10.0
WATCH_TIMEOUT_S = 3.0
BAD = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
GOOD_MODEL = "shake-one"  # never deleted: the good-request check uses it
MAX_RESTORES = 100  # how often DeleteModel's victims are put back

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 90, 90, 8, 12


def short(value) -> str:
    return _short.repr(value)


# ---- strategies ----------------------------------------------------------------------------------

PATHLIKE = [
    "../../etc/passwd", "/etc/passwd", "..", ".", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2f..%2fetc%2fpasswd", "....//....//etc/passwd", "..\\..\\windows\\win.ini", "shake-one/../../../etc/passwd",
    "shake-one/1", "shake-one\x00", "\x00", "\x00../../etc/passwd", "/dev/zero", "/proc/self/environ",
    "file:///etc/passwd", "~", "~root/.ssh/id_rsa", "shake-one/", "./shake-one", " shake-one", "SHAKE-ONE",
    ".tmp-staged-0", "upload-0123456789abcdef/../../x", "../models/shake-one", "/", "//", "\\", "nul", "con",
]
INT32_EDGES = [0, 1, -1, 2, MAX_LENGTH, MAX_LENGTH + 1, 64, 1000, 10_000, 2**31 - 1, -(2**31)]
INT64_EDGES = [0, 1, -1, 2, 3, 99, 2**31, 2**63 - 1, -(2**63)]
UINT64_EDGES = [0, 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]
FLOAT_EDGES = [0.0, -0.0, 0.25, 1.0, 1e-45, 1e-6, 3.4e38, -1.0, -1e-45, math.nan, math.inf, -math.inf]

int32s = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from(INT32_EDGES), st.integers(-2, 40))
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(INT64_EDGES), st.integers(-2, 4))
uint64s = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(UINT64_EDGES))
float32s = st.one_of(st.floats(width=32), st.sampled_from(FLOAT_EDGES), st.floats(0, 2, width=32))
doubles = st.one_of(st.floats(), st.sampled_from(FLOAT_EDGES + [1e-2, 0.0625, 0.9999999, 1e308]))
# Big values: mostly under the message limit (they must be refused by the server's own checks), now
# and then over it (gRPC refuses those with RESOURCE_EXHAUSTED; each costs a few hundred ms, so rare).
HUGE_SIZES = [1000] * 4 + [10_000] * 4 + [100_000] * 3 + [MAX_MESSAGE + 1000]
huge_text = st.sampled_from(HUGE_SIZES).map(lambda n: "x" * n)
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"
almost_names = st.text(NAME_CHARS, min_size=1, max_size=70)


def texts(valid: list[str], weight: int = 1) -> st.SearchStrategy[str]:
    """Strings for a name-like field: ``valid`` ones (``weight`` times as likely as each other kind),
    path-like, empty, random, almost-valid names, numbers in text, huge."""
    kinds = [st.sampled_from(valid)] * weight if valid else []
    return st.one_of(*kinds, st.sampled_from(PATHLIKE), st.just(""), st.text(max_size=40), almost_names,
                     st.integers(-(2**64), 2**64).map(str), st.floats().map(repr), huge_text)


@st.composite
def mutated(draw, valid: dict, nasty: dict) -> dict:
    """Fields of a valid request (``valid``: name -> strategy), up to three of them replaced by a bad
    value (``nasty``: name -> strategy): about a quarter stay valid, the rest test one check or a few."""
    fields = {name: draw(strategy) for name, strategy in valid.items()}
    for name in draw(st.sets(st.sampled_from(sorted(nasty)), max_size=3)):
        fields[name] = draw(nasty[name])
    return fields


@st.composite
def unknown_fields(draw) -> bytes:
    """Well-formed protobuf fields with numbers no message here defines (each RPC must ignore them)."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        number = draw(st.integers(100, 18_999))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(draw(st.integers(0, 2**64 - 1)))
        elif wire == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        else:
            payload = draw(st.one_of(st.binary(max_size=64), st.sampled_from([b"\xff\xfe", b"a" * 5000])))
            out += _varint(len(payload)) + payload
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


HEADER_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_.-"
junk_metadata = st.lists(st.one_of(
    st.tuples(st.text(HEADER_CHARS, min_size=1, max_size=20).map(lambda k: "x-" + k),
              st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)),
    st.tuples(st.text(HEADER_CHARS, min_size=1, max_size=20).map(lambda k: f"x-{k}-bin"), st.binary(max_size=200)),
    st.tuples(st.just("authorization"), st.sampled_from(["Bearer", "Bearer x", "", "../../etc/passwd"])),
), max_size=3)


# ---- the stack --------------------------------------------------------------------------------------

class Fuzz:
    """A server over a tiny model and a worker-less Redis; ``call`` runs one request and says how it ended."""

    def __init__(self, root, trained_bundles):
        from server.app import build_server
        from server.config import Settings

        self.root = root
        self.data_dir = root / "data"
        self.models_dir = self.data_dir / "models"
        copy_bundle(trained_bundles, "one", self.models_dir, GOOD_MODEL)
        copy_bundle(trained_bundles, "two", self.models_dir, "shake-two")
        self.trained_bundles = trained_bundles
        self.restore_victims()
        self.redis = RedisServer(root / "redis").start()
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("TEXTGEN_DATA_DIR", str(self.data_dir))  # where uploads go (textgen.config)
        self.patch.setenv("REDIS_URL", self.redis.url)
        self.server = build_server(Settings(
            addr="127.0.0.1:0", data_dir=self.data_dir, max_length=MAX_LENGTH, max_prompt=MAX_PROMPT,
            max_message_bytes=MAX_MESSAGE, max_upload_bytes=MAX_UPLOAD, reload_seconds=600,
            redis_url=self.redis.url, xla=False)).start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.textgen = textgen_pb2_grpc.TextGenStub(self.channel)
        self.training = textgen_pb2_grpc.TrainingStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.restores = 0
        self.tally: dict[str, Counter] = {}
        self.violations: dict[str, list] = {}
        self.upload_id = self.training.UploadCorpus(iter([pb.UploadCorpusChunk(
            name="shakespeare", data=corpus_text("tinyshakespeare", 3000).encode())])).id
        self.cancelled_jobs, self.queued_jobs = [], []
        for i in range(4):
            job = self.training.SubmitTrain(pb.SubmitTrainRequest(corpus_id=self.upload_id, model_name=f"seed-{i}",
                                                                  options=pb.TrainOptions(epochs=1)))
            (self.cancelled_jobs if i % 2 else self.queued_jobs).append(job.id)
        for job_id in self.cancelled_jobs:
            self.training.CancelJob(pb.CancelJobRequest(job_id=job_id))

    def restore_victims(self) -> None:
        """Put back the models DeleteModel may delete (bounded: MAX_RESTORES)."""
        for key, name in (("two", "victim"), ("two", "shake-two")):
            if not (self.models_dir / name / "1").exists():
                (self.models_dir / name).mkdir(parents=True, exist_ok=True)
                copy_bundle(self.trained_bundles, key, self.models_dir, name)

    def raw(self, method: str, kind: str = "unary_unary"):
        return getattr(self.channel, kind)(method, request_serializer=None, response_deserializer=None)

    def record(self, rpc: str, request, code: grpc.StatusCode, details: str) -> None:
        """Count ``code``; a violation keeps ``request`` shortened for the report (only then: it is slow)."""
        self.tally.setdefault(rpc, Counter())[code.name] += 1
        if code in BAD:
            self.violations.setdefault(rpc, []).append(f"{code.name} ({details!r}) for {short(request)}")

    def call(self, rpc: str, request, fn) -> grpc.StatusCode:
        try:
            fn()
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
        self.record(rpc, request, code, details)
        return code

    def serves_a_good_request(self) -> None:
        """The server answers correct requests of each kind."""
        responses = list(self.textgen.Generate(pb.GenerateRequest(model=GOOD_MODEL, prompt="KING ", length=10, seed=1),
                                               timeout=UNARY_TIMEOUT_S))
        assert "".join(r.text for r in responses) and responses[-1].end.characters == 10
        assert self.textgen.GetModel(pb.GetModelRequest(model=GOOD_MODEL), timeout=UNARY_TIMEOUT_S).version == 1
        assert self.training.ListJobs(pb.ListJobsRequest(limit=5), timeout=UNARY_TIMEOUT_S).jobs
        health = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=UNARY_TIMEOUT_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0)
        self.redis.stop()
        self.patch.undo()


@pytest.fixture(scope="module")
def fuzz(trained_bundles, tmp_path_factory):
    f = Fuzz(tmp_path_factory.mktemp("fuzz"), trained_bundles)
    yield f
    f.close()
    total = sum(sum(c.values()) for c in f.tally.values())
    if total:
        figure("bad input", f"{total} generated requests over {len(f.tally)} RPCs; DeleteModel victims "
                            f"restored {f.restores} times")


def run_property(fuzz: Fuzz, rpc: str, strategy, send) -> None:
    """Send REQUESTS_PER_RPC requests drawn from ``strategy`` with ``send(fuzz, request)``; then check
    that none got UNKNOWN/INTERNAL and the server still serves a good request."""
    began = time.monotonic()

    drawn = []

    # Drawn DRAWN_TOGETHER at a time: Hypothesis's cost is mostly per example (seeding, bookkeeping),
    # and a thousand one-request examples spent more CPU in it than the server spent answering them.
    @settings(max_examples=REQUESTS_PER_RPC // DRAWN_TOGETHER, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.lists(strategy, min_size=DRAWN_TOGETHER, max_size=DRAWN_TOGETHER))
    def send_some(requests):
        for request in requests:
            drawn.append(request)
            send(fuzz, request)

    send_some()
    # Hypothesis stops early when it runs out of distinct examples: send those again up to the count.
    for request in drawn * (REQUESTS_PER_RPC // max(1, len(drawn)) + 1):
        if sum(fuzz.tally.get(rpc, Counter()).values()) >= REQUESTS_PER_RPC:
            break
        send(fuzz, request)
    tally = fuzz.tally.get(rpc, Counter())
    figure("bad input", f"{rpc}: {sum(tally.values())} requests in {time.monotonic() - began:.1f} s -> "
                        + ", ".join(f"{code} {n}" for code, n in tally.most_common()))
    violations = fuzz.violations.get(rpc, [])
    assert not violations, f"{len(violations)} {rpc} requests got UNKNOWN/INTERNAL, e.g.:\n" + "\n".join(violations[:8])
    assert sum(tally.values()) >= REQUESTS_PER_RPC
    fuzz.serves_a_good_request()


# ---- TextGen ------------------------------------------------------------------------------------------

VALID_PROMPTS = ["KING ", "", "ROMEO:\nWhat", "a" * 200, "the "]
generate_requests = st.tuples(mutated(
    valid={"model": st.sampled_from([GOOD_MODEL, "shake-two"]), "version": st.sampled_from([0, 1]),
           "prompt": st.sampled_from(VALID_PROMPTS), "length": st.integers(1, MAX_LENGTH),
           "temperature": st.floats(0, 2, width=32), "seed": st.one_of(st.none(), uint64s)},
    nasty={"model": texts([]), "version": int64s, "length": int32s, "temperature": float32s,
           "prompt": st.one_of(st.sampled_from(["Z" * (MAX_PROMPT + 1), "é", "\x00", "{}", "KING\x00"]),
                               st.text(max_size=60), texts([]))}),
    junk_metadata)


def send_generate(fuzz: Fuzz, drawn) -> None:
    fields, meta = drawn
    seed = fields.pop("seed")
    request = pb.GenerateRequest(**fields, **({} if seed is None else {"seed": seed}))
    fuzz.call("Generate", request, lambda: list(fuzz.textgen.Generate(
        request, timeout=UNARY_TIMEOUT_S, metadata=meta)))


def test_generate_survives_generated_requests(fuzz):
    run_property(fuzz, "Generate", generate_requests, send_generate)


def test_list_models_survives_unknown_fields_and_junk_metadata(fuzz):
    def send(fuzz, drawn):
        data, meta = drawn
        fuzz.call("ListModels", (data, meta), lambda: fuzz.raw("/textgen.v1.TextGen/ListModels")(
            data, timeout=UNARY_TIMEOUT_S, metadata=meta))

    run_property(fuzz, "ListModels", st.tuples(unknown_fields(), junk_metadata), send)


def test_get_model_survives_generated_requests(fuzz):
    def send(fuzz, request):
        fuzz.call("GetModel", request, lambda: fuzz.textgen.GetModel(request, timeout=UNARY_TIMEOUT_S))

    requests = mutated(valid={"model": st.sampled_from([GOOD_MODEL, "shake-two"]), "version": st.sampled_from([0, 1])},
                       nasty={"model": texts([]), "version": int64s}).map(lambda f: pb.GetModelRequest(**f))
    run_property(fuzz, "GetModel", requests, send)


def test_delete_model_survives_generated_requests(fuzz):
    def send(fuzz, request):
        code = fuzz.call("DeleteModel", request,
                         lambda: fuzz.textgen.DeleteModel(request, timeout=UNARY_TIMEOUT_S))
        if code == grpc.StatusCode.OK and fuzz.restores < MAX_RESTORES:
            fuzz.restores += 1
            fuzz.restore_victims()

    requests = mutated(
        valid={"model": st.sampled_from(["victim", "shake-two", "no-such-model"]), "version": st.sampled_from([1, 2]),
               "all_versions": st.booleans()},
        nasty={"model": texts([]).filter(lambda name: name != GOOD_MODEL), "version": int64s},
    ).map(lambda f: pb.DeleteModelRequest(**f))
    run_property(fuzz, "DeleteModel", requests, send)
    assert fuzz.textgen.GetModel(pb.GetModelRequest(model=GOOD_MODEL)).version == 1
    shutil.rmtree(fuzz.models_dir / "victim", ignore_errors=True)


# ---- Training -----------------------------------------------------------------------------------------

def test_list_corpora_survives_unknown_fields_and_junk_metadata(fuzz):
    def send(fuzz, drawn):
        data, meta = drawn
        fuzz.call("ListCorpora", (data, meta), lambda: fuzz.raw("/textgen.v1.Training/ListCorpora")(
            data, timeout=UNARY_TIMEOUT_S, metadata=meta))

    run_property(fuzz, "ListCorpora", st.tuples(unknown_fields(), junk_metadata), send)


OVER_MESSAGE = b"a" * (MAX_MESSAGE + 1)
upload_data = st.one_of(
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.binary(max_size=200),
    st.sampled_from([b"", b"\xff\xfe\xfd", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00" * 64,
                     b"\xef\xbb\xbf", b"\xef\xbb\xbfKING HENRY", "KING".encode("utf-16"), b"\xc0\xaf../../etc/passwd",
                     b"/etc/passwd", b"a" * (MAX_UPLOAD + 1)] * 2 + [OVER_MESSAGE]),
)
upload_streams = st.lists(st.builds(lambda name, data: pb.UploadCorpusChunk(name=name, data=data),
                                    texts(["shakespeare.txt"], weight=3), upload_data), max_size=4)


def test_upload_corpus_survives_generated_uploads(fuzz):
    def send(fuzz, chunks):
        fuzz.call("UploadCorpus", chunks, lambda: fuzz.training.UploadCorpus(
            iter(chunks), timeout=UNARY_TIMEOUT_S))

    run_property(fuzz, "UploadCorpus", upload_streams, send)
    uploads = fuzz.data_dir / "corpora" / "uploads"
    assert all(p.parent == uploads for p in uploads.rglob("*")), "an upload was stored outside the uploads folder"


def job_ids(fuzz: Fuzz, include_queued: bool) -> st.SearchStrategy[str]:
    known = fuzz.cancelled_jobs + (fuzz.queued_jobs if include_queued else [])
    return st.one_of(texts(known, weight=2), st.text(NAME_CHARS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                                                     max_size=140), st.uuids().map(str))


def test_get_job_survives_generated_requests(fuzz):
    def send(fuzz, request):
        fuzz.call("GetJob", request, lambda: fuzz.training.GetJob(request, timeout=UNARY_TIMEOUT_S))

    run_property(fuzz, "GetJob", st.builds(pb.GetJobRequest, job_id=job_ids(fuzz, True)), send)


def test_list_jobs_survives_generated_requests(fuzz):
    def send(fuzz, drawn):
        request, extra = drawn
        data = request.SerializeToString() + extra
        fuzz.call("ListJobs", request, lambda: fuzz.raw("/textgen.v1.Training/ListJobs")(
            data, timeout=UNARY_TIMEOUT_S))

    run_property(fuzz, "ListJobs", st.tuples(st.builds(pb.ListJobsRequest, limit=int32s), unknown_fields()), send)


def test_watch_job_survives_generated_requests(fuzz):
    def send(fuzz, request):
        fuzz.call("WatchJob", request, lambda: list(fuzz.training.WatchJob(request, timeout=WATCH_TIMEOUT_S)))

    # Queued jobs never end here (no worker): watching one is tried once, below, not a thousand times.
    run_property(fuzz, "WatchJob", st.builds(pb.WatchJobRequest, job_id=job_ids(fuzz, False)), send)
    code = fuzz.call("WatchJob", "a queued job", lambda: list(fuzz.training.WatchJob(
        pb.WatchJobRequest(job_id=fuzz.queued_jobs[0]), timeout=1.0)))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_cancel_job_survives_generated_requests(fuzz):
    def send(fuzz, request):
        fuzz.call("CancelJob", request, lambda: fuzz.training.CancelJob(request, timeout=UNARY_TIMEOUT_S))

    run_property(fuzz, "CancelJob", st.builds(pb.CancelJobRequest, job_id=job_ids(fuzz, True)), send)


def _train_options(fields: dict) -> pb.TrainOptions:
    return pb.TrainOptions(**fields)


train_options = st.fixed_dictionaries({}, optional={
    "lstm_layer_sizes": st.one_of(st.lists(int32s, max_size=10), st.sampled_from([[16], [4096] * 8, [1] * 100_000])),
    "sample_len": int32s, "sample_step": int32s, "learning_rate": doubles, "epochs": int32s,
    "examples_per_epoch": int32s, "batch_size": int32s, "validation_split": doubles, "display_length": int32s,
    "objective": texts(["last", "all"], weight=3), "seed": uint64s,
}).map(_train_options)


def submit_requests(upload_id: str) -> st.SearchStrategy[pb.SubmitTrainRequest]:
    small = pb.TrainOptions(lstm_layer_sizes=[16], sample_len=10, epochs=1, examples_per_epoch=64, batch_size=32)
    return mutated(
        valid={"source": st.sampled_from([("corpus_id", upload_id), ("corpus", "tfjs-code")]),
               "options": st.sampled_from([small, pb.TrainOptions()]),
               "model_name": st.sampled_from(["fuzz-model", ""]),
               "parent": st.sampled_from([("", 0), ("shake-one", 0), ("shake-one", 1)])},
        nasty={"source": st.one_of(st.tuples(st.sampled_from(["corpus", "corpus_id"]),
                                             texts(["tfjs-code", "nietzsche", upload_id, "upload-0123456789abcdef"])),
                                   st.just(None)),
               "options": train_options, "model_name": texts([]),
               "parent": st.tuples(texts(["shake-one", "shake-two", ""]), int64s)},
    ).map(_submit_request)


def _submit_request(fields: dict) -> pb.SubmitTrainRequest:
    source, (from_model, from_version) = fields["source"], fields["parent"]
    return pb.SubmitTrainRequest(options=fields["options"], model_name=fields["model_name"], from_model=from_model,
                                 from_version=from_version, **({source[0]: source[1]} if source else {}))


def test_submit_train_survives_generated_requests(fuzz):
    def send(fuzz, request):
        fuzz.call("SubmitTrain", request, lambda: fuzz.training.SubmitTrain(request, timeout=UNARY_TIMEOUT_S))

    run_property(fuzz, "SubmitTrain", submit_requests(fuzz.upload_id), send)
    queued = fuzz.redis.client().llen("rq:queue:training")
    figure("bad input", f"SubmitTrain: {queued} valid jobs left queued (no worker runs them)")


# ---- malformed messages --------------------------------------------------------------------------------

RPCS = [("/textgen.v1.TextGen/Generate", "unary_stream"), ("/textgen.v1.TextGen/ListModels", "unary_unary"),
        ("/textgen.v1.TextGen/GetModel", "unary_unary"), ("/textgen.v1.TextGen/DeleteModel", "unary_unary"),
        ("/textgen.v1.Training/SubmitTrain", "unary_unary"), ("/textgen.v1.Training/GetJob", "unary_unary"),
        ("/textgen.v1.Training/ListJobs", "unary_unary"), ("/textgen.v1.Training/CancelJob", "unary_unary"),
        ("/textgen.v1.Training/WatchJob", "unary_stream"), ("/textgen.v1.Training/ListCorpora", "unary_unary"),
        ("/textgen.v1.Training/UploadCorpus", "stream_unary"), ("/textgen.v1.TextGen/ExportTfjs", "unary_stream"),
        ("/textgen.v1.Training/ImportTfjs", "stream_unary")]
# Not protobuf messages at all: invalid UTF-8 in a string field (field 1 is a string in these
# requests), a length-delimited field cut short, a varint cut short.
STRING_FIELD_1 = ("Generate", "GetModel", "DeleteModel", "SubmitTrain", "GetJob", "CancelJob", "WatchJob",
                  "UploadCorpus", "ExportTfjs", "ImportTfjs")
MALFORMED = {"invalid UTF-8 in a string field": b"\x0a\x03\xff\xfe\xfd", "truncated field": b"\x0a\x05ab",
             "truncated varint": b"\x10\xff\xff"}


def test_requests_that_are_not_protobuf_messages_are_invalid_arguments(fuzz):
    outcomes = {}
    for method, kind in RPCS:
        for what, data in MALFORMED.items():
            if what.startswith("invalid UTF-8") and not method.endswith(STRING_FIELD_1):
                continue
            call = fuzz.raw(method, kind)
            if kind == "stream_unary":
                fn = lambda: call(iter([data]), timeout=UNARY_TIMEOUT_S)  # noqa: E731
            elif kind == "unary_stream":
                fn = lambda: list(call(data, timeout=UNARY_TIMEOUT_S))  # noqa: E731
            else:
                fn = lambda: call(data, timeout=UNARY_TIMEOUT_S)  # noqa: E731
            try:
                fn()
                outcomes[(method, what)] = "OK"
            except grpc.RpcError as exc:
                outcomes[(method, what)] = exc.code().name
    fuzz.serves_a_good_request()
    figure("bad input", f"malformed protobuf messages: {len(outcomes)} sent -> "
                        + ", ".join(f"{c} {n}" for c, n in Counter(outcomes.values()).most_common())
                        + "; other than INVALID_ARGUMENT: " + (", ".join(
                            f"{m.rsplit('/', 1)[1]} {w} -> {c}" for (m, w), c in outcomes.items()
                            if c != "INVALID_ARGUMENT") or "none"))
    bad = {k: v for k, v in outcomes.items() if v in ("UNKNOWN", "INTERNAL")}
    assert not bad, f"{len(bad)} malformed requests got UNKNOWN/INTERNAL: {sorted(bad.items())[:6]}"


# ---- long values echoed in error messages ----------------------------------------------------------------

LONG = "x" * 20_000  # far under the 1 MiB message limit, far over what a status message can carry (8 KiB)
MAX_DETAILS = 2000


def _echo_cases(fuzz: Fuzz, service: str) -> dict:
    tg, tr = fuzz.textgen, fuzz.training
    upload = fuzz.upload_id
    cases = {
        "TextGen": {
            "Generate model": lambda: list(tg.Generate(pb.GenerateRequest(model=LONG, length=5))),
            "Generate prompt": lambda: list(tg.Generate(pb.GenerateRequest(model=GOOD_MODEL, prompt="\x01" + LONG,
                                                                            length=5))),
            "GetModel model": lambda: tg.GetModel(pb.GetModelRequest(model=LONG)),
            "DeleteModel model": lambda: tg.DeleteModel(pb.DeleteModelRequest(model=LONG, version=1)),
        },
        "Training": {
            "SubmitTrain corpus": lambda: tr.SubmitTrain(pb.SubmitTrainRequest(corpus=LONG)),
            "SubmitTrain corpus_id": lambda: tr.SubmitTrain(pb.SubmitTrainRequest(corpus_id=LONG)),
            "SubmitTrain model_name": lambda: tr.SubmitTrain(pb.SubmitTrainRequest(corpus_id=upload, model_name=LONG)),
            "SubmitTrain from_model": lambda: tr.SubmitTrain(pb.SubmitTrainRequest(corpus_id=upload, from_model=LONG)),
            "SubmitTrain objective": lambda: tr.SubmitTrain(pb.SubmitTrainRequest(
                corpus_id=upload, options=pb.TrainOptions(objective=LONG))),
            "GetJob job_id": lambda: tr.GetJob(pb.GetJobRequest(job_id=LONG)),
            "CancelJob job_id": lambda: tr.CancelJob(pb.CancelJobRequest(job_id=LONG)),
            "WatchJob job_id": lambda: list(tr.WatchJob(pb.WatchJobRequest(job_id=LONG))),
        },
    }
    return cases[service]


def _check_long_values(fuzz: Fuzz, service: str) -> None:
    outcomes = {}
    for what, call in _echo_cases(fuzz, service).items():
        try:
            call()
            outcomes[what] = ("OK", 0)
        except grpc.RpcError as exc:
            outcomes[what] = (exc.code().name, len(exc.details() or ""))
    figure("bad input", f"{service}, 20,000-character bad values: " + ", ".join(
        f"{w} -> {c} ({n} chars of details)" for w, (c, n) in outcomes.items()))
    wrong = {w: o for w, o in outcomes.items() if o[0] != "INVALID_ARGUMENT" or o[1] > MAX_DETAILS}
    assert not wrong, f"long bad values not refused as INVALID_ARGUMENT with a short message: {wrong}"


def test_long_bad_values_get_invalid_argument_with_a_short_message_textgen(fuzz):
    _check_long_values(fuzz, "TextGen")


def test_long_bad_values_get_invalid_argument_with_a_short_message_training(fuzz):
    _check_long_values(fuzz, "Training")
