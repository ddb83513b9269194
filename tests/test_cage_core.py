"""The cage's pure decisions: registration, probing, expiry, routing, counting."""

from __future__ import annotations

import pytest

from tests.cagecore import HB, answers, frames, packed, register
from zdse.cage.control import Later
from zdse.cage.core import CageCore
from zdse.testing import FakeProxy, routed
from zdse.wire import codec
from zdse.wire.codec import Kind
from zdse.wire.receipts import wire_cost


def test_register_welcomes_and_announces() -> None:
    """A new name gets a Welcome, and the cage publishes a Joined event."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc.a", "shared.#")
    router, pub = core.take()
    assert codec.decode_body(Kind.WELCOME, router[0][4]) == [codec.Welcome("e1", HB)]
    assert pub[0][0] == codec.EVENT_TOPIC
    assert codec.decode_body(Kind.JOINED, pub[0][2]) == [
        codec.Joined("svc.a", ["svc.a", "shared.#"])]
    assert core.routes.lookup("shared.x.y") == {b"A"}
    assert core.routes.lookup("allservices") == {b"A"}


def test_routed_messages_carry_the_true_sender() -> None:
    """The cage stamps the registered name, whatever the body says."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "alice")
    register(core, b"B", "bob")
    core.take()
    core.receive(frames(b"A", codec.Message("x", "hi"), key="bob"), 1)
    router, _ = core.take()
    assert router == [[b"B", codec.header(Kind.MESSAGE), b"alice", b"bob",
                       codec.encode_one(codec.Message("x", "hi"))]]


def test_a_live_name_is_refused_after_the_holder_answers_the_probe() -> None:
    """A second claim is decided by probing the holder; a holder that speaks keeps it."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc", now=0)
    core.take()
    register(core, b"B", "svc", now=0.5)
    router, _ = core.take()
    assert router[0][0] == b"A"  # the probe
    core.receive(frames(b"A", codec.Heartbeat()), 0.6)
    core.tick(0.7)
    errors = [m for m in answers(core, b"B") if isinstance(m, codec.Error)]
    assert errors[0].code == "name_taken"
    assert "'svc'" in errors[0].message
    assert core.names["svc"] == b"A"


def test_a_silent_holder_loses_its_name_to_the_newcomer() -> None:
    """A holder that says nothing until the probe's deadline is replaced."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc", now=0)
    register(core, b"B", "svc", now=0.5)
    core.tick(0.5 + 1.4 * HB)
    assert core.names["svc"] == b"A"
    core.tick(0.5 + 1.6 * HB)
    assert core.names["svc"] == b"B"
    assert any(isinstance(m, codec.Welcome) for m in answers(core, b"B"))


def test_an_unreachable_holder_is_replaced_at_once() -> None:
    """When the transport says the holder is gone, the newcomer is accepted now."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc", now=0)
    register(core, b"B", "svc", now=0.1)
    core.unreachable(b"A", 0.1)
    assert core.names["svc"] == b"B"


def test_silent_nodes_expire_and_lose_their_routes() -> None:
    """Three missed heartbeats expire a node; a Left event says why."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc", "x.*", now=0)
    core.take()
    core.tick(2.9)
    assert "svc" in core.names
    core.tick(3.1)
    assert "svc" not in core.names
    assert core.routes.lookup("x.y") == frozenset()
    _, pub = core.take()
    assert codec.decode_body(Kind.LEFT, pub[0][2]) == [codec.Left("svc", "expired")]


def test_a_stalled_cage_expires_nobody_until_it_has_read_what_queued() -> None:
    """Ticks more than a beat apart: the cage was away; nodes get a beat to be heard."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "alive", now=0)
    register(core, b"B", "dead", now=0)
    for i in range(5):
        core.tick(i * HB / 4)
    core.events.clear()
    core.tick(10 * HB)  # the cage was stopped for 9 beats
    assert {"alive", "dead"} <= core.names.keys()
    assert core.events == [("cage.stalled", {"seconds": 9 * HB})]
    assert core.stats["stalls"] == 1
    # What A sent meanwhile is read; B sent nothing.
    core.receive(frames(b"A", codec.Heartbeat()), 10.1 * HB)
    core.tick(10.5 * HB)
    assert "dead" in core.names
    core.tick(11 * HB)
    assert "alive" in core.names
    assert "dead" not in core.names


def test_a_cage_late_at_every_tick_still_expires_the_silent() -> None:
    """An overloaded cage, every tick a little over a beat late: one grace per expiry at most."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "dead", now=0)
    now = 0.0
    while now < 6 * HB and "dead" in core.names:
        now += 1.05 * HB
        core.tick(now)
    assert "dead" not in core.names
    assert core.stats["stalls"] == 1


def test_heartbeats_keep_a_node_alive_and_are_answered() -> None:
    """A heartbeat refreshes the node and gets the cage's epoch back."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc", now=0)
    core.take()
    core.receive(frames(b"A", codec.Heartbeat()), 2.5)
    assert answers(core, b"A") == [codec.Heartbeat("e1")]
    core.tick(5.0)
    assert "svc" in core.names


def test_a_node_a_beat_late_is_probed_and_dropped_if_unreachable() -> None:
    """A silent node gets a heartbeat probe; a closed connection then drops it at once."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc", now=0)
    core.take()
    core.tick(0.9 * HB)
    assert answers(core, b"A") == []
    core.tick(1.1 * HB)
    assert answers(core, b"A") == [codec.Heartbeat("e1")]
    core.unreachable(b"A", 1.1 * HB)  # what the proxy's send of the probe reports
    assert "svc" not in core.names
    _, pub = core.take()
    assert codec.decode_body(Kind.LEFT, pub[0][2]) == [codec.Left("svc", "disconnected")]


def test_strangers_are_told_to_register() -> None:
    """An unknown identity's heartbeat or message gets not_registered."""
    core = FakeProxy(CageCore("e1", HB))
    core.receive(frames(b"Z", codec.Heartbeat()), 0)
    core.receive(frames(b"Z", codec.Message("x", 1), key="a"), 0)
    errs = answers(core, b"Z")
    assert [e.code for e in errs if isinstance(e, codec.Error)] == ["not_registered"] * 2


def test_no_route_answers_requests_and_subscriptions_at_once() -> None:
    """A request to a key nobody listens on comes back as NoRoute with its body."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc")
    core.take()
    req = codec.Request(7, "d", None)
    core.receive(frames(b"A", req, key="nobody"), 1)
    (noroute,) = answers(core, b"A")
    assert isinstance(noroute, codec.NoRoute)
    assert noroute.key == "nobody"
    assert codec.decode_body(Kind.REQUEST, noroute.body) == [req]
    # A reply to a service that left is dropped, not bounced.
    core.receive(frames(b"A", codec.Reply(7, True, 1), key="gone"), 1)
    assert answers(core, b"A") == []


def test_gather_requests_get_a_fanout_count() -> None:
    """A gather request is forwarded to all and the sender learns how many."""
    core = FakeProxy(CageCore("e1", HB))
    for ident, name in ((b"A", "a"), (b"B", "b"), (b"C", "c")):
        register(core, ident, name, "shared")
    core.take()
    core.receive(frames(b"A", codec.Request(1, "d"), key="shared", flags=codec.FLAG_GATHER), 1)
    router, _ = core.take()
    assert sorted(f[0] for f in router if f[1][1] == Kind.REQUEST) == [b"A", b"B", b"C"]
    (fanout,) = [f for f in router if f[1][1] == Kind.FANOUT]
    assert codec.decode_body(Kind.FANOUT, fanout[4])[0].count == 3  # type: ignore[union-attr]


def test_deltas_go_once_to_the_pub_socket_under_the_senders_topic() -> None:
    """A published delta becomes one PUB frame, topic = true sender + dataindex."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "pub.a")
    core.take()
    d = codec.Delta("vms", "ep", 1, ["replace", []])
    core.receive(frames(b"A", d, key="vms"), 1)
    router, pub = core.take()
    assert router == []
    assert pub == [[codec.topic("pub.a", "vms"), codec.header(Kind.DELTA), codec.encode_one(d)]]


def test_garbage_is_counted_and_never_raises() -> None:
    """Wrong frame counts, bad headers and bad registrations are counted and dropped."""
    core = FakeProxy(CageCore("e1", HB))
    junk = [[b"A"], [b"A", b"x"], [b"A", b"\x01Q\x00", b"k", b"", b"extra"],
            [b"A", b"\x07Q\x00", b"k", b""], [b"A", b"\x01?\x00", b"k", b""],
            [b"A", codec.header(Kind.REGISTER), b"", b"\xc1"],
            [b"A", codec.header(Kind.WELCOME), b"", b""]]
    for f in junk:
        core.receive(f, 0)
    assert core.stats["bad_frames"] == len(junk)
    assert core.nodes == {}


def test_a_packed_request_is_forwarded_packed_with_the_true_sender() -> None:
    """[identity, packed] goes out as [destination, sender, the same packed frame], and the
    destination's budget counts its frames as the node will."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "a")
    register(core, b"B", "b")
    core.take()
    sent_before = core.core.accounts[b"B"].sent
    msg = packed(b"A", codec.Request(3, "d", [1], 2.0), key="b")
    core.receive(msg, 1)
    router, _ = core.take()
    assert router == [[b"B", b"a", msg[1]]]
    assert core.core.accounts[b"B"].sent - sent_before == wire_cost(b"a", msg[1])
    assert routed(router[0]) == (Kind.REQUEST, codec.encode_one(codec.Request(3, "d", [1], 2.0)))


def test_bad_packed_frames_are_counted_and_never_raise() -> None:
    """A packed frame too short for its header or key, with a bad header, or of a kind
    that is never packed is one bad frame, and nothing is routed."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "a")
    register(core, b"B", "b")
    core.take()
    q = codec.header(Kind.REQUEST)
    junk = [[b"A", b""], [b"A", q], [b"A", q + b"\x05ab"], [b"A", b"\x01?\x00\x01b\x90"],
            [b"A", codec.pack(codec.header(Kind.REGISTER), b"", codec.encode_one(
                codec.Register("x", [], {})))]]
    for f in junk:
        core.receive(f, 1)
    assert core.stats["bad_frames"] == len(junk)
    router, _ = core.take()
    assert [f for f in router if f[0] == b"B"] == []
    assert set(core.core.nodes) == {b"A", b"B"}


def test_oversized_frames_are_refused_by_name() -> None:
    """A body above MAX_MESSAGE_BYTES gets a too_large error and goes nowhere."""
    from zdse.wire.limits import MAX_MESSAGE_BYTES

    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc")
    core.take()
    core.receive([b"A", codec.header(Kind.MESSAGE), b"svc", b"\0" * (MAX_MESSAGE_BYTES + 1)], 1)
    (err,) = answers(core, b"A")
    assert isinstance(err, codec.Error)
    assert err.code == "too_large"
    assert "MAX_MESSAGE_BYTES" in err.message


def test_control_requests_answer_services_routes_and_stats() -> None:
    """Requests to 'cage' are answered by the cage itself."""
    core = FakeProxy(CageCore("e1", HB, started_at=0))
    register(core, b"A", "svc", "x.#")
    core.take()
    reqs = [codec.Request(1, "services"), codec.Request(2, "routes"), codec.Request(3, "stats"),
            codec.Request(4, "bogus")]
    core.receive([b"A", codec.header(Kind.REQUEST), b"cage", codec.encode_body(reqs)], 2)
    replies = {r.cid: r for r in answers(core, b"A") if isinstance(r, codec.Reply)}
    assert replies[1].value[0]["name"] == "svc"
    assert ["x.#", ["svc"]] in replies[2].value
    assert replies[3].value["nodes"] == 1
    assert not replies[4].ok


def test_a_control_handler_may_answer_later() -> None:
    """A handler returning Later sends nothing for that request (the others in its batch
    are answered at once); answer_later sends the reply once, to the requester."""
    core = FakeProxy(CageCore("e1", HB, started_at=0))
    pending: list[Later] = []

    def slow(args: object, answer: object, now: float) -> Later:
        pending.append(Later())
        return pending[-1]

    core.serve({"slow": slow})
    register(core, b"A", "svc")
    core.take()
    reqs = [codec.Request(1, "slow"), codec.Request(2, "stats")]
    core.receive([b"A", codec.header(Kind.REQUEST), b"cage", codec.encode_body(reqs)], 2)
    assert [r.cid for r in answers(core, b"A") if isinstance(r, codec.Reply)] == [2]
    core.answer_later(pending[0], True, {"done": 1})
    core.answer_later(pending[0], True, {"done": 2})  # answered already: nothing
    assert answers(core, b"A") == [codec.Reply(1, True, {"done": 1})]


def test_bye_removes_a_node_at_once() -> None:
    """A node that says bye loses its name and routes without waiting for expiry."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc")
    core.receive(frames(b"A", codec.Bye()), 0.1)
    assert core.names == {}


def test_the_subscriptions_the_cage_counts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Announces to made-up keys under a wildcard: routed all, counted up to the bound."""
    monkeypatch.setattr("zdse.cage.core.MAX_COUNTED_SUBSCRIPTIONS", 10)
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "pub", "made.#")
    register(core, b"B", "sub")
    core.take()
    for i in range(50):
        core.receive(frames(b"B", codec.Subscribe(f"s{i}", "t"), key=f"made.up.{i}"), 1)
    router, _ = core.take()
    assert len(router) == 50
    assert core.live_subscriptions(1) == 10
    assert core.stats["subscriptions_uncounted"] == 40
