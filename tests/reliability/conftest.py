"""The reliability suite: its tests record what they measured with ``figure(section, text)``, and
the run's summary shows every figure (tests/figures.py)."""
from __future__ import annotations

from tests.figures import figure  # noqa: F401  (the reliability tests import it from here)
