"""The TextGen gRPC service: a thin adapter from requests to the model store and the decode engine.

Every call that names a model looks at that model's folder first (``fresh``): replicas share one
``models/``, so a version published or deleted through any of them is served, or refused, by all of
them at once, "latest" included, not at their next rescan."""
from __future__ import annotations

import threading

from server import engine as engine_module
from server import metrics, scoring, tfjs_models
from server.auth import caller_of
from server.corpora import Corpora
from server.engine import Engine, SamplingParams
from server.errors import request_errors
from server.limits import Quota
from server.store import ModelStore, ServedModel
from server.usage import Usage
from textgen.v1 import textgen_pb2 as pb
from textgen.v1 import textgen_pb2_grpc

STOP_REASONS = {engine_module.LENGTH: pb.STOP_REASON_LENGTH, engine_module.SHUTDOWN: pb.STOP_REASON_SHUTDOWN,
                engine_module.STOP: pb.STOP_REASON_STOP}


class TextGenServicer(textgen_pb2_grpc.TextGenServicer):
    def __init__(self, store: ModelStore, engine: Engine, max_score_chars: int = 100_000,
                 corpora: Corpora | None = None, quota: Quota | None = None, usage: Usage | None = None):
        self.store = store
        self.engine = engine
        self.max_score_chars = max_score_chars
        self.corpora = corpora or Corpora()
        self.quota = quota or Quota(None, Quota.NO_LIMITS)
        self.usage = usage or Usage(None)

    def Generate(self, request, context):
        caller = caller_of(context)
        with request_errors(context):
            model = self.store.get(request.model, request.version, fresh=True)
            params = SamplingParams(
                length=request.length, temperature=request.temperature,
                seed=request.seed if request.HasField("seed") else None, top_k=request.top_k,
                top_p=request.top_p if request.HasField("top_p") else 1.0, stop=tuple(request.stop),
                logprobs=request.logprobs, resume_offset=request.resume_offset,
                presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
                repetition_penalty=request.repetition_penalty if request.HasField("repetition_penalty") else 1.0,
                logit_bias=tuple(request.logit_bias.items()), logit_bias_chars=tuple(request.logit_bias_chars.items()),
                top_logprobs=request.top_logprobs)
            lease = self.quota.open_stream(caller, max(0, params.length - params.resume_offset))
            try:
                stream = self.engine.submit(model, request.prompt, params)
            except BaseException:
                lease.close(0)
                raise
        ended = threading.Lock()

        def end():  # once, whichever comes first: the call's end or the generator's
            if ended.acquire(blocking=False):
                stream.cancel()
                lease.close(stream.produced)
                self.usage.generated(caller.id, stream.produced)

        # Runs when the call ends for any reason: a client that cancels or runs out of time frees
        # its slot at once, and the engine drops its row by the next step.
        context.add_callback(end)
        yield pb.GenerateResponse(start=pb.StreamStart(
            model=model.name, version=model.version, prompt=stream.prompt, seed=stream.seed))
        try:
            with request_errors(context):
                for chunk in stream.chunks():
                    yield pb.GenerateResponse(text=chunk.text, logprobs=chunk.logprobs, top_logprobs=[
                        pb.Alternatives(characters=chars, logprobs=values) for chars, values in chunk.top])
        finally:
            end()  # frees the slot when the generator is closed early; the key's place and characters too
        if stream.stop_reason in STOP_REASONS:
            yield pb.GenerateResponse(end=pb.StreamEnd(
                reason=STOP_REASONS[stream.stop_reason], characters=stream.produced))

    def Score(self, request, context):
        with request_errors(context):
            model = self.store.get(request.model, request.version, fresh=True)
            score = scoring.score_text(model, request.text, self.max_score_chars, request.top_logprobs,
                                       request.top_logprobs_skip)
        metrics.observe_score(model.name, score.characters)
        self.usage.scored(caller_of(context).id, score.characters)
        return pb.ScoreResponse(model=model.name, version=model.version, characters=score.characters,
                                log_likelihood=score.log_likelihood, bits_per_char=score.bits_per_char,
                                logprobs=score.logprobs.tolist() if request.per_character else [],
                                top_logprobs=[pb.Alternatives(characters=chars, logprobs=values.tolist())
                                              for chars, values in score.top])

    def ListModels(self, request, context):
        self.store.rescan()  # a version published a moment ago is listed (and served) now, not at the next scan
        return pb.ListModelsResponse(models=[
            pb.ModelSummary(name=name, versions=[m.version for m in versions], latest=model_info(versions[-1]))
            for name, versions in self.store.list_models()
        ])

    def GetModel(self, request, context):
        with request_errors(context):
            return model_info(self.store.get(request.model, request.version, fresh=True))

    def ExportTfjs(self, request, context):
        with request_errors(context):
            model = self.store.get(request.model, request.version, fresh=True)
            parts = tfjs_models.export_tfjs(model.path, self.store.models_dir, self.corpora, request.corpus,
                                            request.corpus_id)
            first = next(parts)  # errors surface before the stream starts
        yield pb.TfjsChunk(model_json=first[0])
        for _document, weights in parts:
            yield pb.TfjsChunk(weights=weights)

    def DeleteModel(self, request, context):
        with request_errors(context):
            deleted = self.store.delete(request.model, request.version, request.all_versions)
        return pb.DeleteModelResponse(deleted_versions=deleted)


def model_info(model: ServedModel) -> pb.ModelInfo:
    """A model's meta.json as the API shows it (fields a bundle lacks stay at their defaults)."""
    meta = model.meta
    corpus = meta.get("corpus") or {}
    if isinstance(corpus, str):
        corpus = {"name": corpus}
    numbers = {key: float(meta[key]) for key in ("loss", "val_loss", "bits_per_char", "created")
               if meta.get(key) is not None}
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        charset_size=len(model.charset),
        charset=model.charset.chars,
        sample_len=model.sample_len,
        lstm_layer_sizes=[int(units) for units in meta.get("lstm_layer_sizes") or []],
        corpus=str(corpus.get("name") or ""),
        corpus_sha256=str(corpus.get("sha256") or ""),
        objective=str(meta.get("objective") or ""),
        epochs=int(meta.get("epochs") or 0),
        job_id=str(meta.get("job_id") or ""),
        trained_by=str(meta.get("trained_by") or ""),
        chat_roles=_chat_roles(meta),
        **numbers,
    )


def _chat_roles(meta: dict) -> dict[str, str]:
    """meta.json's ``chat.roles`` (system, user, assistant -> a name), the strings only."""
    roles = (meta.get("chat") or {}).get("roles") if isinstance(meta.get("chat"), dict) else None
    if not isinstance(roles, dict):
        return {}
    return {k: v for k, v in roles.items() if k in ("system", "user", "assistant") and isinstance(v, str)}
