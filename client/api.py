"""The textgen client: every RPC of the TextGen and Training services as a Python call.

    from client.api import Client

    c = Client()                                   # TEXTGEN_SERVER, TEXTGEN_TOKEN, TEXTGEN_CA_CERT
    stream = c.generate("tfjs-code", prompt="function ", length=300, temperature=0.5)
    for text in stream:
        print(text, end="")
    print(stream.start.seed, stream.end.characters)
    print(c.score("tfjs-code", "function f(x) { return x; }").bits_per_char)

    job = c.submit_train(corpus="tfjs-code", options={"lstm_layer_sizes": [128], "epochs": 5})
    for event in c.watch_job(job.id):
        print(event.WhichOneof("event"))

Calls return the generated protobuf messages (textgen.v1). A failed call raises ``TextgenError``,
whose ``code`` is the gRPC status code name and whose ``str()`` is ``"CODE: message"``.
This package imports only the generated code, the option schema read from it (textgen.schema and
textgen.args, which import nothing else), grpc, tqdm and the standard library.
"""
from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from textgen import schema
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
UNARY_TIMEOUT_S = 60.0
UPLOAD_CHUNK_BYTES = 1 << 20  # under the server's 4 MiB message limit
MAX_RESUMES = 3  # a stream whose server went away continues on another this many times at most
RESUME_WAIT_S = 10.0  # how long a resume waits for the channel to reach a server
# Calls spread over every address the server name resolves to (replicas behind a headless service,
# or "ipv4:host:port,host:port"); with one address this is the same as gRPC's default.
CHANNEL_OPTIONS = [("grpc.lb_policy_name", "round_robin")]
TRAIN_OPTIONS = schema.NAMES  # as the proto's TrainOptions declares them
# How gRPC words a stream that the other end (a balancer that lost its server) reset: never a server's own status.
_RESET_IN_TRANSIT = "Received RST_STREAM"
# How gRPC itself words a server it could not reach (a server's own UNAVAILABLE says something else).
_CONNECT_FAILURES = ("failed to connect", "dns resolution failed", "connections to all backends failing",
                     "socket closed", "connection refused", "empty address list")


class TextgenError(Exception):
    """A call that failed: ``code`` (e.g. "NOT_FOUND") and the server's ``message``; ``retry_after``:
    the seconds a RESOURCE_EXHAUSTED call (a key past a limit) says to wait, else None."""

    def __init__(self, code: str, message: str, retry_after: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retry_after = code, message, retry_after


class Client:
    """A connection to a textgen server (``server`` defaults to $TEXTGEN_SERVER or 127.0.0.1:50051).

    ``token`` (default $TEXTGEN_TOKEN) is sent as ``authorization: Bearer <token>``; with ``ca``
    (default $TEXTGEN_CA_CERT, a PEM file) the connection uses TLS and checks the server against it.
    """

    def __init__(self, server: str | None = None, token: str | None = None, ca: str | os.PathLike | None = None):
        self.server = server or os.environ.get("TEXTGEN_SERVER") or DEFAULT_SERVER
        token = token if token is not None else os.environ.get("TEXTGEN_TOKEN", "")
        ca = ca if ca is not None else os.environ.get("TEXTGEN_CA_CERT", "")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if ca:
            try:
                root = Path(ca).read_bytes()
            except OSError as exc:
                raise TextgenError("INVALID_ARGUMENT", f"cannot read the CA certificate {ca} "
                                                       f"(TEXTGEN_CA_CERT): {exc.strerror}") from None
            self._channel = grpc.secure_channel(self.server, grpc.ssl_channel_credentials(root_certificates=root),
                                                options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(self.server, options=CHANNEL_OPTIONS)
        self._textgen = textgen_pb2_grpc.TextGenStub(self._channel)
        self._training = textgen_pb2_grpc.TrainingStub(self._channel)
        self._keys = textgen_pb2_grpc.KeysStub(self._channel)

    def with_token(self, token: str) -> "Client":
        """A client on this one's connection that sends ``token`` instead (the web gateway forwards
        each caller's token this way, without a connection per caller). Close only the original."""
        other = copy.copy(self)
        other._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return other

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- generation and models -----------------------------------------------------------------

    def generate(self, model: str, prompt: str = "", length: int = 200, temperature: float = 0.5,
                 seed: int | None = None, version: int = 0, top_k: int = 0, top_p: float | None = None,
                 stop: list[str] | tuple = (), logprobs: bool = False, presence_penalty: float | None = None,
                 frequency_penalty: float | None = None, repetition_penalty: float | None = None,
                 logit_bias: dict | None = None, top_logprobs: int = 0) -> "Generation":
        """Stream ``length`` characters from ``model``: iterate the result for text chunks; its
        ``start`` (model, version, prompt, seed used) and ``end`` (reason, characters) fill in as
        they arrive.

        ``top_k`` (0: off) and ``top_p`` (None or 1: off) narrow each draw to the most likely
        characters after temperature; the stream ends just before the first of the ``stop`` strings
        (up to 4, 1-64 characters) it generates, with ``end.reason`` STOP_REASON_STOP; with
        ``logprobs`` the result's ``logprobs`` fills with ln p of each character, in step with the text.
        ``presence_penalty``, ``frequency_penalty`` ([-2, 2]), ``repetition_penalty`` ((0, 10]) and
        ``logit_bias`` ({charset index or character: [-100, 100]}; -100 bans it) act on the model's
        log-probabilities before temperature (GenerateRequest says how). With ``top_logprobs`` N
        (0-20) the result's ``top_logprobs`` fills with the N likeliest characters at each place
        (``Alternatives``: ``characters``, ``logprobs``), in step with the text.
        """
        bias = logit_bias or {}
        request = _message(pb.GenerateRequest, model=model, version=version, prompt=prompt, length=length,
                           temperature=temperature, seed=seed, top_k=top_k, top_p=top_p, stop=list(stop),
                           logprobs=logprobs, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                           repetition_penalty=repetition_penalty,
                           logit_bias={k: v for k, v in bias.items() if isinstance(k, int)},
                           logit_bias_chars={k: v for k, v in bias.items() if isinstance(k, str)},
                           top_logprobs=top_logprobs)
        return Generation(request, self)

    def score(self, model: str, text: str, version: int = 0, per_character: bool = False,
              top_logprobs: int = 0, top_logprobs_skip: int = 0) -> pb.ScoreResponse:
        """``text``'s log-likelihood under ``model``: ``log_likelihood`` (nats), ``bits_per_char``,
        ``characters`` scored (all but the first) and, with ``per_character``, ``logprobs`` of
        ``text[1:]``; with ``top_logprobs`` N, the N likeliest characters at each of those positions
        after the first ``top_logprobs_skip``.
        Rank models by ``bits_per_char`` (lowest: the likeliest author)."""
        request = _message(pb.ScoreRequest, model=model, version=version, text=text, per_character=per_character,
                           top_logprobs=top_logprobs, top_logprobs_skip=top_logprobs_skip)
        return self._unary(self._textgen.Score, request)

    def list_models(self) -> list[pb.ModelSummary]:
        return list(self._unary(self._textgen.ListModels, pb.ListModelsRequest()).models)

    def get_model(self, model: str, version: int = 0) -> pb.ModelInfo:
        return self._unary(self._textgen.GetModel, _message(pb.GetModelRequest, model=model, version=version))

    def delete_model(self, model: str, version: int = 0, all_versions: bool = False) -> list[int]:
        """Delete one version, or every version with ``all_versions``; returns the versions deleted."""
        request = _message(pb.DeleteModelRequest, model=model, version=version, all_versions=all_versions)
        return list(self._unary(self._textgen.DeleteModel, request).deleted_versions)

    # ---- training ------------------------------------------------------------------------------

    def submit_train(self, corpus: str = "", corpus_id: str = "", options: dict | None = None, model_name: str = "",
                     from_model: str = "", from_version: int = 0) -> pb.Job:
        """Enqueue a training job on a built-in ``corpus`` or an uploaded ``corpus_id``.

        ``options``: any of TRAIN_OPTIONS (``lstm_layer_sizes`` a list of ints); the rest take the
        trainer's defaults. ``model_name`` defaults to ``from_model`` or else the corpus.
        """
        options = dict(options or {})
        unknown = sorted(set(options) - set(TRAIN_OPTIONS))
        if unknown:
            raise TextgenError("INVALID_ARGUMENT", f"unknown training options {', '.join(unknown)}; "
                                                   f"known: {', '.join(TRAIN_OPTIONS)}")
        request = _message(pb.SubmitTrainRequest,
                           options=_message(pb.TrainOptions, **{k: v for k, v in options.items() if v is not None}),
                           model_name=model_name, from_model=from_model, from_version=from_version)
        if corpus_id:
            request.corpus_id = corpus_id
        if corpus:
            request.corpus = corpus
        return self._unary(self._training.SubmitTrain, request)

    def get_job(self, job_id: str) -> pb.Job:
        return self._unary(self._training.GetJob, pb.GetJobRequest(job_id=job_id))

    def list_jobs(self, limit: int = 0) -> list[pb.Job]:
        """The newest jobs first (``limit`` 0: the server's default, 50)."""
        return list(self._unary(self._training.ListJobs, _message(pb.ListJobsRequest, limit=limit)).jobs)

    def cancel_job(self, job_id: str) -> pb.Job:
        return self._unary(self._training.CancelJob, pb.CancelJobRequest(job_id=job_id))

    def watch_job(self, job_id: str) -> "JobWatch":
        """Every event of the job from the first, then live ones; ends when the job ends. Iterate the
        result; its ``cancel()`` ends the watch from another thread."""
        return JobWatch(self._training.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=self._metadata), self)

    def list_corpora(self) -> list[pb.Corpus]:
        return list(self._unary(self._training.ListCorpora, pb.ListCorporaRequest()).corpora)

    def upload_corpus(self, path: str | os.PathLike, name: str = "") -> pb.Corpus:
        """Upload a UTF-8 text file; returns the stored corpus (its ``id`` is what submit_train takes)."""
        path = Path(path)
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise TextgenError("INVALID_ARGUMENT", f"cannot read {path}: {exc.strerror}") from None

        def chunks():
            with handle:
                first = True
                while True:
                    data = handle.read(UPLOAD_CHUNK_BYTES)
                    if not data and not first:
                        return
                    yield pb.UploadCorpusChunk(name=(name or path.name) if first else "", data=data)
                    first = False

        try:
            return self._training.UploadCorpus(chunks(), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def import_tfjs(self, model_json: str | os.PathLike, corpus: str = "", corpus_id: str = "",
                    model_name: str = "") -> pb.ImportTfjsResponse:
        """Import the original's model.json, its weights files beside it (as its weightsManifest names
        them), with the text it was trained on (a built-in corpus or an upload id); served at once."""
        path = Path(model_json)
        try:
            document = path.read_text(encoding="utf-8")
            manifest = json.loads(document).get("weightsManifest") or []
            files = [path.parent / Path(str(name)).name for group in manifest for name in group.get("paths") or []]
            for file in files:
                if not file.is_file():
                    raise TextgenError("INVALID_ARGUMENT", f"the weights file {file} named by {path} is missing")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            raise TextgenError("INVALID_ARGUMENT", f"cannot read {path} as a model.json: {exc}") from None

        def chunks():
            yield pb.ImportTfjsChunk(model_name=model_name, corpus=corpus or None, corpus_id=corpus_id or None,
                                     model_json=document)
            for file in files:
                with file.open("rb") as handle:
                    while data := handle.read(UPLOAD_CHUNK_BYTES):
                        yield pb.ImportTfjsChunk(weights=data)

        try:
            return self._training.ImportTfjs(chunks(), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def export_tfjs(self, model: str, out: str | os.PathLike, version: int = 0, corpus: str = "",
                    corpus_id: str = "") -> Path:
        """Write ``model`` as ``out/model.json`` and ``out/weights.bin`` (TensorFlow.js's layers format);
        with a corpus, its charset in the original's order for that text. Returns the model.json path."""
        request = _message(pb.ExportTfjsRequest, model=model, version=version, corpus=corpus or None,
                           corpus_id=corpus_id or None)
        try:
            chunks = list(self._textgen.ExportTfjs(request, metadata=self._metadata, timeout=UNARY_TIMEOUT_S))
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.bin").write_bytes(b"".join(chunk.weights for chunk in chunks))
        (out / "model.json").write_text(chunks[0].model_json, encoding="utf-8")
        return out / "model.json"

    # ---- keys ----------------------------------------------------------------------------------

    def whoami(self) -> pb.KeyInfo:
        """The key this client sends: id, name, scopes, limits, and the server's auth mode."""
        return self._unary(self._keys.WhoAmI, pb.WhoAmIRequest())

    def usage(self, key: str = "") -> pb.Usage:
        """A key's usage (this client's key by default; another's needs scope admin)."""
        return self._unary(self._keys.GetUsage, pb.GetUsageRequest(key=key))

    def create_key(self, scopes, name: str = "", **limits) -> pb.CreatedKey:
        """A new key (admin): ``scopes`` like ["generate", "train"]; ``limits``: max_streams,
        chars_per_minute, max_jobs, upload_bytes_per_day (unset: the server's defaults; 0: none)."""
        return self._unary(self._keys.CreateKey, _message(
            pb.CreateKeyRequest, name=name, scopes=list(scopes),
            limits=_message(pb.KeyLimits, **{k: v for k, v in limits.items() if v is not None})))

    def list_keys(self) -> list[pb.KeyInfo]:
        return list(self._unary(self._keys.ListKeys, pb.ListKeysRequest()).keys)

    def revoke_key(self, key: str) -> pb.KeyInfo:
        return self._unary(self._keys.RevokeKey, pb.RevokeKeyRequest(key=key))

    # ---- plumbing ------------------------------------------------------------------------------

    def _unary(self, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=UNARY_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> TextgenError:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else "UNKNOWN"
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and details.lower().startswith(_CONNECT_FAILURES):
            details = f"cannot reach the textgen server at {self.server} ({details.strip()})"
        return TextgenError(name, " ".join(details.split()), retry_after(exc))


def retry_after(exc: grpc.RpcError) -> int | None:
    """The ``retry-after`` seconds in a failed call's trailing metadata, if any."""
    try:
        trailing = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001  (an error raised before the call had metadata)
        return None
    for key, value in trailing:
        if key == "retry-after" and str(value).isdigit():
            return int(value)
    return None


def _message(message_class, **fields):
    """``message_class(**fields)``; a value the message cannot hold (a negative seed, a length beyond
    int32, a string for a number) is an INVALID_ARGUMENT here rather than a ValueError."""
    try:
        return message_class(**fields)
    except (ValueError, TypeError) as exc:
        raise TextgenError("INVALID_ARGUMENT", f"{message_class.DESCRIPTOR.name}: {exc}") from None


class Generation:
    """Text chunks of one Generate stream; ``start``, ``end`` and ``logprobs`` (when asked for: one
    per character received) are set as they arrive.

    A stream whose server goes away (UNAVAILABLE, a stream reset in transit by a balancer whose server
    died, or a drain that ended it with STOP_REASON_SHUTDOWN) continues on another server, up to MAX_RESUMES times: the same request with ``resume_offset`` (the
    characters received), so the text is exactly the one an unbroken stream would have sent, no
    character repeated or lost. ``resumes`` counts them; ``start`` stays the first stream's and
    ``end.characters`` counts every character received."""

    def __init__(self, request: pb.GenerateRequest, client: Client):
        self._request, self._client = request, client
        self._responses = client._textgen.Generate(request, metadata=client._metadata)
        self._received: list[str] = []
        self._count = 0  # characters received, all streams
        self.resumes = 0
        self.start: pb.StreamStart | None = None
        self.end: pb.StreamEnd | None = None
        self.logprobs: list[float] = []
        self.top_logprobs: list[pb.Alternatives] = []

    def __iter__(self) -> Iterator[str]:
        try:
            while True:
                try:
                    for response in self._responses:
                        if response.HasField("start") and self.start is None:
                            self.start = response.start
                        self.logprobs.extend(response.logprobs)
                        self.top_logprobs.extend(response.top_logprobs)
                        if response.text:
                            self._received.append(response.text)
                            self._count += len(response.text)
                            yield response.text
                        if response.HasField("end"):
                            self.end = pb.StreamEnd(reason=response.end.reason, characters=self._count)
                    if not self._resumable(None):
                        return
                except grpc.RpcError as exc:
                    if not self._resumable(exc):
                        raise
                self._resume()
        except grpc.RpcError as exc:
            raise self._client._error(exc) from None
        finally:
            if self.end is None:  # the caller stopped early: free the server's stream slot now
                self._responses.cancel()

    def _resumable(self, exc: grpc.RpcError | None) -> bool:
        """Whether the stream broke with characters still to come, and may continue elsewhere: its
        call failed with UNAVAILABLE, or was reset in transit (a balancer whose server died mid-stream
        resets the stream: INTERNAL, "Received RST_STREAM"), or it ended because its server was
        shutting down."""
        if self.resumes >= MAX_RESUMES:
            return False
        if exc is not None:
            if not hasattr(exc, "code"):
                return False
            return exc.code() == grpc.StatusCode.UNAVAILABLE or \
                (exc.code() == grpc.StatusCode.INTERNAL and _RESET_IN_TRANSIT in (exc.details() or ""))
        return (self.end is not None and self.end.reason == pb.STOP_REASON_SHUTDOWN
                and self._request.resume_offset + self._count < self._request.length)

    def _resume(self) -> None:
        """Continue on whichever server the channel reaches next (nothing received: the same request)."""
        self.resumes += 1
        self.end = None
        time.sleep(0.1 * 2 ** (self.resumes - 1))  # 0.1, 0.2, 0.4 s: a drained server's port may still be open
        request = pb.GenerateRequest()
        request.CopyFrom(self._request)
        if self.start is not None:
            received = "".join(self._received)
            self._received = [received]
            request.prompt, request.seed, request.version = self.start.prompt + received, self.start.seed, self.start.version
            request.resume_offset = self._request.resume_offset + len(received)
        try:
            grpc.channel_ready_future(self._client._channel).result(timeout=RESUME_WAIT_S)
        except grpc.FutureTimeoutError:
            pass  # the call below fails as UNAVAILABLE, and says so
        self._responses = self._client._textgen.Generate(request, metadata=self._client._metadata)

    @property
    def text(self) -> str:
        """All of the text (consumes the stream)."""
        return "".join(self)

    def cancel(self) -> None:
        self._responses.cancel()


class JobWatch:
    """The events of one WatchJob stream (``pb.JobEvent``), in order."""

    def __init__(self, responses, client: Client):
        self._responses, self._client = responses, client

    def __iter__(self) -> Iterator[pb.JobEvent]:
        try:
            yield from self._responses
        except grpc.RpcError as exc:
            raise self._client._error(exc) from None
        finally:
            self._responses.cancel()

    def cancel(self) -> None:
        self._responses.cancel()
