"""The training options as the proto declares them, for every tool that offers or carries them.

``TrainOptions`` in proto/textgen/v1/textgen.proto is the one list of training options: each field's
``(option)`` annotation gives its help, its default (the trainer's value when it is unset), its
allowed values and its command-line flag. This module reads them from the generated descriptor, so
that nothing else lists the options again: ``textgen.options.TrainConfig`` takes its defaults and
allowed values from here, the server converts requests with ``to_dict`` / ``to_message``, and the
trainer's and the client's flags and help texts come from ``OPTIONS`` (``textgen.args``).

It imports only the generated code and the standard library (no TensorFlow, no TrainConfig), so the
client can use it.
"""
from __future__ import annotations

import dataclasses

from google.protobuf.descriptor import FieldDescriptor

from textgen.v1 import textgen_pb2 as pb

_KINDS = {FieldDescriptor.CPPTYPE_INT32: int, FieldDescriptor.CPPTYPE_INT64: int,
          FieldDescriptor.CPPTYPE_UINT32: int, FieldDescriptor.CPPTYPE_UINT64: int,
          FieldDescriptor.CPPTYPE_DOUBLE: float, FieldDescriptor.CPPTYPE_FLOAT: float,
          FieldDescriptor.CPPTYPE_STRING: str}


class UnknownOption(ValueError):
    """An option name that TrainOptions does not have; the message lists the known ones."""


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One training option: a field of ``TrainOptions`` and its ``(option)`` annotation."""

    name: str  # the field's name, which is also TrainConfig's
    kind: type  # int, float or str (of each item, for a list)
    is_list: bool  # a repeated field (lstm_layer_sizes)
    default: object  # the trainer's value when unset, typed (a tuple for a list); None: none
    default_text: str  # the same, as the proto writes it ("128,128"); "" for none
    help: str
    choices: tuple[str, ...]  # the allowed values of a string option; () for any
    flag: str  # the command-line flag without dashes ("lstm-layer-size")
    aliases: tuple[str, ...]  # more flags ("layers")
    metavar: str | None

    @property
    def names(self) -> list[str]:
        """The flag and its aliases as command-line options: ``["--lstm-layer-size", "--layers"]``."""
        return [f"--{name}" for name in (self.flag, *self.aliases)]


def parse_layer_sizes(text: str) -> tuple[int, ...]:
    """``"128,128"`` -> ``(128, 128)``; ValueError naming the text otherwise (a range is checked by
    TrainConfig.validate, not here)."""
    try:
        return tuple(int(part.strip()) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"lstm layer sizes must be positive integers separated by commas (e.g. 128,128), "
                         f"got {text!r}") from None


def _spec(field: FieldDescriptor) -> OptionSpec:
    info = field.GetOptions().Extensions[pb.option]
    kind = _KINDS[field.cpp_type]
    is_list = field.is_repeated
    if not info.default:
        default = None
    elif is_list:
        default = parse_layer_sizes(info.default) if kind is int else tuple(info.default.split(","))
    else:
        default = kind(info.default)
    return OptionSpec(name=field.name, kind=kind, is_list=is_list, default=default, default_text=info.default,
                      help=info.help, choices=tuple(info.choices), flag=info.flag or field.name.replace("_", "-"),
                      aliases=tuple(info.aliases), metavar=info.metavar or None)


OPTIONS: tuple[OptionSpec, ...] = tuple(_spec(field) for field in pb.TrainOptions.DESCRIPTOR.fields)
NAMES: tuple[str, ...] = tuple(spec.name for spec in OPTIONS)
_BY_NAME = {spec.name: spec for spec in OPTIONS}


def option(name: str) -> OptionSpec:
    """The option called ``name``; KeyError for no such option."""
    return _BY_NAME[name]


def defaults() -> dict:
    """``{name: default}`` of every option (None where the option has none)."""
    return {spec.name: spec.default for spec in OPTIONS}


def to_dict(message: pb.TrainOptions) -> dict:
    """The options a message sets: a list that is not empty, an optional field that is present, a
    string that is not empty ("" means unset). Unset options are left out (they take the defaults)."""
    out = {}
    for field in pb.TrainOptions.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            if value:
                out[field.name] = list(value)
        elif field.has_presence:
            if message.HasField(field.name):
                out[field.name] = value
        elif value:
            out[field.name] = value
    return out


def to_message(options: dict, *, strict: bool = True) -> pb.TrainOptions:
    """The message for ``options`` (names as ``NAMES``; None means unset). ``strict``: an unknown
    name is an UnknownOption naming it, else it is left out (a job recorded by an older or newer server).
    A value the field cannot hold (a string for a number, a negative seed) raises ValueError or
    TypeError from protobuf."""
    unknown = sorted(set(options) - set(NAMES))
    if unknown and strict:
        raise UnknownOption(f"unknown training options {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return pb.TrainOptions(**{name: value for name, value in options.items()
                              if name in _BY_NAME and value is not None})
