"""The cage's byte budget per node: receipts, refusals, the node told, views converging."""

from __future__ import annotations

import pytest

from zdse.cage.core import CageCore
from zdse.node.core import NodeCore
from zdse.node.requests import Outcome
from zdse.testing import FakeNet, FakeProxy
from zdse.wire import codec
from zdse.wire.codec import Kind
from zdse.wire.limits import FRAME_COST, MAX_MESSAGE_BYTES, MIN_QUEUE_BYTES, RECEIPT_BYTES
from zdse.wire.receipts import wire_cost

BUDGET = MIN_QUEUE_BYTES
#: A table whose snapshot is about 300 KiB: four of them overflow BUDGET.
TABLE = [[i, "x" * 290] for i in range(1000)]


def held_bytes(frames: list[list[bytes]]) -> int:
    """What the frames waiting for a paused node cost in its budget."""
    return sum(wire_cost(*f) for f in frames)


def paused_asks(count: int) -> tuple[FakeNet, NodeCore, NodeCore, list[str]]:
    """A publisher of TABLE, and a node that stopped reading and subscribed ``count`` times."""
    net = FakeNet(queue_bytes=BUDGET)
    pub = net.add("pub")
    sub = net.add("sub")
    pub.publish("t", TABLE)
    net.pause(sub)
    sids = [sub.subscribe("pub", "t", net.clock.now) for _ in range(count)]
    net.run()
    return net, pub, sub, sids


def test_a_node_that_does_not_read_holds_at_most_its_budget() -> None:
    """200 snapshots asked for by a node that never reads: the cage queues one budget's worth."""
    net, _, sub, _ = paused_asks(200)
    held = net.held(sub)
    snapshots = [f for f in held if f[0] == codec.header(Kind.SNAPSHOT)]
    assert 1 <= len(snapshots) <= 4
    assert held_bytes(held) <= BUDGET
    stats = net.cage.stats
    assert stats["dropped_budget"] == 200 - len(snapshots)
    assert net.cage.over_budget_kinds["snapshot"] == 200 - len(snapshots)
    assert net.cage.dropped_nodes["sub"] == 200 - len(snapshots)
    # The publisher and others go on: a request to it is answered.
    other = net.add("other")
    other.request("pub", "t", None, gather=False)
    net.run()
    [outcome] = [e for e in net.events(other) if isinstance(e, Outcome)]
    assert outcome.replies["pub"].value == TABLE


def test_a_subscriber_whose_snapshots_were_dropped_converges_once_it_reads() -> None:
    """Told over_budget when it caught up, the node asks again and every view fills."""
    net, pub, sub, sids = paused_asks(12)
    assert net.cage.stats["dropped_budget"] > 0
    net.resume(sub)
    net.run()
    net.advance(1.0)
    assert sub.stats["error_over_budget"] >= 1
    assert [sub.subscriptions.view(sid) for sid in sids] == [{"pub": TABLE}] * len(sids)
    # Its deltas flow as before.
    pub.publish("t", TABLE[:10])
    net.run()
    assert [sub.subscriptions.view(sid) for sid in sids] == [{"pub": TABLE[:10]}] * len(sids)


def test_receipts_keep_a_reading_node_inside_its_budget_and_count_exactly() -> None:
    """20 MB to a node that reads, through a 1 MiB budget: nothing dropped, counts agree."""
    net = FakeNet(queue_bytes=BUDGET)
    sender = net.add("sender")
    receiver = net.add("receiver")
    for _ in range(40):
        for i in range(50):
            sender.send("receiver", "m", "y" * 10_000 + str(i))
        net.run()
    got = [e for e in net.events(receiver) if type(e).__name__ == "IncomingMessage"]
    assert len(got) == 2000
    assert net.cage.stats["dropped_budget"] == 0
    net.advance(1.0)  # a heartbeat: the receipt of the rest
    account = net.cage.accounts[net.member(receiver).identity]
    assert account.sent == receiver.reads.read
    # All acknowledged but the answer to the heartbeat that carried the receipt.
    assert 0 < account.unacked < 200


def _cage_with(identity: bytes, name: str) -> FakeProxy:
    core = FakeProxy(CageCore("e1", 1.0, queue_bytes=BUDGET))
    core.receive([identity, codec.header(Kind.REGISTER), b"",
                  codec.encode_one(codec.Register(name, [], {}))], 0)
    core.receive([b"P", codec.header(Kind.REGISTER), b"",
                  codec.encode_one(codec.Register("pub", [], {}))], 0)
    core.take()
    return core


def _snapshot(core: FakeProxy, to: str, size: int = 300_000) -> None:
    body = codec.encode_one(codec.Snapshot("s", "t", "e", 1, "z" * size))
    core.receive([b"P", codec.header(Kind.SNAPSHOT), to.encode(), body], 1)


def test_registering_again_on_the_same_connection_gives_no_fresh_budget() -> None:
    """The welcome says how much was sent before it; the unread bytes still count."""
    core = _cage_with(b"S", "sub")
    for _ in range(10):
        _snapshot(core, "sub")
    core.take()
    sent = core.accounts[b"S"].sent
    assert core.stats["dropped_budget"] > 0
    core.receive([b"S", codec.header(Kind.BYE), b"", codec.encode_one(codec.Bye())], 2)
    assert b"S" in core.accounts  # it left with bytes unread
    core.receive([b"S", codec.header(Kind.REGISTER), b"",
                  codec.encode_one(codec.Register("sub", [], {}))], 3)
    core.take()
    dropped = core.stats["dropped_budget"]
    _snapshot(core, "sub")
    assert core.stats["dropped_budget"] == dropped + 1
    # Reading it all frees the budget; the welcome it then gets counts on from `sent`.
    core.receive([b"S", codec.header(Kind.RECEIPT), b"",
                  codec.encode_one(codec.Receipt(sent))], 4)
    core.receive([b"S", codec.header(Kind.REGISTER), b"",
                  codec.encode_one(codec.Register("sub", [], {}))], 5)
    welcomes = [codec.decode_body(Kind.WELCOME, f[4])[0] for f in core.take()[0]
                if f[1] == codec.header(Kind.WELCOME)]
    # (the over_budget error the receipt brought came before it)
    assert [w.sent for w in welcomes if isinstance(w, codec.Welcome)] == [
        core.accounts[b"S"].sent - wire_cost(codec.header(Kind.WELCOME), b"cage", b"",
                                             codec.encode_one(welcomes[0]))]


def test_the_node_is_told_once_it_caught_up_and_lies_count_as_all() -> None:
    """An over_budget error follows the receipt that halves the backlog; a receipt past
    what was sent acknowledges all of it, no more."""
    core = _cage_with(b"S", "sub")
    for _ in range(10):
        _snapshot(core, "sub")
    core.take()
    account = core.accounts[b"S"]
    sent = account.sent
    core.receive([b"S", codec.header(Kind.RECEIPT), b"",
                  codec.encode_one(codec.Receipt(10**15))], 2)
    assert account.acked == sent
    errors = [codec.decode_body(Kind.ERROR, f[4])[0] for f in core.take()[0]
              if f[1] == codec.header(Kind.ERROR)]
    assert [e.code for e in errors if isinstance(e, codec.Error)] == ["over_budget"]
    assert "for you were dropped" in errors[0].message  # type: ignore[union-attr]


def test_a_message_the_transport_dropped_leaves_the_budget() -> None:
    """A send refused at the high-water mark is taken off the node's unread bytes."""
    core = _cage_with(b"S", "sub")
    _snapshot(core, "sub")
    [frames] = core.take()[0]
    before = core.accounts[b"S"].unacked
    core.dropped(frames=frames)
    assert core.accounts[b"S"].unacked == before - wire_cost(*frames[1:])
    assert core.stats["dropped_hwm"] == 1


def test_accounts_of_nodes_that_left_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accounts kept for nodes that left unread are capped; the oldest go first."""
    monkeypatch.setattr("zdse.cage.core.MAX_LEFT_ACCOUNTS", 5)
    core = FakeProxy(CageCore("e1", 1.0, queue_bytes=BUDGET))
    for i in range(20):
        ident = f"n{i}".encode()
        core.receive([ident, codec.header(Kind.REGISTER), b"",
                      codec.encode_one(codec.Register(f"n{i}", [], {}))], 0)
        core.receive([ident, codec.header(Kind.BYE), b"", codec.encode_one(codec.Bye())], 0)
    assert len(core.accounts) == 5
    assert list(core.accounts) == [f"n{i}".encode() for i in range(15, 20)]


def test_a_message_larger_than_the_budget_still_goes_when_nothing_waits() -> None:
    """The budget slows a big message, never bars it: it goes once the node read the rest."""
    assert MAX_MESSAGE_BYTES + FRAME_COST > BUDGET
    core = _cage_with(b"S", "sub")
    core.accounts[b"S"].receipt(core.accounts[b"S"].sent)
    _snapshot(core, "sub", size=2 * BUDGET)
    assert core.stats["dropped_budget"] == 0
    _snapshot(core, "sub", size=10)
    assert core.stats["dropped_budget"] == 1
    assert RECEIPT_BYTES < BUDGET
