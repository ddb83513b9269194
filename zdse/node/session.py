"""A node's registration with the cage, as a state machine. Pure.

One node's states, as in :data:`TRANSITIONS` (every input goes through it)::

    state        input            ->  state        what happens
    CONNECTING   welcome          ->  JOINING      probe sent: a Delta to itself
    CONNECTING   send_due         ->  CONNECTING   register sent again
    JOINING      heard            ->  REGISTERED   Registered (again: re-announce
                                                   subscriptions)
    JOINING      probe_due        ->  JOINING      probe sent again (backing off)
    JOINING      silence          ->  CONNECTING   register sent at once; "lost"
    JOINING      joining_long     ->  JOINING      "sub_silent": worth a warning
    JOINING      send_due         ->  JOINING      heartbeat sent
    JOINING      welcome          ->  JOINING      (a retried register's answer)
    REGISTERED   send_due         ->  REGISTERED   heartbeat sent
    REGISTERED   silence          ->  LOST         "lost"; keep beating, and keep
                                                   sending deltas (up to
                                                   LOST_SEND_BYTES): the cage
                                                   may only be stalled
    REGISTERED   welcome          ->  JOINING      (a retried register's answer)
    LOST         send_due         ->  LOST         heartbeat sent
    LOST         heartbeat        ->  REGISTERED
    LOST         welcome          ->  JOINING
    any live     not_registered   ->  CONNECTING   register sent (the cage
                                                   restarted or expired us)
    any live     new_epoch        ->  CONNECTING   register sent (a heartbeat of
                                                   a restarted cage)
    any live     name_taken       ->  REFUSED      the node exits non-zero
    any live     forbidden        ->  REFUSED      (CURVE: the key may not have it)
    REFUSED      any              ->  REFUSED      nothing, ever again
    (any other pair)              ->  unchanged    nothing: the input means
                                                   nothing there (a late probe,
                                                   a heartbeat while connecting)

"Any live" is every state but REFUSED; "register sent" leaves CONNECTING
alone (its register is on its way). The table is total on purpose: what
the cage says, and when, is never a crash; a pair missing from it is a bug
and raises :class:`~zdse.errors.ProtocolError` naming the state. Only a
probe of an earlier registration is dropped before the table: it is
another registration's message, not an input to this one.

Why JOINING: a node's DEALER and SUB connect to the cage independently, and
a SUB still retrying its connection when the DEALER is welcomed misses what
the cage's PUB sends meanwhile. A subscriber counted registered then could
take a snapshot, sync with its publisher (which from then on counts every
delta as reaching it) and lose the next delta at the PUB, unseen until a
re-announce much later. So the node is not registered, and announces no
subscription, until its SUB has received its own probe: a Delta published
under :data:`PROBE_DATAINDEX` carrying the cage's epoch and this
registration's number, through the cage that welcomed it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from zdse.errors import ProtocolError
from zdse.wire.codec import Heartbeat, Register
from zdse.wire.limits import HEARTBEAT_INTERVAL, HEARTBEATS_TO_EXPIRE, LOST_SEND_BYTES

__all__ = ["PROBE_DATAINDEX", "TRANSITIONS", "Input", "Session", "SessionState"]


#: The dataindex a node publishes its probes under, to itself.
PROBE_DATAINDEX = "~probe"
#: Seconds from a welcome's probe to the next one while none came back; each
#: wait then doubles, up to a heartbeat. A SUB retries its connection every
#: 100 ms (ZeroMQ's reconnect interval), so the second or third probe gets
#: through when the cage started after the node.
PROBE_RETRY = 0.05

#: Error codes that end a session: the name is not ours to have.
REFUSALS = frozenset({"name_taken", "forbidden"})


class SessionState(enum.Enum):
    """Where a node stands with its cage."""

    CONNECTING = "connecting"  # registering; the cage does not know us yet
    JOINING = "joining"  # welcomed; our SUB has not yet proven it receives
    REGISTERED = "registered"
    LOST = "lost"  # registered, but the cage has been silent too long
    REFUSED = "refused"


class Input(enum.Enum):
    """What can happen to a node's session: from the cage, or from the clock."""

    WELCOME = "welcome"
    HEARD = "heard"  # our own probe came back on the SUB
    HEARTBEAT = "heartbeat"  # of the cage's epoch
    NEW_EPOCH = "new_epoch"  # a heartbeat of another epoch: the cage restarted
    NOT_REGISTERED = "not_registered"
    NAME_TAKEN = "name_taken"
    FORBIDDEN = "forbidden"
    # The clock's, fed by Session.tick:
    SILENCE = "silence"  # nothing from the cage for an expiry
    SEND_DUE = "send_due"  # time to beat, or to retry the registration
    PROBE_DUE = "probe_due"  # time to probe our SUB again
    JOINING_LONG = "joining_long"  # welcomed an expiry ago, the SUB still unproven


_S, _I = SessionState, Input
_LIVE = (_S.CONNECTING, _S.JOINING, _S.REGISTERED, _S.LOST)
#: (state, input) -> next state, for every pair (see the module's docstring).
TRANSITIONS: dict[tuple[SessionState, Input], SessionState] = {
    # Unchanged unless a row below says otherwise.
    **{(state, i): state for state in SessionState for i in Input},
    (_S.CONNECTING, _I.WELCOME): _S.JOINING,
    (_S.JOINING, _I.HEARD): _S.REGISTERED,
    (_S.JOINING, _I.SILENCE): _S.CONNECTING,
    (_S.REGISTERED, _I.WELCOME): _S.JOINING,
    (_S.REGISTERED, _I.SILENCE): _S.LOST,
    (_S.LOST, _I.WELCOME): _S.JOINING,
    (_S.LOST, _I.HEARTBEAT): _S.REGISTERED,
    **{(state, _I.NEW_EPOCH): _S.CONNECTING for state in _LIVE},
    **{(state, _I.NOT_REGISTERED): _S.CONNECTING for state in _LIVE},
    **{(state, _I.NAME_TAKEN): _S.REFUSED for state in _LIVE},
    **{(state, _I.FORBIDDEN): _S.REFUSED for state in _LIVE},
}


@dataclass(slots=True)
class Tick:
    """What a tick asks of the shell."""

    send: list[Register | Heartbeat] = field(default_factory=list)
    #: Publish a probe to ourselves (see :meth:`Session.probe`).
    probe: bool = False
    #: The session just went silent: LOST, or registering again.
    lost: bool = False
    #: JOINING for another expiry: the DEALER works, but nothing came from
    #: the cage's PUB (a wrong PUB endpoint, say). Worth a warning.
    sub_silent: bool = False


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
        self._next_probe = float("inf")
        self._probe_wait = PROBE_RETRY
        self._joining_since = 0.0
        self._lost_bytes = 0

    @property
    def expiry(self) -> float:
        """Seconds of silence after which the cage is taken for lost."""
        return self.heartbeat * HEARTBEATS_TO_EXPIRE

    @property
    def known(self) -> bool:
        """Whether the cage knows this node (welcomed, its SUB proven or not)."""
        return self.state in (SessionState.JOINING, SessionState.REGISTERED)

    def carries(self, nbytes: int) -> bool:
        """Whether a delta of ``nbytes`` goes to this cage; counted if the cage is LOST.

        A cage that knows us takes every delta. One silent for an expiry
        (LOST) may only be stalled, starved of the CPU or stopped: it will
        read what waits on its connection, in order, and its subscribers see
        no gap, so it still gets deltas, up to LOST_SEND_BYTES a spell.
        """
        state = self.state
        if state is SessionState.REGISTERED or state is SessionState.JOINING:
            return True
        if state is SessionState.LOST and self._lost_bytes + nbytes <= LOST_SEND_BYTES:
            self._lost_bytes += nbytes
            return True
        return False

    def _move(self, what: Input) -> tuple[SessionState, SessionState]:
        """Feed ``what`` to the table; return the state before and after."""
        was = self.state
        target = TRANSITIONS.get((was, what))
        if target is None:  # the table is total: a bug here, not bad input
            raise ProtocolError(f"can't handle {what.value} when the session is "
                                f"{was.value}")
        self.state = target
        return was, target

    def _restarted(self, what: Input) -> Register | None:
        """Feed ``what``; the register to send if it made a live session start over."""
        was, now = self._move(what)
        # While connecting, our register is already on its way.
        if now is SessionState.CONNECTING and was is not SessionState.CONNECTING:
            return self.register
        return None

    def start(self, now: float) -> Register:
        """The first registration to send; the next try is one heartbeat later."""
        self._last_heard = now
        self._next_send = now + self.heartbeat
        return self.register

    def on_welcome(self, epoch: str, heartbeat: float, now: float) -> bool:
        """Welcomed: JOINING. True if not the first registration.

        The shell publishes the first probe at once (:meth:`probe`), the
        next ones when :meth:`tick` says.
        """
        if self._move(Input.WELCOME)[1] is SessionState.JOINING:
            self.cage_epoch = epoch
            self.heartbeat = heartbeat
            self.registrations += 1
            self._next_probe = now + PROBE_RETRY
            self._probe_wait = PROBE_RETRY
            self._joining_since = now
        self._last_heard = now
        self._next_send = now + self.heartbeat
        return self.registrations > 1

    def probe(self) -> tuple[str, int]:
        """The probe to publish to ourselves: the cage's epoch and this registration's number."""
        return self.cage_epoch, self.registrations

    def on_probe(self, epoch: str, number: int) -> bool:
        """A probe came back on the SUB. True if that makes the node REGISTERED."""
        if (epoch, number) != self.probe():
            return False  # an earlier registration's: not an input to this one
        was, now = self._move(Input.HEARD)
        if was is now:
            return False  # not JOINING: already proven, or starting over
        self._next_probe = float("inf")
        return True

    def on_heartbeat(self, epoch: str, now: float) -> Register | None:
        """The cage beat. A cage of another epoch means it restarted: register again."""
        self._last_heard = now
        new_epoch = bool(self.cage_epoch) and epoch != self.cage_epoch
        return self._restarted(Input.NEW_EPOCH if new_epoch else Input.HEARTBEAT)

    def on_error(self, code: str, message: str, now: float) -> Register | None:
        """The cage refused something; return a registration to send, if any.

        Codes other than a refusal or ``not_registered`` are not the
        session's business (the core counts them).
        """
        self._last_heard = now
        if code in REFUSALS:
            if self._move(Input(code))[1] is SessionState.REFUSED:
                self.refusal = message
                self.refusal_code = code
            return None
        if code == "not_registered":
            return self._restarted(Input.NOT_REGISTERED)
        return None

    def tick(self, now: float) -> Tick:
        """Feed the clock's inputs that are due: silence, a beat or retry, a probe."""
        out = Tick()
        if now - self._last_heard > self.expiry:
            was, state = self._move(Input.SILENCE)
            if state is not was:
                out.lost = True
                self._lost_bytes = 0
                if state is SessionState.CONNECTING:
                    # Welcomed but never proven, then silence: start over now.
                    self._next_send = now
        if now >= self._next_send:
            was, state = self._move(Input.SEND_DUE)
            if state is not SessionState.REFUSED:
                self._next_send = now + self.heartbeat
                out.send.append(self.register if state is SessionState.CONNECTING
                                else Heartbeat())
        if (now - self._joining_since >= self.expiry
                and self._move(Input.JOINING_LONG)[1] is SessionState.JOINING):
            self._joining_since = now  # said again after another expiry
            out.sub_silent = True
        if now >= self._next_probe and self._move(Input.PROBE_DUE)[1] is SessionState.JOINING:
            out.probe = True
            self._probe_wait = min(2 * self._probe_wait, self.heartbeat)
            self._next_probe = now + self._probe_wait
        return out

    def due_in(self, now: float) -> float:
        """Seconds until the session needs a tick for a probe (inf when none is due)."""
        if self.state is not SessionState.JOINING:
            return float("inf")
        return max(0.0, self._next_probe - now)
