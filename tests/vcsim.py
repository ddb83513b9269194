"""Run govmomi's vCenter simulator (build/vcsim-zdse, from tools/vcsim) for tests.

The simulator prints one JSON line with its URL once it serves; :meth:`start`
waits for that line (with a deadline) instead of sleeping. A simulator can be
stopped and started again on the same port, which is how tests take a vCenter
away and bring it back.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support import ROOT, Processes

BINARY = ROOT / "build" / "vcsim-zdse"

# 50 hosts / 2,000 VMs start in about 3-5 s on a developer machine; leave
# room for a loaded CI machine.
START_TIMEOUT = 60.0
# SIGTERM makes the simulator close its server and remove its datastore
# directories; it takes milliseconds, this only bounds a hung one.
STOP_TIMEOUT = 10.0


class SimulatorError(RuntimeError):
    """The simulator did not start, or stopped when it should not have."""


class VCenterSimulator:
    """One vCenter simulator process, restartable on the same loopback port.

    Args:
        procs: the test's process group, which kills the simulator at the end
            of the test even when the test fails.
        workdir: a directory for the simulator's datastore files and stderr log.
        hosts: number of ESX hosts.
        vms: number of virtual machines in total, round-robin over the hosts.
        username: the only user name the simulator accepts.
        password: the only password the simulator accepts.
        churn: seconds between two power toggles of the next VM in turn
            (``-churn``); 0 leaves the inventory as it was made.
    """

    def __init__(
        self,
        procs: Processes,
        workdir: Path,
        *,
        hosts: int = 2,
        vms: int = 4,
        username: str = "user",
        password: str = "pass",
        churn: float = 0.0,
        binary: Path = BINARY,
    ) -> None:
        self.hosts = hosts
        self.vms = vms
        self.username = username
        self.password = password
        self.churn = churn
        self._procs = procs
        self._workdir = workdir
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._url = ""
        self._starts = 0

    @property
    def url(self) -> str:
        """The SDK URL with the credentials in it, e.g. https://user:pass@127.0.0.1:P/sdk."""
        if not self._url:
            raise SimulatorError("the simulator has not been started")
        return self._url

    @property
    def bare_url(self) -> str:
        """The SDK URL without credentials."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1; stays the same across :meth:`restart`."""
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the simulator and return its URL once it serves.

        The first start takes a free port; later starts reuse that port.

        Raises:
            SimulatorError: it exited, or printed no URL before the deadline.
        """
        if self.running:
            raise SimulatorError("the simulator is already running")
        self._starts += 1
        log = self._workdir / f"vcsim-{self._starts}.stderr"
        argv = [
            str(self._binary),
            f"-hosts={self.hosts}",
            f"-vms={self.vms}",
            f"-port={self._port}",
            f"-username={self.username}",
            f"-password={self.password}",
            f"-churn={self.churn}s",
        ]
        with log.open("wb") as stderr:
            proc = self._procs.popen(
                argv,
                env={"TMPDIR": str(self._workdir)},
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        self._proc = proc
        try:
            ready = json.loads(self._read_line(proc, log, timeout))
        except (ValueError, SimulatorError):
            self.stop()
            raise
        self._url = str(ready["url"])
        port = urlsplit(self._url).port
        if port is None:
            raise SimulatorError(f"the simulator printed a URL without a port: {ready!r}")
        self._port = port
        return self._url

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the simulator (SIGTERM, then SIGKILL past the deadline)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self, timeout: float = START_TIMEOUT) -> str:
        """Stop and start again on the same port; the inventory is built afresh."""
        self.stop()
        return self.start(timeout)

    @staticmethod
    def _read_line(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimulatorError(
                        f"the simulator printed no URL within {timeout:.0f} s; "
                        f"stderr: {_tail(log)}"
                    )
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    code = proc.wait(timeout=STOP_TIMEOUT)
                    raise SimulatorError(
                        f"the simulator exited with status {code} before serving; "
                        f"stderr: {_tail(log)}"
                    )
                buf += chunk
        return buf.partition(b"\n")[0].decode()


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return text[-limit:].strip() or "(empty)"
