"""Processes started by the tests and the bench: followed line by line, each one reaped.

Every process runs in its own session (process group), so killing it kills
what it started too. A :class:`Proc` reads one of its streams (its JSON log
lines on stderr, or a bench worker's lines on stdout) on a thread and lets
the caller wait, up to a deadline, for the first line that matches; the other
stream goes to a log file shown when a wait fails. :class:`Processes` starts
them and, on :meth:`Processes.close`, kills and reaps every one, whatever the
run's outcome.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, Any, Literal, Self

from zdse.errors import ZdseError
from zdse.log import follow_lines

__all__ = ["WAIT", "Proc", "ProcError", "Processes", "close_pipes", "free_port", "kill_group"]

#: How long a wait lasts unless the caller says: long enough for a loaded
#: 2-core machine to start a Python process and have it connect.
WAIT = 15.0
#: How many of the followed lines a failed wait shows.
SHOWN_LINES = 50
#: The event a :class:`Proc` sees once its stream ends (the process exited or closed it).
EXITED = "exited"


class ProcError(ZdseError):
    """A started process ended, reported an error, or did not say what was awaited in time."""


#: Ports free_port picks from: below Linux's ephemeral range (32768 up), so
#: no outgoing connection takes one meanwhile. A client that retries a
#: connection to a local port in that range nobody listens on yet can be
#: given that very port as its own and connect to itself, and the server
#: started next cannot bind it.
PORT_RANGE = (20_000, 32_000)


#: Ports free_port handed out in this process: never handed out twice (until
#: half the range is), since the first may be held for a process that has
#: not bound it yet (a cage's ROUTER and PUB ports are picked one after the
#: other, then bound together; a random pick drawing the same port for both
#: failed a CI run with "Address already in use").
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now, outside the ephemeral
    range, and not handed out before by this process."""
    if len(_handed_out) > (PORT_RANGE[1] - PORT_RANGE[0]) // 2:
        _handed_out.clear()
    for _ in range(1000):
        port = random.randrange(*PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_group(popen: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGKILL the process's group (it runs in its own session) unless it ended; reap it."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=timeout)


def close_pipes(popen: subprocess.Popen[bytes]) -> None:
    """Close our ends of the process's stdin, stdout and stderr pipes."""
    for stream in (popen.stdin, popen.stdout, popen.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class Proc:
    """A started process whose lines (JSON objects, or text) can be waited on.

    Each line read becomes an event: its JSON object, or ``{"event": "text",
    "text": line}`` for a line that is not one; the end of the stream becomes
    ``{"event": "exited"}``. ``lines`` keeps every line read, as text.
    """

    def __init__(self, popen: subprocess.Popen[bytes], name: str,
                 stream: IO[bytes] | None = None, log: IO[bytes] | None = None) -> None:
        """Follow ``stream`` (default: the process's stderr) of ``popen``.

        Args:
            popen: the process.
            name: what error messages call it.
            stream: the pipe to read lines from.
            log: the file its other output goes to, shown when a wait fails.
        """
        self.popen = popen
        self.name = name
        self.log_file = log
        self.lines: list[str] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._end: dict[str, Any] = {"event": EXITED}
        source = stream if stream is not None else popen.stderr
        assert source is not None, "a Proc needs a pipe to read"
        follow_lines(source, self._take, lambda: self.events.put(self._end),
                     f"lines of {name}")

    def _take(self, line: str, fields: dict[str, Any] | None) -> None:
        self.lines.append(line)
        self.events.put(fields if fields is not None else {"event": "text", "text": line})

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = WAIT) -> dict[str, Any]:
        """Wait for the first event that satisfies ``pred``; the others read on the way
        are dropped.

        Raises:
            ProcError: the deadline passed, or the process's stream ended first.
        """
        deadline = time.monotonic() + timeout
        while True:
            # The deadline holds even for a process that logs faster than we read.
            left = deadline - time.monotonic()
            event = self._next(left) if left > 0 else None
            if event is None:
                raise ProcError(f"{self.name}: no {what} within {timeout}s{self.tail()}")
            if pred(event):
                return event
            if event is self._end:
                self.events.put(event)  # every later wait fails at once too
                raise ProcError(f"{self.name} exited (code {self.popen.poll()}) waiting for "
                                f"{what}{self.tail()}")

    def _next(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_event(self, name: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        """Wait for a log event called ``name`` (with fields equal to ``match``)."""
        return self.wait_for(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in match.items()),
            f"{name!r} event", timeout)

    def expect(self, key: str, timeout: float, equals: Any = None,
               contains: str = "") -> dict[str, Any]:
        """The next line with ``key`` (equal to ``equals`` if given), or text with ``contains``.

        Raises:
            ProcError: the process ended, reported an ``error``, or took too long.
        """
        def wanted(line: dict[str, Any]) -> bool:
            return ("error" in line or (key in line and (equals is None or line[key] == equals))
                    or bool(contains and contains in line.get("text", "")))

        line = self.wait_for(wanted, f"line with {key!r}", timeout)
        if "error" in line:
            raise ProcError(f"{self.name}: {line['error']}{self.tail()}")
        return line

    def log(self) -> str:
        """The last lines read."""
        return "\n".join(self.lines[-SHOWN_LINES:])

    def tail(self) -> str:
        """The last lines read and the end of the log file, for error messages."""
        parts = [self.log()]
        if self.log_file is not None:
            try:
                self.log_file.flush()
                with open(self.log_file.name, "rb") as f:
                    f.seek(max(0, os.path.getsize(self.log_file.name) - 2000))
                    parts.append(f.read().decode(errors="replace").strip())
            except (OSError, ValueError):  # ValueError: the log is closed
                pass
        text = "\n".join(part for part in parts if part)
        return f"\n--- {self.name} log ---\n{text}" if text else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group and, for SIGKILL/SIGTERM, reap it."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            return
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.popen.wait(timeout=WAIT)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process used so far; 0.0 if gone."""
        try:
            with open(f"/proc/{self.popen.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # After the ")" closing the command name: state is fields[0], so
        # utime and stime (fields 14 and 15 of proc(5)) are 11 and 12 here.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def say(self, text: str) -> None:
        """Write a line to the process's stdin (a cue; gone if it ended)."""
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(text.encode() + b"\n")
            self.popen.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


class Processes:
    """The processes of one test or bench run; :meth:`close` kills and reaps every one.

    Use it as a context manager (``with Processes() as procs:``), or call
    :meth:`close` in a ``finally``, so every path closes it.
    """

    def __init__(self) -> None:
        self._popens: list[subprocess.Popen[bytes]] = []
        self._procs: list[Proc] = []
        self._dir: str | None = None  # the logs' directory
        self._remove_dir: Callable[[], Any] = lambda: None
        self._started = 0  # names each log file apart

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None,
              **kw: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session with ``env`` added; ``kw`` goes to Popen.

        For a process whose pipes the caller reads itself; it too is reaped by
        :meth:`close`.
        """
        popen = subprocess.Popen(list(argv), env=dict(os.environ, **(env or {})),
                                 start_new_session=True, **kw)
        self._popens.append(popen)
        return popen

    def start(self, name: str, argv: Sequence[str], *,
              lines_from: Literal["stderr", "stdout"] = "stderr",
              env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> Proc:
        """Start ``argv``, following its ``lines_from`` stream; its other output is logged.

        Its stdin is a pipe, for :meth:`Proc.say` and :meth:`finish`.
        """
        if self._dir is None:
            # A directory removed by close(), or, should close() never come,
            # silently when the object goes (TemporaryDirectory would warn).
            self._dir = tempfile.mkdtemp(prefix="zdse-procs-")
            self._remove_dir = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._started += 1
        safe = re.sub(r"[^\w.-]", "_", name)
        log = open(os.path.join(self._dir, f"{self._started}-{safe}.log"),  # noqa: SIM115
                   "w+b")
        on_stdout = lines_from == "stdout"
        try:
            popen = self.popen(argv, dict(env or {}, PYTHONUNBUFFERED="1"), cwd=cwd,
                               stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE if on_stdout else log,
                               stderr=log if on_stdout else subprocess.PIPE)
            proc = Proc(popen, name, popen.stdout if on_stdout else popen.stderr, log)
        except BaseException:
            # No Proc owns the log yet (close() reaps the process, if it started).
            log.close()
            raise
        self._procs.append(proc)
        return proc

    def python(self, name: str, module: str, *args: str,
               lines_from: Literal["stderr", "stdout"] = "stderr",
               env: dict[str, str] | None = None,
               cwd: str | os.PathLike[str] | None = None) -> Proc:
        """Start ``python -m module args`` with this interpreter."""
        return self.start(name, [sys.executable, "-m", module, *args], lines_from=lines_from,
                          env=env, cwd=cwd)

    def finish(self, proc: Proc, timeout: float = 10.0) -> None:
        """Close a process's stdin (its cue to end), wait, kill it if it lingers."""
        if proc.popen.stdin is not None:
            with contextlib.suppress(OSError):
                proc.popen.stdin.close()
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.popen)
        self._forget(proc)

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        """SIGTERM a process's group, then SIGKILL if it does not end in ``timeout``."""
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            kill_group(proc.popen)
        self._forget(proc)

    def close(self) -> None:
        """Kill every process still running (its whole group), reap it, remove the logs.

        Every step is taken even if one fails (say a group we may not kill);
        the failure is raised once all are done. The same object can start
        processes again afterwards.
        """
        with contextlib.ExitStack() as steps:
            # Last in, first out: the logs go once every process is reaped.
            steps.callback(self._remove_logs)
            for popen in reversed(self._popens):
                steps.callback(self._reap, popen)
            for proc in reversed(self._procs):
                steps.callback(self._forget, proc)

    def _remove_logs(self) -> None:
        if self._dir is not None:
            self._remove_dir()
            self._dir = None

    def _reap(self, popen: subprocess.Popen[bytes]) -> None:
        if popen in self._popens:
            self._popens.remove(popen)
        kill_group(popen)
        close_pipes(popen)

    def _forget(self, proc: Proc) -> None:
        if proc in self._procs:
            self._procs.remove(proc)
        try:
            self._reap(proc.popen)
        finally:
            if proc.log_file is not None:
                proc.log_file.close()
