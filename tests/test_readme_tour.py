"""The README's five-minute tour, run as written (on free ports instead of the defaults)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.harness import Cluster
from tests.support import BIN, ROOT, Processes

README = ROOT / "README.md"


def tour_commands() -> list[str]:
    """Every command line in the tour section's code blocks."""
    text = README.read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.strip().splitlines()]


def test_the_tour_works_as_written(procs: Processes, tmp_path: Path) -> None:
    """Each tour command runs and prints what the README says it prints."""
    commands = tour_commands()
    assert commands[0] == ".venv/bin/zdse-proxy"
    work = tmp_path / "checkout"
    (work / "examples").mkdir(parents=True)
    for name in ("boston.json", "chicago.json"):
        shutil.copy(ROOT / "examples" / name, work / "examples" / name)
    (work / ".venv").symlink_to(BIN.parent)
    cluster = Cluster(procs, tmp_path)
    env = dict(os.environ, **cluster.env)

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True,
                              text=True, timeout=30, check=False)

    cluster.cage = cluster.spawn("cage", shlex.split(commands[0].replace(".venv/bin", str(BIN))))
    cluster.cage.wait_event("cage.started")
    assert shell(commands[1]).returncode == 0  # mkdir + cp
    for command, name in ((commands[2], "files.boston"), (commands[3], "files.chicago")):
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/zdse-node"
        procs.start(name, [str(BIN / "zdse-node"), *argv[1:]], env=cluster.env,
                    cwd=work).wait_event("node.started")

    services = shell(commands[4])
    assert "files.boston" in services.stdout
    assert "files.chicago" in services.stdout
    assert "files.all" in shell(commands[5]).stdout

    sub_cmd = commands[6].replace(".venv/bin/zdse-ctl", str(BIN / "zdse-ctl"))
    sub = subprocess.Popen([*shlex.split(sub_cmd), "--count", "3", "--timeout", "30"], cwd=work,
                           env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        snapshots = [json.loads(sub.stdout.readline()) for _ in range(2)]
        assert {s["publisher"] for s in snapshots} == {"files.boston", "files.chicago"}
        assert all(s["kind"] == "snapshot" for s in snapshots)
        assert shell(commands[7]).returncode == 0  # the sed edit
        delta = json.loads(sub.stdout.readline())
        assert delta["kind"] == "delta"
        assert delta["publisher"] == "files.boston"
        assert delta["data"] == [
            "rows",
            [["db-1", "vm-103", "4c4c4544-0002", "poweredOff"]],
            [["db-1", "vm-103", "4c4c4544-0002", "poweredOn"]],
        ]
        assert sub.wait(timeout=30) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.communicate()

    hosts = shell(commands[8])
    assert json.loads(hosts.stdout) == [["esx-b1", "4c4c4544-0001"], ["esx-b2", "4c4c4544-0002"]]
    both = json.loads(shell(commands[9]).stdout)
    assert set(both) == {"files.boston", "files.chicago"}
    pubdata = json.loads(shell(commands[10]).stdout)
    assert pubdata["vms"]["seq"] == 2
    nobody = shell(commands[11])
    assert nobody.returncode == 3
    assert "no service listens on 'nobody.home'" in nobody.stderr
    assert len(commands) == 12, "the tour grew: extend this test with it"
