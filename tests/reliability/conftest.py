"""The figures board of the reliability suite.

Every test records what it measured with ``figure(section, text)``: the line is printed at once (seen
with ``-s``) and collected, and ``pytest_terminal_summary`` shows all of them at the end of the run,
so ``make test`` output carries the numbers (requests tried, streams, faults injected, what was lost).
"""
from __future__ import annotations

import time

FIGURES: dict[str, list[str]] = {}
_SUITE_STARTED: list[float] = []


def figure(section: str, text: str) -> None:
    """Record one line of measured figures under ``section`` (and print it)."""
    FIGURES.setdefault(section, []).append(text)
    print(f"\n[reliability] {section}: {text}", flush=True)


def pytest_collection_finish(session):
    _SUITE_STARTED.append(time.monotonic())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for section, lines in FIGURES.items():
        for line in lines:
            terminalreporter.write_line(f"{section}: {line}")
    if _SUITE_STARTED:
        terminalreporter.write_line(f"(session wall time so far: {time.monotonic() - _SUITE_STARTED[0]:.1f} s)")
