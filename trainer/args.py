"""The trainer's argument parsing: a bad flag is one line (``UsageError``), not argparse's usage block.

Shared by ``python -m trainer train|gen`` (trainer.cli) and ``python -m trainer worker`` (trainer.worker).
"""
from __future__ import annotations

import argparse


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(message)


def flag(parser, name: str, **kwargs):
    """Add ``--kebab-name`` with its camelCase alias (``--kebabName``), as the original spells it."""
    head, *rest = name.split("-")
    camel = head + "".join(part.capitalize() for part in rest)
    names = [f"--{name}"] + ([f"--{camel}"] if camel != name else [])
    parser.add_argument(*names, dest=name.replace("-", "_"), **kwargs)
