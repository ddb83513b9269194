"""Smoke test of benchmarks/vsphere_poll.py on a tiny vCenter: the report's shape and goals.

Correctness only (what is sent when), never speed: timings are not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Processes, require
from tests.vcsim import BINARY

SCRIPT = ROOT / "benchmarks" / "vsphere_poll.py"
# The run takes 5-15 s; the benchmark bounds each of its own waits too.
RUN_TIMEOUT = 90.0
# SIGTERM makes the benchmark stop every process it started, then exit.
STOP_TIMEOUT = 30.0

POLL_KEYS = {
    "poll", "vcenter", "seconds", "read_seconds", "round_trips", "changed",
    "messages", "bytes", "rows_added", "rows_removed",
}


def run_benchmark(procs: Processes, *args: str) -> tuple[int, str, str]:
    """Run the benchmark to completion; on a hang, stop it the way it cleans up."""
    proc = procs.popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=STOP_TIMEOUT)
        pytest.fail(f"the benchmark ran over {RUN_TIMEOUT:g} s; stderr:\n{err.decode()}")
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.vcsim
def test_small_run_sends_nothing_unchanged_and_one_row_for_one_vm(procs: Processes) -> None:
    """2 hosts / 6 VMs: steady polls put 0 bytes on the bus; one VM powered off is one row."""
    require("the vCenter simulator build/vcsim-zdse (make sim)", BINARY.is_file())
    code, out, err = run_benchmark(
        procs, "--hosts", "2", "--vms", "6", "--interval", "0.5", "--polls", "3", "--json"
    )
    assert code == 0, f"exit {code}; stderr:\n{err}\nstdout:\n{out}"
    report: dict[str, Any] = json.loads(out)

    assert (report["hosts"], report["vms"], report["interval"]) == (2, 6, 0.5)
    assert report["connect"]["round_trips"] == 3
    assert set(report["table_bytes"]) == {
        "hosts", "host.DNS_IPs", "host.PNICs", "host.VNICs", "vms",
    }
    polls = report["polls"]
    # 3 steady polls, the one that sees the change, one after; more steady
    # ones in between when powering off takes longer than a poll interval.
    assert len(polls) >= 5
    assert all(set(p) == POLL_KEYS for p in polls)
    assert [p["poll"] for p in polls] == list(range(1, len(polls) + 1))
    assert all(p["round_trips"] == 1 for p in polls)
    assert all(p["seconds"] >= p["read_seconds"] > 0 for p in polls)

    unchanged = [p for p in polls if p["vcenter"] == "nothing changed"]
    assert len(unchanged) == len(polls) - 1
    assert all((p["changed"], p["messages"], p["bytes"]) == ({}, 0, 0) for p in unchanged)

    summary = report["summary"]
    assert summary["unchanged"] == {"polls": len(unchanged), "messages": 0, "bytes": 0}
    assert (summary["stray_messages"], summary["stray_bytes"]) == (0, 0)
    changed = summary["changed"]
    assert changed["vm"] == "DC0_H0_VM0"
    assert changed["messages"] == 1
    assert changed["tables"] == {"vms": {"added": 1, "removed": 1, "replaced": 0}}
    assert changed["bytes"] > changed["body_bytes"] > 0
    assert changed["poll"] == len(polls) - 1
    change_poll = polls[changed["poll"] - 1]
    assert change_poll["vcenter"] == "1 VM powered off"
    assert list(change_poll["changed"]) == ["vms"]
    assert (change_poll["rows_added"], change_poll["rows_removed"]) == (1, 1)
    assert report["goals"] == {
        "nothing_changed_sends_nothing": True,
        "one_vm_changed_sends_one_row": True,
    }


def test_missing_simulator_says_how_to_build_it(tmp_path: Path) -> None:
    """Without build/vcsim-zdse the benchmark exits 2 and names `make sim`."""
    code = (
        "import sys, pathlib\n"
        f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
        "import vsphere_poll as bench\n"
        f"bench.SIMULATOR = pathlib.Path({str(tmp_path / 'vcsim-zdse')!r})\n"
        "sys.exit(bench.main(['--polls', '1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "make sim" in done.stderr
    assert done.stdout == ""
