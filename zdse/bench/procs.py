"""The processes a bench run starts: servers and workers, each one reaped.

Every process runs in its own session (process group) on loopback ports
picked free, talks in lines read by a thread, and is killed by
:meth:`Processes.close` however the run ends.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO, Any

from zdse.errors import ZdseError
from zdse.log import follow_lines

__all__ = ["BenchError", "Proc", "Processes", "close_pipes", "free_port", "kill_group"]

#: Seconds to wait for a server to come up or a worker to say it is ready.
START_TIMEOUT = 30.0


class BenchError(ZdseError):
    """A bench process failed, timed out or could not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
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
    """A started process whose output lines (JSON or text) can be awaited."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], lines: IO[bytes],
                 log: IO[bytes]) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        follow_lines(lines, self._take, lambda: self._lines.put(None), f"lines of {name}")

    def _take(self, text: str, fields: dict[str, Any] | None) -> None:
        self._lines.put(fields if fields is not None else {"text": text.strip()})

    def expect(self, key: str, timeout: float, equals: Any = None,
               contains: str = "") -> dict[str, Any]:
        """The next line with ``key`` (equal to ``equals`` if given), or text with ``contains``.

        Raises:
            BenchError: the process ended, reported an error, or took too long.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, left))
            except queue.Empty:
                raise BenchError(f"{self.name}: nothing with {key!r} within {timeout}s"
                                 f"{self.tail()}") from None
            if line is None:
                self._lines.put(None)
                raise BenchError(f"{self.name} exited (code {self.popen.poll()}) "
                                 f"waiting for {key!r}{self.tail()}")
            if "error" in line:
                raise BenchError(f"{self.name}: {line['error']}{self.tail()}")
            if key in line and (equals is None or line[key] == equals):
                return line
            if contains and contains in line.get("text", ""):
                return line

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
        """Write a cue line to the process's stdin."""
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(text.encode() + b"\n")
            self.popen.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def tail(self) -> str:
        """The end of the process's log, for error messages."""
        try:
            self.log.flush()
            with open(self.log.name, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log.name) - 2000))
                text = f.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return f"\n--- {self.name} log ---\n{text}" if text else ""


class Processes:
    """Every process of one bench run; :meth:`close` reaps them all."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []
        self._dir = tempfile.TemporaryDirectory(prefix="zdse-bench-")

    def start(self, name: str, argv: Sequence[str], lines_from: str = "stdout") -> Proc:
        """Start ``argv``; its ``lines_from`` stream (stdout or stderr) is read as lines."""
        log = open(os.path.join(self._dir.name, f"{name}.log"), "w+b")  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if lines_from == "stdout":
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, env=env,
            )
            assert popen.stdout is not None
            proc = Proc(name, popen, popen.stdout, log)
        else:
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.PIPE,
                start_new_session=True, env=env,
            )
            assert popen.stderr is not None
            proc = Proc(name, popen, popen.stderr, log)
        self._procs.append(proc)
        return proc

    def python(self, name: str, module: str, *args: str, lines_from: str = "stdout") -> Proc:
        """Start ``python -m module args`` with this interpreter."""
        return self.start(name, [sys.executable, "-m", module, *args], lines_from)

    def finish(self, proc: Proc, timeout: float = 10.0) -> None:
        """Close a process's stdin (its cue to end), wait, kill it if it lingers."""
        if proc.popen.stdin is not None:
            with contextlib.suppress(OSError):
                proc.popen.stdin.close()
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
        self._forget(proc)

    def stop(self, proc: Proc, timeout: float = 10.0) -> None:
        """SIGTERM a server, then SIGKILL if it does not end in ``timeout``."""
        try:
            os.killpg(proc.popen.pid, signal.SIGTERM)
            proc.popen.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self._kill(proc)
        self._forget(proc)

    def close(self) -> None:
        """Kill every process still running and remove the logs."""
        for proc in list(self._procs):
            self._kill(proc)
            self._forget(proc)
        self._dir.cleanup()

    @staticmethod
    def _kill(proc: Proc) -> None:
        kill_group(proc.popen)

    def _forget(self, proc: Proc) -> None:
        close_pipes(proc.popen)
        proc.log.close()
        if proc in self._procs:
            self._procs.remove(proc)


def nats_server_path() -> str | None:
    """Where nats-server is (Debian installs it in /usr/sbin), or None."""
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
