"""Two cages, each in its own network namespace, the nodes in a third: cut one cage's link.

Needs root and ``ip netns`` (CI runs as root). The link goes down silently
(a veth set down: no FIN, no RST), as a switch port or a cable would, so the
nodes learn of it only from the silence. The outcome must be that of a
``kill -9`` (tests/test_cages.py): no update lost, no resync, at most the
requests in flight through the cut cage time out.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.faults import caught_up, current_status, wait_event_any, wait_status
from tests.netns import ip, netns_usable, spawn
from tests.support import BIN, Processes, require
from zdse.wire.endpoints import Endpoints

#: Cage i listens on 10.232.i.1; the nodes' end of its link is 10.232.i.2.
CAGES = [Endpoints(f"tcp://10.232.{i}.1:5570", f"tcp://10.232.{i}.1:5571") for i in (1, 2)]
BOTH = Endpoints.of(CAGES)


@pytest.fixture
def namespaces() -> Iterator[tuple[list[str], str, list[str]]]:
    """A namespace per cage and one for the nodes, a veth pair from each cage's to the nodes'.

    Yields ``(cage namespaces, node namespace, the nodes' end of each link)``.
    """
    require("network namespaces (root and ip netns)", netns_usable())
    tag = str(os.getpid())
    cage_ns = [f"zdse-{tag}-cage{i}" for i in (1, 2)]
    node_ns = f"zdse-{tag}-nodes"
    links = [(f"zc{i}{tag}"[:15], f"zn{i}{tag}"[:15]) for i in (1, 2)]
    try:
        for ns in (*cage_ns, node_ns):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for i, (ns, (cage_if, node_if)) in enumerate(zip(cage_ns, links, strict=True), 1):
            ip("link", "add", cage_if, "type", "veth", "peer", "name", node_if)
            for where, dev, addr in ((ns, cage_if, f"10.232.{i}.1"),
                                     (node_ns, node_if, f"10.232.{i}.2")):
                ip("link", "set", dev, "netns", where)
                ip("-n", where, "addr", "add", f"{addr}/24", "dev", dev)
                ip("-n", where, "link", "set", dev, "up")
        yield cage_ns, node_ns, [node_if for _, node_if in links]
    finally:
        for ns in (*cage_ns, node_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for cage_if, _ in links:
            subprocess.run(["ip", "link", "del", cage_if], capture_output=True, check=False)


def test_a_cut_cage_link_loses_no_update_as_a_kill_does(
    procs: Processes, namespaces: tuple[list[str], str, list[str]]
) -> None:
    """Cut the nodes' link to cage A under load, mend it, then cut B's: every seq once and in
    order, no resync, no lost update, at most a request per cut timed out, nothing restarted."""
    cage_ns, node_ns, node_ifs = namespaces
    busproc = [sys.executable, "-m", "tests.busproc"]
    try:
        for i, ns in enumerate(cage_ns):
            cage = spawn(procs, ns, f"cage{i}", [str(BIN / "zdse-proxy"), "--router",
                                                  CAGES[i].router, "--pub", CAGES[i].pub], BOTH)
            cage.wait_event("cage.started")
        pub = spawn(procs, node_ns, "pub.1", [*busproc, "pub", "--name", "pub.1", "--rate",
                                              "100"], BOTH)
        pub.wait_event("proc.ready")  # before the requester asks it anything
        sub = spawn(procs, node_ns, "sub.1", [*busproc, "sub", "--name", "sub.1", "--key",
                                              "pub.1"], BOTH)
        req = spawn(procs, node_ns, "req.1", [*busproc, "req", "--name", "req.1", "--key",
                                              "pub.1", "--rate", "20", "--timeout", "1"], BOTH)
        nodes = (pub, sub, req)
        for proc in (sub, req):
            proc.wait_event("proc.ready")
        wait_status(sub, caught_up({"pub.1": 2}))
        # The first snapshot, and maybe one answering its sync: none after this.
        snapshots = current_status(sub)["snapshots"]

        def stretch() -> None:
            start = current_status(pub)["seq"]
            seq = wait_status(pub, lambda s: s["seq"] >= start + 100)["seq"]
            wait_status(sub, caught_up({"pub.1": seq}))

        for i in (0, 1):
            cut = time.time()
            ip("-n", node_ns, "link", "set", node_ifs[i], "down")
            # Down until every node has taken the cage for lost: silence, not a kill.
            for proc in nodes:
                wait_event_any(proc, {"cage.lost"}, since=cut, match={"cage": CAGES[i].router})
            stretch()
            if i == 0:
                mended = time.time()
                ip("-n", node_ns, "link", "set", node_ifs[i], "up")
                for proc in nodes:
                    wait_event_any(proc, {"node.registered"}, since=mended,
                                   match={"cage": CAGES[i].router})
                stretch()
        status = current_status(sub)
        assert status["snapshots"] == snapshots, status
        assert (status["lost"], status["bad_views"]) == (0, 0), status
        assert (status["seq_skips"], status["seq_repeats"]) == (0, 0), status
        asked = current_status(req)
        assert asked["timeout"] <= 2, asked
        assert (asked["bad"], asked["noroute"]) == (0, 0), asked
        assert current_status(pub)["asked_twice"] == 0
        assert all(p.popen.poll() is None for p in nodes), "a node ended"
    finally:
        with contextlib.suppress(Exception):
            procs.close()
