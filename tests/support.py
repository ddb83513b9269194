"""Helpers for tests that run real processes on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zdse.procs import Processes, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

__all__ = ["BIN", "ROOT", "Processes", "free_port", "require", "require_binary"]


def require(what: str, available: bool) -> None:
    """Skip when an outside service is missing; fail instead under CI.

    .ci/run sets ZDSE_REQUIRE_SERVICES=1 so that a machine without RabbitMQ,
    nats-server or the simulator fails loudly instead of skipping quietly.
    """
    if available:
        return
    message = f"{what} is not available on this machine (make install provides it)"
    if os.environ.get("ZDSE_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str) -> str:
    """Return the path of an executable, or skip/fail as :func:`require` does."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/lib/rabbitmq/bin")
    require(name, path is not None)
    assert path is not None
    return path


def run_tool(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run one of the installed commands to completion with ``env`` added."""
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=30, check=False,
                          stdin=subprocess.DEVNULL)
