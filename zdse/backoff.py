"""Exponential backoff: how long to wait before the next try after failures. Pure."""

from __future__ import annotations

__all__ = ["backoff"]

#: Doublings at most: past them the cap has long won, and 2**n stays a small int.
_MAX_DOUBLINGS = 32


def backoff(attempt: int, first: float, cap: float) -> float:
    """Seconds to wait before try ``attempt`` (1, 2, ...) after as many failures.

    Args:
        attempt: how many tries failed in a row (1 for the first failure).
        first: the wait after the first failure; it doubles at each next one.
        cap: the longest wait.
    """
    return float(min(cap, first * 2 ** min(max(attempt - 1, 0), _MAX_DOUBLINGS)))
