"""The pure parts of redundant cages (docs/redundancy.md): choice of cage, departures, held
deltas, requests seen twice. No sockets, no clock."""

from __future__ import annotations

import pytest

from zdse.node.cages import Departures, RoundTrips
from zdse.node.gaps import Held
from zdse.node.seen_requests import SeenRequests
from zdse.wire.codec import Delta
from zdse.wire.limits import MAX_BUFFERED_DELTAS, MAX_DEPARTURES, REQUEST_TIMEOUT


def _timed(trips: RoundTrips, cage: int, sent: float, answered: float) -> None:
    trips.beat_sent(cage, sent)
    trips.beat_answered(cage, answered)


def test_requests_take_the_cage_with_the_smallest_smoothed_round_trip() -> None:
    """Of the eligible cages, the fastest; ties to the first listed; tried ones skipped."""
    trips = RoundTrips(3)
    assert trips.choose([0, 1, 2], 0.0) == 0  # nothing measured: the first listed
    _timed(trips, 0, 0.0, 0.010)
    _timed(trips, 1, 0.0, 0.002)
    _timed(trips, 2, 0.0, 0.005)
    assert trips.choose([0, 1, 2], 1.0) == 1
    assert trips.choose([0, 2], 1.0) == 2  # 1 is not registered
    assert trips.choose([0, 1, 2], 1.0, tried={1}) == 2  # 1 said no route
    assert trips.choose([0, 1, 2], 1.0, tried={0, 1, 2}) is None
    assert trips.choose([], 1.0) is None


def test_the_round_trip_is_smoothed_so_one_slow_beat_does_not_swap_cages() -> None:
    """One beat of 80 ms after many of 1 ms moves the estimate by an eighth of the jump."""
    trips = RoundTrips(2)
    for t in range(10):
        _timed(trips, 0, t, t + 0.001)
        _timed(trips, 1, t, t + 0.004)
    _timed(trips, 0, 10, 10.080)
    assert trips.round_trip(0, 11) == pytest.approx(0.001 + (0.080 - 0.001) / 8)
    assert trips.choose([0, 1], 11) == 1  # 10.9 ms now against 4 ms
    for t in range(11, 40):
        _timed(trips, 0, t, t + 0.001)
    assert trips.choose([0, 1], 41) == 0  # back under cage 1 once the beats are fast again


def test_a_silent_cage_loses_the_preference_within_one_round_trip() -> None:
    """A heartbeat still unanswered counts as long as it has waited: a cage killed (or cut)
    stops being chosen as soon as its silence outlasts another cage's round trip."""
    trips = RoundTrips(2)
    _timed(trips, 0, 0.0, 0.001)
    _timed(trips, 1, 0.0, 0.003)
    trips.beat_sent(0, 1.0)  # never answered
    trips.beat_sent(1, 1.0)
    trips.beat_answered(1, 1.003)
    assert trips.choose([0, 1], 1.002) == 0  # 2 ms of silence: not yet past cage 1's 3 ms
    assert trips.choose([0, 1], 1.010) == 1
    trips.beat_sent(0, 1.2)  # a later beat does not restart the wait
    assert trips.round_trip(0, 1.5) == pytest.approx(0.5)
    trips.restart(0)  # its session starts over: measured afresh
    assert trips.round_trip(0, 2.0) == 0.0


def test_a_beat_of_the_cages_own_is_not_a_round_trip() -> None:
    """A heartbeat the cage sends unasked (a probe of a quiet node) times nothing."""
    trips = RoundTrips(1)
    trips.beat_answered(0, 5.0)
    assert trips.round_trip(0, 6.0) == 0.0


def test_a_service_has_left_only_once_every_registered_cage_said_so() -> None:
    """Left from one of two cages is not a departure; from the second it is. A Joined
    in between voids what was said; a cage that goes away completes what the rest said."""
    departures = Departures()
    assert not departures.on_left("pub", 0, registered=[0, 1])
    assert departures.on_left("pub", 1, registered=[0, 1])
    assert len(departures) == 0
    assert departures.on_left("alone", 0, registered=[0])  # one cage registered: at once
    assert not departures.on_left("pub", 0, registered=[0, 1])
    departures.on_joined("pub")
    assert not departures.on_left("pub", 1, registered=[0, 1])  # cage 0's word was voided
    assert not departures.on_left("other", 1, registered=[0, 1])
    assert departures.on_cage_gone(0, registered=[1]) == ["pub", "other"]
    assert len(departures) == 0


def test_departures_are_bounded() -> None:
    """Names only some cages said left are remembered up to MAX_DEPARTURES, oldest dropped."""
    departures = Departures()
    for i in range(MAX_DEPARTURES + 5):
        departures.on_left(f"s{i}", 0, registered=[0, 1])
    assert len(departures) == MAX_DEPARTURES
    assert not departures.on_left("s0", 1, registered=[0, 1])  # forgotten: starts over


def _delta(seq: int) -> Delta:
    return Delta("t", "e1", seq, ["replace", seq])


def test_held_deltas_follow_on_in_order_once_the_gap_is_filled() -> None:
    """Deltas 5, 7, 6, 9 held past view seq 3; 4 comes: 5, 6, 7 follow in order; 9 waits."""
    held = Held(since=1.0)
    for seq in (5, 7, 6, 9, 5):
        assert held.hold(_delta(seq))
    assert len(held) == 4  # 5 once
    assert [d.seq for d in held.run_after(4)] == [5, 6, 7]
    assert len(held) == 1
    assert held.run_after(7) == []  # 8 is still missing: 9 waits
    assert [d.seq for d in held.take_all()] == [9]


def test_held_deltas_at_or_below_the_view_are_dropped() -> None:
    """What came meanwhile by the other cage is not applied twice."""
    held = Held(since=0.0)
    for seq in (3, 4, 6):
        held.hold(_delta(seq))
    assert held.run_after(4) == []
    assert [d.seq for d in held.take_all()] == [6]


def test_the_window_decides_when_a_gap_is_a_gap() -> None:
    """Held deltas are due for a snapshot once the window has passed, not before."""
    held = Held(since=10.0)
    assert not held.due(20.0, 0.05)  # nothing held
    held.hold(_delta(8))
    assert not held.due(10.04, 0.05)
    assert held.due(10.05, 0.05)
    assert [d.seq for d in held.take_all()] == [8]


def test_held_deltas_are_bounded() -> None:
    """Past MAX_BUFFERED_DELTAS a feed holds no more: the snapshot it then asks for wins."""
    held = Held(since=0.0)
    for seq in range(2, MAX_BUFFERED_DELTAS + 2):
        assert held.hold(_delta(seq))
    assert not held.hold(_delta(MAX_BUFFERED_DELTAS + 5))


def test_a_gathered_request_heard_through_two_cages_is_taken_once() -> None:
    """The second copy of (requester, cid) is dropped while its request can be waited for."""
    seen = SeenRequests()
    assert seen.first("req", 1, timeout=2.0, now=0.0)
    assert not seen.first("req", 1, timeout=2.0, now=0.001)
    assert seen.first("req", 2, timeout=2.0, now=0.002)
    assert seen.first("other", 1, timeout=2.0, now=0.003)
    assert seen.first("req", 1, timeout=2.0, now=2.5)  # past its deadline: a new one


def test_seen_requests_are_bounded_by_count_and_time() -> None:
    """At most ``limit`` pairs; each forgotten after its timeout (the default if unsaid)."""
    seen = SeenRequests(limit=3)
    for cid in range(5):
        seen.first("req", cid, timeout=1.0, now=0.0)
    assert len(seen) == 3
    assert seen.first("req", 0, timeout=1.0, now=0.1)  # pushed out by the bound
    seen.first("req", 99, timeout=0, now=0.2)
    assert seen.first("x", 1, timeout=1.0, now=REQUEST_TIMEOUT + 1)
    assert len(seen) == 1
