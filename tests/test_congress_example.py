"""The ported Congress driver of examples/congress_port: its translators, and the whole
port running as a real node, seen through Congress-style events."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, asked_until, run
from zdse.congress import CongressView, Row
from zdse.errors import ConfigError
from zdse.node.subscriptions import Update

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "congress_port"
sys.path.insert(0, str(EXAMPLE))
import servers_driver  # noqa: E402  # the example is a script beside its fixtures, not a package


def _fixture(name: str) -> Any:
    return json.loads((EXAMPLE / name).read_text())


def test_translate_makes_three_flat_tables_from_the_nested_answer() -> None:
    """Servers, their addresses (one row per address, with its network) and metadata, each
    child row carrying its server's id; a missing image is None."""
    tables = servers_driver.translate(_fixture("servers.json"))
    assert sorted(tables) == sorted(servers_driver.SCHEMA)
    for table, rows in tables.items():
        assert all(len(r) == len(servers_driver.SCHEMA[table]) for r in rows)
    assert ["8f1c2b9e-0002", "db-1", "ACTIVE", "acme", "host-b", "m1.large", None] in \
        tables["servers"]
    assert len(tables["servers"]) == 3
    assert ["8f1c2b9e-0002", "storage", "fd00::12", 6, "fixed", "fa:16:3e:00:01:12"] in \
        tables["servers.addresses"]
    assert len(tables["servers.addresses"]) == 4
    assert tables["servers.metadata"] == [
        ["8f1c2b9e-0001", "owner", "team-a"], ["8f1c2b9e-0001", "role", "web"],
        ["8f1c2b9e-0002", "role", "db"]]


def test_translate_refuses_what_is_not_a_servers_answer() -> None:
    """An answer without a servers list is a ValueError (the poll fails, and is retried)."""
    for bad in ([], {"servers": {}}, {"other": []}):
        with pytest.raises(ValueError, match="servers"):
            servers_driver.translate(bad)


def test_the_driver_refuses_bad_options() -> None:
    """No path, or an unknown option, is a ConfigError at construction."""
    with pytest.raises(ConfigError, match="path"):
        servers_driver.ServersDriver("s", {})
    with pytest.raises(ConfigError):
        servers_driver.ServersDriver("s", {"path": "x", "colour": "red"})


@pytest.mark.heartbeat(1.0)
def test_the_port_runs_as_a_node_and_a_refresh_gives_congress_events(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The driver as a real process: a subscriber's CongressView gets the three tables as
    inserts, then, after the API answer changes and zdse-ctl refresh, exactly the rows that
    changed as inserts and deletes."""
    answer = tmp_path / "answer.json"
    shutil.copy(EXAMPLE / "servers.json", answer)
    driver = cluster.spawn("servers.demo", [sys.executable, str(EXAMPLE / "servers_driver.py"),
                                            "--path", str(answer), "--poll-interval", "3600"])
    driver.wait_event("node.started")
    events: dict[str, tuple[set[Row], set[Row]]] = {}
    view = CongressView()
    first = servers_driver.translate(_fixture("servers.json"))

    def on_update(update: Update) -> None:
        inserts, deletes = view.take(update)
        if update.kind == "delta":
            events[update.dataindex] = (inserts, deletes)

    async def scenario() -> None:
        async with cluster.bus() as bus:
            sids = [bus.subscribe("servers.all", table, on_update)
                    for table in servers_driver.SCHEMA]
            for sid, table in zip(sids, servers_driver.SCHEMA, strict=True):
                await asked_until(bus, "servers.demo", "pubdata",
                                  lambda _, sid=sid: bus.views(sid).get("servers.demo") is not None)
                assert view.tables[("servers.demo", table)].rows == {
                    tuple(r) for r in first[table]}
            # A table subscribed before its first poll came as 'unpublished', then a
            # delta: keep only what the refresh brings.
            events.clear()
            shutil.copy(EXAMPLE / "servers-changed.json", answer)
            done = await bus.request("servers.demo", "refresh")
            assert set(done["published"]) == set(servers_driver.SCHEMA)
            await asked_until(bus, "servers.demo", "pubdata", lambda _: len(events) >= 3)

    run(scenario())
    assert events["servers"] == (
        {("8f1c2b9e-0002", "db-1", "ERROR", "acme", "host-b", "m1.large", None)},
        {("8f1c2b9e-0002", "db-1", "ACTIVE", "acme", "host-b", "m1.large", None),
         ("8f1c2b9e-0003", "batch-1", "SHUTOFF", "other", "host-a", "m1.small",
          "ubuntu-24.04")})
    assert events["servers.addresses"] == (
        set(), {("8f1c2b9e-0001", "private", "203.0.113.11", 4, "floating",
                 "fa:16:3e:00:00:11")})
    assert events["servers.metadata"] == ({("8f1c2b9e-0001", "owner", "team-b")},
                                          {("8f1c2b9e-0001", "owner", "team-a")})
