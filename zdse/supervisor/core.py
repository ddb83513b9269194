"""What the cage decides about the node processes it supervises. Pure.

No processes, no signals, no clock: the shell (:mod:`zdse.supervisor.processes`) feeds
:class:`SupervisorCore` what happened (an operator's start / stop / reload,
a process that exited, a node that registered, the time) and carries out
the :data:`Action` values it returns (spawn a node, terminate one, kill one,
log a lifecycle change).

One service's states, as in :data:`TRANSITIONS`::

    STOPPED --start/reload--> STARTING --registered--> RUNNING
    STARTING, RUNNING --exited--> BACKOFF --deadline--> STARTING  (a restart)
                                  FAILED   (more than max_restarts crashes
                                            within window seconds)
    STARTING, RUNNING --stop--> STOPPING --exited--> STOPPED
    STARTING, RUNNING --reload--> STOPPING --exited--> STARTING  (new process,
                                                                   fresh code)
    STOPPING --deadline--> STOPPING  (SIGKILL after stop_timeout)
    STARTING --deadline--> STOPPING --exited--> BACKOFF or FAILED  (not
                                     registered within start_timeout: a crash)
    BACKOFF --stop--> STOPPED        FAILED --start/reload--> STARTING
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from zdse.backoff import backoff
from zdse.errors import ConfigError, SupervisorError

__all__ = [
    "TRANSITIONS",
    "Action",
    "Input",
    "Kill",
    "Log",
    "RestartPolicy",
    "ServiceSpec",
    "Spawn",
    "State",
    "Supervised",
    "SupervisorCore",
    "Terminate",
]


class State(enum.Enum):
    """Where a supervised service is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"  # process spawned, not registered yet
    RUNNING = "running"  # registered with the cage
    BACKOFF = "backoff"  # crashed; waiting before the next restart
    STOPPING = "stopping"  # terminated, waiting for the process to exit
    FAILED = "failed"  # crashed too often; waits for an operator


class Input(enum.Enum):
    """What can happen to a supervised service."""

    START = "start"
    STOP = "stop"
    RELOAD = "reload"
    REGISTERED = "registered"
    EXITED = "exited"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """How to run one supervised service: ``zdse-node --module ... --name ...``.

    Attributes:
        name: the service's unique name.
        module: the module (entry point in ``zdse.modules``).
        addresses: its extra addresses.
        options: its ``--set KEY=VALUE`` options, in order.
        autostart: start it when the cage starts or the config adds it.
        curve_key: the node's CURVE secret key file, when the cage uses CURVE.
    """

    name: str
    module: str
    addresses: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    autostart: bool = True
    curve_key: str | None = None

    def same_process(self, other: ServiceSpec) -> bool:
        """Tell whether ``other`` runs the same process (only autostart differs)."""
        return replace(self, autostart=other.autostart) == other


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart a crashed node, and when to give up.

    Attributes:
        backoff: seconds before the first restart after a crash; doubled
            for each further crash within ``window``.
        backoff_max: the longest wait between restarts.
        max_restarts: restarts allowed within ``window``; the crash after
            them marks the service FAILED.
        window: seconds over which crashes are counted.
        stop_timeout: seconds a node gets to exit after SIGTERM before SIGKILL.
        start_timeout: seconds a node gets to register after it was spawned;
            one that does not (a wrong key, a hung import) is stopped and
            counts as a crash.
    """

    backoff: float = 1.0
    backoff_max: float = 30.0
    max_restarts: int = 5
    window: float = 60.0
    stop_timeout: float = 5.0
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("backoff", "backoff_max", "window", "stop_timeout", "start_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"restart policy: {name} must be above zero")
        if self.max_restarts < 0:
            raise ConfigError("restart policy: max_restarts must be 0 or more")

    def delay(self, crashes: int) -> float:
        """Seconds to wait before restarting after the ``crashes``-th crash in the window."""
        return backoff(crashes, self.backoff, self.backoff_max)


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start a node process for ``spec``; report it with :meth:`SupervisorCore.spawned`."""

    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class Terminate:
    """Ask process ``pid`` of service ``name`` to stop (SIGTERM)."""

    name: str
    pid: int


@dataclass(frozen=True, slots=True)
class Kill:
    """Kill process ``pid`` of service ``name`` (SIGKILL): it ignored Terminate."""

    name: str
    pid: int


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``event`` with ``fields``: a service's lifecycle changed."""

    event: str
    fields: dict[str, Any]


Action = Spawn | Terminate | Kill | Log


@dataclass(slots=True)
class Supervised:
    """One supervised service, as the supervisor knows it."""

    spec: ServiceSpec
    state: State = State.STOPPED
    #: The live process, 0 when there is none.
    pid: int = 0
    #: When the live process was spawned.
    spawned_at: float = 0.0
    #: Automatic restarts after crashes, since the cage started.
    restarts: int = 0
    #: Times of the crashes within the policy's window.
    crashes: list[float] = field(default_factory=list)
    last_error: str = ""
    #: STARTING: when to give up waiting for the registration. BACKOFF: when
    #: to restart. STOPPING: when to send SIGKILL.
    deadline: float | None = None
    #: STOPPING: the state to go on to once the process exited (BACKOFF: the
    #: exit counts as a crash, see _start_timed_out).
    then: State = State.STOPPED
    #: Why the next spawn happens: start, reload or restart.
    reason: str = "start"
    #: Removed from the config: forget it once stopped.
    retiring: bool = False


Handler = Callable[["SupervisorCore", Supervised, float, dict[str, Any]], list[Action]]


class SupervisorCore:
    """The supervised services of one cage and their state machines.

    Every method that takes an input returns the actions to carry out, in
    order, with a :class:`Log` for each lifecycle change it made.

    Args:
        policy: when to restart and when to give up.
    """

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self.services: dict[str, Supervised] = {}
        #: Lifecycle changes of the input being handled, returned with its actions.
        self._notes: list[Log] = []

    # --- inputs ----------------------------------------------------------------

    def configure(self, specs: Mapping[str, ServiceSpec], now: float) -> list[Action]:
        """Take a new set of services: start added ones, stop removed ones.

        A service whose definition changed is reloaded (if it runs) so the new
        one takes effect; services whose definition is unchanged are left alone.
        """
        actions: list[Action] = []
        for name in list(self.services):
            if name not in specs:
                record = self.services[name]
                record.retiring = True
                actions += self.handle(name, Input.STOP, now)
        for name, spec in specs.items():
            record_or_none = self.services.get(name)
            if record_or_none is None:
                self.services[name] = Supervised(spec)
                if spec.autostart:
                    actions += self.handle(name, Input.START, now)
                continue
            record = record_or_none
            old, record.spec = record.spec, spec
            if record.retiring:
                record.retiring = False
                if spec.autostart:
                    actions += self.handle(name, Input.START, now)
            elif not old.same_process(spec) and record.state is not State.STOPPED:
                actions += self.handle(name, Input.RELOAD, now)
        return actions

    def start(self, name: str, now: float) -> list[Action]:
        """An operator asks to start ``name`` (at once, even from BACKOFF or FAILED)."""
        return self.handle(name, Input.START, now)

    def stop(self, name: str, now: float) -> list[Action]:
        """An operator asks to stop ``name``; it stays stopped until started."""
        return self.handle(name, Input.STOP, now)

    def reload(self, name: str, now: float) -> list[Action]:
        """An operator asks for a new process of ``name`` (fresh code, fresh epoch)."""
        return self.handle(name, Input.RELOAD, now)

    def stop_all(self, now: float) -> list[Action]:
        """Stop every service (the cage is shutting down)."""
        actions: list[Action] = []
        for name in list(self.services):
            actions += self.handle(name, Input.STOP, now)
        return actions

    def spawned(self, name: str, pid: int, now: float) -> list[Action]:
        """The shell started the process that a :class:`Spawn` asked for."""
        record = self._get(name)
        record.pid = pid
        record.spawned_at = now
        if record.reason == "restart":
            self._notes.append(Log("service.restarted", {"service": name, "pid": pid,
                                                      "restarts": record.restarts}))
        else:
            self._notes.append(Log("service.started", {"service": name, "pid": pid,
                                                    "reason": record.reason}))
        return self._with_notes([])

    def spawn_failed(self, name: str, error: str, now: float) -> list[Action]:
        """The shell could not start the process: counts as a crash."""
        record = self._get(name)
        record.pid = 0
        return self.handle(name, Input.EXITED, now, code=None, error=error)

    def registered(self, name: str, pid: int, now: float) -> list[Action]:
        """The node process ``pid`` of ``name`` registered with the cage."""
        record = self.services.get(name)
        if record is None or record.pid != pid or record.state is not State.STARTING:
            return []
        return self.handle(name, Input.REGISTERED, now)

    def exited(
        self, name: str, pid: int, code: int | None, error: str, now: float
    ) -> list[Action]:
        """Process ``pid`` of ``name`` exited with ``code`` (negative: killed by
        that signal); ``error`` says how, with its last error line."""
        record = self.services.get(name)
        if record is None or record.pid != pid or pid == 0:
            return []  # a process of an earlier generation
        return self.handle(name, Input.EXITED, now, code=code, error=error)

    def tick(self, now: float) -> list[Action]:
        """Act on deadlines that passed: restarts after backoff, SIGKILL after stop_timeout."""
        actions: list[Action] = []
        for name, record in list(self.services.items()):
            if record.deadline is not None and now >= record.deadline:
                actions += self.handle(name, Input.DEADLINE, now)
        return actions

    def handle(self, name: str, what: Input, now: float, **data: Any) -> list[Action]:
        """Feed one input to service ``name``'s state machine.

        Raises:
            SupervisorError: no such service, or ``what`` cannot happen in its state.
        """
        record = self._get(name)
        handler = TRANSITIONS.get((record.state, what))
        if handler is None:
            raise SupervisorError(
                f"can't handle {what.value} when service {name!r} is {record.state.value}"
            )
        actions = handler(self, record, now, data)
        self._forget_if_done(record)
        return self._with_notes(actions)

    def _with_notes(self, actions: list[Action]) -> list[Action]:
        """``actions`` after the Log of each change made on the way."""
        if not self._notes:
            return actions
        notes, self._notes = self._notes, []
        return [*notes, *actions]

    # --- what the shell shows ---------------------------------------------------

    def rows(self, now: float) -> list[dict[str, Any]]:
        """One row per service: name, module, addresses, state, pid, restarts,
        uptime, last_error, retry_in."""
        return [
            {
                "name": r.spec.name,
                "module": r.spec.module,
                "addresses": list(r.spec.addresses),
                "state": r.state.value,
                "pid": r.pid,
                "restarts": r.restarts,
                "uptime": round(now - r.spawned_at, 3) if r.pid else 0.0,
                "last_error": r.last_error,
                "retry_in": (round(max(0.0, r.deadline - now), 3)
                             if r.state is State.BACKOFF and r.deadline is not None else None),
            }
            for r in sorted(self.services.values(), key=lambda r: r.spec.name)
        ]

    # --- transitions ------------------------------------------------------------

    def _get(self, name: str) -> Supervised:
        record = self.services.get(name)
        if record is None:
            known = ", ".join(sorted(self.services)) or "none"
            raise SupervisorError(f"no supervised service named {name!r} (supervised: {known})")
        return record

    def _forget_if_done(self, record: Supervised) -> None:
        if record.retiring and record.state in (State.STOPPED, State.FAILED):
            del self.services[record.spec.name]
            self._notes.append(Log("service.removed", {"service": record.spec.name}))

    def _spawn(self, record: Supervised, reason: str, now: float) -> list[Action]:
        record.state = State.STARTING
        record.deadline = now + self.policy.start_timeout
        record.reason = reason
        record.pid = 0
        return [Spawn(record.spec)]

    def _start(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        # An operator's start forgives earlier crashes.
        record.crashes.clear()
        return self._spawn(record, "start", now)

    def _reload_stopped(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.crashes.clear()
        return self._spawn(record, "reload", now)

    def _restart(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.restarts += 1
        return self._spawn(record, "restart", now)

    def _terminate(self, record: Supervised, now: float, then: State) -> list[Action]:
        record.state = State.STOPPING
        record.then = then
        if record.pid == 0:  # no process to wait for (never started)
            return self._stopped(record, now, {})
        record.deadline = now + self.policy.stop_timeout
        self._notes.append(Log("service.stopping", {"service": record.spec.name, "pid": record.pid,
                                                 "then": then.value}))
        return [Terminate(record.spec.name, record.pid)]

    def _stop(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        return self._terminate(record, now, State.STOPPED)

    def _reload(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.reason = "reload"
        return self._terminate(record, now, State.STARTING)

    def _running(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.state = State.RUNNING
        record.deadline = None
        self._notes.append(Log("service.running", {"service": record.spec.name, "pid": record.pid}))
        return []

    def _crashed(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        policy = self.policy
        record.pid = 0
        record.last_error = str(data.get("error", ""))
        record.crashes = [t for t in record.crashes if t > now - policy.window] + [now]
        name = record.spec.name
        if len(record.crashes) > policy.max_restarts:
            record.state = State.FAILED
            record.deadline = None
            self._notes.append(Log("service.failed", {
                "service": name, "code": data.get("code"), "error": record.last_error,
                "crashes": len(record.crashes), "window": policy.window,
            }))
            return []
        delay = policy.delay(len(record.crashes))
        record.state = State.BACKOFF
        record.deadline = now + delay
        self._notes.append(Log("service.crashed", {
            "service": name, "code": data.get("code"), "error": record.last_error,
            "retry_in": delay,
        }))
        return []

    def _start_timed_out(
        self, record: Supervised, now: float, data: dict[str, Any]
    ) -> list[Action]:
        record.last_error = f"did not register within {self.policy.start_timeout:g} s"
        return self._terminate(record, now, State.BACKOFF)

    def _stopped(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        if record.then is State.BACKOFF:  # stopped for not registering: a crash
            how = data.get("error")
            error = f"{record.last_error}; {how}" if how else record.last_error
            return self._crashed(record, now, {**data, "error": error})
        record.pid = 0
        record.deadline = None
        if record.then is State.STARTING and not record.retiring:
            record.crashes.clear()
            return self._spawn(record, record.reason, now)
        record.state = State.STOPPED
        self._notes.append(Log("service.stopped", {"service": record.spec.name,
                                                "code": data.get("code")}))
        return []

    def _cancel_backoff(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.state = State.STOPPED
        record.deadline = None
        self._notes.append(Log("service.stopped", {"service": record.spec.name, "code": None}))
        return []

    def _stop_failed(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.state = State.STOPPED
        return []

    def _kill(self, record: Supervised, now: float, data: dict[str, Any]) -> list[Action]:
        record.deadline = None  # one SIGKILL; the exit comes next
        self._notes.append(Log("service.killed", {"service": record.spec.name, "pid": record.pid,
                                               "after": self.policy.stop_timeout}))
        return [Kill(record.spec.name, record.pid)]

    @staticmethod
    def _nothing(
        core: SupervisorCore, record: Supervised, now: float, data: dict[str, Any]
    ) -> list[Action]:
        return []


def _then(then: State, reason: str) -> Handler:
    def call(
        core: SupervisorCore, record: Supervised, now: float, data: dict[str, Any]
    ) -> list[Action]:
        # Already stopping: only what follows the exit changes.
        record.then = then
        record.reason = reason
        return []
    return call


_S, _I = State, Input
_NOTHING = SupervisorCore._nothing

#: (state, input) -> what to do. A pair that is missing cannot happen, and
#: :meth:`SupervisorCore.handle` says so naming the state.
TRANSITIONS: dict[tuple[State, Input], Handler] = {
    (_S.STOPPED, _I.START): SupervisorCore._start,
    (_S.STOPPED, _I.STOP): _NOTHING,
    (_S.STOPPED, _I.RELOAD): SupervisorCore._reload_stopped,
    (_S.STARTING, _I.START): _NOTHING,
    (_S.STARTING, _I.STOP): SupervisorCore._stop,
    (_S.STARTING, _I.RELOAD): SupervisorCore._reload,
    (_S.STARTING, _I.REGISTERED): SupervisorCore._running,
    (_S.STARTING, _I.EXITED): SupervisorCore._crashed,
    (_S.STARTING, _I.DEADLINE): SupervisorCore._start_timed_out,
    (_S.RUNNING, _I.START): _NOTHING,
    (_S.RUNNING, _I.STOP): SupervisorCore._stop,
    (_S.RUNNING, _I.RELOAD): SupervisorCore._reload,
    (_S.RUNNING, _I.EXITED): SupervisorCore._crashed,
    (_S.BACKOFF, _I.START): SupervisorCore._start,
    (_S.BACKOFF, _I.STOP): SupervisorCore._cancel_backoff,
    (_S.BACKOFF, _I.RELOAD): SupervisorCore._reload_stopped,
    (_S.BACKOFF, _I.DEADLINE): SupervisorCore._restart,
    (_S.STOPPING, _I.START): _then(State.STARTING, "start"),
    (_S.STOPPING, _I.STOP): _then(State.STOPPED, "start"),
    (_S.STOPPING, _I.RELOAD): _then(State.STARTING, "reload"),
    (_S.STOPPING, _I.EXITED): SupervisorCore._stopped,
    (_S.STOPPING, _I.DEADLINE): SupervisorCore._kill,
    (_S.FAILED, _I.START): SupervisorCore._start,
    (_S.FAILED, _I.STOP): SupervisorCore._stop_failed,
    (_S.FAILED, _I.RELOAD): SupervisorCore._reload_stopped,
}
