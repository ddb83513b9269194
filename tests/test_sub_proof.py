"""A node counts as registered only once its SUB receives: no delta lost to a SUB still connecting.

Real cages (zdse-proxy processes) started after the nodes, or restarted
under them; the nodes are in-process Buses. The promise: an update
published after a subscriber's snapshot (and its sync with the publisher)
reaches it within a second, every time. Before the fix about a third of the
tries lost the delta until the next re-announce plus CURRENT_GRACE.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import Cluster, Proc, Updates, run
from tests.support import Processes, free_port
from zdse.errors import BusClosed
from zdse.node.bus import Bus
from zdse.wire.endpoints import Endpoints

#: Tries, each with a cage started after its two nodes.
TRIES = 50
#: Tries run at the same time.
TOGETHER = 5
#: Cage restarts under the same two nodes.
RESTARTS = 10
#: The promise: an update published after the snapshot arrives within this.
ARRIVES_WITHIN = 1.0


async def _arrives(pub: Bus, sub: Bus, updates: Updates, rows: int) -> bool:
    """Publish ``rows`` rows once sub's subscription synced; True if sub sees them in time."""
    # The sync (or re-announce) sub sent before this request reaches pub
    # first, on the same DEALER: once it answers, pub counts sub's SUB
    # filter as on, and a delta it then loses would go unseen.
    await sub.request(pub.name, "pubdata")
    table = [[i] for i in range(rows)]
    pub.publish("t", table)
    try:
        await updates.until(lambda u: u.kind in ("snapshot", "delta") and u.view == table,
                            timeout=ARRIVES_WITHIN)
    except TimeoutError:
        return False
    return True


def _registered(cage: Proc, names: set[str]) -> None:
    """Wait until the cage logged the registration of every one of ``names``."""
    left = set(names)
    while left:
        left.discard(cage.wait_event("node.registered")["name"])


def test_nodes_started_before_their_cage_lose_no_delta_after_a_snapshot(
    procs: Processes, tmp_path: Path
) -> None:
    """Nodes opened before their cage: a delta right after the snapshot arrives in 1 s, 50 of 50."""
    async def one(i: int) -> bool:
        cluster = Cluster(procs, tmp_path)
        pub, sub = cluster.bus(f"pub.{i}"), cluster.bus(f"sub.{i}")
        opening = [asyncio.ensure_future(pub.open()), asyncio.ensure_future(sub.open())]
        try:
            await asyncio.sleep(0)  # both connect now, to a cage not yet there
            await asyncio.to_thread(cluster.start_cage)
            await asyncio.gather(*opening)
            pub.publish("t", [[0]])
            updates = Updates()
            sub.subscribe(pub.name, "t", updates)
            assert (await updates.next()).kind == "snapshot"
            return await _arrives(pub, sub, updates, 2)
        finally:
            for task in opening:
                task.cancel()
            await pub.close()
            await sub.close()
            assert cluster.cage is not None
            cluster.cage.kill()

    async def main() -> list[int]:
        # A few tries at a time, each with its own cage: the cages' start-up
        # is most of a try's time.
        arrived: list[bool] = []
        for first in range(0, TRIES, TOGETHER):
            arrived += await asyncio.gather(*(one(i) for i in range(first, first + TOGETHER)))
        return [i for i, ok in enumerate(arrived) if not ok]

    late = run(main(), timeout=240)
    assert late == [], f"{len(late)} of {TRIES} deltas came late (tries {late})"


def test_a_cage_restarted_under_its_nodes_loses_no_delta_after_the_reannounce(
    procs: Processes, tmp_path: Path
) -> None:
    """Cage restarted 10 times: each time a delta after the re-announce arrives within 1 s."""
    cluster = Cluster(procs, tmp_path)
    cage = cluster.start_cage()

    async def main() -> list[int]:
        nonlocal cage
        late = []
        async with cluster.bus("pub") as pub, cluster.bus("sub") as sub:
            pub.publish("t", [[0]])
            updates = Updates()
            sub.subscribe("pub", "t", updates)
            assert (await updates.next()).kind == "snapshot"
            for i in range(RESTARTS):
                cage.kill()
                cage = await asyncio.to_thread(cluster.start_cage)
                await asyncio.to_thread(_registered, cage, {"pub", "sub"})
                if not await _arrives(pub, sub, updates, i + 2):
                    late.append(i)
        return late

    late = run(main(), timeout=240)
    assert late == [], f"{len(late)} of {RESTARTS} deltas came late (restarts {late})"


def test_a_node_whose_sub_never_hears_the_cage_is_not_registered_and_says_why(
    procs: Processes, tmp_path: Path
) -> None:
    """A wrong PUB endpoint: welcomed, never registered; open() fails naming the PUB."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    wrong = Endpoints(cluster.endpoints.router, f"tcp://127.0.0.1:{free_port()}")

    async def main() -> None:
        bus = Bus("deaf", endpoints=wrong, connect_timeout=1.0)
        with pytest.raises(BusClosed, match=f"nothing came from its PUB at {wrong.pub}"):
            await bus.open()
        assert not bus.registered

    run(main())
