"""End to end: a real zdse-proxy and real zdse-node processes over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import zmq

from tests.harness import Cluster, Updates, run, write_json
from zdse.errors import NoRouteError, RemoteError


def test_two_publishers_on_a_shared_address_keep_separate_views(cluster: Cluster) -> None:
    """One subscription to a shared address gets one view per publisher, then deltas."""
    vms = [["vm1", "on"], ["vm2", "on"], ["vm3", "on"]]
    _, boston = cluster.file_node("vSphere.Boston", {"vms": vms}, ["vSphere.node.list"])
    cluster.file_node("vSphere.Chicago", {"vms": [["vm9", "off"]]}, ["vSphere.node.list"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("vSphere.node.list", "vms", updates)
            await updates.until_views({"vSphere.Boston": vms, "vSphere.Chicago": [["vm9", "off"]]})
            changed = [["vm1", "off"], ["vm2", "on"], ["vm3", "on"]]
            write_json(boston, {"vms": changed})
            delta = await updates.until(lambda u: u.kind == "delta")
            assert delta.publisher == "vSphere.Boston"
            assert delta.data == ["rows", [["vm1", "off"]], [["vm1", "on"]]]
            await updates.until_views(
                {"vSphere.Boston": changed, "vSphere.Chicago": [["vm9", "off"]]}
            )

    run(scenario())


def test_wildcard_addresses_route_requests_and_subscriptions(cluster: Cluster) -> None:
    """A service on 'openstack1.#' gets keys below it; '*' matches exactly one word."""
    cluster.file_node("os1", {"compute.instance.update": {"i1": "ACTIVE"}}, ["openstack1.#"])
    cluster.file_node("any", {"t": [1]}, ["*.status"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            assert await bus.request("openstack1.compute.instance.update",
                                     "compute.instance.update") == {"i1": "ACTIVE"}
            assert await bus.request("nova.status", "t") == [1]
            with pytest.raises(NoRouteError):
                await bus.request("nova.status.extra", "t", timeout=30)
            updates = Updates()
            bus.subscribe("openstack1.x.y.z", "compute.instance.update", updates)
            await updates.until_views({"os1": {"i1": "ACTIVE"}})

    run(scenario())


def test_request_to_nobody_fails_at_once_not_at_the_timeout(cluster: Cluster) -> None:
    """A key without a route answers NoRouteError, though the timeout is far away."""
    async def scenario() -> None:
        async with cluster.bus() as bus:
            with pytest.raises(NoRouteError, match=r"nobody\.home"):
                # The test's own deadline (run) is shorter than this timeout.
                await bus.request("nobody.home", "x", timeout=3600)

    run(scenario(), timeout=20)
    result = cluster.ctl("req", "nobody.home", "x", "--timeout", "3600")
    assert result.returncode == 3
    assert "no service listens on 'nobody.home'" in result.stderr


def test_a_subscription_to_a_missing_dataindex_leaves_a_request_for_it_an_error(
    cluster: Cluster,
) -> None:
    """After subscriptions to a dataindex P lacks, `zdse-ctl req P X` still says it is unknown
    (it answered null), and P holds none of them once they stop re-announcing."""
    cluster.file_node("P", {"t": [1]})

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            sid = bus.subscribe("P", "nothere", updates)
            snapshot = await updates.until(lambda u: u.kind == "unpublished")
            assert snapshot.view is None
            assert "nothere" in (await bus.request("P", "pubdata"))
            result = await asyncio.to_thread(cluster.ctl, "req", "P", "nothere")
            assert result.returncode != 0, result.stdout
            assert "does not publish or answer 'nothere'" in result.stderr
            bus.unsubscribe(sid)
            assert await bus.request("P", "t") == [1]
            # The unsubscribe went before this request, on the same connection.
            assert "nothere" not in (await bus.request("P", "pubdata"))

    run(scenario())


def test_request_all_gathers_every_service_and_errors_are_values(cluster: Cluster) -> None:
    """request_all on a shared key returns each service's answer by name."""
    cluster.file_node("a", {"t": [1]}, ["shared"])
    cluster.file_node("b", {"u": [2]}, ["shared"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            answers = await bus.request_all("shared", "t")
            assert answers["a"] == [1]
            assert isinstance(answers["b"], RemoteError)
            assert answers["b"].kind == "UnknownRequest"
            pubdata = await bus.request_all("allservices", "pubdata")
            assert set(pubdata) >= {"a", "b", "test.client"}
            assert pubdata["a"]["t"]["seq"] == 1

    run(scenario())


def test_request_all_returns_at_its_deadline_the_answers_that_came(cluster: Cluster) -> None:
    """A stopped service on the key: request_all returns the other's answer at the deadline."""
    cluster.file_node("a", {"t": [1]}, ["shared"])
    stopped, _ = cluster.file_node("b", {"t": [2]}, ["shared"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            assert await bus.request_all("shared", "t") == {"a": [1], "b": [2]}
            stopped.kill(signal.SIGSTOP)
            try:
                asked = time.monotonic()
                assert await bus.request_all("shared", "t", timeout=0.4) == {"a": [1]}
                waited = time.monotonic() - asked
                assert 0.4 <= waited < 1.2, waited
            finally:
                stopped.kill(signal.SIGCONT)

    run(scenario())


def test_a_name_taken_twice_is_refused_and_the_node_exits_non_zero(cluster: Cluster) -> None:
    """A second node claiming a live name exits 1 with a message naming the name."""
    cluster.file_node("unique.one", {"t": []})
    second = cluster.start_node("file", "unique.one", wait=False, path="/dev/null")
    assert second.popen.wait(timeout=20) == 1
    second.wait_event("exited")
    assert any("'unique.one' is held by a live node" in line for line in second.lines)


def test_kill_9_of_a_publisher_is_noticed_and_its_return_gives_a_fresh_snapshot(
    cluster: Cluster,
) -> None:
    """Subscribers get 'lost' when a publisher dies, and a snapshot when it is back."""
    node, path = cluster.file_node("pub.one", {"t": [[1]]}, ["pubs"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("pubs", "t", updates)
            await updates.until_views({"pub.one": [[1]]})
            node.kill(signal.SIGKILL)
            lost = await updates.until(lambda u: u.kind == "lost")
            assert lost.publisher == "pub.one"
            write_json(path, {"t": [[2]]})
            cluster.start_node("file", "pub.one", ["pubs"], path=path, poll_interval=0.05)
            # Its snapshot: "unpublished" if it announced itself before its first poll.
            snap = await updates.until(lambda u: u.kind in ("snapshot", "unpublished"))
            assert snap.publisher == "pub.one"
            await updates.until_views({"pub.one": [[2]]})

    run(scenario())


def test_cage_kill_9_and_restart_reconverges_without_restarting_nodes(cluster: Cluster) -> None:
    """After the cage dies and comes back, the same subscriber sees the publisher's new data."""
    publisher, path = cluster.file_node("pub.two", {"t": [["a"]]}, ["pubs"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("pubs", "t", updates)
            await updates.until_views({"pub.two": [["a"]]})
            assert cluster.cage is not None
            cluster.cage.kill(signal.SIGKILL)
            write_json(path, {"t": [["a"], ["b"]]})  # changed while no cage runs
            cluster.start_cage()
            await updates.until_views({"pub.two": [["a"], ["b"]]})
            write_json(path, {"t": [["c"]]})
            await updates.until_views({"pub.two": [["c"]]})
            # Registered again (a request waits while the node is still joining).
            assert await bus.request("pub.two", "t") == [["c"]]

    run(scenario())
    assert publisher.popen.poll() is None, "the publisher was not restarted"


def test_a_publisher_that_dies_while_no_cage_runs_is_lost_after_the_ttl(
    cluster: Cluster,
) -> None:
    """No cage is there to announce it left: the restarted cage never knew it, and the
    subscriber, unanswered past the ttl, ends its view as lost; the other stays."""
    doomed, _ = cluster.file_node("pub.doomed", {"t": [["d"]]}, ["pubs"])
    cluster.file_node("pub.lives", {"t": [["l"]]}, ["pubs"])

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("pubs", "t", updates)
            await updates.until_views({"pub.doomed": [["d"]], "pub.lives": [["l"]]})
            assert cluster.cage is not None
            cluster.cage.kill(signal.SIGKILL)
            doomed.kill(signal.SIGKILL)
            cluster.start_cage()
            lost = await updates.until(lambda u: u.kind == "lost")
            assert lost.publisher == "pub.doomed"
            await updates.until_views({"pub.lives": [["l"]]})

    run(scenario())


def test_garbage_frames_are_counted_while_valid_traffic_flows(cluster: Cluster) -> None:
    """Random and malformed frames to the cage are counted and dropped; requests still work."""
    cluster.file_node("steady", {"t": [[0]]})
    ctx = zmq.Context()
    rogue = ctx.socket(zmq.DEALER)
    rogue.linger = 0
    rogue.connect(cluster.endpoints.router)
    junk = [
        [b"x"],
        [b"\x01Q\x00", b"k"],
        [b"\x09Q\x00", b"k", b""],
        [b"\x01Z\x00", b"k", b""],
        [b"\x01R\x00", b"", b"\xc1\xc1"],
        [b"\x01R\x00", b"", b"\x93\xa1*\x90\x80"],
        [os.urandom(3), os.urandom(5), os.urandom(40)],
    ]
    try:
        for i in range(700):
            rogue.send_multipart(junk[i % len(junk)])

        async def scenario() -> dict[str, int]:
            async with cluster.bus() as bus:
                assert await bus.request("steady", "t") == [[0]]
                stats: dict[str, int] = await bus.request("cage", "stats")
                return stats

        stats = run(scenario())
    finally:
        rogue.close()
        ctx.term()
    # Every junk frame is accounted for: bad frames, refused registrations,
    # or not-registered senders (a well-formed message from a stranger).
    counted = stats.get("bad_frames", 0) + stats.get("not_registered", 0)
    assert counted >= 700 - 100, stats
    assert stats["bad_frames"] >= 400, stats


def test_ctl_sub_prints_snapshot_then_delta_as_json_lines(cluster: Cluster, tmp_path: Path) -> None:
    """zdse-ctl sub prints one JSON object per update with publisher, seq, kind and data."""
    _, path = cluster.file_node("cli.pub", {"hosts": [["h1"]]})
    import subprocess

    env = dict(os.environ, **cluster.env)
    from tests.support import BIN

    sub = subprocess.Popen(
        [str(BIN / "zdse-ctl"), "sub", "cli.pub", "hosts", "--count", "2", "--timeout", "20",
         "--json", "--view"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert sub.stdout is not None
        first = json.loads(sub.stdout.readline())
        assert first["kind"] == "snapshot"
        assert first["data"] == [["h1"]]
        write_json(path, {"hosts": [["h1"], ["h2"]]})
        second = json.loads(sub.stdout.readline())
        assert second["kind"] == "delta"
        assert second["seq"] == first["seq"] + 1
        assert sorted(second["data"]) == [["h1"], ["h2"]]
        assert sub.wait(timeout=20) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
        sub.communicate()

    services = cluster.ctl("services", "--json")
    assert services.returncode == 0, services.stderr
    assert "cli.pub" in [s["name"] for s in json.loads(services.stdout)]
    table = cluster.ctl("routes")
    assert "cli.pub" in table.stdout
    assert "PATTERN" in table.stdout
