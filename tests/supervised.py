"""A cage that supervises its nodes from a config file, for the tests that run one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.harness import Cluster, Proc, write_json
from tests.support import Processes

#: Restart policy of the tests' cages: quick, so failure tests end quickly.
FAST_RESTARTS = {"backoff": 0.05, "backoff_max": 0.2, "max_restarts": 2, "window": 60,
                 "stop_timeout": 5}


def file_service(tmp: Path, name: str, tables: dict[str, Any], *addresses: str) -> dict[str, Any]:
    """A [services.NAME] table for a file node publishing ``tables``."""
    path = tmp / f"{name}.json"
    write_json(path, tables)
    return {"module": "file", "addresses": list(addresses),
            "options": {"path": str(path), "poll_interval": 0.05}}


def write_config(path: Path, services: dict[str, dict[str, Any]], **cage: Any) -> None:
    """Write a cage config: [cage] settings, the fast restart policy, the services."""
    def value(v: Any) -> str:
        return json.dumps(v) if not isinstance(v, dict) else (
            "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }")

    lines = ["[cage]", *(f"{k} = {value(v)}" for k, v in cage.items()), "", "[restart]",
             *(f"{k} = {value(v)}" for k, v in FAST_RESTARTS.items())]
    for name, table in services.items():
        lines += ["", f'[services."{name}"]', *(f"{k} = {value(v)}" for k, v in table.items())]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def wait_all(proc: Proc, event: str, names: set[str], **match: Any) -> None:
    """Wait until ``event`` was logged for every name in ``names``, in any order."""
    left = set(names)
    while left:
        left.discard(proc.wait_event(event, **match).get("service", ""))


def services(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """``zdse-ctl services --json``, by name."""
    result = cluster.ctl("services", "--json")
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def supervised_cage(procs: Processes, tmp: Path, svcs: dict[str, dict[str, Any]],
                    *extra: str) -> tuple[Cluster, Proc, Path]:
    """A cage on free ports supervising ``svcs``; returns when every one runs."""
    cluster = Cluster(procs, tmp)
    config = tmp / "zdse.toml"
    write_config(config, svcs)
    cage = cluster.start_cage("--config", str(config), *extra)
    wait_all(cage, "service.running", set(svcs))
    return cluster, cage, config
