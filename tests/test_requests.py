"""Requests in flight: first reply wins, gathering waits for the fan-out count."""

from __future__ import annotations

from zdse.node.requests import PendingRequests
from zdse.wire.codec import Reply


def test_a_plain_request_completes_with_its_first_reply() -> None:
    """The first reply ends a plain request; later ones are ignored."""
    table = PendingRequests()
    cid = table.new("k")
    outcome = table.on_reply("a", Reply(cid, True, 1))
    assert outcome is not None
    assert outcome.replies == {"a": Reply(cid, True, 1)}
    assert table.on_reply("b", Reply(cid, True, 2)) is None
    assert len(table) == 0


def test_gathering_completes_when_all_counted_replies_came_in_either_order() -> None:
    """Replies before or after the Fanout count; completion needs all of them."""
    for fanout_first in (True, False):
        table = PendingRequests()
        cid = table.new("k", gather=True)
        if fanout_first:
            assert table.on_fanout(cid, 2) is None
        assert table.on_reply("a", Reply(cid, True, 1)) is None
        done = table.on_reply("b", Reply(cid, True, 2)) if fanout_first else None
        if not fanout_first:
            assert table.on_reply("b", Reply(cid, True, 2)) is None
            done = table.on_fanout(cid, 2)
        assert done is not None
        assert set(done.replies) == {"a", "b"}


def test_noroute_and_timeout_end_a_request_with_a_reason() -> None:
    """No route ends a request at once; a timeout ends it with what it had."""
    table = PendingRequests()
    a = table.new("k")
    outcome = table.on_noroute(a)
    assert outcome is not None
    assert outcome.error == "noroute"
    b = table.new("k", gather=True)
    table.on_fanout(b, 3)
    table.on_reply("x", Reply(b, True, 1))
    late = table.timeout(b)
    assert late is not None
    assert late.error == "timeout"
    assert list(late.replies) == ["x"]
    assert late.expected == 3
    assert table.timeout(b) is None
