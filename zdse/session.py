"""A node's registration with the cage, as a state machine. Pure.

::

    state        event              ->  state        what happens
    CONNECTING   welcome            ->  REGISTERED   (again: re-announce subscriptions)
    CONNECTING   tick, retry due    ->  CONNECTING   register sent again
    CONNECTING   name_taken         ->  REFUSED      the node exits non-zero
    CONNECTING   forbidden          ->  REFUSED      (CURVE: the key may not have it)
    REGISTERED   tick, beat due     ->  REGISTERED   heartbeat sent
    REGISTERED   silence > expiry   ->  LOST         keep beating; the cage may come back
    REGISTERED   not_registered     ->  CONNECTING   the cage restarted or expired us
    LOST         heartbeat          ->  REGISTERED
    LOST         not_registered     ->  CONNECTING   register sent at once
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from zdse.codec import Heartbeat, Register
from zdse.limits import HEARTBEAT_INTERVAL, HEARTBEATS_TO_EXPIRE

__all__ = ["Session", "SessionState"]


#: Error codes that end a session: the name is not ours to have.
REFUSALS = frozenset({"name_taken", "forbidden"})


class SessionState(enum.Enum):
    """Where a node stands with its cage."""

    CONNECTING = "connecting"
    REGISTERED = "registered"
    LOST = "lost"
    REFUSED = "refused"


TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.CONNECTING, "welcome"): SessionState.REGISTERED,
    (SessionState.CONNECTING, "name_taken"): SessionState.REFUSED,
    (SessionState.CONNECTING, "forbidden"): SessionState.REFUSED,
    (SessionState.CONNECTING, "not_registered"): SessionState.CONNECTING,
    (SessionState.CONNECTING, "heartbeat"): SessionState.CONNECTING,
    (SessionState.REGISTERED, "welcome"): SessionState.REGISTERED,
    (SessionState.REGISTERED, "heartbeat"): SessionState.REGISTERED,
    (SessionState.REGISTERED, "silence"): SessionState.LOST,
    (SessionState.REGISTERED, "not_registered"): SessionState.CONNECTING,
    (SessionState.REGISTERED, "name_taken"): SessionState.REFUSED,
    (SessionState.REGISTERED, "forbidden"): SessionState.REFUSED,
    (SessionState.LOST, "heartbeat"): SessionState.REGISTERED,
    (SessionState.LOST, "welcome"): SessionState.REGISTERED,
    (SessionState.LOST, "not_registered"): SessionState.CONNECTING,
    (SessionState.LOST, "name_taken"): SessionState.REFUSED,
    (SessionState.LOST, "forbidden"): SessionState.REFUSED,
}


@dataclass(slots=True)
class Tick:
    """What a tick asks of the shell."""

    send: list[Register | Heartbeat] = field(default_factory=list)
    lost: bool = False


class Session:
    """Registration, heartbeats and cage liveness of one node.

    Args:
        register: the registration to send (and send again after a cage restart).
        now: the time the session starts.
    """

    def __init__(self, register: Register, now: float) -> None:
        self.register = register
        self.state = SessionState.CONNECTING
        self.heartbeat = HEARTBEAT_INTERVAL
        self.cage_epoch = ""
        self.registrations = 0
        self.refusal = ""
        self.refusal_code = ""
        self._last_heard = now
        self._next_send = now

    @property
    def expiry(self) -> float:
        """Seconds of silence after which the cage is taken for lost."""
        return self.heartbeat * HEARTBEATS_TO_EXPIRE

    def _move(self, event: str) -> SessionState:
        self.state = TRANSITIONS.get((self.state, event), self.state)
        return self.state

    def start(self, now: float) -> Register:
        """The first registration to send; the next try is one heartbeat later."""
        self._last_heard = now
        self._next_send = now + self.heartbeat
        return self.register

    def on_welcome(self, epoch: str, heartbeat: float, now: float) -> bool:
        """Registered. Returns True if this is a re-registration (re-announce then)."""
        self._move("welcome")
        self.cage_epoch = epoch
        self.heartbeat = heartbeat
        self.registrations += 1
        self._last_heard = now
        self._next_send = now + heartbeat
        return self.registrations > 1

    def on_heartbeat(self, epoch: str, now: float) -> Register | None:
        """The cage beat. A cage of another epoch means it restarted: register again."""
        self._last_heard = now
        if self.cage_epoch and epoch != self.cage_epoch:
            self.state = SessionState.CONNECTING
            return self.register
        self._move("heartbeat")
        return None

    def on_error(self, code: str, message: str, now: float) -> Register | None:
        """The cage refused something; return a registration to send, if any."""
        self._last_heard = now
        if code in REFUSALS:
            self._move(code)
            self.refusal = message
            self.refusal_code = code
            return None
        if code == "not_registered":
            was = self.state
            self._move("not_registered")
            # While connecting, our register is already on its way.
            return self.register if was is not SessionState.CONNECTING else None
        return None

    def tick(self, now: float) -> Tick:
        """Beat, retry the registration, or notice a silent cage."""
        out = Tick()
        if self.state is SessionState.REFUSED:
            return out
        if now >= self._next_send:
            self._next_send = now + self.heartbeat
            if self.state is SessionState.CONNECTING:
                out.send.append(self.register)
            else:
                out.send.append(Heartbeat())
        if self.state is SessionState.REGISTERED and now - self._last_heard > self.expiry:
            self._move("silence")
            out.lost = True
        return out
