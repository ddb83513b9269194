"""The process's heap and its garbage collector, as big tables pass through (a shell's).

CPython frees most objects by reference counting; its cyclic collector is
for reference cycles only, but it looks at every container it tracks to
find them. A *full* collection visits all of them: a view of a million rows
held as lists is a million objects, some 0.27 s of stopped process on this
project's machine. One runs whenever the objects that
survived into the oldest generation since the last full collection reach a
quarter of those it left: while a big table comes in, time and again, the
last ones over nearly the whole table, each a pause of the event loop.

:class:`Heap` keeps the collector off the big tables with :func:`gc.freeze`:
it moves every tracked object into a permanent generation that no
collection visits, in constant time. Nothing is lost for the tables: they
are msgpack data, which cannot hold a reference cycle, so reference
counting frees their rows as ever when a view drops them. What freezing
costs is cyclic garbage, in two ways, both bounded:

- cycles already garbage at the freeze: a collection of the young
  generations runs first (cheap: only what came since the last collection);
  what the oldest generation holds, at most what it gathered since the last
  freeze, is kept until the heap is unfrozen;
- frozen objects that die later in a cycle (a closed bus, say) are not
  collected while frozen either.

So the heap is frozen at most once per :data:`FREEZE_BYTES` of big-table
data taken in or published (never on a small-table node), and unfrozen when
the last Bus of the process closes. The pure cores never call :mod:`gc`: a
shell (the Bus) tells its :class:`Heap` how many bytes came in.
"""

from __future__ import annotations

import gc

__all__ = ["FREEZE_BYTES", "HEAP", "Heap"]

#: Bytes of big-table data (frames read, tables published in slices) between
#: two freezes: some 50,000 rows of a 13-column table, whose full collection
#: took 11 ms here (on a loaded machine), well under a quarter of a
#: heartbeat; a twentieth of a million-row table's snapshot, so the
#: collector never walks much more than that.
FREEZE_BYTES = 8 * 1024 * 1024


class Heap:
    """When to freeze the collector's heap. Process-wide: :data:`HEAP` is the one in use."""

    def __init__(self, freeze_bytes: int = FREEZE_BYTES) -> None:
        self.freeze_bytes = freeze_bytes
        #: Bytes taken in since the last freeze.
        self.grown = 0
        #: Freezes so far, and the buses open (the last to close unfreezes).
        self.freezes = 0
        self._users = 0

    def open(self) -> None:
        """A bus opened: it may freeze the heap."""
        self._users += 1

    def close(self) -> None:
        """A bus closed; the last unfreezes what was frozen (their cycles collectable again)."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self.freezes:
            gc.unfreeze()
            self.freezes = 0
            self.grown = 0

    def grew(self, nbytes: int) -> bool:
        """``nbytes`` of table data came in; freeze once FREEZE_BYTES did. True if it froze."""
        self.grown += nbytes
        if self.grown < self.freeze_bytes:
            return False
        self.grown = 0
        gc.collect(1)
        gc.freeze()
        self.freezes += 1
        return True


#: The process's one Heap: the collector is process-wide.
HEAP = Heap()
