"""A node's registration state machine, driven by a fake clock."""

from __future__ import annotations

from zdse import codec
from zdse.session import TRANSITIONS, Session, SessionState

REG = codec.Register("svc", [], {})


def test_start_registers_and_retries_each_heartbeat_until_welcomed() -> None:
    """While connecting, the registration is sent again every heartbeat."""
    s = Session(REG, 0)
    assert s.start(0) == REG
    assert s.tick(0.5).send == []
    assert s.tick(1.0).send == [REG]
    assert s.on_welcome("e1", 0.5, 1.1) is False
    assert s.state is SessionState.REGISTERED
    assert s.tick(1.6).send == [codec.Heartbeat()]


def test_silence_makes_the_cage_lost_and_a_heartbeat_brings_it_back() -> None:
    """No word from the cage for three heartbeats: LOST; its next beat: REGISTERED."""
    s = Session(REG, 0)
    s.start(0)
    s.on_welcome("e1", 1.0, 0)
    assert not s.tick(2.9).lost
    assert s.tick(3.1).lost
    assert s.state is SessionState.LOST
    assert s.on_heartbeat("e1", 3.2) is None
    assert s.state is SessionState.REGISTERED


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


def test_every_transition_in_the_table_leads_to_a_state() -> None:
    """The transition table is total over the events it names for each state."""
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, SessionState)
        assert isinstance(target, SessionState)
        assert event
