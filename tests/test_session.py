"""A node's registration state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from zdse.errors import ProtocolError
from zdse.node.session import PROBE_RETRY, TRANSITIONS, Input, Session, SessionState
from zdse.wire import codec
from zdse.wire.limits import LOST_SEND_BYTES

REG = codec.Register("svc", [], {})


def test_start_registers_and_retries_each_heartbeat_until_welcomed() -> None:
    """While connecting, the registration is sent again every heartbeat."""
    s = Session(REG, 0)
    assert s.start(0) == REG
    assert s.tick(0.5).send == []
    assert s.tick(1.0).send == [REG]
    assert s.on_welcome("e1", 0.5, 1.1) is False
    assert s.state is SessionState.JOINING
    assert s.on_probe("e1", 1)
    assert s.state is SessionState.REGISTERED
    assert s.tick(1.6).send == [codec.Heartbeat()]


def test_silence_makes_the_cage_lost_and_a_heartbeat_brings_it_back() -> None:
    """No word from the cage for three heartbeats: LOST; its next beat: REGISTERED."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0)
    s.on_probe("e1", 1)
    assert not s.tick(2.9).lost
    assert s.tick(3.1).lost
    assert s.state is SessionState.LOST
    assert s.on_heartbeat("e1", 3.2) is None
    assert s.state is SessionState.REGISTERED


def test_a_cage_held_for_lost_still_carries_deltas_within_a_budget_per_spell() -> None:
    """LOST may be a stalled cage that will read what waits: deltas go on, up to
    LOST_SEND_BYTES a spell of silence; a session never welcomed carries none."""
    s = Session(REG, 0)
    s.start(0)
    assert not s.carries(1)  # connecting: the cage does not know us
    s.on_welcome("e1", 1.0, 0)
    assert s.carries(LOST_SEND_BYTES)  # joining: subscribers may hold our snapshot
    s.on_probe("e1", 1)
    assert all(s.carries(LOST_SEND_BYTES) for _ in range(3))  # registered: no budget
    for spell in (3.1, 6.3):
        assert s.tick(spell).lost
        assert s.carries(LOST_SEND_BYTES - 10)
        assert s.carries(10)
        assert not s.carries(1)  # past the budget: dropped, subscribers resync
        s.on_heartbeat("e1", spell + 0.1)
        assert s.carries(LOST_SEND_BYTES)  # back: the budget is for silence only
    s.on_error("name_taken", "held", 7)
    assert not s.carries(1)


def test_not_registered_or_a_new_cage_epoch_registers_again() -> None:
    """A restarted cage (not_registered, or another epoch) gets our registration again."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0)
    assert s.on_error("not_registered", "register first", 1) == REG
    assert s.state is SessionState.CONNECTING
    assert s.on_error("not_registered", "register first", 1) is None  # already on its way
    assert s.on_welcome("e2", 1.0, 2) is True
    assert s.on_heartbeat("e3", 3) == REG


def test_name_taken_is_final() -> None:
    """A refused name ends the session: no more registrations or heartbeats."""
    s = Session(REG, 0)
    s.start(0)
    s.on_error("name_taken", "name 'svc' is held", 0.1)
    assert s.state is SessionState.REFUSED
    assert s.refusal == "name 'svc' is held"
    assert s.tick(10).send == []


def test_the_transition_table_is_total() -> None:
    """Every input has a next state in every state: what the cage says is never a crash."""
    assert set(TRANSITIONS) == {(state, i) for state in SessionState for i in Input}
    assert all(isinstance(target, SessionState) for target in TRANSITIONS.values())


def test_a_pair_missing_from_the_table_is_an_error_naming_the_state() -> None:
    """A hole in the table is a bug, reported with the state and the input."""
    s = Session(REG, 0)
    missing = TRANSITIONS.pop((SessionState.CONNECTING, Input.WELCOME))
    try:
        with pytest.raises(ProtocolError, match="can't handle welcome when the session is "
                                                 "connecting"):
            s.on_welcome("e1", 1.0, 0)
    finally:
        TRANSITIONS[(SessionState.CONNECTING, Input.WELCOME)] = missing


def test_welcomed_is_not_registered_until_its_own_probe_comes_back() -> None:
    """After a welcome the node is JOINING, probing with backoff, until its probe returns."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0.0)
    assert s.state is SessionState.JOINING
    assert s.known
    assert s.probe() == ("e1", 1)
    assert s.due_in(0.0) == PROBE_RETRY
    probes = [t for t in (0.01, 0.06, 0.1, 0.16, 0.3, 0.36, 0.7, 0.76, 1.5, 1.76, 2.5, 2.8)
              if s.tick(t).probe]
    assert probes == [0.06, 0.16, 0.36, 0.76, 1.76, 2.8]  # waits doubling up to a heartbeat
    assert not s.on_probe("e0", 1)  # another cage's
    assert not s.on_probe("e1", 0)  # an earlier registration's
    assert s.state is SessionState.JOINING
    assert s.on_probe("e1", 1)
    assert s.state is SessionState.REGISTERED
    assert not s.tick(9.0).probe
    assert s.due_in(9.0) == float("inf")
    assert not s.on_probe("e1", 1)  # proven once is enough


def test_silence_while_joining_registers_again() -> None:
    """Welcomed, then silence before the probe came back: start over with a registration."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0.0)
    tick = s.tick(3.5)
    assert tick.lost
    assert tick.send == [REG]
    assert s.state is SessionState.CONNECTING
    assert s.on_welcome("e1", 1.0, 4.0) is True
    assert s.probe() == ("e1", 2)


def test_a_welcome_after_registered_proves_the_sub_again() -> None:
    """A second welcome (a retried registration's) asks for a new probe."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0.0)
    s.on_probe("e1", 1)
    s.on_welcome("e1", 1.0, 0.5)
    assert s.state is SessionState.JOINING
    assert s.on_probe("e1", 2)


def test_joining_for_an_expiry_says_so_once_per_expiry() -> None:
    """A SUB that stays silent while the DEALER works is worth a warning, never a flood."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0.0)
    silent = []
    for step in range(1, 80):
        now = step / 10
        s.on_heartbeat("e1", now)  # the cage keeps answering
        if s.tick(now).sub_silent:
            silent.append(now)
    assert silent == [3.0, 6.0]
    assert s.state is SessionState.JOINING


def test_the_clocks_inputs_go_through_the_table_too() -> None:
    """A due probe is an input like any other: a hole for it is an error naming the state."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0.0)
    missing = TRANSITIONS.pop((SessionState.JOINING, Input.PROBE_DUE))
    try:
        with pytest.raises(ProtocolError, match="can't handle probe_due when the session is "
                                                 "joining"):
            s.tick(0.1)
    finally:
        TRANSITIONS[(SessionState.JOINING, Input.PROBE_DUE)] = missing


def test_a_probe_that_comes_back_once_registered_changes_nothing() -> None:
    """The same probe twice: the second is the table's (REGISTERED, heard) row, a no-op."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0.0)
    assert s.on_probe("e1", 1)
    assert not s.on_probe("e1", 1)
    assert s.state is SessionState.REGISTERED
