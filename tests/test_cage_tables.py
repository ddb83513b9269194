"""The cage as a publisher: its services and routes tables, with a real zdse-proxy."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from tests.harness import Cluster, Updates, run
from zdse.cage.tables import VOLATILE
from zdse.errors import NoRouteError
from zdse.node.bus import Membership

#: The cluster fixture's cage beats once a second (tests/conftest.py: cluster):
#: these tests look for deltas, which a busy client's re-registration would turn
#: into a snapshot.
pytestmark = pytest.mark.heartbeat(1.0)


def _names(view: Any) -> set[str]:
    return {row["name"] for row in view}


def _stable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
                  key=lambda r: r["name"])


def test_services_is_a_snapshot_then_a_delta_per_join_and_leave(cluster: Cluster) -> None:
    """Subscribing to cage/services gives the registered services, then a delta per join and
    per leave, with the rows zdse-ctl services --json prints (less the clock's fields)."""

    async def scenario() -> None:
        async with cluster.bus("watcher") as bus:
            updates = Updates()
            bus.subscribe("cage", "services", updates)
            first = await updates.next()
            assert (first.publisher, first.kind) == ("cage", "snapshot")
            assert _names(first.view) == {"watcher"}
            node = cluster.start_node("file", "files.one", ["files.all"],
                                      path=cluster.tmp / "none.json", poll_interval=60)
            joined = await updates.until(lambda u: "files.one" in _names(u.view))
            assert joined.kind == "delta"
            assert joined.seq == first.seq + 1
            printed = json.loads(cluster.ctl("services", "--json").stdout)
            ctl_rows = _stable([r for r in printed if not r["name"].startswith("ctl.")])
            assert sorted(joined.view, key=lambda r: r["name"]) == ctl_rows
            row = next(r for r in joined.view if r["name"] == "files.one")
            assert row["addresses"] == ["files.all"]
            assert row["module"] == "file"
            assert not VOLATILE & row.keys()
            node.kill(signal.SIGTERM)
            left = await updates.until(lambda u: "files.one" not in _names(u.view))
            assert left.kind == "delta"

    run(scenario())


def test_routes_follow_addresses_added_and_removed_at_run_time(cluster: Cluster) -> None:
    """Once Bus.add_address returns, the cage's routes have the address (a request from
    another bus reaches it); a subscriber of cage/routes gets the delta; remove_address
    takes it away."""

    async def scenario() -> None:
        async with cluster.bus("mover") as mover, cluster.bus("watcher") as watcher:
            mover.on_request = lambda sender, dataindex, args: "here"
            updates = Updates()
            watcher.subscribe("cage", "routes", updates)
            first = await updates.next()
            assert ["mover", ["mover"]] in first.view
            await mover.add_address("moving.#")
            assert await watcher.request("moving.a.b", "anything") == "here"
            assert ["moving.#", ["mover"]] in await watcher.request("cage", "routes")
            assert mover.addresses == ["moving.#"]
            await updates.until(lambda u: ["moving.#", ["mover"]] in u.view)
            await mover.remove_address("moving.#")
            with pytest.raises(NoRouteError):
                await watcher.request("moving.a.b", "anything")
            await updates.until(lambda u: all(p != "moving.#" for p, _ in u.view))
            assert mover.registered

    run(scenario())


def test_the_cage_feed_recovers_from_a_cage_restart_with_a_new_epoch(cluster: Cluster) -> None:
    """After kill -9 and a restart of the cage, a subscriber of cage/services gets a snapshot
    of the new cage (a new epoch), and deltas after it."""

    async def scenario() -> None:
        async with cluster.bus("watcher") as bus:
            updates = Updates()
            sid = bus.subscribe("cage", "services", updates)
            await updates.next()
            epoch = bus.subdata()[sid]["publishers"]["cage"]
            assert cluster.cage is not None
            cluster.cage.kill(signal.SIGKILL)
            cluster.start_cage()
            again = await updates.until(lambda u: u.kind == "snapshot")
            assert _names(again.view) == {"watcher"}
            cluster.start_node("file", "files.two", path=cluster.tmp / "none.json",
                               poll_interval=60)
            delta = await updates.until(lambda u: "files.two" in _names(u.view))
            assert delta.kind == "delta"
            assert bus.subdata()[sid]["publishers"]["cage"] != epoch or delta.seq > 0

    run(scenario())


def test_zdse_ctl_sub_cage_services_prints_the_snapshot(cluster: Cluster) -> None:
    """zdse-ctl sub cage services prints a snapshot from publisher cage with the rows."""
    cluster.start_node("file", "files.three", path=cluster.tmp / "none.json", poll_interval=60)
    done = cluster.ctl("sub", "cage", "services", "--count", "1", "--json", "--timeout", "10")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[0])
    assert (record["publisher"], record["kind"]) == ("cage", "snapshot")
    assert "files.three" in _names(record["data"])


def test_an_unknown_cage_table_is_unpublished_and_costs_the_cage_nothing(
    cluster: Cluster,
) -> None:
    """A subscription to a dataindex the cage does not publish gets "unpublished", and the
    cage's pubdata does not record it."""

    async def scenario() -> None:
        async with cluster.bus("watcher") as bus:
            updates = Updates()
            bus.subscribe("cage", "nothing", updates)
            first = await updates.next()
            assert (first.kind, first.seq, first.view) == ("unpublished", 0, None)
            pubdata = await bus.request("cage", "pubdata")
            assert "nothing" not in pubdata

    run(scenario())


def test_join_and_leave_events_reach_the_bus_owner(cluster: Cluster) -> None:
    """Bus(on_membership=...) is told of a service joining with its addresses and leaving."""

    async def scenario() -> None:
        seen: list[Membership] = []
        gone = asyncio.Event()

        def on_membership(event: Membership) -> None:
            seen.append(event)
            if event.what == "left" and event.name == "comer":
                gone.set()

        async with cluster.bus("watcher") as bus:
            bus.on_membership = on_membership
            async with cluster.bus("comer", ["comers.#"]):
                pass
            await asyncio.wait_for(gone.wait(), 15)
            joined = [e for e in seen if e.what == "joined" and e.name == "comer"]
            assert joined
            assert joined[0].addresses == ["comers.#"]
            assert seen[-1].reason == "bye"

    run(scenario())
