"""zdse.procs: every process and log file Processes opened is closed on every path; free_port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zdse import procs as procs_module
from zdse.procs import Processes


def _open_files_under(folder: str) -> list[str]:
    """The files under ``folder`` this process holds open."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(folder + os.sep):
            held.append(target)
    return held


def _sleeper(group: Processes, name: str) -> procs_module.Proc:
    """A process that lives until killed, and says so first."""
    proc = group.start(name, [sys.executable, "-c", "import time; print('up', flush=True); "
                                                    "time.sleep(60)"], lines_from="stdout")
    proc.wait_for(lambda e: e.get("text") == "up", "its first line")
    return proc


def test_a_start_that_fails_leaves_no_log_file_open(tmp_path: Path) -> None:
    """A program that cannot start: the error is raised, its log file is closed, and
    close() still removes the logs' directory."""
    with Processes() as group:
        _sleeper(group, "first")  # makes the logs' directory
        folder = group._dir
        assert folder is not None
        with pytest.raises(FileNotFoundError):
            group.start("missing", [str(tmp_path / "no-such-program")])
        held = _open_files_under(folder)
        assert len(held) == 1, held  # the first process's log only
        assert "missing" not in held[0]
    assert not os.path.exists(folder)


def test_close_reaps_every_process_and_removes_the_logs_even_if_one_kill_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kill that fails (here: the first) is raised by close(), after the other process
    was reaped, every log file closed and the logs' directory removed."""
    group = Processes()
    first, second = _sleeper(group, "first"), _sleeper(group, "second")
    folder = group._dir
    assert folder is not None
    real_kill, failed = procs_module.kill_group, []

    def failing_once(popen: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if popen is first.popen and not failed:
            failed.append(popen)
            raise PermissionError("not ours to kill")
        real_kill(popen, timeout)

    monkeypatch.setattr(procs_module, "kill_group", failing_once)
    with pytest.raises(PermissionError):
        group.close()
    assert second.popen.poll() == -signal.SIGKILL
    assert first.popen.poll() == -signal.SIGKILL  # killed by its second step
    for proc in (first, second):
        assert proc.log_file is not None
        assert proc.log_file.closed
    assert not os.path.exists(folder)


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two picks in a row that draw the same free port get two ports: the first may be
    waiting for its process to bind it (a cage's ROUTER and PUB are picked one after the
    other)."""
    draws = iter([24_001, 24_001, 24_001, 24_002])
    monkeypatch.setattr(procs_module.random, "randrange", lambda *_: next(draws))
    monkeypatch.setattr(procs_module, "_handed_out", set())
    assert [procs_module.free_port(), procs_module.free_port()] == [24_001, 24_002]
