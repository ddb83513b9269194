"""Big lists a core let go of, freed a slice at a time. Pure.

Dropping the last reference to a list of a million rows frees them all at
once, in C: a quarter of a second or more with the process stopped. A core
that lets go of a big table (a view whose publisher left, a published
version replaced, their indexes) hands it to :class:`Dropped` instead, and
its shell frees it a slice at a time between loop turns (``free_slice``),
unless someone else still holds it: a list a callback kept is never
emptied under it, its holder frees it.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Dropped"]

#: References to a dropped list while only Dropped holds it: its own list's,
#: free_slice's name for it, and getrefcount's argument.
_OURS = 3


class Dropped:
    """Big lists waiting to be freed.

    Args:
        big: lists shorter than this are let go at once (freeing them is quick).
        slice_rows: items freed per :meth:`free_slice`.
    """

    __slots__ = ("_lists", "big", "slice_rows")

    def __init__(self, big: int, slice_rows: int) -> None:
        self.big = big
        self.slice_rows = slice_rows
        self._lists: list[list[Any]] = []

    def __bool__(self) -> bool:
        return bool(self._lists)

    def add(self, value: Any) -> None:
        """Let go of ``value``: a big list is kept to be freed in slices, anything else dropped."""
        if type(value) is list and len(value) >= self.big:
            self._lists.append(value)

    def free_slice(self) -> None:
        """Free the last items of a dropped list, unless someone else holds it (then let it go)."""
        if not self._lists:
            return
        rows = self._lists[-1]
        if sys.getrefcount(rows) > _OURS:
            self._lists.pop()
            return
        del rows[-self.slice_rows:]
        if not rows:
            self._lists.pop()
