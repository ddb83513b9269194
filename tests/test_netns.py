"""A real network cut: cage and a publisher in separate network namespaces, joined by a veth pair.

Needs root and ``ip netns`` (CI runs as root). The namespaces, their veth
pair and their addresses are this test's own hosts: nothing leaves them.
The link goes down for longer than the cage's expiry and comes back; the
publisher comes back on its own and the subscriber's view converges, with
nothing restarted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.faults import caught_up, current_status, wait_event_any, wait_status
from tests.harness import WAIT
from tests.netns import ip, netns_usable, spawn
from tests.support import BIN, Processes, require
from zdse.node.delta import same
from zdse.wire.endpoints import Endpoints

#: The two ends of the veth pair: a private /24 inside our own namespaces only.
CAGE_ADDR, NODE_ADDR = "10.231.0.1", "10.231.0.2"
ROUTER, PUB = f"tcp://{CAGE_ADDR}:5570", f"tcp://{CAGE_ADDR}:5571"
CAGE = Endpoints(ROUTER, PUB)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth pair, addressed and up; deleted afterwards, always.

    Yields ``(cage namespace, node namespace, the node's veth)``.
    """
    require("network namespaces (root and ip netns)", netns_usable())
    tag = str(os.getpid())
    cage_ns, node_ns = f"zdse-{tag}-cage", f"zdse-{tag}-node"
    cage_if, node_if = f"zc{tag}"[:15], f"zn{tag}"[:15]
    try:
        for ns in (cage_ns, node_ns):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", cage_if, "type", "veth", "peer", "name", node_if)
        for ns, dev, addr in ((cage_ns, cage_if, CAGE_ADDR), (node_ns, node_if, NODE_ADDR)):
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        yield cage_ns, node_ns, node_if
    finally:
        for ns in (cage_ns, node_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        # Should the pair have been made but not moved, it is still here.
        subprocess.run(["ip", "link", "del", cage_if], capture_output=True, check=False)


def ctl(ns: str, *args: str) -> object:
    """``zdse-ctl ARGS`` inside namespace ``ns``; its JSON answer."""
    env = dict(os.environ, ZDSE_ROUTER=ROUTER, ZDSE_PUB=PUB)
    result = subprocess.run(["ip", "netns", "exec", ns, str(BIN / "zdse-ctl"), *args],
                            env=env, capture_output=True, text=True, timeout=WAIT, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_cut_link_longer_than_the_expiry_heals_without_a_restart(
    procs: Processes, namespaces: tuple[str, str, str]
) -> None:
    """Link down past the expiry, then up: the node re-registers, the view converges."""
    cage_ns, node_ns, node_if = namespaces
    busproc = [sys.executable, "-m", "tests.busproc"]
    try:
        cage = spawn(procs, cage_ns, "cage", [str(BIN / "zdse-proxy")], CAGE)
        cage.wait_event("cage.started")
        pub = spawn(procs, node_ns, "pub.far", [*busproc, "pub", "--name", "pub.far",
                                                "--address", "pubs", "--rate", "20"], CAGE)
        pub.wait_event("proc.ready")
        sub = spawn(procs, cage_ns, "sub.near", [*busproc, "sub", "--name", "sub.near",
                                                 "--key", "pubs"], CAGE)
        sub.wait_event("proc.ready")
        wait_status(sub, caught_up({"pub.far": 2}))
        pids = [p.popen.pid for p in (cage, pub, sub)]

        cut = time.time()
        ip("-n", node_ns, "link", "set", node_if, "down")
        # Down until the cage has expired the node and the node has given up
        # on the cage: longer than the expiry, shown rather than slept.
        wait_event_any(cage, {"node.left"}, since=cut, match={"name": "pub.far",
                                                             "reason": "expired"})
        wait_event_any(sub, {"sub.lost"}, since=cut, match={"publisher": "pub.far"})
        wait_event_any(pub, {"cage.lost"}, since=cut)
        restored = time.time()
        ip("-n", node_ns, "link", "set", node_if, "up")

        seq = wait_status(pub, lambda s: True, since=restored)["seq"]
        wait_event_any(sub, {"sub.snapshot"}, since=restored, match={"publisher": "pub.far"})
        wait_status(sub, caught_up({"pub.far": seq}), since=restored,
                    what=f"sub.near right and at seq {seq} after the link came back")

        final = ctl(cage_ns, "req", "pub.far", "pause")
        assert isinstance(final, dict)
        wait_status(sub, caught_up({"pub.far": final["seq"]}))
        views = ctl(cage_ns, "req", "sub.near", "views")
        data = ctl(cage_ns, "req", "pub.far", "t0")
        assert isinstance(views, dict)
        assert same(views["pub.far/t0"], data)
        assert current_status(sub)["bad_views"] == 0
        assert [p.popen.pid for p in (cage, pub, sub)] == pids
        assert all(p.popen.poll() is None for p in (cage, pub, sub)), "something restarted"
    finally:
        # Namespaces go only once nothing runs in them.
        with contextlib.suppress(Exception):
            procs.close()
