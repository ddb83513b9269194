"""The cage core's hooks for operations: control handlers of the shell, and the counters
metrics are made of."""

from __future__ import annotations

from typing import Any

from tests.cagecore import HB, answers, frames, register
from zdse.cage.core import SUBSCRIPTION_TTL, CageCore
from zdse.errors import SupervisorError
from zdse.testing import FakeProxy
from zdse.wire import codec
from zdse.wire.codec import Kind


def control(core: FakeProxy, identity: bytes, *requests: codec.Request) -> dict[int, codec.Reply]:
    """Send requests to the key 'cage' and return the replies by cid."""
    core.receive([identity, codec.header(Kind.REQUEST), b"cage", codec.encode_body(list(requests))],
                 1.0)
    return {r.cid: r for r in answers(core, identity) if isinstance(r, codec.Reply)}


def test_handlers_answer_extend_and_fail_as_error_replies() -> None:
    """A handler gets args, the core's own answer and the time; its ZdseError is an error reply."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "svc")
    core.take()
    seen: list[Any] = []

    def start(args: Any, answer: Any, now: float) -> Any:
        seen.append((args, answer, now))
        if args["name"] == "nope":
            raise SupervisorError("no supervised service named 'nope'")
        return {"name": args["name"], "state": "starting"}

    def services(args: Any, answer: Any, now: float) -> Any:
        return [{**row, "state": "running"} for row in answer]

    def broken(args: Any, answer: Any, now: float) -> Any:
        raise KeyError("bug")

    core.serve({"start": start, "services": services, "broken": broken})
    replies = control(core, b"A", codec.Request(1, "start", {"name": "x"}),
                      codec.Request(2, "start", {"name": "nope"}), codec.Request(3, "services"),
                      codec.Request(4, "broken"), codec.Request(5, "bogus"))
    assert replies[1].value == {"name": "x", "state": "starting"}
    assert seen[0] == ({"name": "x"}, None, 1.0)
    assert not replies[2].ok
    assert replies[2].value == ["SupervisorError", "no supervised service named 'nope'"]
    assert replies[3].value[0]["name"] == "svc"
    assert replies[3].value[0]["state"] == "running"
    assert replies[4].value[0] == "InternalError"  # the cage goes on routing
    assert ("control.failed", {"request": "broken", "error": "KeyError('bug')"}) in core.events
    assert not replies[5].ok
    assert "broken, services, start" in replies[5].value[1]


def test_counters_by_kind_for_routed_noroute_and_dropped_frames() -> None:
    """Routed frames are counted by header, no-route ones and dropped ones by kind."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "alice")
    register(core, b"B", "bob")
    core.take()
    core.receive(frames(b"A", codec.Request(1, "t"), key="bob"), 1)
    core.receive(frames(b"A", codec.Request(2, "t"), key="bob", flags=codec.FLAG_GATHER), 1)
    core.receive(frames(b"A", codec.Message("t", 1), key="bob"), 1)
    core.receive(frames(b"A", codec.Message("t", 1), key="nobody"), 1)
    core.receive(frames(b"A", codec.Reply(1, True, 1), key="nobody"), 1)
    assert core.routed[codec.header(Kind.REQUEST)] == 1
    assert core.routed[codec.header(Kind.REQUEST, codec.FLAG_GATHER)] == 1
    assert core.routed[codec.header(Kind.MESSAGE)] == 1
    assert dict(core.noroute) == {"message": 1, "reply": 1}
    router, _ = core.take()
    to_bob = next(f for f in router if f[0] == b"B")
    core.dropped(frames=to_bob)
    assert core.dropped_kinds == {"request": 1}
    assert core.dropped_nodes == {"bob": 1}
    assert core.stats["dropped_hwm"] == 1


def test_batches_are_bucketed_by_powers_of_two() -> None:
    """drained(n) counts a wake-up in the bucket of the least power of two >= n."""
    core = FakeProxy(CageCore("e1", HB))
    for n in (0, 1, 2, 3, 4, 5, 4096):
        core.drained(n)
    assert dict(core.batches) == {0: 1, 1: 1, 2: 2, 3: 1, 12: 1}
    assert core.batch_frames == 1 + 2 + 3 + 4 + 5 + 4096


def test_live_subscriptions_age_out_and_leave_with_their_node() -> None:
    """(subscriber, key) pairs count for the subscription ttl, and go when the node leaves."""
    core = FakeProxy(CageCore("e1", HB))
    register(core, b"A", "pub", "shared")
    register(core, b"B", "sub")
    for now in (1.0, 2.0):  # a re-announce of the same pair counts once
        core.receive(frames(b"B", codec.Subscribe("s1", "t", {}, 30), key="shared"), now)
    core.receive(frames(b"A", codec.Subscribe("s2", "t", {}, 30), key="pub"), 2.0)
    assert core.live_subscriptions(3.0) == 2
    assert core.live_subscriptions(2.0 + SUBSCRIPTION_TTL + 1) == 0
    core.receive(frames(b"B", codec.Bye()), 3.0)
    assert list(core.subscribers) == [(b"A", b"pub")]
    core.tick(2.0 + SUBSCRIPTION_TTL + 1)
    assert core.subscribers == {}
