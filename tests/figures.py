"""The figures board of the reliability suite.

Every test records what it measured with ``figure(section, text)``: the line is printed at once (seen
with ``-s``) and attached to the running test's report, and the board (tests/conftest.py's
``pytest_terminal_summary``) shows all of them at the end of the run, so ``make test`` output carries
the numbers (requests tried, streams, faults injected, what was lost). Reports are what pytest-xdist
sends from its workers to the process that prints, so the board is whole with ``-n`` too.
"""
from __future__ import annotations

PROPERTY = "reliability figure"  # the name of a figure among a report's user_properties

FIGURES: dict[str, list[str]] = {}  # section -> lines, in the order their reports arrived
_running: list = []  # the test item running in this process, if any (set by tests/conftest.py)
_taken: dict[str, int] = {}  # test id -> how many of its figures are on the board already


def figure(section: str, text: str) -> None:
    """Record one line of measured figures under ``section`` (and print it)."""
    print(f"\n[reliability] {section}: {text}", flush=True)
    if _running:
        _running[-1].user_properties.append((PROPERTY, (section, text)))
    else:  # outside a test: straight onto the board
        FIGURES.setdefault(section, []).append(text)


def take(report) -> None:
    """Move the figures a test's report carries, and that are not on the board yet, onto it."""
    properties = [value for name, value in report.user_properties if name == PROPERTY]
    for section, text in properties[_taken.get(report.nodeid, 0):]:
        FIGURES.setdefault(section, []).append(text)
    _taken[report.nodeid] = len(properties)
