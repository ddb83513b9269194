"""A Bus's callbacks over a real cage: async ones in order, a slow one pauses reading."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.harness import Cluster, run
from tests.support import Processes
from zdse import bus as bus_module
from zdse.bus import Bus, Update


class WatchedBus(Bus):
    """A Bus that says when it stops and starts reading."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.holds: list[bool] = []
        self.paused = asyncio.Event()

    def _hold(self, waiting: int) -> None:
        self.holds.append(waiting > 0)
        if waiting:
            self.paused.set()
        super()._hold(waiting)


def test_a_slow_async_callback_pauses_reading_and_loses_nothing(
    procs: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deltas behind a slow async callback wait in order; past the limit the node stops
    reading, and once the callback is done it reads on: every delta, in order."""
    monkeypatch.setattr(bus_module, "BEHIND_LIMIT", 5)
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
    cluster = Cluster(procs, tmp_path, heartbeat=5.0)  # expiry 15 s: longer than the stop
    cage = cluster.start_cage()
    # Past the DEALER's 100,000-message queue and the kernel's socket buffers.
    count = 200_000
    pad = "x" * 200

    async def scenario() -> None:
        got: list[int] = []
        done = asyncio.Event()

        def on_message(sender: str, dataindex: str, data: list[int | str]) -> None:
            got.append(int(data[0]))
            if data[0] == count - 1:
                done.set()

        async with cluster.bus("recv") as recv, cluster.bus("send") as send:
            recv.on_message = on_message
            assert await send.request("recv", "pubdata") == {}  # both registered, routed
            cage.kill(signal.SIGSTOP)
            try:
                for i in range(count):
                    send.send("recv", "n", [i, pad])
                    await asyncio.sleep(0)  # one loop turn: each message its own frame
                assert send._backlog, "the DEALER's queue never filled"
            finally:
                cage.kill(signal.SIGCONT)
            await asyncio.wait_for(done.wait(), 60)
            assert send.statistics().get("dropped_backlog", 0) == 0
        assert got == list(range(count))

    run(scenario(), timeout=120)
