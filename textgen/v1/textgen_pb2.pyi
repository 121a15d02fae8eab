from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_LENGTH: _ClassVar[StopReason]
    STOP_REASON_SHUTDOWN: _ClassVar[StopReason]
    STOP_REASON_STOP: _ClassVar[StopReason]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_STARTED: _ClassVar[JobState]
    JOB_STATE_FINISHED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_LENGTH: StopReason
STOP_REASON_SHUTDOWN: StopReason
STOP_REASON_STOP: StopReason
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_STARTED: JobState
JOB_STATE_FINISHED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
OPTION_FIELD_NUMBER: _ClassVar[int]
option: _descriptor.FieldDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("model", "version", "prompt", "length", "temperature", "seed", "top_k", "top_p", "stop", "logprobs", "resume_offset", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "logit_bias_chars", "top_logprobs")
    class LogitBiasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class LogitBiasCharsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    RESUME_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_FIELD_NUMBER: _ClassVar[int]
    LOGIT_BIAS_CHARS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    prompt: str
    length: int
    temperature: float
    seed: int
    top_k: int
    top_p: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    logprobs: bool
    resume_offset: int
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    logit_bias: _containers.ScalarMap[int, float]
    logit_bias_chars: _containers.ScalarMap[str, float]
    top_logprobs: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., prompt: _Optional[str] = ..., length: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., logprobs: _Optional[bool] = ..., resume_offset: _Optional[int] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., logit_bias: _Optional[_Mapping[int, float]] = ..., logit_bias_chars: _Optional[_Mapping[str, float]] = ..., top_logprobs: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "start", "end", "logprobs", "top_logprobs")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    text: str
    start: StreamStart
    end: StreamEnd
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    top_logprobs: _containers.RepeatedCompositeFieldContainer[Alternatives]
    def __init__(self, text: _Optional[str] = ..., start: _Optional[_Union[StreamStart, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ..., logprobs: _Optional[_Iterable[float]] = ..., top_logprobs: _Optional[_Iterable[_Union[Alternatives, _Mapping]]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("model", "version", "prompt", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    prompt: str
    seed: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., prompt: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("reason", "characters")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    reason: StopReason
    characters: int
    def __init__(self, reason: _Optional[_Union[StopReason, str]] = ..., characters: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "versions", "latest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    latest: ModelInfo
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., latest: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "charset_size", "charset", "sample_len", "lstm_layer_sizes", "corpus", "corpus_sha256", "loss", "val_loss", "bits_per_char", "created", "objective", "epochs", "job_id", "trained_by", "chat_roles")
    class ChatRolesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHARSET_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHARSET_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_LEN_FIELD_NUMBER: _ClassVar[int]
    LSTM_LAYER_SIZES_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    CORPUS_SHA256_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_CHAR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINED_BY_FIELD_NUMBER: _ClassVar[int]
    CHAT_ROLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    charset_size: int
    charset: str
    sample_len: int
    lstm_layer_sizes: _containers.RepeatedScalarFieldContainer[int]
    corpus: str
    corpus_sha256: str
    loss: float
    val_loss: float
    bits_per_char: float
    created: float
    objective: str
    epochs: int
    job_id: str
    trained_by: str
    chat_roles: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., charset_size: _Optional[int] = ..., charset: _Optional[str] = ..., sample_len: _Optional[int] = ..., lstm_layer_sizes: _Optional[_Iterable[int]] = ..., corpus: _Optional[str] = ..., corpus_sha256: _Optional[str] = ..., loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., bits_per_char: _Optional[float] = ..., created: _Optional[float] = ..., objective: _Optional[str] = ..., epochs: _Optional[int] = ..., job_id: _Optional[str] = ..., trained_by: _Optional[str] = ..., chat_roles: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model", "version", "all_versions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    all_versions: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., all_versions: _Optional[bool] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("deleted_versions",)
    DELETED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_versions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, deleted_versions: _Optional[_Iterable[int]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model", "version", "text", "per_character", "top_logprobs", "top_logprobs_skip")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PER_CHARACTER_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_SKIP_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    text: str
    per_character: bool
    top_logprobs: int
    top_logprobs_skip: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., text: _Optional[str] = ..., per_character: _Optional[bool] = ..., top_logprobs: _Optional[int] = ..., top_logprobs_skip: _Optional[int] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("model", "version", "characters", "log_likelihood", "bits_per_char", "logprobs", "top_logprobs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    LOG_LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_CHAR_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    characters: int
    log_likelihood: float
    bits_per_char: float
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    top_logprobs: _containers.RepeatedCompositeFieldContainer[Alternatives]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., characters: _Optional[int] = ..., log_likelihood: _Optional[float] = ..., bits_per_char: _Optional[float] = ..., logprobs: _Optional[_Iterable[float]] = ..., top_logprobs: _Optional[_Iterable[_Union[Alternatives, _Mapping]]] = ...) -> None: ...

class Alternatives(_message.Message):
    __slots__ = ("characters", "logprobs")
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    characters: str
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, characters: _Optional[str] = ..., logprobs: _Optional[_Iterable[float]] = ...) -> None: ...

class OptionInfo(_message.Message):
    __slots__ = ("help", "default", "choices", "flag", "aliases", "metavar")
    HELP_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    METAVAR_FIELD_NUMBER: _ClassVar[int]
    help: str
    default: str
    choices: _containers.RepeatedScalarFieldContainer[str]
    flag: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    metavar: str
    def __init__(self, help: _Optional[str] = ..., default: _Optional[str] = ..., choices: _Optional[_Iterable[str]] = ..., flag: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., metavar: _Optional[str] = ...) -> None: ...

class TrainOptions(_message.Message):
    __slots__ = ("lstm_layer_sizes", "sample_len", "sample_step", "learning_rate", "epochs", "examples_per_epoch", "batch_size", "validation_split", "display_length", "objective", "seed", "recipe", "optimizer", "lr_schedule", "warmup_steps", "clip_norm", "dropout", "precision", "time_budget_minutes", "weight_decay")
    LSTM_LAYER_SIZES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_LEN_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_STEP_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    lstm_layer_sizes: _containers.RepeatedScalarFieldContainer[int]
    sample_len: int
    sample_step: int
    learning_rate: float
    epochs: int
    examples_per_epoch: int
    batch_size: int
    validation_split: float
    display_length: int
    objective: str
    seed: int
    recipe: str
    optimizer: str
    lr_schedule: str
    warmup_steps: int
    clip_norm: float
    dropout: float
    precision: str
    time_budget_minutes: float
    weight_decay: float
    def __init__(self, lstm_layer_sizes: _Optional[_Iterable[int]] = ..., sample_len: _Optional[int] = ..., sample_step: _Optional[int] = ..., learning_rate: _Optional[float] = ..., epochs: _Optional[int] = ..., examples_per_epoch: _Optional[int] = ..., batch_size: _Optional[int] = ..., validation_split: _Optional[float] = ..., display_length: _Optional[int] = ..., objective: _Optional[str] = ..., seed: _Optional[int] = ..., recipe: _Optional[str] = ..., optimizer: _Optional[str] = ..., lr_schedule: _Optional[str] = ..., warmup_steps: _Optional[int] = ..., clip_norm: _Optional[float] = ..., dropout: _Optional[float] = ..., precision: _Optional[str] = ..., time_budget_minutes: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class SubmitTrainRequest(_message.Message):
    __slots__ = ("corpus", "corpus_id", "options", "model_name", "from_model", "from_version")
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_MODEL_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    corpus: str
    corpus_id: str
    options: TrainOptions
    model_name: str
    from_model: str
    from_version: int
    def __init__(self, corpus: _Optional[str] = ..., corpus_id: _Optional[str] = ..., options: _Optional[_Union[TrainOptions, _Mapping]] = ..., model_name: _Optional[str] = ..., from_model: _Optional[str] = ..., from_version: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "corpus", "model_name", "options", "model_version", "error", "enqueued_at", "started_at", "ended_at", "epoch", "epochs", "loss", "val_loss", "attempts", "from_model", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FROM_MODEL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    corpus: str
    model_name: str
    options: TrainOptions
    model_version: int
    error: str
    enqueued_at: float
    started_at: float
    ended_at: float
    epoch: int
    epochs: int
    loss: float
    val_loss: float
    attempts: int
    from_model: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., corpus: _Optional[str] = ..., model_name: _Optional[str] = ..., options: _Optional[_Union[TrainOptions, _Mapping]] = ..., model_version: _Optional[int] = ..., error: _Optional[str] = ..., enqueued_at: _Optional[float] = ..., started_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., attempts: _Optional[int] = ..., from_model: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "id", "time", "queued", "started", "batch", "epoch", "checkpoint", "finished", "failed", "cancelled")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    id: str
    time: float
    queued: Queued
    started: Started
    batch: BatchProgress
    epoch: EpochEnd
    checkpoint: CheckpointSaved
    finished: Finished
    failed: Failed
    cancelled: Cancelled
    def __init__(self, job_id: _Optional[str] = ..., id: _Optional[str] = ..., time: _Optional[float] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., batch: _Optional[_Union[BatchProgress, _Mapping]] = ..., epoch: _Optional[_Union[EpochEnd, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointSaved, _Mapping]] = ..., finished: _Optional[_Union[Finished, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ..., cancelled: _Optional[_Union[Cancelled, _Mapping]] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Started(_message.Message):
    __slots__ = ("attempt", "resumed_from_epoch", "epochs", "batches_per_epoch")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    resumed_from_epoch: int
    epochs: int
    batches_per_epoch: int
    def __init__(self, attempt: _Optional[int] = ..., resumed_from_epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., batches_per_epoch: _Optional[int] = ...) -> None: ...

class BatchProgress(_message.Message):
    __slots__ = ("epoch", "batch", "batches", "loss")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    batch: int
    batches: int
    loss: float
    def __init__(self, epoch: _Optional[int] = ..., batch: _Optional[int] = ..., batches: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class EpochEnd(_message.Message):
    __slots__ = ("epoch", "epochs", "loss", "val_loss", "bits_per_char", "examples_per_second", "samples")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    BITS_PER_CHAR_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs: int
    loss: float
    val_loss: float
    bits_per_char: float
    examples_per_second: float
    samples: _containers.RepeatedCompositeFieldContainer[TemperatureSample]
    def __init__(self, epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., bits_per_char: _Optional[float] = ..., examples_per_second: _Optional[float] = ..., samples: _Optional[_Iterable[_Union[TemperatureSample, _Mapping]]] = ...) -> None: ...

class TemperatureSample(_message.Message):
    __slots__ = ("temperature", "text")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    text: str
    def __init__(self, temperature: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class CheckpointSaved(_message.Message):
    __slots__ = ("epoch",)
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    def __init__(self, epoch: _Optional[int] = ...) -> None: ...

class Finished(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Cancelled(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCorporaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCorporaResponse(_message.Message):
    __slots__ = ("corpora",)
    CORPORA_FIELD_NUMBER: _ClassVar[int]
    corpora: _containers.RepeatedCompositeFieldContainer[Corpus]
    def __init__(self, corpora: _Optional[_Iterable[_Union[Corpus, _Mapping]]] = ...) -> None: ...

class Corpus(_message.Message):
    __slots__ = ("id", "name", "builtin", "size", "sha256", "available")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    builtin: bool
    size: int
    sha256: str
    available: bool
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., builtin: _Optional[bool] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., available: _Optional[bool] = ...) -> None: ...

class UploadCorpusChunk(_message.Message):
    __slots__ = ("name", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExportTfjsRequest(_message.Message):
    __slots__ = ("model", "version", "corpus", "corpus_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    corpus: str
    corpus_id: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., corpus: _Optional[str] = ..., corpus_id: _Optional[str] = ...) -> None: ...

class TfjsChunk(_message.Message):
    __slots__ = ("model_json", "weights")
    MODEL_JSON_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model_json: str
    weights: bytes
    def __init__(self, model_json: _Optional[str] = ..., weights: _Optional[bytes] = ...) -> None: ...

class ImportTfjsChunk(_message.Message):
    __slots__ = ("model_name", "corpus", "corpus_id", "model_json", "weights")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    CORPUS_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_JSON_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    corpus: str
    corpus_id: str
    model_json: str
    weights: bytes
    def __init__(self, model_name: _Optional[str] = ..., corpus: _Optional[str] = ..., corpus_id: _Optional[str] = ..., model_json: _Optional[str] = ..., weights: _Optional[bytes] = ...) -> None: ...

class ImportTfjsResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "charset_size", "sample_len", "lstm_layer_sizes")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHARSET_SIZE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_LEN_FIELD_NUMBER: _ClassVar[int]
    LSTM_LAYER_SIZES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    charset_size: int
    sample_len: int
    lstm_layer_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., charset_size: _Optional[int] = ..., sample_len: _Optional[int] = ..., lstm_layer_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class KeyLimits(_message.Message):
    __slots__ = ("max_streams", "chars_per_minute", "max_jobs", "upload_bytes_per_day")
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    CHARS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_BYTES_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    max_streams: int
    chars_per_minute: int
    max_jobs: int
    upload_bytes_per_day: int
    def __init__(self, max_streams: _Optional[int] = ..., chars_per_minute: _Optional[int] = ..., max_jobs: _Optional[int] = ..., upload_bytes_per_day: _Optional[int] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("id", "name", "scopes", "limits", "created", "source", "auth")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    limits: KeyLimits
    created: float
    source: str
    auth: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[KeyLimits, _Mapping]] = ..., created: _Optional[float] = ..., source: _Optional[str] = ..., auth: _Optional[str] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "scopes", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    limits: KeyLimits
    def __init__(self, name: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[KeyLimits, _Mapping]] = ...) -> None: ...

class CreatedKey(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: KeyInfo
    secret: str
    def __init__(self, key: _Optional[_Union[KeyInfo, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class RequestCount(_message.Message):
    __slots__ = ("method", "code", "count")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    method: str
    code: str
    count: int
    def __init__(self, method: _Optional[str] = ..., code: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("key_id", "requests", "generated_characters", "scored_characters", "training_seconds", "upload_bytes", "upload_bytes_today", "open_streams", "active_jobs", "limits")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    SCORED_CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_BYTES_TODAY_FIELD_NUMBER: _ClassVar[int]
    OPEN_STREAMS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    requests: _containers.RepeatedCompositeFieldContainer[RequestCount]
    generated_characters: int
    scored_characters: int
    training_seconds: float
    upload_bytes: int
    upload_bytes_today: int
    open_streams: int
    active_jobs: int
    limits: KeyLimits
    def __init__(self, key_id: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[RequestCount, _Mapping]]] = ..., generated_characters: _Optional[int] = ..., scored_characters: _Optional[int] = ..., training_seconds: _Optional[float] = ..., upload_bytes: _Optional[int] = ..., upload_bytes_today: _Optional[int] = ..., open_streams: _Optional[int] = ..., active_jobs: _Optional[int] = ..., limits: _Optional[_Union[KeyLimits, _Mapping]] = ...) -> None: ...
