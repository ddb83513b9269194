"""Small statistics for the bench: percentiles, medians, ratios."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["median", "percentile", "ratio"]


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile of sorted values (nearest rank; 0.0 if empty)."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[min(len(ordered), int(rank)) - 1]


def median(values: Sequence[float]) -> float:
    """The median (0.0 if empty)."""
    return statistics.median(values) if values else 0.0


def ratio(ahead: float, behind: float) -> float | None:
    """``ahead / behind``, or None when ``behind`` is zero."""
    return ahead / behind if behind else None
