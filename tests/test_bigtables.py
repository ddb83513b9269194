"""Big tables end to end: real zdse-proxy and zdse-node processes, tens of thousands of rows."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness import WAIT, Cluster, Updates, run, write_json
from tests.support import Processes
from zdse.bench.rows import changed, vms_rows
from zdse.bus import Bus
from zdse.tableindex import SLICED_ROWS

#: Rows of the suite's big table: past one slice, so the publisher prepares
#: it in slices, and still one snapshot under the message limit.
ROWS = 60_000


def _same(view: Any, rows: list[list[Any]]) -> bool:
    return (isinstance(view, list) and len(view) == len(rows)
            and Counter(map(tuple, view)) == Counter(map(tuple, rows)))


@pytest.fixture
def cluster(procs: Processes, tmp_path: Path) -> Cluster:
    """A running cage on free loopback ports, with the default heartbeat (1 s).

    The suite's fast heartbeat (0.2 s) would expire this test's own client
    while it decodes a 9 MB snapshot on a loaded machine: a snapshot sent
    whole is decoded in one call.
    """
    c = Cluster(procs, tmp_path, heartbeat=1.0)
    c.start_cage()
    return c


def test_a_big_file_table_and_its_one_percent_change_reach_the_view(cluster: Cluster) -> None:
    """A file of 60,000 rows: the view equals it, then a 1% change arrives as a delta of
    those rows only, and requests to the publisher are answered meanwhile.

    (How fast they are answered is measured by ``zdse-bench table``, on an
    unloaded machine: here the test's own client decodes the table.)"""
    assert ROWS > SLICED_ROWS
    rows = vms_rows(ROWS)
    _, path = cluster.file_node("big.one", {"vms": rows})

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("big.one", "vms", updates)
            # The node stores a table this big once its slices are done: the
            # subscriber may see it come as a snapshot or as a first delta.
            first = await updates.until(lambda u: _same(u.view, rows), timeout=2 * WAIT)
            seq = first.seq
            new = changed(rows)
            write_json(path, {"vms": new})
            waits: list[float] = []
            got = asyncio.ensure_future(updates.until(lambda u: u.kind == "delta" and u.seq > seq,
                                                      timeout=2 * WAIT))
            while not got.done():
                started = time.monotonic()
                await bus.request("big.one", "pubdata", timeout=WAIT)
                waits.append(time.monotonic() - started)
            delta = await got
            assert delta.data[0] == "rows"
            assert len(delta.data[1]) == len(delta.data[2]) == ROWS // 100
            assert _same(delta.view, new)
            assert waits

    run(scenario(), timeout=120)


def test_a_sliced_publish_keeps_the_loop_answering(cluster: Cluster) -> None:
    """While a Bus prepares a big table in slices, its loop answers requests; then it is stored."""
    rows = vms_rows(2 * SLICED_ROWS)

    async def scenario() -> None:
        async with Bus("big.two", endpoints=cluster.endpoints, connect_timeout=WAIT) as pub, \
                cluster.bus() as client:
            pub.publish("vms", rows)
            pub.publish("vms", changed(rows))  # coalesced: the newest wins
            answered = 0
            while pub._pending:
                await client.request("big.two", "pubdata", timeout=1.0)
                answered += 1
            await pub.wait_published()
            assert answered >= 1
            assert _same(pub.core.publications.data("vms"), changed(rows))
            assert pub.pubdata()["vms"]["seq"] in (1, 2)

    run(scenario(), timeout=120)
