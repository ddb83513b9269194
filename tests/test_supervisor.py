"""The supervisor's pure state machine: restarts, backoff, failure, stop, reload, config changes.

Time is a number the tests pass in; a fake shell turns Spawn actions into
pids, so nothing here starts a process or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from zdse.errors import ConfigError, SupervisorError
from zdse.supervisor.core import (
    TRANSITIONS,
    Action,
    Input,
    Kill,
    Log,
    RestartPolicy,
    ServiceSpec,
    Spawn,
    State,
    SupervisorCore,
    Terminate,
)

POLICY = RestartPolicy(backoff=1.0, backoff_max=4.0, max_restarts=3, window=60.0,
                       stop_timeout=5.0, start_timeout=30.0)
SPEC = ServiceSpec("files.boston", "file", ("files.all",), (("path", "b.json"),))


@dataclass
class FakeShell:
    """Carries out actions as the real shell would, with made-up pids."""

    core: SupervisorCore = field(default_factory=lambda: SupervisorCore(POLICY))
    next_pid: int = 100
    done: list[str] = field(default_factory=list)
    #: What the shell logged: (event, fields).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def do(self, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self.next_pid += 1
                self.done.append("spawn")
                self.do(self.core.spawned(action.spec.name, self.next_pid, now), now)
            elif isinstance(action, Log):
                self.events.append((action.event, action.fields))
            elif isinstance(action, Terminate):
                self.done.append("term")
            elif isinstance(action, Kill):
                self.done.append("kill")

    def pid(self, name: str = SPEC.name) -> int:
        return self.core.services[name].pid

    def step(self, now: float, what: str, name: str = SPEC.name) -> None:
        core = self.core
        if what == "start":
            self.do(core.start(name, now), now)
        elif what == "stop":
            self.do(core.stop(name, now), now)
        elif what == "reload":
            self.do(core.reload(name, now), now)
        elif what == "registered":
            self.do(core.registered(name, self.pid(name), now), now)
        elif what == "crash":
            self.do(core.exited(name, self.pid(name), 1, "exited with code 1: boom", now), now)
        elif what == "exit":
            self.do(core.exited(name, self.pid(name), 0, "exited with code 0", now), now)
        elif what == "tick":
            self.do(core.tick(now), now)
        else:
            raise AssertionError(what)


def shell_with(*specs: ServiceSpec) -> FakeShell:
    shell = FakeShell()
    shell.do(shell.core.configure({s.name: s for s in specs}, 0.0), 0.0)
    return shell


#: (time, input, state after it, actions carried out by it) for one service
#: that starts at time 0 from the config.
SCENARIOS: dict[str, list[tuple[float, str, State, list[str]]]] = {
    "crash, backoff, restart": [
        (1.0, "registered", State.RUNNING, []),
        (2.0, "crash", State.BACKOFF, []),
        (2.5, "tick", State.BACKOFF, []),  # backoff is 1 s: not yet
        (3.0, "tick", State.STARTING, ["spawn"]),
        (4.0, "registered", State.RUNNING, []),
    ],
    "backoff doubles up to backoff_max": [
        (1.0, "crash", State.BACKOFF, []),
        (2.0, "tick", State.STARTING, ["spawn"]),  # waited 1
        (2.0, "crash", State.BACKOFF, []),
        (3.9, "tick", State.BACKOFF, []),
        (4.0, "tick", State.STARTING, ["spawn"]),  # waited 2
        (4.0, "crash", State.BACKOFF, []),
        (7.9, "tick", State.BACKOFF, []),
        (8.0, "tick", State.STARTING, ["spawn"]),  # waited 4 (the cap)
    ],
    "too many crashes in the window: failed, not restarted": [
        (1.0, "crash", State.BACKOFF, []),
        (2.0, "tick", State.STARTING, ["spawn"]),
        (2.0, "crash", State.BACKOFF, []),
        (4.0, "tick", State.STARTING, ["spawn"]),
        (4.0, "crash", State.BACKOFF, []),
        (8.0, "tick", State.STARTING, ["spawn"]),
        (8.0, "crash", State.FAILED, []),  # the 4th crash; max_restarts is 3
        (1000.0, "tick", State.FAILED, []),
    ],
    "crashes older than the window are forgiven": [
        (1.0, "crash", State.BACKOFF, []),
        (2.0, "tick", State.STARTING, ["spawn"]),
        (2.0, "crash", State.BACKOFF, []),
        (4.0, "tick", State.STARTING, ["spawn"]),
        (4.0, "registered", State.RUNNING, []),
        (100.0, "crash", State.BACKOFF, []),
        (100.9, "tick", State.BACKOFF, []),
        (101.0, "tick", State.STARTING, ["spawn"]),  # the first backoff again
    ],
    "stop while in backoff cancels the restart": [
        (1.0, "crash", State.BACKOFF, []),
        (1.5, "stop", State.STOPPED, []),
        (100.0, "tick", State.STOPPED, []),
        (101.0, "start", State.STARTING, ["spawn"]),
    ],
    "stop terminates, then kills after stop_timeout": [
        (1.0, "registered", State.RUNNING, []),
        (2.0, "stop", State.STOPPING, ["term"]),
        (6.9, "tick", State.STOPPING, []),
        (7.0, "tick", State.STOPPING, ["kill"]),
        (8.0, "tick", State.STOPPING, []),  # one SIGKILL only
        (8.0, "crash", State.STOPPED, []),  # any exit while stopping is a stop
        (9.0, "stop", State.STOPPED, []),
    ],
    "reload: a new process once the old one exited": [
        (1.0, "registered", State.RUNNING, []),
        (2.0, "reload", State.STOPPING, ["term"]),
        (2.5, "exit", State.STARTING, ["spawn"]),
        (3.0, "registered", State.RUNNING, []),
    ],
    "reload of a stopped service starts it": [
        (1.0, "stop", State.STOPPING, ["term"]),
        (1.5, "exit", State.STOPPED, []),
        (2.0, "reload", State.STARTING, ["spawn"]),
    ],
    "start while stopping starts again after the exit": [
        (1.0, "stop", State.STOPPING, ["term"]),
        (1.2, "start", State.STOPPING, []),
        (1.5, "exit", State.STARTING, ["spawn"]),
    ],
    "a node that does not register in time is stopped, and that is a crash": [
        (29.9, "tick", State.STARTING, []),
        (30.0, "tick", State.STOPPING, ["term"]),
        (30.5, "exit", State.BACKOFF, []),
        (31.5, "tick", State.STARTING, ["spawn"]),
        (32.0, "registered", State.RUNNING, []),
        (1000.0, "tick", State.RUNNING, []),  # registered: no start deadline any more
    ],
    "start of a failed service tries again, with its crashes forgiven": [
        (1.0, "crash", State.BACKOFF, []),
        (2.0, "tick", State.STARTING, ["spawn"]),
        (2.0, "crash", State.BACKOFF, []),
        (4.0, "tick", State.STARTING, ["spawn"]),
        (4.0, "crash", State.BACKOFF, []),
        (8.0, "tick", State.STARTING, ["spawn"]),
        (8.0, "crash", State.FAILED, []),
        (9.0, "start", State.STARTING, ["spawn"]),
        (9.5, "crash", State.BACKOFF, []),
    ],
}


@pytest.mark.parametrize("steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(steps: list[tuple[float, str, State, list[str]]]) -> None:
    """Each step moves the service to the expected state with the expected actions."""
    shell = shell_with(SPEC)
    assert shell.done == ["spawn"]
    assert shell.core.services[SPEC.name].state is State.STARTING
    for now, what, state, actions in steps:
        shell.done.clear()
        shell.step(now, what)
        record = shell.core.services[SPEC.name]
        assert (record.state, shell.done) == (state, actions), (now, what)


def test_restarts_count_only_automatic_restarts() -> None:
    """restarts counts restarts after crashes, not operator starts or reloads."""
    shell = shell_with(SPEC)
    for now, what in [(1, "crash"), (2, "tick"), (3, "registered"), (4, "reload"), (5, "exit"),
                      (6, "stop"), (7, "exit"), (8, "start")]:
        shell.step(now, what)
    assert shell.core.services[SPEC.name].restarts == 1


def test_failed_keeps_the_last_error_and_logs_it_once() -> None:
    """A service that keeps crashing ends FAILED with its last error, in one event."""
    shell = shell_with(SPEC)
    now = 0.0
    while shell.core.services[SPEC.name].state is not State.FAILED:
        now += 10
        shell.step(now, "tick")
        shell.do(shell.core.exited(SPEC.name, shell.pid(), 2, f"crash at {now}", now), now)
    record = shell.core.services[SPEC.name]
    assert record.last_error == f"crash at {now}"
    assert record.pid == 0
    failed = [f for e, f in shell.events if e == "service.failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == f"crash at {now}"
    row = shell.core.rows(now)[0]
    assert (row["state"], row["last_error"], row["restarts"]) == ("failed", f"crash at {now}", 3)


def test_an_exit_of_an_older_process_is_ignored() -> None:
    """An exit reported for a pid that is not the current one changes nothing."""
    shell = shell_with(SPEC)
    shell.step(1, "registered")
    assert shell.core.exited(SPEC.name, 99999, 1, "old", 2.0) == []
    assert shell.core.services[SPEC.name].state is State.RUNNING


def test_a_spawn_that_fails_counts_as_a_crash() -> None:
    """If the process cannot be started at all, the service backs off with the error."""
    core = SupervisorCore(POLICY)
    actions = core.configure({SPEC.name: SPEC}, 0.0)
    assert actions == [Spawn(SPEC)]
    core.spawn_failed(SPEC.name, "cannot start: No such file", 0.0)
    record = core.services[SPEC.name]
    assert (record.state, record.last_error) == (State.BACKOFF, "cannot start: No such file")


def test_registered_only_counts_for_the_current_starting_process() -> None:
    """A registration by another pid (a stranger holding the name) does not make it RUNNING."""
    shell = shell_with(SPEC)
    assert shell.core.registered(SPEC.name, 4242, 1.0) == []
    assert shell.core.services[SPEC.name].state is State.STARTING


def test_unknown_service_and_impossible_inputs_name_the_problem() -> None:
    """Errors say which service is unknown, or which input cannot happen in which state."""
    shell = shell_with(SPEC)
    with pytest.raises(SupervisorError, match=r"no supervised service named 'nope'.*files\.boston"):
        shell.core.start("nope", 1.0)
    shell.step(1, "stop")
    shell.step(2, "exit")
    with pytest.raises(SupervisorError, match=r"can't handle exited when service "
                                              r"'files\.boston' is stopped"):
        shell.core.handle(SPEC.name, Input.EXITED, 3.0)


def test_operator_inputs_are_defined_in_every_state() -> None:
    """start, stop and reload have a transition from every state."""
    for state in State:
        for what in (Input.START, Input.STOP, Input.RELOAD):
            assert (state, what) in TRANSITIONS


def test_configure_adds_removes_and_reloads_only_what_changed() -> None:
    """A new config starts added services, stops removed ones, reloads changed ones only."""
    a, b, c = (ServiceSpec(n, "file", (), (("path", f"{n}.json"),)) for n in ("a", "b", "c"))
    shell = shell_with(a, b)
    for name in ("a", "b"):
        shell.step(1, "registered", name)
    pid_a = shell.pid("a")
    b2 = ServiceSpec("b", "file", (), (("path", "other.json"),))
    shell.done.clear()
    shell.do(shell.core.configure({"a": a, "b": b2, "c": c}, 2.0), 2.0)
    assert shell.done == ["term", "spawn"]  # b reloads, c starts
    assert shell.pid("a") == pid_a
    assert shell.core.services["b"].state is State.STOPPING
    shell.step(3, "exit", "b")
    assert shell.core.services["b"].state is State.STARTING
    assert shell.core.services["b"].spec == b2

    shell.done.clear()
    shell.do(shell.core.configure({"a": a, "b": b2}, 4.0), 4.0)
    assert shell.done == ["term"]  # c stops
    assert "c" in shell.core.services
    shell.step(5, "exit", "c")
    assert "c" not in shell.core.services
    assert ("service.removed", {"service": "c"}) in shell.events
    assert shell.pid("a") == pid_a


def test_a_service_removed_and_added_back_while_stopping_starts_again() -> None:
    """Taking a service out of the config and back in before it stopped keeps it."""
    shell = shell_with(SPEC)
    shell.do(shell.core.configure({}, 1.0), 1.0)
    shell.do(shell.core.configure({SPEC.name: SPEC}, 1.5), 1.5)
    shell.done.clear()
    shell.step(2, "exit")
    assert shell.done == ["spawn"]
    assert shell.core.services[SPEC.name].state is State.STARTING


def test_autostart_false_waits_for_an_operator() -> None:
    """A service with autostart = false is known but stopped until started."""
    lazy = ServiceSpec("lazy", "file", autostart=False)
    shell = shell_with(lazy)
    assert shell.done == []
    assert shell.core.rows(0.0)[0]["state"] == "stopped"
    shell.step(1, "start", "lazy")
    assert shell.done == ["spawn"]


def test_rows_show_state_pid_uptime_and_retry() -> None:
    """rows() gives what zdse-ctl services shows for a supervised service."""
    shell = shell_with(SPEC)
    shell.step(1, "crash")
    row: dict[str, Any] = shell.core.rows(1.25)[0]
    assert row["state"] == "backoff"
    assert row["pid"] == 0
    assert row["retry_in"] == 0.75
    shell.step(2, "tick")
    row = shell.core.rows(5.0)[0]
    assert (row["state"], row["uptime"], row["retry_in"]) == ("starting", 3.0, None)


def test_policy_rejects_nonsense() -> None:
    """A restart policy with a zero or negative time is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match="backoff must be above zero"):
        RestartPolicy(backoff=0)
    with pytest.raises(ConfigError, match="max_restarts"):
        RestartPolicy(max_restarts=-1)


def test_a_start_timeout_is_a_crash_with_its_reason() -> None:
    """The last error of a node stopped for not registering says so, and how it ended."""
    shell = shell_with(SPEC)
    shell.step(30.0, "tick")
    shell.step(31.0, "exit")
    record = shell.core.services[SPEC.name]
    assert record.last_error == "did not register within 30 s; exited with code 0"
    assert record.crashes == [31.0]
