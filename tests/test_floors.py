"""The documented floors of heartbeat and poll_interval: a value below one is a one-line
error naming where it came from (flag, environment, config file, --set), never a cage
busy logging stalls or a poll loop taking a core."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import BIN
from zdse.errors import ConfigError
from zdse.modules import registry as modules
from zdse.wire.limits import MIN_HEARTBEAT, MIN_POLL_INTERVAL


def run_tool(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a zdse command that must fail at once (bad input)."""
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("argv", "env", "error"), [
    (["--heartbeat", "1e-9"], {}, "argument --heartbeat: '1e-9': must be at least 0.05"),
    ([], {"ZDSE_HEARTBEAT": "0.001"},
     "argument --heartbeat: ZDSE_HEARTBEAT='0.001': must be at least 0.05"),
])
def test_a_heartbeat_below_the_floor_is_refused_by_flag_and_environment(
    argv: list[str], env: dict[str, str], error: str,
) -> None:
    """zdse-proxy --heartbeat / ZDSE_HEARTBEAT below MIN_HEARTBEAT: exit 2, one line."""
    result = run_tool("zdse-proxy", *argv, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"zdse-proxy: error: {error} (the floor)"
    assert "Traceback" not in result.stderr


def test_a_heartbeat_below_the_floor_in_the_config_file_is_refused(tmp_path: Path) -> None:
    """[cage] heartbeat = 1e-9: exit 2 naming the file and the key; the floor itself is
    taken."""
    config = tmp_path / "zdse.toml"
    config.write_text("[cage]\nheartbeat = 1e-9\n")
    result = run_tool("zdse-proxy", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (f"zdse-proxy: {config}: cage.heartbeat: must be at least "
                             f"{MIN_HEARTBEAT:g} (the floor), got 1e-09\n")


@pytest.mark.parametrize("module", ["file", "vsphere"])
def test_a_poll_interval_below_the_floor_is_refused(module: str, tmp_path: Path) -> None:
    """poll_interval = 1e-9 is refused by the module, so by zdse-node --set and by the
    cage's check of a config file; the floor itself is taken."""
    base = {"file": {"path": str(tmp_path / "t.json")},
            "vsphere": {"url": "https://user:secret@127.0.0.1/sdk"}}[module]
    result = run_tool("zdse-node", "--module", module, "--name", "a.b",
                      *(f"--set={k}={v}" for k, v in base.items()), "--set", "poll_interval=1e-9")
    assert result.returncode == 2
    assert result.stderr == ("zdse-node: --set poll_interval='1e-9': must be at least "
                             f"{MIN_POLL_INTERVAL:g} (the floor)\n")
    with pytest.raises(ConfigError, match=r"poll_interval='1e-9': must be at least 0.01"):
        modules.check(module, "a.b", {**base, "poll_interval": "1e-9"})
    modules.check(module, "a.b", {**base, "poll_interval": str(MIN_POLL_INTERVAL)})
