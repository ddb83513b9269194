"""The systemd units of examples/systemd: valid for systemd, and their examples valid for zdse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, require_binary
from zdse.wire.endpoints import Endpoints

UNITS = ROOT / "examples" / "systemd"
#: Each template unit, and an instance name to check it as.
INSTANCES = {"zdse-proxy@.service": "a", "zdse-node@.service": "files.boston"}


@pytest.mark.parametrize("template", sorted(INSTANCES))
def test_systemd_analyze_verifies_the_unit(template: str, tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing to say about an instance of the unit."""
    analyze = require_binary("systemd-analyze")
    unit = tmp_path / template.replace("@.", f"@{INSTANCES[template]}.")
    unit.write_text((UNITS / template).read_text())
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_units_restart_always_and_the_node_example_lists_two_cages() -> None:
    """Both units restart whatever ended them; the node's example lists a valid pair of cages."""
    for template in INSTANCES:
        assert "\nRestart=always\n" in (UNITS / template).read_text(), template
    text = (UNITS / "zdse-node@.service").read_text()
    env = dict(re.findall(r"^#\s+(ZDSE_ROUTER|ZDSE_PUB)=(\S+)$", text, re.MULTILINE))
    assert len(Endpoints(env["ZDSE_ROUTER"], env["ZDSE_PUB"]).cages) == 2
