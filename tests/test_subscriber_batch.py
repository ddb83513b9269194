"""Subscriptions.on_deltas (a frame of deltas, as wire fields) does what on_delta does for each."""

from __future__ import annotations

from typing import Any

import pytest

from zdse.node.subscriptions import Subscriptions
from zdse.wire.codec import Delta, Snapshot

PUB = "pub.a"


def live(sids: int = 1) -> tuple[Subscriptions, list[str]]:
    """Subscriptions with a live feed of PUB's 'vms' at seq 1, for ``sids`` subscriptions."""
    subs = Subscriptions(refresh=10.0)
    ids = []
    for i in range(sids):
        sid, _ = subs.subscribe("pubs", "vms", 0.0, sid=f"s{i}")
        subs.on_snapshot(PUB, Snapshot(sid, "vms", "e1", 1, [["vm1", "on"]]), 0.0)
        ids.append(sid)
    return subs, ids


def rows(seq: int, epoch: str = "e1", dataindex: str = "vms") -> Delta:
    """A delta adding one row."""
    return Delta(dataindex, epoch, seq, ["rows", [[f"vm{seq}", "on"]], []])


CASES: dict[str, list[Delta]] = {
    "in order": [rows(2), rows(3), rows(4)],
    "old ones dropped": [rows(2), rows(2), rows(1), rows(3)],
    "a gap resyncs and buffers": [rows(2), rows(4), rows(5), rows(3)],
    "a new epoch resyncs": [rows(2), rows(1, epoch="e2"), rows(2, epoch="e2")],
    "a bad delta resyncs": [rows(2), Delta("vms", "e1", 3, ["keys", {}, []]), rows(4)],
    "not ours": [rows(2, dataindex="other"), rows(2)],
}


def outcome(subs: Subscriptions) -> Any:
    """What the subscriptions hold after the deltas."""
    return subs.subdata(), subs.view("s0"), dict(subs.stats)


@pytest.mark.parametrize("sids", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_on_deltas_equals_on_delta_one_by_one(case: str, sids: int) -> None:
    """Same updates, actions, views and counters as on_delta called for each delta."""
    batch, single = live(sids)[0], live(sids)[0]
    fields = [[d.dataindex, d.epoch, d.seq, d.delta] for d in CASES[case]]
    got = batch.on_deltas(PUB, fields, 5.0)
    want: tuple[list[Any], list[Any]] = ([], [])
    for d in CASES[case]:
        updates, actions = single.on_delta(PUB, d, 5.0)
        want[0].extend(updates)
        want[1].extend(actions)
    assert got == want
    assert outcome(batch) == outcome(single)
