"""The cage's supervisor shell: node processes around :class:`~zdse.supervisor.core.SupervisorCore`.

It spawns ``zdse-node`` processes (``python -m zdse.cli.node``, the cage's
own interpreter, the cage's endpoints), reads each one's stderr on a thread
(relaying its log lines into the cage's log and keeping its last error line),
reaps them, and feeds what happened to the pure core, then carries out the
actions the core returns. It runs inside the cage's loop: :meth:`Supervisor.tick`
is called every heartbeat/4 and nothing it does blocks (a spawn is a
fork/exec, a stop is a signal, a reap is a non-blocking wait, and the check
of a reloaded config's modules is a child process it polls).

Control requests to the key ``cage``: ``start``, ``stop``, ``reload`` (args
``{"name": NAME}``), ``reload-config``, and ``services`` gains each
supervised service's state, restarts and last error.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from zdse.cage.config import CageConfig, load
from zdse.cage.control import ControlDesk, Later
from zdse.cage.core import CageCore, merge_services
from zdse.errors import ConfigError, SupervisorError
from zdse.log import follow_lines, get_logger
from zdse.modules import registry as modules
from zdse.modules.check import ModuleCheck
from zdse.supervisor.core import (
    Action,
    Kill,
    Log,
    ServiceSpec,
    Spawn,
    State,
    SupervisorCore,
    Terminate,
)
from zdse.wire.endpoints import Endpoints

__all__ = ["PARENT_ENV", "Launcher", "NodeProcess", "Supervisor", "connectable", "follow_parent"]

#: Set in a supervised node's environment to the cage's pid (see follow_parent).
PARENT_ENV = "ZDSE_SUPERVISOR_PID"
#: Seconds to wait, after a process exited, for the rest of its stderr (its
#: last error line) before reporting the exit without it: a grandchild that
#: inherited the pipe must not hold the report back for ever.
EOF_GRACE = 1.0
#: Linux prctl option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1

log = get_logger(component="supervisor")
_relay = get_logger()

_LEVELS = {"service.crashed": "warning", "service.failed": "error",
           "service.killed": "warning"}


def follow_parent() -> None:
    """In a supervised node: get SIGTERM when the cage dies, even by SIGKILL.

    Does nothing unless the cage set :data:`PARENT_ENV`, or off Linux.
    """
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(parent):  # the cage died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_WILDCARD_HOST = re.compile(r"^tcp://(\*|0\.0\.0\.0|\[::\]|\[\*\]):")


def connectable(endpoint: str) -> str:
    """The endpoint a local node connects to for a bound one (``tcp://*:N`` -> loopback)."""
    match = _WILDCARD_HOST.match(endpoint)
    if match is None:
        return endpoint
    loopback = "[::1]" if match[1].startswith("[") else "127.0.0.1"
    return f"tcp://{loopback}:{endpoint[match.end():]}"


class Launcher:
    """How the cage starts a node: the command line and environment.

    Args:
        endpoints: returns the endpoints nodes connect to (asked at the first
            spawn, once the cage has bound its sockets).
        log_level: the nodes' ``--log-level``.
        cage_key: the cage's CURVE key file (public or secret: nodes read only
            the public key), when the cage uses CURVE.
    """

    def __init__(self, endpoints: Callable[[], Endpoints], log_level: str = "info",
                 cage_key: str | None = None) -> None:
        self._endpoints = endpoints
        self._resolved: Endpoints | None = None
        self.log_level = log_level
        self.cage_key = cage_key

    def argv(self, spec: ServiceSpec) -> list[str]:
        """The command line of ``spec``'s node."""
        if self._resolved is None:
            self._resolved = self._endpoints()
        argv = [sys.executable, "-m", "zdse.cli.node", "--module", spec.module,
                "--name", spec.name, "--router", self._resolved.router,
                "--pub", self._resolved.pub, "--log-level", self.log_level,
                # The cage reads its nodes' stderr as JSON lines.
                "--log-format", "json"]
        for address in spec.addresses:
            argv += ["--address", address]
        for key, value in spec.options:
            argv += ["--set", f"{key}={value}"]
        if self.cage_key is not None and spec.curve_key is not None:
            argv += ["--curve-key", spec.curve_key, "--cage-key", self.cage_key]
        return argv

    def spawn(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        """Start ``spec``'s node with its stderr piped to us.

        Raises:
            OSError: the process could not be started.
        """
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        # Its own process group: a Ctrl-C at the cage's terminal reaches the
        # cage, which stops its nodes in order, not every node at once.
        return subprocess.Popen(self.argv(spec), env=env, stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, process_group=0)


class NodeProcess:
    """One node process: a thread relays its stderr and keeps its last error line."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str) -> None:
        self.popen = popen
        self.name = name
        self.pid = popen.pid
        self.last_error = ""
        self.eof = threading.Event()
        #: When the loop first saw the process exited (see EOF_GRACE).
        self.exit_seen: float | None = None
        assert popen.stderr is not None
        self._thread = follow_lines(popen.stderr, self.take, self.eof.set, f"stderr of {name}")

    def take(self, line: str, fields: dict[str, Any] | None) -> None:
        """Relay one stderr line (``fields``: its JSON object) into the cage's log;
        remember it if it is an error."""
        if not line:
            return
        if fields is not None and isinstance(fields.get("event"), str):
            event = fields.pop("event")
            level = str(fields.pop("level", "info"))
            fields.pop("timestamp", None)
            if level in ("error", "critical"):
                detail = fields.get("error") or fields.get("why") or ""
                self.last_error = f"{event}: {detail}" if detail else event
            fields.setdefault("service", self.name)
            method = getattr(_relay, level if level in ("debug", "info", "warning") else "error")
            method(event, **fields)
        else:
            # Plain text on stderr: a print, a traceback line. The last one
            # of a traceback is the exception, which is what we want to keep.
            self.last_error = line
            _relay.warning("node.output", service=self.name, pid=self.pid, line=line)

    def how_it_ended(self, code: int) -> str:
        """``exited with code N`` or ``killed by SIGNAL``, with the last error line."""
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return f"{how}: {self.last_error}" if self.last_error else how

    def signal(self, sig: int) -> None:
        """Send ``sig`` unless the process is gone."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)

    def close(self, timeout: float = 1.0) -> None:
        """Wait a little for the reader thread, then close the pipe."""
        self._thread.join(timeout)
        if self.popen.stderr is not None:
            with contextlib.suppress(OSError):
                self.popen.stderr.close()


@dataclass(frozen=True, slots=True)
class _PendingReload:
    """A reload whose services are being checked."""

    config: CageConfig
    summary: dict[str, list[str]]
    check: ModuleCheck
    reply: Later | None


class Supervisor:
    """Supervise the services of a config file for one cage.

    Args:
        cage: the cage's core (asked which pid holds a name; told the
            supervised services' rows).
        launcher: starts node processes.
        config: the checked config file (its services and restart policy).
        config_path: the file to read again on reload-config / SIGHUP; None
            when the cage runs without one.
        known_modules: returns the installed module names (checked on reload).
        clock: monotonic seconds, the same clock as the cage's loop.
    """

    def __init__(
        self,
        cage: CageCore,
        launcher: Launcher,
        config: CageConfig,
        config_path: str | None = None,
        known_modules: Callable[[], Collection[str]] = modules.available,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cage = cage
        self.launcher = launcher
        self.config = config
        self.config_path = config_path
        self.known_modules = known_modules
        self.clock = clock
        self.core = SupervisorCore(config.policy)
        self.procs: dict[int, NodeProcess] = {}
        self._configured = False
        self._reload_wanted = False
        self._pending: _PendingReload | None = None
        self._desk: ControlDesk | None = None

    def install(self, tick_hooks: list[Callable[[float], None]], desk: ControlDesk) -> None:
        """Hook into the cage: its loop's tick and its control requests."""
        tick_hooks.append(self.tick)
        self._desk = desk
        # From the start, not from the first tick: the published services
        # table then has the supervisor's fields the `services` answer has.
        self._show(self.clock())
        desk.add({
            "services": self._services,
            "start": self._control(self.core.start),
            "stop": self._control(self.core.stop),
            "reload": self._control(self.core.reload),
            "reload-config": self._reload_config,
        })

    def request_reload(self) -> None:
        """Read the config again at the next tick (safe from a signal handler)."""
        self._reload_wanted = True

    # --- the loop's tick -----------------------------------------------------------

    def tick(self, now: float) -> None:
        """Start the configured services once, reap exits, note registrations, act on deadlines."""
        if not self._configured:
            self._configured = True
            self._do(self.core.configure(self.config.services, now), now)
        if self._pending is not None:
            self._finish_reload(now)
        if self._reload_wanted and self._pending is None:
            self._reload_wanted = False
            try:
                self.begin_reload(now)
            except ConfigError as exc:
                log.error("config.reload_failed", error=str(exc),
                          action="kept the running configuration")
        self._reap(now)
        for record in list(self.core.services.values()):
            if (record.state is State.STARTING and record.pid
                    and self.cage.pid_of(record.spec.name) == record.pid):
                self._do(self.core.registered(record.spec.name, record.pid, now), now)
        self._do(self.core.tick(now), now)
        self._show(now)

    def _show(self, now: float) -> None:
        """Tell the cage the services' rows, for its published services table."""
        self.cage.supervised(self.core.rows(now))

    def _reap(self, now: float) -> None:
        for pid, proc in list(self.procs.items()):
            code = proc.popen.poll()
            if code is None:
                continue
            if not proc.eof.is_set():
                if proc.exit_seen is None:
                    proc.exit_seen = now
                if now - proc.exit_seen < EOF_GRACE:
                    continue  # let the reader reach the last error line
            del self.procs[pid]
            proc.close(timeout=0)
            self._do(self.core.exited(proc.name, pid, code, proc.how_it_ended(code), now), now)

    def _do(self, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action.spec, now)
            elif isinstance(action, Terminate | Kill):
                proc = self.procs.get(action.pid)
                if proc is not None:
                    proc.signal(signal.SIGTERM if isinstance(action, Terminate)
                                else signal.SIGKILL)
            elif isinstance(action, Log):
                getattr(log, _LEVELS.get(action.event, "info"))(action.event, **action.fields)

    def _spawn(self, spec: ServiceSpec, now: float) -> None:
        try:
            popen = self.launcher.spawn(spec)
        except OSError as exc:
            self._do(self.core.spawn_failed(spec.name, f"cannot start: {exc}", now), now)
            return
        self.procs[popen.pid] = NodeProcess(popen, spec.name)
        self._do(self.core.spawned(spec.name, popen.pid, now), now)

    # --- config ----------------------------------------------------------------

    def begin_reload(self, now: float, reply: Later | None = None) -> dict[str, list[str]] | None:
        """Read the config file again, and take it once its new and changed
        services passed their check: start added services, stop removed ones,
        reload changed ones; leave the others alone.

        The check runs in a child process (:mod:`zdse.modules.check`) that
        :meth:`tick` polls: routing goes on meanwhile.

        Args:
            reply: the reload-config request to answer when it is done.

        Returns:
            the names added, removed, changed and unchanged when it is done
            at once (nothing to check), else None: :meth:`tick` finishes it.

        Raises:
            ConfigError: no config file, or it is wrong, or a reload is
                being checked already (nothing changes then).
        """
        if self.config_path is None:
            raise ConfigError("the cage runs without --config: there is no file to reload")
        if self._pending is not None:
            raise ConfigError("a reload is being checked already; try again when it is done")
        config = load(self.config_path, self.known_modules())
        old = {name: r.spec for name, r in self.core.services.items() if not r.retiring}
        new = config.services
        summary = {
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(n for n in new.keys() & old.keys() if new[n] != old[n]),
            "unchanged": sorted(n for n in new.keys() & old.keys() if new[n] == old[n]),
        }
        names = summary["added"] + summary["changed"]
        if not names:
            return self._apply(config, summary, now)
        try:
            check = ModuleCheck([new[n] for n in sorted(names)], clock=self.clock)
        except OSError as exc:
            raise ConfigError(f"{config.source}: cannot start the module check: {exc}") from exc
        self._pending = _PendingReload(config, summary, check, reply)
        return None

    def _finish_reload(self, now: float) -> None:
        pending = self._pending
        assert pending is not None
        verdict = pending.check.poll(now)
        if verdict is None:
            return
        self._pending = None
        try:
            modules.refused(pending.config, verdict)
            summary = self._apply(pending.config, pending.summary, now)
        except ConfigError as exc:
            log.error("config.reload_failed", error=str(exc), service=verdict.service,
                      action="kept the running configuration")
            self._answer_later(pending.reply, False, [type(exc).__name__, str(exc)], now)
            return
        self._answer_later(pending.reply, True, summary, now)

    def _answer_later(self, reply: Later | None, ok: bool, value: Any, now: float) -> None:
        if reply is not None and self._desk is not None:
            self._desk.answer_later(reply, ok, value, now)

    def _apply(self, config: CageConfig, summary: dict[str, list[str]],
               now: float) -> dict[str, list[str]]:
        self.core.policy = config.policy
        self._do(self.core.configure(config.services, now), now)
        stale = sorted(k for k in config.settings.keys() | self.config.settings.keys()
                       if config.settings.get(k) != self.config.settings.get(k))
        self.config = config
        self._show(now)
        log.info("config.reloaded", path=self.config_path, **summary)
        if stale:
            log.warning("config.needs_restart", keys=stale,
                        why="only services and the restart policy change without a restart")
        return summary

    # --- control requests --------------------------------------------------------

    def _control(
        self, operation: Callable[[str, float], list[Action]]
    ) -> Callable[[Any, Any, float], Any]:
        def handler(args: Any, answer: Any, now: float) -> Any:
            name = args.get("name") if isinstance(args, dict) else args
            if not isinstance(name, str) or not name:
                raise SupervisorError('give the service\'s name: args {"name": NAME}')
            try:
                self._do(operation(name, now), now)
            finally:
                self._show(now)
            rows = self._services(None, [], now)
            return next((r for r in rows if r["name"] == name), {"name": name, "state": "removed"})
        return handler

    def _reload_config(self, args: Any, answer: Any, now: float) -> Any:
        later = Later()
        summary = self.begin_reload(now, later)
        return later if summary is None else summary

    def _services(self, args: Any, answer: Any, now: float) -> list[dict[str, Any]]:
        """The cage's registered nodes and the supervised services, merged by name."""
        return merge_services(answer, self.core.rows(now))

    # --- the end ----------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop every node (SIGTERM, SIGKILL after stop_timeout) and wait for them."""
        now = self.clock()
        if self._pending is not None:
            self._pending.check.kill()
            self._pending = None
        self._do(self.core.stop_all(now), now)
        deadline = now + self.core.policy.stop_timeout
        for pid, proc in list(self.procs.items()):
            try:
                code = proc.popen.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                code = proc.popen.wait()
            proc.close()
            del self.procs[pid]
            self._do(self.core.exited(proc.name, pid, code, proc.how_it_ended(code),
                                      self.clock()), self.clock())
