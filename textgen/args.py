"""Command-line parsing shared by ``python -m trainer`` and the ``client`` command.

A bad flag is one line (``UsageError``), not argparse's usage block; the training options' flags,
types and help come from the proto (``textgen.schema``), with their real defaults. Standard library
and ``textgen.schema`` only, so the client uses it too.
"""
from __future__ import annotations

import argparse

from textgen import schema


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(message)


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def layer_sizes(text: str) -> tuple[int, ...]:
    try:
        return schema.parse_layer_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def camel_case(name: str) -> str:
    """``lstm-layer-size`` -> ``lstmLayerSize``, as the original spells its flags."""
    head, *rest = name.split("-")
    return head + "".join(part.capitalize() for part in rest)


def flag(parser, name: str, *aliases: str, camel: bool = True, **kwargs):
    """Add ``--name`` (and ``--alias``...) with, when ``camel``, their camelCase spellings
    (``--sampleLen``), as the original spells them."""
    names = [name, *aliases]
    if camel:
        names += [camel_case(n) for n in names if camel_case(n) != n]
    kwargs.setdefault("dest", name.replace("-", "_"))
    parser.add_argument(*[f"--{n}" for n in dict.fromkeys(names)], **kwargs)


def add_option_flags(parser, *, camel: bool = False, notes: dict[str, str] | None = None,
                     parse_checks: tuple[str, ...] = ()) -> None:
    """One flag per training option (``--sample-len``..., ``dest`` the option's name, default None
    = unset), typed and with help from the proto, ending in the option's real default;
    ``notes[name]`` is added after the default (a recipe's value, say). The values of the options in
    ``parse_checks`` are checked against their choices by argparse; the rest by TrainConfig."""
    types = {int: integer, float: number, str: str}
    for spec in schema.OPTIONS:
        said = [f"one of {', '.join(spec.choices)}" if spec.choices else "",
                f"default {spec.default_text}" if spec.default_text else "", (notes or {}).get(spec.name, "")]
        said = "; ".join(part for part in said if part)
        flag(parser, spec.flag, *spec.aliases, camel=camel, dest=spec.name, default=None, metavar=spec.metavar,
             type=layer_sizes if spec.is_list else types[spec.kind],
             choices=spec.choices if spec.name in parse_checks else None,
             help=(spec.help + (f" ({said})" if said else "")).replace("%", "%%"))
