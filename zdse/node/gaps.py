"""Deltas that came past a gap, held for a short window in case another cage fills it. Pure.

With one cage, a delta past the next seq is a gap: the deltas between were
lost, and the feed asks for a snapshot at once. With several cages each
delta comes once through each, and a delta lost in one cage (killed with
it in its queue) usually comes a moment later through another; a delta
ahead of the view may just have overtaken its elders by a faster cage. So
a feed of a node with several cages *holds* such deltas (docs/redundancy.md):

    held deltas  event                       ->  what happens
    none         delta past the next seq     ->  held, the window starts
    some         the next seq comes          ->  applied, then the held ones
                                                 that follow on, in order
    some         another delta past the gap  ->  held too (up to the bound)
    some         the window passed (a tick)  ->  a gap: snapshot asked, the
                                                 held deltas buffered for it

The window is ``GAP_WINDOW_BEATS`` of a heartbeat, driven by the shell's
ticks (time is an input). :class:`Held` is the held deltas of one feed.
"""

from __future__ import annotations

from zdse.wire.codec import Delta
from zdse.wire.limits import MAX_BUFFERED_DELTAS

__all__ = ["Held"]


class Held:
    """One feed's deltas past a gap, by seq, and since when the first waits.

    Args:
        since: when the first of them came (the window starts then).
    """

    __slots__ = ("_by_seq", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self._by_seq: dict[int, Delta] = {}

    def __len__(self) -> int:
        return len(self._by_seq)

    def hold(self, d: Delta) -> bool:
        """Hold ``d`` (a second copy of one seq is dropped); False past MAX_BUFFERED_DELTAS."""
        if d.seq not in self._by_seq:
            if len(self._by_seq) >= MAX_BUFFERED_DELTAS:
                return False
            self._by_seq[d.seq] = d
        return True

    def run_after(self, seq: int) -> list[Delta]:
        """Take the held deltas that follow on from ``seq`` without a gap, in order.

        Those at or below ``seq`` (come meanwhile by the other path) are dropped.
        """
        by_seq = self._by_seq
        for old in [s for s in by_seq if s <= seq]:
            del by_seq[old]
        run: list[Delta] = []
        while (d := by_seq.pop(seq + 1, None)) is not None:
            run.append(d)
            seq += 1
        return run

    def due(self, now: float, window: float) -> bool:
        """Whether the window has passed with deltas still held: the gap is real."""
        return bool(self._by_seq) and now - self.since >= window

    def take_all(self) -> list[Delta]:
        """Every held delta, in seq order (for the snapshot the feed asks for now)."""
        taken = [self._by_seq[s] for s in sorted(self._by_seq)]
        self._by_seq.clear()
        return taken
