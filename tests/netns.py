"""Helpers of the network-namespace tests: make namespaces, start processes inside them."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.harness import TEST_HEARTBEAT, TEST_REFRESH, Proc
from tests.support import ROOT, Processes
from zdse.wire.endpoints import Endpoints

__all__ = ["ip", "netns_usable", "spawn"]


def ip(*args: str) -> None:
    """Run ``ip ARGS``; fail with its message."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr}"


def netns_usable() -> bool:
    """Root, the ip tool, and a namespace can really be made here."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"zdse-{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return made.returncode == 0


def spawn(procs: Processes, ns: str, name: str, argv: list[str], cages: Endpoints) -> Proc:
    """Start a process inside namespace ``ns``, on ``cages`` with the tests' timings."""
    env = {"ZDSE_ROUTER": cages.router, "ZDSE_PUB": cages.pub,
           "ZDSE_HEARTBEAT": str(TEST_HEARTBEAT), "ZDSE_SUB_REFRESH": str(TEST_REFRESH),
           "PYTHONPATH": str(ROOT)}
    return procs.start(name, ["ip", "netns", "exec", ns, *argv], env=env, cwd=ROOT)
