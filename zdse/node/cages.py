"""A node's view of its cages when it lists several (docs/redundancy.md). Pure.

Two decisions that only exist with several cages, each a small table of its
own; the node's core asks them, the shell times nothing here:

* :class:`RoundTrips`: which cage carries a request or a one-way message.
  The registered cage with the smallest smoothed heartbeat round trip; a
  heartbeat still unanswered counts as at least as long as it has waited,
  so a cage that went silent (its link cut) loses the preference within
  one round trip, well before its session is taken for lost; a cage whose
  connection closed (its process killed) is chosen last at once.
* :class:`Departures`: when a service has left. ``Left(name)`` from one
  cage says only that this cage lost it (its link to that service may be
  cut while others still carry it): a service has left once every cage
  the node is registered with said so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from zdse.wire.limits import MAX_DEPARTURES

__all__ = ["RTT_GAIN", "Departures", "RoundTrips"]

#: Weight of a new round-trip sample in the smoothed round trip (as TCP's
#: SRTT, RFC 6298): one slow beat moves it by an eighth.
RTT_GAIN = 1 / 8


@dataclass(slots=True)
class _Trip:
    #: The smoothed round trip, None before the first sample.
    smoothed: float | None = None
    #: When the oldest heartbeat still unanswered was sent, None if none.
    waiting_since: float | None = None
    #: The connection closed (the cage's process died: its kernel said so).
    down: bool = False


class RoundTrips:
    """Heartbeat round trips per cage, and the choice of a cage for a request.

    Args:
        count: how many cages the node lists.
    """

    def __init__(self, count: int) -> None:
        self._trips = [_Trip() for _ in range(count)]

    def beat_sent(self, cage: int, now: float) -> None:
        """A heartbeat left for ``cage``: it is timed until the cage answers."""
        trip = self._trips[cage]
        if trip.waiting_since is None:
            trip.waiting_since = now

    def beat_answered(self, cage: int, now: float) -> None:
        """``cage`` answered a heartbeat: one sample of its round trip."""
        trip = self._trips[cage]
        trip.down = False
        if trip.waiting_since is None:
            return  # a beat of the cage's own (a probe of us), not an answer
        sample = max(0.0, now - trip.waiting_since)
        trip.waiting_since = None
        if trip.smoothed is None:
            trip.smoothed = sample
        else:
            trip.smoothed += RTT_GAIN * (sample - trip.smoothed)

    def disconnected(self, cage: int) -> None:
        """The connection to ``cage`` closed: chosen last until it answers a beat again."""
        self._trips[cage].down = True

    def is_down(self, cage: int) -> bool:
        """Whether ``cage``'s connection closed and it has not answered a beat since."""
        return self._trips[cage].down

    def restart(self, cage: int) -> None:
        """``cage``'s session starts over (lost, or registering again): time it afresh
        (a closed connection stays known until the cage answers a beat)."""
        self._trips[cage] = _Trip(down=self._trips[cage].down)

    def round_trip(self, cage: int, now: float) -> float:
        """``cage``'s round trip as it counts for the choice (0 before any sample)."""
        trip = self._trips[cage]
        if trip.down:
            return float("inf")
        smoothed = trip.smoothed or 0.0
        if trip.waiting_since is None:
            return smoothed
        return max(smoothed, now - trip.waiting_since)

    def choose(self, eligible: Iterable[int], now: float,
               tried: Collection[int] = ()) -> int | None:
        """The cage to send through: of ``eligible`` not in ``tried``, the fastest.

        Ties go to the cage listed first. None when no cage is left.
        """
        best: int | None = None
        best_trip = 0.0
        for cage in eligible:
            if cage in tried:
                continue
            trip = self.round_trip(cage, now)
            if best is None or trip < best_trip:
                best, best_trip = cage, trip
        return best

    def statistics(self, now: float) -> list[float]:
        """Each cage's round trip as the choice counts it, in seconds."""
        return [self.round_trip(i, now) for i in range(len(self._trips))]


class Departures:
    """Which cages said a service left; it has left once all the registered ones did."""

    def __init__(self) -> None:
        # Insertion order: the oldest is forgotten first past MAX_DEPARTURES.
        self._said: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._said)

    def on_left(self, name: str, cage: int, registered: Collection[int]) -> bool:
        """``cage`` said ``name`` left; True if that makes every registered cage say so."""
        said = self._said.get(name)
        if said is None:
            said = self._said[name] = set()
            if len(self._said) > MAX_DEPARTURES:
                del self._said[next(iter(self._said))]
        said.add(cage)
        if all(c in said for c in registered):
            del self._said[name]
            return True
        return False

    def on_joined(self, name: str) -> None:
        """``name`` (re)joined through some cage: whatever was said of it before is void."""
        self._said.pop(name, None)

    def on_cage_gone(self, cage: int, registered: Collection[int]) -> list[str]:
        """``cage`` is no longer registered: the services every remaining one said left.

        Args:
            cage: the cage whose session was lost or refused.
            registered: the cages still registered (without ``cage``).
        """
        gone = [name for name, said in self._said.items()
                if registered and all(c in said for c in registered)]
        for name in gone:
            del self._said[name]
        for said in self._said.values():
            said.discard(cage)
        return gone
