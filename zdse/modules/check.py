"""Checking modules in a child process with a deadline, so that no module's
constructor runs in the cage.

Before the cage takes a config file (at start, and on ``reload-config`` or
SIGHUP), it builds each new or changed service unstarted to see that its
module takes its options (:func:`zdse.modules.registry.check`). A constructor is a
module author's code: it may sleep, loop, raise ``SystemExit`` or crash the
interpreter. In the cage that would stall routing for every node, or end the
cage. So the cage runs ``python -m zdse.modules.check`` and polls it from its
loop's tick, never waiting on it there; a check that is not done within
:data:`~zdse.wire.limits.CONFIG_CHECK_TIMEOUT` is killed and refuses the config,
naming the service it was checking.

The child reads the services as a JSON list on stdin and writes JSON lines
on a private copy of its stdout (the real stdout goes to stderr, so a
module's prints cannot garble the answer)::

    {"checking": NAME}                 before each service
    {"refused": NAME, "error": TEXT}   a module refused, and the check ends
    {"ok": true}                       every service passed
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from zdse.supervisor.core import ServiceSpec
from zdse.wire.limits import CONFIG_CHECK_TIMEOUT

__all__ = ["MAX_ERROR_CHARS", "ModuleCheck", "Verdict", "main"]

#: A refusal's message is cut to this many characters: it goes into one log
#: line and one reply, whatever a module put in its exception.
MAX_ERROR_CHARS = 1000
#: A line of the child's answer longer than this is not one it writes (a
#: name is at most 255 bytes, an error MAX_ERROR_CHARS): the rest is ignored.
_MAX_LINE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a check ended.

    Attributes:
        service: the service refused; None when every one passed, or when
            the check failed before the first (then ``error`` says why).
        error: why it was refused; None when every service passed.
    """

    service: str | None = None
    error: str | None = None


class ModuleCheck:
    """One run of the checking child for ``specs``; :meth:`poll` never blocks.

    Args:
        specs: the services to build.
        timeout: seconds the whole check may take.
        clock: monotonic seconds (the caller's loop clock).

    Raises:
        OSError: the child could not be started.
    """

    def __init__(self, specs: Iterable[ServiceSpec], timeout: float = CONFIG_CHECK_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.deadline = clock() + timeout
        self._clock = clock
        self._partial = b""
        self._current: str | None = None
        self._verdict: Verdict | None = None
        self._eof = False
        request = [{"module": s.module, "name": s.name, "options": dict(s.options)}
                   for s in specs]
        # A file, not a pipe, for the request: writing a large config into a
        # pipe would wait for the child to read it.
        with tempfile.TemporaryFile() as stdin:
            stdin.write(json.dumps(request).encode())
            stdin.seek(0)
            from zdse.supervisor.processes import PARENT_ENV  # it imports this file

            env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
            # Its own process group: killed as a whole with anything it started.
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "zdse.modules.check"], stdin=stdin,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, process_group=0)
        assert self.popen.stdout is not None
        self._fd = self.popen.stdout.fileno()
        os.set_blocking(self._fd, False)

    def poll(self, now: float) -> Verdict | None:
        """The verdict if the check ended (or ran out of time, then it is killed), else None."""
        self._read()
        code = self.popen.poll()
        if code is None:
            if now < self.deadline:
                return None
            self.kill()
            return self._end(Verdict(self._current, f"the check did not finish within "
                                                    f"{self.timeout:g} s (constructor too slow?)"))
        self._read()
        if self._verdict is not None:
            return self._end(self._verdict)
        how = (f"was killed by {_signal_name(-code)}" if code < 0
               else f"exited with code {code}")
        return self._end(Verdict(self._current, f"the check process {how} while building it"))

    def wait(self) -> Verdict:
        """Block until the verdict (for the cage's start, before its loop runs)."""
        while True:
            verdict = self.poll(self._clock())
            if verdict is not None:
                return verdict
            left = max(0.0, self.deadline - self._clock())
            if self._eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(left)
            else:
                select.select([self._fd], [], [], left)

    def kill(self) -> None:
        """End the child and whatever it started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def _end(self, verdict: Verdict) -> Verdict:
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return verdict

    def _read(self) -> None:
        if self.popen.stdout is None or self.popen.stdout.closed:
            return
        while not self._eof:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
                return
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            self._partial = self._partial[-_MAX_LINE:]
            for line in lines:
                self._take(line)

    def _take(self, line: bytes) -> None:
        try:
            answer = json.loads(line)
        except ValueError:
            return
        if not isinstance(answer, dict):
            return
        if isinstance(answer.get("checking"), str):
            self._current = answer["checking"]
        elif isinstance(answer.get("refused"), str):
            self._verdict = Verdict(answer["refused"], str(answer.get("error", ""))
                                    [:MAX_ERROR_CHARS])
        elif answer.get("ok") is True:
            self._verdict = Verdict()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main() -> None:
    """The child: check the services given on stdin, answer on stdout, exit at once."""
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # prints of a module go where its other noise goes, not into the answer
    from zdse.supervisor.processes import follow_parent

    follow_parent()

    def say(**fields: Any) -> None:
        answer.write(json.dumps(fields) + "\n")
        answer.flush()

    from zdse.errors import ConfigError
    from zdse.modules import registry as modules

    try:
        request = json.load(sys.stdin)
        for spec in request:
            say(checking=spec["name"])
            try:
                modules.check(spec["module"], spec["name"], spec["options"])
            except ConfigError as exc:
                say(refused=spec["name"], error=str(exc)[:MAX_ERROR_CHARS])
                break
            except BaseException as exc:  # cannot happen: check() wraps what a module raises
                say(refused=spec["name"], error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
                break
        else:
            say(ok=True)
    finally:
        # Now, whatever threads a constructor left running.
        os._exit(0)


if __name__ == "__main__":
    main()
