"""deepsix's API on Bus, with a real zdse-proxy: refresh, subData, unsubscribe by key,
caller-chosen sids, per-subscription refresh, prepush_processor returning None, and
subscriptions to what is not published yet."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, Updates, run, write_json
from zdse.errors import ProtocolError, RemoteError
from zdse.node.bus import Bus, Membership
from zdse.node.service import Service
from zdse.wire.limits import MAX_SID_BYTES

#: The cluster fixture's cage beats once a second (tests/conftest.py: cluster).
pytestmark = pytest.mark.heartbeat(1.0)


def test_ctl_refresh_makes_a_polling_service_poll_now(cluster: Cluster) -> None:
    """zdse-ctl refresh NAME: a file service polling hourly reads its changed file at once
    and answers with the seqs that poll published; a subscriber gets the delta."""
    node, path = cluster.file_node("files.slow", {"t": [["a"]]})
    # file_node polls every 0.05 s; this one must wait an hour: start another.
    node.kill()
    write_json(path, {"t": [["a"]]})
    cluster.start_node("file", "files.hourly", path=path, poll_interval=3600)

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("files.hourly", "t", updates)
            await updates.until_views({"files.hourly": [["a"]]})
            write_json(path, {"t": [["a"], ["b"]], "u": {"k": 1}})
            done = cluster.ctl("refresh", "files.hourly")
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
            assert answer == {"published": {"t": 2, "u": 1}, "seqs": {"t": 2, "u": 1}}
            await updates.until_views({"files.hourly": [["a"], ["b"]]})
            again = await bus.request("files.hourly", "refresh")
            assert again == {"published": {}, "seqs": {"t": 2, "u": 1}}

    run(scenario())


def test_refresh_answers_clear_errors(cluster: Cluster, tmp_path: Path) -> None:
    """A service that does not poll answers NotPolling (zdse-ctl exits 5 saying so); a poll
    that fails answers with its error."""
    cluster.start_node("file", "files.missing", path=tmp_path / "absent.json", poll_interval=3600)

    async def scenario() -> None:
        async with cluster.bus("plain") as plain:
            # In a thread: this loop runs "plain", which must answer it.
            done = await asyncio.to_thread(cluster.ctl, "refresh", "plain")
            assert done.returncode == 5
            assert "NotPolling" in done.stderr
            assert "does not poll" in done.stderr
            with pytest.raises(RemoteError) as failed:
                await plain.request("files.missing", "refresh")
            assert failed.value.kind == "ConfigError"
            assert "does not exist" in str(failed.value)

    run(scenario())


def test_views_sid_refresh_and_unsubscribe_by_key(cluster: Cluster) -> None:
    """A caller-chosen sid with its own refresh interval reaches two publishers; Bus.views
    reads each view by publisher, the subdata request can include them; a sid in use, or
    over MAX_SID_BYTES, is refused; unsubscribe(key=, dataindex=) ends it at the publishers."""
    cluster.file_node("vs.boston", {"vms": [["vm1"]]}, ["vs.all"])
    cluster.file_node("vs.chicago", {"vms": [["vm9"]]}, ["vs.all"])

    async def scenario() -> None:
        async with cluster.bus("client") as bus, cluster.bus("asker") as asker:
            updates = Updates()
            sid = bus.subscribe("vs.all", "vms", updates, sid="vms-of-all", refresh=60)
            assert sid == "vms-of-all"
            await updates.until_views({"vs.boston": [["vm1"]], "vs.chicago": [["vm9"]]})
            assert bus.views(sid) == {"vs.boston": [["vm1"]], "vs.chicago": [["vm9"]]}
            subdata = await asker.request("client", "subdata", {"views": True})
            assert subdata[sid]["views"] == bus.views(sid)
            assert "views" not in (await asker.request("client", "subdata"))[sid]
            with pytest.raises(ProtocolError, match="in use"):
                bus.subscribe("vs.all", "vms", updates, sid=sid)
            with pytest.raises(ProtocolError, match="128 bytes"):
                bus.subscribe("vs.all", "vms", updates, sid="x" * (MAX_SID_BYTES + 1))
            other = bus.subscribe("vs.boston", "vms", updates)
            assert sorted(bus.unsubscribe(key="vs.all", dataindex="vms")) == [sid]
            assert bus.views(sid) == {}
            assert bus.core.subscriptions.has(other)
            for name in ("vs.boston", "vs.chicago"):
                pubdata = await asker.request(name, "pubdata")
                readers = pubdata["vms"]["subscribers"]
                assert readers == (["client"] if name == "vs.boston" else [])

    run(scenario())


def test_a_subscription_refresh_interval_reaches_its_publishers(cluster: Cluster) -> None:
    """Each subscription's refresh sets the ttl its publishers keep it for: 3 x 60 s for
    one, 3 x the Bus's 0.5 s for the other."""

    async def scenario() -> None:
        async with cluster.bus("pub") as pub, cluster.bus("sub") as sub:
            pub.publish("t", [["a"]])
            slow, fast = Updates(), Updates()
            slow_sid = sub.subscribe("pub", "t", slow, refresh=60)
            fast_sid = sub.subscribe("pub", "t", fast)
            await slow.until_views({"pub": [["a"]]})
            await fast.until_views({"pub": [["a"]]})
            readers = _readers(pub, "t")
            now = time.monotonic()
            assert readers[("sub", slow_sid)] - now > 100
            assert readers[("sub", fast_sid)] - now < 2
            with pytest.raises(ProtocolError, match="refresh"):
                sub.subscribe("pub", "t", fast, refresh=0)

    run(scenario())


def _readers(bus: Bus, dataindex: str) -> dict[tuple[str, str], float]:
    """Each subscriber's deadline at a publisher (its Publications' own record)."""
    pub = bus.core.publications._pubs[dataindex]  # the record itself: nothing else shows it
    return {key: reader.deadline for key, reader in pub.subscribers.items()}


def test_prepush_processor_returning_none_sends_and_stores_nothing(cluster: Cluster) -> None:
    """A publish whose prepush_processor returns None leaves data and seq as they were;
    the next publish is the next delta."""

    def groom(dataindex: str, data: Any) -> Any:
        return None if data == "skip" else data

    async def scenario() -> None:
        async with Bus("pub", endpoints=cluster.endpoints, prepush_processor=groom,
                       connect_timeout=15) as pub, cluster.bus("sub") as sub:
            pub.publish("t", [["a"]])
            updates = Updates()
            sub.subscribe("pub", "t", updates)
            await updates.until_views({"pub": [["a"]]})
            pub.publish("t", "skip")
            assert pub.pubdata()["t"]["seq"] == 1
            assert await pub.request("pub", "t") == [["a"]]
            pub.publish("t", [["b"]])
            # A delta; or a snapshot, if it beat the subscriber's SUB filter to the cage.
            after = await updates.next()
            assert after.kind in ("delta", "snapshot")
            assert (after.seq, after.view) == (2, [["b"]])
            assert pub.statistics()["prepush_dropped"] == 1

    run(scenario())


def test_a_subscriber_of_an_unpublished_dataindex_gets_unpublished_then_data(
    cluster: Cluster,
) -> None:
    """Subscribing before anything is published gives an "unpublished" update (seq 0, no
    data), then the data at seq 1 once published."""

    async def scenario() -> None:
        async with cluster.bus("pub") as pub, cluster.bus("sub") as sub:
            updates = Updates()
            sub.subscribe("pub", "later", updates)
            first = await updates.next()
            assert (first.kind, first.publisher, first.seq, first.data) == (
                "unpublished", "pub", 0, None)
            pub.publish("later", {"k": 1})
            # A delta; or a snapshot, if it beat the subscriber's SUB filter to the cage.
            second = await updates.next()
            assert second.kind in ("delta", "snapshot")
            assert (second.seq, second.view) == (1, {"k": 1})

    run(scenario())


def test_a_service_is_told_of_joins_and_leaves_and_changes_its_addresses(
    cluster: Cluster,
) -> None:
    """Service.handle_membership gets a service's join and leave once attached to a Bus, and
    Service.add_address makes requests to the new address reach it."""

    class Watcher(Service):
        def __init__(self) -> None:
            super().__init__("watcher", {})
            self.seen: list[Membership] = []
            self.left = asyncio.Event()

        def handle_membership(self, event: Membership) -> None:
            self.seen.append(event)
            if event.what == "left":
                self.left.set()

        def handle_request(self, sender: str, dataindex: str, args: Any) -> Any:
            return "watcher here"

    async def scenario() -> None:
        service = Watcher()
        async with cluster.bus("watcher") as bus, cluster.bus("asker") as asker:
            service.attach(bus)
            await service.add_address("watchers.all")
            assert await asker.request("watchers.all", "anything") == "watcher here"
            async with cluster.bus("visitor", ["visitors.#"]):
                pass
            await asyncio.wait_for(service.left.wait(), 15)
            visits = [e for e in service.seen if e.name == "visitor"]
            assert [e.what for e in visits] == ["joined", "left"]
            assert visits[0].addresses == ["visitors.#"]

    run(scenario())
