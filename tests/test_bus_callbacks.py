"""A Bus's callbacks over a real cage: async ones in order, a slow one pauses reading."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.harness import TEST_REFRESH, WAIT, Cluster, answered, run
from tests.support import Processes
from zdse.errors import NoRouteError, RemoteError, RequestTimeout
from zdse.node import dispatcher as dispatcher_module
from zdse.node.bus import Bus, Update

#: Messages a test sends at most to fill a node's DEALER queue behind a stopped cage.
FILL_LIMIT = 1_000_000


def backlog(bus: Bus) -> list[list[bytes]]:
    """What the bus's transport holds past its DEALER's queue."""
    assert bus._transport is not None
    return bus._transport.backlog


class WatchedBus(Bus):
    """A Bus that says when it stops and starts reading."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.holds: list[bool] = []
        self.paused = asyncio.Event()

    def _pause(self, everything: bool) -> None:
        self.holds.append(True)
        self.paused.set()
        super()._pause(everything)

    def _resume(self) -> None:
        self.holds.append(False)
        super()._resume()


def test_a_slow_async_callback_pauses_reading_and_loses_nothing(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deltas behind a slow async callback wait in order; past the limit the node stops
    reading, and once the callback is done it reads on: every delta, in order."""
    monkeypatch.setattr(dispatcher_module, "BEHIND_LIMIT", 5)
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    count = 200

    async def scenario() -> None:
        seen: list[tuple[str, int, int]] = []  # kind, seq, view
        done = asyncio.Event()
        snapshot = asyncio.Event()
        async with cluster.bus("pub") as pub, WatchedBus(
            "sub", endpoints=cluster.endpoints, connect_timeout=30
        ) as sub:
            pub.publish("n", 0)  # seq 1; value i is published as seq i + 1

            async def on_update(update: Update) -> None:
                if update.kind == "delta" and not any(k == "delta" for k, _, _ in seen):
                    await sub.paused.wait()  # the first delta blocks until reading stops
                seen.append((update.kind, update.seq, update.view))
                snapshot.set()
                if update.view == count:
                    done.set()

            sub.subscribe("pub", "n", on_update)
            await asyncio.wait_for(snapshot.wait(), 30)
            for i in range(1, count + 1):
                pub.publish("n", i)
                await asyncio.sleep(0)  # one loop turn: each publish leaves on its own
            await asyncio.wait_for(done.wait(), 30)
        # In order, each update's view the value of its own seq. (A snapshot
        # may stand in for any number of early deltas: the answer to the
        # subscriber's slow-joiner check, when the publisher had moved on.)
        assert all(view == seq - 1 for _, seq, view in seen), seen
        seqs = [seq for _, seq, _ in seen]
        assert seqs == sorted(set(seqs)), seqs
        assert seqs[-1] == count + 1
        assert any(kind == "delta" for kind, _, _ in seen)
        assert sub.holds[0] is True  # the first delta's callback held reading...
        assert sub.holds[-1] is False  # ...and every hold ended once caught up

    run(scenario())


def test_an_async_callback_can_await_a_request(procs: Processes, tmp_path: Path) -> None:
    """A reply never waits behind the callback that awaits it: no deadlock, no timeout."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()

    async def scenario() -> None:
        answers: list[object] = []
        done = asyncio.Event()
        async with cluster.bus("pub") as pub, cluster.bus("sub") as sub:
            pub.publish("n", 1)

            async def on_update(update: Update) -> None:
                answers.append(await sub.request("pub", "n", timeout=5))
                done.set()

            sub.subscribe("pub", "n", on_update)
            await asyncio.wait_for(done.wait(), 10)
        assert answers == [1]

    run(scenario())


def test_a_backlog_behind_a_stopped_cage_is_sent_in_order_once_it_runs_again(
    procs: Processes, tmp_path: Path
) -> None:
    """Past the DEALER's queue the node keeps what it sends, in order, and sends it all
    once the cage takes messages again: nothing dropped, nothing reordered."""
    # Expiry 60 s: far longer than the stop (a few seconds), which is checked.
    cluster = Cluster(procs, tmp_path, heartbeat=20.0)
    cage = cluster.start_cage()
    extra = 20_000  # messages held by the node itself, past the DEALER's queue
    pad = "x" * 200

    async def scenario() -> None:
        got: list[int] = []
        done = asyncio.Event()
        last: int | None = None

        def on_message(sender: str, dataindex: str, data: list[int | str]) -> None:
            got.append(int(data[0]))
            if data[0] == last:
                done.set()

        async with cluster.bus("recv") as recv, cluster.bus("send") as send:
            recv.on_message = on_message
            assert await send.request("recv", "pubdata") == {}  # both registered, routed
            cage.kill(signal.SIGSTOP)
            stopped = time.monotonic()
            count = 0
            try:
                # Until the DEALER's queue is full (and the kernel's socket
                # buffers), then as many again as `extra`.
                while not backlog(send) and count < FILL_LIMIT:
                    send.send("recv", "n", [count, pad])
                    count += 1
                    await asyncio.sleep(0)  # one loop turn: each message its own frame
                assert backlog(send), "the DEALER's queue never filled"
                for _ in range(extra):
                    send.send("recv", "n", [count, pad])
                    count += 1
                    await asyncio.sleep(0)
                assert len(backlog(send)) >= extra
            finally:
                cage.kill(signal.SIGCONT)
            stop = time.monotonic() - stopped
            assert stop < send.core.session.expiry, f"a stop of {stop:.1f} s outlasted the expiry"
            last = count - 1
            await asyncio.wait_for(done.wait(), 60)
            assert send.statistics().get("dropped_backlog", 0) == 0
        assert got == list(range(count))

    run(scenario(), timeout=120)


class DroppingBus(Bus):
    """A Bus that says when it drops its backlog."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.dropped = asyncio.Event()

    def _dropped(self, frames: int) -> None:
        super()._dropped(frames)
        if self.core.stats["dropped_backlog"]:
            self.dropped.set()


def test_a_backlog_the_cage_takes_nothing_of_for_an_expiry_is_dropped_and_the_node_carries_on(
    procs: Processes, tmp_path: Path
) -> None:
    """A cage stopped longer than the expiry while the node holds frames past its DEALER's
    queue: the node drops them (counted, logged) and carries on: once the cage runs
    again, its requests are answered."""
    cluster = Cluster(procs, tmp_path)  # heartbeat 0.2 s: expiry 0.6 s
    cage = cluster.start_cage()
    # Half the flood goes to the cage itself, which counts and drops it, half
    # to a node of its own (not on this loop, whose heartbeats it would
    # starve); the keys alternate, so each message is a frame of its own
    # without a loop turn each.
    keys = ("cage", "recv.all")
    node, _ = cluster.file_node("recv", {"t": [[1]]}, keys[1:])
    pad = "x" * 200  # fewer messages fill the kernel's socket buffers
    extra = 10_000  # messages held by the node itself, past the DEALER's queue

    async def scenario() -> None:
        async with DroppingBus("send", endpoints=cluster.endpoints, refresh=TEST_REFRESH,
                               connect_timeout=WAIT) as send:
            assert await send.request("recv", "t") == [[1]]  # both registered, routed
            cage.kill(signal.SIGSTOP)
            stopped = time.monotonic()
            sent = 0
            try:
                while len(backlog(send)) < extra and sent < FILL_LIMIT:
                    for _ in range(10_000):
                        send.send(keys[sent % 2], "n", [sent, pad])
                        sent += 1
                    # One loop turn: the flush fills the DEALER's queue, the node holds the rest.
                    await asyncio.sleep(0)
                assert len(backlog(send)) >= extra, "the DEALER's queue never filled"
                # The cage takes nothing for an expiry: the node drops what it holds.
                while send.core.stats["dropped_backlog"] < extra:
                    await asyncio.wait_for(send.dropped.wait(), WAIT)
                    send.dropped.clear()
                assert time.monotonic() - stopped >= send.core.session.expiry
            finally:
                cage.kill(signal.SIGCONT)
            assert send.statistics()["dropped_backlog"] < sent
            # Carries on. A bounded wait: the request waits behind what the
            # DEALER's queue held, so the first tries may time out.
            assert await answered(send, "recv", "t", (NoRouteError, RequestTimeout),
                                  2 * WAIT) == [[1]]
            assert send.registered
        assert node.popen.poll() is None

    with capture_logs() as logs:
        run(scenario())
    warned = [e for e in logs if e["event"] == "send.dropped"]
    assert warned, logs[-20:]
    assert {(e["log_level"], e["service"]) for e in warned} == {("warning", "send")}
    assert sum(e["frames"] for e in warned) >= extra


def test_a_handler_still_running_past_its_requesters_timeout_is_cancelled(
    procs: Processes, tmp_path: Path
) -> None:
    """Handlers that never finish are cancelled once their requester gave up; none stays."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    cancelled: list[int] = []
    all_cancelled = asyncio.Event()

    async def never(sender: str, dataindex: str, args: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(args)
            if len(cancelled) == 3:
                all_cancelled.set()
            raise

    async def scenario() -> None:
        async with cluster.bus("asker") as asker, cluster.bus("answerer") as answerer:
            answerer.on_request = never
            tasks = len(answerer._tasks)
            for i in range(3):
                with pytest.raises(RequestTimeout):
                    await asker.request("answerer", "forever", i, timeout=0.3)
            await asyncio.wait_for(all_cancelled.wait(), WAIT)
            assert sorted(cancelled) == [0, 1, 2]
            assert answerer.statistics()["requests_abandoned"] == 3
            assert len(answerer._tasks) == tasks

    run(scenario())


def test_a_handlers_own_timeout_error_is_answered_as_an_error(
    procs: Processes, tmp_path: Path
) -> None:
    """A TimeoutError raised by the handler itself, well before the deadline, is its answer."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()

    async def times_out(sender: str, dataindex: str, args: object) -> None:
        await asyncio.sleep(0)
        raise TimeoutError("the backend did not answer")

    async def scenario() -> None:
        async with cluster.bus("asker") as asker, cluster.bus("answerer") as answerer:
            answerer.on_request = times_out
            with pytest.raises(RemoteError, match="the backend did not answer"):
                await asker.request("answerer", "x", timeout=WAIT)
            assert answerer.statistics().get("requests_abandoned", 0) == 0

    run(scenario())
