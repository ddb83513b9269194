"""The ``file`` module with real processes: every table that fits is published, off the loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
from zdse_nodes.file_tables import _weigh

from tests.harness import Cluster, Updates, run, write_json
from tests.support import Processes
from zdse.node.tableindex import INDEX_MIN_ROWS
from zdse.wire.limits import MAX_ENTRY_BYTES, MAX_MESSAGE_BYTES, PART_BYTES

#: Rows per table of the big file, and its tables: about 40 MB of JSON that
#: held the node's loop past the cage's expiry (3 beats of 0.5 s) when it
#: was parsed on the loop.
BIG_ROWS = 75_000
BIG_TABLES = 8



async def _views(cluster: Cluster, publisher: str, want: dict[str, Any]) -> None:
    """Wait until a subscriber to each of ``want``'s dataindexes sees its table."""
    async with cluster.bus() as bus:
        for dataindex, table in want.items():
            updates = Updates()
            bus.subscribe(publisher, dataindex, updates)
            await updates.until_views({publisher: table})


def test_a_table_over_the_size_limit_is_reported_and_the_others_published(
    cluster: Cluster,
) -> None:
    """One table over MAX_MESSAGE_BYTES: named with its size; the tables after it still go out."""
    big = [["x" * (MAX_MESSAGE_BYTES + 1024)]]
    path = cluster.tmp / "tables.json"
    write_json(path, {"a": [[1]], "big": big, "c": [[3]]})
    node = cluster.start_node("file", "files", path=path, poll_interval=0.05)
    refused = node.wait_event("file.table_refused")
    assert refused["dataindex"] == "big"
    assert refused["bytes"] > MAX_MESSAGE_BYTES
    published = node.wait_event("file.published")
    assert published["dataindexes"] == ["a", "c"]
    assert published["refused"] == ["big"]
    run(_views(cluster, "files", {"a": [[1]], "c": [[3]]}))
    write_json(path, {"a": [[1]], "big": [["small now"]], "c": [[3]]})
    assert node.wait_event("file.published")["dataindexes"] == ["a", "big", "c"]
    run(_views(cluster, "files", {"big": [["small now"]]}))
    assert not [ln for ln in node.lines if "poll.recovered" in ln or "poll.failed" in ln]


def test_a_table_msgpack_cannot_carry_is_reported_and_the_others_published(
    cluster: Cluster,
) -> None:
    """A small file with an integer too big for msgpack in one table: the others go out."""
    path = cluster.tmp / "tables.json"
    path.write_text('{"a": [[1]], "huge": [[' + str(2**70) + ']], "c": [[3]]}')
    node = cluster.start_node("file", "files", path=path, poll_interval=0.05)
    refused = node.wait_event("file.table_refused")
    assert refused["dataindex"] == "huge"
    assert "cannot encode" in refused["error"]
    assert node.wait_event("file.published")["dataindexes"] == ["a", "c"]
    run(_views(cluster, "files", {"a": [[1]], "c": [[3]]}))


def test_a_big_file_is_parsed_off_the_loop_and_the_node_is_never_expired(
    procs: Processes, tmp_path: Path
) -> None:
    """About 40 MB of JSON: the node keeps beating while it is parsed, the cage never drops it."""
    # Beats of 0.5 s: holding 2 million objects, the node's own cyclic GC
    # pauses it for up to half a second on a loaded machine; parsing on the
    # loop held it for seconds.
    cluster = Cluster(procs, tmp_path, heartbeat=0.5)
    cluster.start_cage()
    path = cluster.tmp / "big.json"
    write_json(path, {"t": [[0]]})
    node = cluster.start_node("file", "files", path=path, poll_interval=0.05)
    node.wait_event("file.published")
    rows = [[f"vm-{i}", "x" * 40, i] for i in range(BIG_ROWS)]
    tables = {f"t{k}": rows for k in range(BIG_TABLES)}
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(tables, f)
    tmp.replace(path)
    published = node.wait_event("file.published", timeout=120)
    assert published["dataindexes"] == sorted(tables)
    assert cluster.cage is not None
    left = [ln for ln in cluster.cage.lines if "node.left" in ln]
    assert left == [], f"the cage dropped the node while it parsed: {left}"
    lost = [ln for ln in node.lines if "cage.lost" in ln]
    assert lost == [], f"the node went silent while it parsed: {lost}"


def test_the_child_sends_a_big_list_table_in_pieces_past_the_message_limit() -> None:
    """A list table over MAX_MESSAGE_BYTES (its snapshot goes in parts) is sent in pieces
    that join to it; a row over the limit, or a small table over it, is refused."""
    row = "x" * 20_000
    rows = [[i, row] for i in range(INDEX_MIN_ROWS)]  # about 20 MB packed
    entries = _weigh("big", rows)
    assert len(entries) > 1
    assert all(e[1] is not None and not e[3] for e in entries)
    assert [e[4] for e in entries] == [True] * (len(entries) - 1) + [False]
    assert entries[0][2] > MAX_MESSAGE_BYTES
    assert all(len(e[1]) <= PART_BYTES + 30_000 for e in entries)
    joined = [r for e in entries for r in msgpack.unpackb(e[1])]
    assert joined == rows
    [refused] = _weigh("huge", [*rows[1:], ["y" * (MAX_MESSAGE_BYTES + 1)]])
    assert refused[1] is None
    assert "a row of" in refused[3]
    [small] = _weigh("small", [[row * 900]])
    assert small[1] is None
    assert "over MAX_MESSAGE_BYTES" in small[3]


def test_the_child_sends_a_big_dict_table_in_pieces_past_the_message_limit() -> None:
    """A dict table over MAX_MESSAGE_BYTES (its snapshot goes in parts) is sent in pieces
    of entries that join to it; an entry over MAX_ENTRY_BYTES is refused."""
    value = "x" * 20_000
    table = {f"vm-{i}": [i, value] for i in range(INDEX_MIN_ROWS)}  # about 20 MB packed
    entries = _weigh("big", table)
    assert len(entries) > 1
    assert all(e[1] is not None and not e[3] for e in entries)
    assert [e[4] for e in entries] == [True] * (len(entries) - 1) + [False]
    assert entries[0][2] > MAX_MESSAGE_BYTES
    assert all(len(e[1]) <= PART_BYTES + 30_000 for e in entries)
    joined: dict[str, Any] = {}
    for e in entries:
        joined.update(msgpack.unpackb(e[1]))
    assert joined == table
    [refused] = _weigh("huge", {**table, "vm-x": "y" * (MAX_ENTRY_BYTES + 1)})
    assert refused[1] is None
    assert "an entry of" in refused[3]


def test_a_dict_table_past_the_message_limit_reaches_a_subscriber(cluster: Cluster) -> None:
    """A file's dict table of about 18 MB packed: parsed off the loop in pieces, published,
    and a subscriber's view (a snapshot in parts) equals it."""
    table = {f"vm-{i}": [i, "x" * 15_000] for i in range(1_200)}
    path = cluster.tmp / "big.json"
    write_json(path, {"small": [[1]], "vms": table})
    node = cluster.start_node("file", "files", path=path, poll_interval=60)
    published = node.wait_event("file.published", timeout=60)
    assert published["dataindexes"] == ["small", "vms"]
    assert published["refused"] == []
    run(_views(cluster, "files", {"vms": table, "small": [[1]]}))
