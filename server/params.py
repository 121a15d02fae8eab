"""One request's generation controls, in one frozen object that checks itself when it is made.

The entry points build a ``SamplingParams`` once (the gRPC service from a GenerateRequest) and the
engine takes it whole, so a new control is added here and travels everywhere. What a value can be
on its own is checked at birth; what depends on the server's limit or on the model (the length
against ``max_length``, ``top_k`` against the charset, a control the bundle cannot do) is checked by
the engine at submit, with ``check_limits`` and ``check_supported``: those rules live here too, but
they need what only the engine knows.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from server.errors import BadRequest, Unsupported, shown

MAX_SEED = 2**64 - 1
MAX_STOPS, MAX_STOP_CHARS = 4, 64
MAX_PENALTY, MAX_REPETITION, MAX_BIAS = 2.0, 10.0, 100.0
MAX_TOP_LOGPROBS = 20  # as the bundle's advance_penalized reports (trainer/decode.py MAX_ALTERNATIVES)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Generate ``length`` characters at ``temperature`` (0: greedy) from ``seed`` (None: the engine
    draws one). ``top_k`` (0: off) and ``top_p`` (1: off) narrow each draw to the most likely
    characters after temperature; the stream ends before the first of the ``stop`` strings it
    generates; ``logprobs``: each chunk carries its characters' log-probabilities. ``resume_offset``
    (0: a new stream) continues a stream of these params that delivered that many characters (the
    prompt then ends with them): the text from there on is the same, character for character.

    Raises BadRequest when made with a temperature, seed, top_p or stop strings out of range; the
    values are kept as int, float, tuple of str and bool.
    """

    length: int
    temperature: float
    seed: int | None = None
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    resume_offset: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple = ()  # ((charset index, bias), ...)
    logit_bias_chars: tuple = ()  # ((character, bias), ...)
    top_logprobs: int = 0  # 0-MAX_TOP_LOGPROBS: the likeliest characters at each place, with logprobs

    @property
    def rich(self) -> bool:
        """Whether the stream needs the bundle's ``advance_penalized``: penalties, bias or alternatives."""
        return self.penalized or self.top_logprobs > 0

    @property
    def penalized(self) -> bool:
        """Whether a penalty or a bias is on (the stream then samples with textgen.sampling.penalized)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0
                    or self.logit_bias or self.logit_bias_chars)

    def bias_vector(self, charset) -> np.ndarray:
        """The logit bias as float32 ``[charset size]`` (an index and its character add up)."""
        bias = np.zeros([len(charset)], np.float32)
        for index, value in self.logit_bias:
            bias[index] += value
        for char, value in self.logit_bias_chars:
            bias[int(charset.encode(char)[0])] += value
        return bias

    def _check_penalties(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -MAX_PENALTY <= value <= MAX_PENALTY):
                raise BadRequest(f"{name} must be between -{MAX_PENALTY:g} and {MAX_PENALTY:g} (0 = off), got {value:.7g}")
        if not (math.isfinite(self.repetition_penalty) and 0 < self.repetition_penalty <= MAX_REPETITION):
            raise BadRequest(f"repetition_penalty must be in (0, {MAX_REPETITION:g}] (1 = off), "
                             f"got {self.repetition_penalty:.7g}")
        for key, value in (*self.logit_bias, *self.logit_bias_chars):
            if not (math.isfinite(value) and -MAX_BIAS <= value <= MAX_BIAS):
                raise BadRequest(f"logit_bias[{key!r}] must be between -{MAX_BIAS:g} and {MAX_BIAS:g} "
                                 f"(-{MAX_BIAS:g} bans it), got {value:.7g}")
        for char, _ in self.logit_bias_chars:
            if len(char) != 1:
                raise BadRequest(f"logit_bias_chars keys are single characters, got {shown(char)}")

    def __post_init__(self):
        stop = tuple(self.stop)
        self._check_penalties()
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.top_logprobs}")
        # Checked as given, so that a message echoes the value received; kept as plain types after.
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise BadRequest(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise BadRequest(f"seed must be between 0 and 2**64 - 1, got {self.seed}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise BadRequest(f"top_p must be a number in (0, 1] (1 = off), got {self.top_p:.7g}")
        if len(stop) > MAX_STOPS:
            raise BadRequest(f"at most {MAX_STOPS} stop strings are allowed, got {len(stop)}")
        for text in stop:
            if not 1 <= len(text) <= MAX_STOP_CHARS:
                raise BadRequest(f"a stop string must have 1 to {MAX_STOP_CHARS} characters, got {shown(text)} "
                                 f"({len(text)} characters)")
        if self.resume_offset < 0:
            raise BadRequest(f"resume_offset must be >= 0 (0 = a new stream), got {self.resume_offset}")
        if self.resume_offset and self.seed is None:
            raise BadRequest(f"resume_offset {self.resume_offset} needs the seed of the stream it continues "
                             "(its StreamStart.seed); without it the text would differ")
        plain = dict(length=int(self.length), temperature=float(self.temperature),
                     seed=None if self.seed is None else int(self.seed), top_k=int(self.top_k),
                     top_p=float(self.top_p), stop=stop, logprobs=bool(self.logprobs),
                     resume_offset=int(self.resume_offset), presence_penalty=float(self.presence_penalty),
                     frequency_penalty=float(self.frequency_penalty),
                     repetition_penalty=float(self.repetition_penalty),
                     logit_bias=tuple(sorted((int(k), float(v)) for k, v in self.logit_bias)),
                     logit_bias_chars=tuple(sorted((str(k), float(v)) for k, v in self.logit_bias_chars)),
                     top_logprobs=int(self.top_logprobs))
        if plain["top_logprobs"]:
            plain["logprobs"] = True  # the alternatives come with the chosen characters' own
        for name, value in plain.items():
            object.__setattr__(self, name, value)

    def check_limits(self, max_length: int, charset_size: int) -> None:
        """Raise BadRequest unless ``length`` is within the server's ``max_length`` and ``top_k``
        within the model's ``charset_size`` characters."""
        if not 1 <= self.length <= max_length:
            raise BadRequest(f"length must be between 1 and {max_length} characters, got {self.length}")
        if self.resume_offset >= self.length:
            raise BadRequest(f"resume_offset must be less than length ({self.length}): a stream that delivered "
                             f"{self.resume_offset} characters has nothing left to continue")
        if not 0 <= self.top_k <= charset_size:
            raise BadRequest(f"top_k must be between 0 (off) and the model's {charset_size} characters, "
                             f"got {self.top_k}")
        for index, _ in self.logit_bias:
            if not 0 <= index < charset_size:
                raise BadRequest(f"logit_bias index {index} is not a character of the model: indices are 0 to "
                                 f"{charset_size - 1} (its charset, in order)")

    def check_supported(self, model) -> None:
        """Raise Unsupported when a control is on that ``model`` (a ServedModel) cannot do: its bundle
        was exported before top_k, top_p and logprobs existed."""
        missing = [c for c, _ in self.logit_bias_chars if c not in model.charset.chars]
        if missing:
            raise BadRequest(f"logit_bias_chars has characters model {model.name!r} does not know: "
                             f"{', '.join(map(repr, missing))}")
        if self.penalized and all(v <= -MAX_BIAS for v in self.bias_vector(model.charset)):
            raise BadRequest("logit_bias bans every character of the model: leave at least one")
        if self.rich and not model.penalties:
            raise Unsupported(
                f"model {model.name!r} version {model.version} was exported before presence_penalty, "
                "frequency_penalty, repetition_penalty, logit_bias and top_logprobs existed and cannot do them. "
                "Retrain or continue training it to get a version that can")
        asked = [name for name, on in (("top_k", self.top_k), ("top_p", self.top_p < 1.0),
                                       ("logprobs", self.logprobs)) if on]
        if asked and not model.controls:
            raise Unsupported(
                f"model {model.name!r} version {model.version} was exported before {', '.join(asked)} existed "
                "and cannot do it; it serves temperature, seed and stop only. Retrain or continue training it "
                "to get a version that can"
            )
