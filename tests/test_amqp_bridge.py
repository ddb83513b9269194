"""The amqp bridge with real parts: a real RabbitMQ, oslo.messaging's Notifier, zdse processes.

Notifications are emitted by oslo.messaging's own Notifier (rabbit transport,
``messagingv2`` or the older ``messaging`` driver) exactly as Nova emits
them, from a process of its own (tests/oslo_notifier.py). Every wait is on an
event (a log line of a process, an update of a subscription) with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from zdse_nodes.amqp import AmqpBridge
from zdse_nodes.amqp_envelope import Reason

from tests.harness import Cluster, Proc, Updates, run
from tests.rabbitmq import RabbitMQ
from tests.support import ROOT, Processes
from zdse.errors import ConfigError
from zdse.node.bus import Bus, Update

EVENT = "compute.instance.update"
LATEST = f"{EVENT}@instance_id"



@pytest.fixture
def broker(rabbitmq: RabbitMQ) -> Iterator[RabbitMQ]:
    """The session's broker, running again at the end of the test whatever the test did to it."""
    try:
        yield rabbitmq
    finally:
        rabbitmq.start()


class Emitter:
    """An oslo.messaging Notifier in a process of its own, fed one notification per line."""

    def __init__(self, procs: Processes, url: str, driver: str = "messagingv2",
                 publisher: str = "compute.host1") -> None:
        rabbit_url = url.replace("amqp://", "rabbit://", 1)
        self.proc = procs.python(
            f"oslo-notifier {driver}", "tests.oslo_notifier", rabbit_url,
            "--driver", driver, "--exchange", "nova", "--publisher", publisher,
            env={"PYTHONWARNINGS": "ignore::DeprecationWarning"}, cwd=ROOT)
        self.sent = 0
        self.proc.wait_event("ready", timeout=60)

    def emit(self, payload: dict[str, Any], event_type: str = EVENT, priority: str = "info",
             context: dict[str, Any] | None = None) -> None:
        """Ask the Notifier for one notification (returns before it is sent)."""
        stdin = self.proc.popen.stdin
        assert stdin is not None
        command = {"event_type": event_type, "payload": payload, "priority": priority,
                   "context": context or {}}
        stdin.write((json.dumps(command) + "\n").encode())
        stdin.flush()
        self.sent += 1

    def wait_sent(self, timeout: float = 60) -> None:
        """Wait until oslo's Notifier returned for every notification asked so far."""
        self.proc.wait_event("emitted", timeout=timeout, count=self.sent)


def vhost_url(broker: RabbitMQ) -> str:
    """A fresh virtual host (one per OpenStack instance) and its AMQP URL."""
    return broker.add_vhost(f"openstack-{uuid.uuid4().hex[:8]}")


def start_bridge(cluster: Cluster, name: str, url: str, **options: Any) -> Proc:
    """Start ``zdse-node --module amqp`` and wait until it consumes from its queue."""
    settings = {"url": url, "exchanges": "nova", "reconnect_max": "1", **options}
    node = cluster.start_node("amqp", name, [f"{name}.#"], wait=False, **settings)
    node.wait_event("amqp.consuming", timeout=30)
    return node


def added_rows(update: Update, seen: set[str]) -> list[dict[str, Any]]:
    """The rows one delta of a window adds, oldest first, leaving out those in ``seen``.

    A delta adds the rows of every notification the bridge read in one
    turn: one or several.
    """
    assert update.kind == "delta", update
    op = update.data[0]
    rows = update.data[1]
    if op != "rows":
        assert op == "replace"
    return [row for row in rows if row_key(row) not in seen]


def row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


async def unpublished_events(bus: Bus) -> Updates:
    """Subscribe to openstack1's table of EVENT, which nobody published yet (no
    notification of that type came), and see it said so."""
    updates = Updates()
    bus.subscribe(f"openstack1.{EVENT}", EVENT, updates)
    assert (await updates.next()).kind == "unpublished"
    return updates


async def collect(updates: Updates, count: int) -> list[dict[str, Any]]:
    """Read updates until ``count`` rows came; return them, in order.

    Each delta must add at least one row. A snapshot in between (a feed
    resyncs whenever it finds it missed a delta: a bus may do so at any
    time) brings its rows past those the views held when the reading began.
    """
    # Views change in place: what they hold now includes the deltas still
    # queued, which come again below as updates (hence ``taken``).
    known = {row_key(row) for view in updates.read.values() for row in view or []}
    rows: list[dict[str, Any]] = []
    while len(rows) < count:
        update = await updates.next(timeout=30)
        if update.kind == "snapshot":
            taken = {row_key(row) for row in rows}
            rows = [row for row in update.data or []
                    if row_key(row) not in known or row_key(row) in taken]
            continue
        added = added_rows(update, known | {row_key(row) for row in rows})
        assert added, f"a delta added no row: {update}"
        rows.extend(added)
    return rows


# --- the shell alone: acknowledgement order ----------------------------------


class FakeBus:
    """Records what the bridge publishes, in order, with the acks of FakeDelivery."""

    def __init__(self, log: list[str], fail_on: str = "") -> None:
        self.log = log
        self.fail_on = fail_on

    def publish(self, dataindex: str, data: Any) -> None:
        self._record("publish", dataindex)

    def change_rows(self, dataindex: str, add: Any = (), remove: Any = ()) -> None:
        self._record("change", dataindex)

    def change_keys(self, dataindex: str, put: Any = None, delete: Any = ()) -> None:
        self._record("change", dataindex)

    def _record(self, what: str, dataindex: str) -> None:
        if dataindex == self.fail_on:
            raise ValueError("cannot publish")
        self.log.append(f"{what} {dataindex}")


class FakeDelivery:
    """An AMQP delivery whose ack lands in the same log as the publications."""

    def __init__(self, body: bytes, log: list[str]) -> None:
        self.body = body
        self.exchange: str | None = "nova"
        self.routing_key: str | None = "notifications.info"
        self.log = log

    async def ack(self, multiple: bool = False) -> None:
        self.log.append("ack all" if multiple else "ack")


def oslo_body(n: int) -> bytes:
    """A messagingv2 body, as oslo writes it."""
    message = {"message_id": f"m{n}", "event_type": EVENT, "priority": "INFO",
               "publisher_id": "compute.host1", "timestamp": "t", "payload": {"n": n}}
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


def bridge_with(log: list[str], fail_on: str = "") -> AmqpBridge:
    bridge = AmqpBridge("os1", {"url": "amqp://u:p@127.0.0.1:1/v"})
    bridge._bus = FakeBus(log, fail_on)  # type: ignore[assignment]  # publish and changes only
    return bridge


def test_a_delivery_is_acknowledged_only_after_its_notification_is_published() -> None:
    """Change the window, the event types and the counters; then, and only then, ack."""
    log: list[str] = []
    asyncio.run(bridge_with(log).deliver(FakeDelivery(oslo_body(1), log)))
    assert log == [f"change {EVENT}", "change @event_types", "change @stats", "ack"]


def test_a_redelivery_is_acknowledged_without_a_new_row() -> None:
    """The same message twice: one row, two acks."""
    log: list[str] = []
    bridge = bridge_with(log)
    asyncio.run(bridge.deliver(FakeDelivery(oslo_body(1), log)))
    log.clear()
    asyncio.run(bridge.deliver(FakeDelivery(oslo_body(1), log)))
    assert log == ["change @stats", "ack"]
    assert bridge.counters["duplicates"] == 1


def test_malformed_and_unpublishable_deliveries_are_counted_and_acknowledged() -> None:
    """Neither a bad body nor a failing publication blocks the queue."""
    log: list[str] = []
    bridge = bridge_with(log, fail_on=EVENT)
    asyncio.run(bridge.deliver(FakeDelivery(b"garbage", log)))
    asyncio.run(bridge.deliver(FakeDelivery(oslo_body(2), log)))
    # The window refused its change; the other tables still take theirs.
    assert log == ["change @stats", "ack", "change @event_types", "change @stats", "ack"]
    assert bridge.counters["malformed"] == 1
    assert bridge.counters[f"malformed.{Reason.NOT_JSON}"] == 1
    assert bridge.counters["publish_errors"] == 1


def test_deliveries_read_together_make_one_change_per_table_and_one_ack() -> None:
    """Four deliveries (one malformed) in a batch: each table changed once, then one ack for all."""
    log: list[str] = []
    bridge = bridge_with(log)
    bodies = [oslo_body(1), b"garbage", oslo_body(2), oslo_body(3)]
    asyncio.run(bridge.deliver_all([FakeDelivery(body, log) for body in bodies]))
    assert log == [f"change {EVENT}", "change @event_types", "change @stats", "ack all"]
    assert bridge.counters["received"] == 4
    assert bridge.counters["notifications"] == 3
    assert bridge.counters["malformed"] == 1


def test_one_unpublishable_notification_in_a_batch_loses_only_itself() -> None:
    """A merged change the bus refuses is sent again change by change; only the bad one fails."""
    published: list[tuple[str, list[Any]]] = []

    class PickyBus(FakeBus):
        def change_rows(self, dataindex: str, add: Any = (), remove: Any = ()) -> None:
            if any(row["payload"].get("bad") for row in add):
                raise ValueError("cannot publish")
            published.append((dataindex, list(add)))

    bad = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(
        {"message_id": "mbad", "event_type": EVENT, "priority": "INFO", "publisher_id": "c",
         "timestamp": "t", "payload": {"bad": True}})}).encode()
    log: list[str] = []
    bridge = AmqpBridge("os1", {"url": "amqp://u:p@127.0.0.1:1/v"})
    bridge._bus = PickyBus(log)  # type: ignore[assignment]  # publish and changes only
    asyncio.run(bridge.deliver_all([FakeDelivery(body, log)
                                    for body in (oslo_body(1), bad, oslo_body(2))]))
    assert [len(add) for _, add in published] == [1, 1]
    assert bridge.counters["publish_errors"] == 1
    assert log[-1] == "ack all"


def test_url_file_keeps_the_url_off_the_command_line(tmp_path: Path) -> None:
    """The URL may come from a file; giving both, or an unreadable file, is refused."""
    path = tmp_path / "url"
    path.write_text("amqp://u:p@127.0.0.1:5672/v\n")
    bridge = AmqpBridge("os1", {"url_file": str(path)})
    assert bridge.config.urls == ("amqp://u:p@127.0.0.1:5672/v",)
    with pytest.raises(ConfigError, match="not both"):
        AmqpBridge("os1", {"url_file": str(path), "url": "amqp://h/"})
    with pytest.raises(ConfigError, match="url_file="):
        AmqpBridge("os1", {"url_file": str(tmp_path / "missing")})


# --- real parts --------------------------------------------------------------


@pytest.mark.rabbitmq
def test_two_openstacks_each_subscriber_sees_only_its_own_in_order(
    cluster: Cluster, broker: RabbitMQ, procs: Processes
) -> None:
    """Two bridges, two vhosts: each key gets its instance's notifications, in order, all."""
    url1, url2 = vhost_url(broker), vhost_url(broker)
    start_bridge(cluster, "openstack1", url1, window="20",
                 **{f"key.{EVENT}": "instance_id"})
    start_bridge(cluster, "openstack2", url2, window="20")
    nova1 = Emitter(procs, url1, driver="messagingv2", publisher="compute.os1-host")
    nova2 = Emitter(procs, url2, driver="messaging", publisher="compute.os2-host")
    total = 30

    async def scenario() -> None:
        async with cluster.bus() as bus:
            one, two, latest = Updates(), Updates(), Updates()
            bus.subscribe(f"openstack1.{EVENT}", EVENT, one)
            bus.subscribe(f"openstack2.{EVENT}", EVENT, two)
            bus.subscribe(f"openstack1.{EVENT}", LATEST, latest)
            # openstack1 publishes its configured types' tables empty at start;
            # openstack2 has none configured: nothing published yet.
            for updates, name, kind, empty in (
                    (one, "openstack1", "snapshot", []), (two, "openstack2", "unpublished", None),
                    (latest, "openstack1", "snapshot", {})):
                first = await updates.next()
                assert (first.kind, first.publisher, first.view) == (kind, name, empty)
            for n in range(total):
                context = {"request_id": f"req-{n}", "user_id": "u1", "project_id": "p1",
                           "auth_token": "SECRET-TOKEN"}
                nova1.emit({"instance_id": f"i-{n % 3}", "n": n, "cloud": 1}, context=context)
                nova2.emit({"instance_id": f"i-{n % 3}", "n": n, "cloud": 2})
            rows1 = await collect(one, total)
            rows2 = await collect(two, total)
            # All of them, in order, from the right instance only (messagingv2 and v1).
            assert [r["payload"]["n"] for r in rows1] == list(range(total))
            assert [r["payload"]["n"] for r in rows2] == list(range(total))
            assert {r["payload"]["cloud"] for r in rows1} == {1}
            assert {r["payload"]["cloud"] for r in rows2} == {2}
            assert {r["publisher_id"] for r in rows1} == {"compute.os1-host"}
            assert {r["publisher_id"] for r in rows2} == {"compute.os2-host"}
            assert len({r["message_id"] for r in rows1}) == total
            assert rows1[7]["priority"] == "INFO"
            assert rows1[7]["context"]["request_id"] == "req-7"
            assert "SECRET-TOKEN" not in json.dumps(rows1)
            # The window is bounded: the newest 20, oldest first.
            assert [r["payload"]["n"] for r in one.views["openstack1"]] == list(range(10, 30))
            # The latest-state table: the newest notification per instance.
            await latest.until(lambda u: {k: v["payload"]["n"] for k, v in u.view.items()}
                               == {"i-0": 27, "i-1": 28, "i-2": 29})
            stats = await bus.request("openstack1", "@stats")
            assert (stats["notifications"], stats["malformed"], stats["connected"]) == (
                total, 0, True)
            assert "guest:guest" not in json.dumps(stats)
            kinds = await bus.request("openstack2", "@event_types")
            assert kinds[EVENT]["count"] == total

    run(scenario())
    nova1.wait_sent()
    nova2.wait_sent()
    # From the shell, the same names read naturally.
    done = cluster.ctl("sub", f"openstack1.{EVENT}", EVENT, "--count", "1", "--json")
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout.splitlines()[0])
    assert (snapshot["publisher"], snapshot["kind"]) == ("openstack1", "snapshot")
    assert [r["payload"]["n"] for r in snapshot["data"]] == list(range(10, 30))


@pytest.mark.rabbitmq
def test_a_latest_state_table_of_3000_instances_holds_them_all(
    cluster: Cluster, broker: RabbitMQ, procs: Processes
) -> None:
    """3,000 distinct instances through oslo's Notifier: the latest-state view holds every one.

    Each notification reaches the bus as the one key it changes (issue 19:
    the bridge used to re-publish the whole table, and the view held them
    all 34 s after the last send). Waited on the view, with a deadline.
    """
    url = vhost_url(broker)
    start_bridge(cluster, "openstack1", url, prefetch="256",
                 **{f"key.{EVENT}": "instance_id"})
    nova = Emitter(procs, url)
    total = 3000

    async def scenario() -> None:
        async with cluster.bus() as bus:
            latest = Updates()
            bus.subscribe(f"openstack1.{EVENT}", LATEST, latest)
            assert (await latest.next()).view == {}
            for n in range(total):
                nova.emit({"instance_id": f"i-{n}", "state": "active", "n": n})
            await asyncio.to_thread(nova.wait_sent, 120)
            done = await latest.until(lambda u: len(u.view or {}) == total, timeout=60)
            assert {k: v["payload"]["n"] for k, v in done.view.items()} == {
                f"i-{n}": n for n in range(total)}
            # The stored table answers requests: the same 3,000.
            assert len(await bus.request("openstack1", LATEST)) == total

    run(scenario(), timeout=240)


@pytest.mark.rabbitmq
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_restart_mid_stream_the_bridge_reconnects_and_later_notifications_arrive(
    cluster: Cluster, broker: RabbitMQ, procs: Processes, how: str
) -> None:
    """After a broker restart (clean or crash) the bridge reconnects and consumes by itself."""
    url = vhost_url(broker)
    bridge = start_bridge(cluster, "openstack1", url, window="50")
    nova = Emitter(procs, url)

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = await unpublished_events(bus)
            for n in range(5):
                nova.emit({"n": n})
            before = await collect(updates, 5)
            assert [r["payload"]["n"] for r in before] == list(range(5))
            await asyncio.to_thread(broker.stop if how == "stop" else broker.kill)
            await asyncio.to_thread(bridge.wait_event, "amqp.disconnected")
            await asyncio.to_thread(broker.start)
            await asyncio.to_thread(bridge.wait_event, "amqp.consuming", 60, connects=2)
            for n in range(5, 10):
                nova.emit({"n": n})
            after = await collect(updates, 5)
            assert [r["payload"]["n"] for r in after] == list(range(5, 10))
            stats = await bus.request("openstack1", "@stats")
            assert (stats["connects"], stats["connected"]) == (2, True)

    run(scenario(), timeout=150)
    assert bridge.popen.poll() is None


@pytest.mark.rabbitmq
def test_notifications_sent_while_the_bridge_is_down_arrive_when_it_is_back(
    cluster: Cluster, broker: RabbitMQ, procs: Processes
) -> None:
    """The bridge's queue outlives a kill -9 of the bridge; its successor consumes the backlog."""
    url = vhost_url(broker)
    bridge = start_bridge(cluster, "openstack1", url)
    nova = Emitter(procs, url)

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = await unpublished_events(bus)
            nova.emit({"n": 0})
            await collect(updates, 1)
            bridge.kill(signal.SIGKILL)
            await updates.until(lambda u: u.kind == "lost")
            for n in range(1, 6):
                nova.emit({"n": n})
            await asyncio.to_thread(nova.wait_sent)
            await asyncio.to_thread(start_bridge, cluster, "openstack1", url)
            # At least once: if the kill beat the ack of n=0 (the delta can
            # reach us before the ack reaches the broker), the broker delivers
            # it again to the successor, ahead of the backlog.
            wanted = ([1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
            try:
                await updates.until(
                    lambda u: u.kind in ("snapshot", "delta")
                    and [r["payload"]["n"] for r in u.view or []] in wanted
                )
            except TimeoutError:
                raise AssertionError(f"views: {updates.views}") from None

    run(scenario())


@pytest.mark.rabbitmq
def test_malformed_messages_are_counted_logged_acknowledged_and_survived(
    cluster: Cluster, broker: RabbitMQ, procs: Processes
) -> None:
    """Garbage on the exchange is counted by reason and logged; valid notifications still flow."""
    url = vhost_url(broker)
    bridge = start_bridge(cluster, "openstack1", url)
    nova = Emitter(procs, url)
    bad = [
        b"this is not json",
        json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps({"payload": {}})}).encode(),
        json.dumps({"oslo.version": "9.9", "oslo.message": "{}"}).encode(),
        json.dumps({"payload": {}, "_context_auth_token": "SECRET-TOKEN"}).encode(),
        b"[1, 2, 3]",
    ]

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = await unpublished_events(bus)
            await asyncio.to_thread(publish_raw, url, bad)
            nova.emit({"n": "valid"})
            rows = await collect(updates, 1)
            assert rows[0]["payload"] == {"n": "valid"}
            stats = await bus.request("openstack1", "@stats")
            assert stats["malformed"] == len(bad)
            assert stats["received"] == len(bad) + 1
            assert stats["notifications"] == 1
            assert stats[f"malformed.{Reason.NOT_JSON}"] == 1
            assert stats[f"malformed.{Reason.NO_EVENT_TYPE}"] == 2
            assert stats[f"malformed.{Reason.UNKNOWN_ENVELOPE}"] == 1
            assert stats[f"malformed.{Reason.NOT_AN_OBJECT}"] == 1

    run(scenario())
    bridge.wait_event("amqp.malformed", reason="unknown_envelope")
    assert bridge.popen.poll() is None
    assert not any("SECRET-TOKEN" in line for line in bridge.lines)
    # Acknowledged: nothing is left in the bridge's queue.
    assert queue_depth(broker, url, "zdse.openstack1") == 0


@pytest.mark.rabbitmq
def test_credentials_never_reach_the_logs(
    cluster: Cluster, broker: RabbitMQ, procs: Processes
) -> None:
    """A refused login and a good one both log the broker without its password."""
    url = vhost_url(broker)
    vhost = url.rsplit("/", 1)[1]
    password = f"pw-{uuid.uuid4().hex}"
    broker.ctl("add_user", "zdse-bridge", password)
    try:
        # The permissions docs/amqp.md recommends: configure and write on its
        # own queue, read on the exchanges, which Nova has already declared.
        broker.ctl("set_permissions", "-p", vhost, "zdse-bridge",
                   r"^zdse\..*", r"^zdse\..*", r"^(zdse\..*|nova)$")
        declare_nova_exchange(url)
        good = url.replace("guest:guest", f"zdse-bridge:{password}")
        wrong = url.replace("guest:guest", f"zdse-bridge:{password}x")
        refused = cluster.start_node("amqp", "refused", ["refused.#"], wait=False,
                                     url=wrong, reconnect_max="1")
        event = refused.wait_event("amqp.disconnected", timeout=30)
        assert "zdse-bridge:***@" in event["broker"]
        accepted = start_bridge(cluster, "accepted", good)
        refused.kill(signal.SIGTERM)
        accepted.kill(signal.SIGTERM)
        for node in (refused, accepted):
            node.wait_event("exited")
            assert node.lines, "the node logged nothing"
            assert not any(password in line for line in node.lines), node.log()
    finally:
        broker.ctl("delete_user", "zdse-bridge")


def declare_nova_exchange(url: str) -> None:
    """Declare the nova exchange as oslo does by default (topic, not durable)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().exchange_declare("nova", "topic", durable=False)
    finally:
        connection.close()


def publish_raw(url: str, bodies: list[bytes]) -> None:
    """Put raw bodies on the nova exchange as a notifier would (routing key notifications.info)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("nova", "notifications.info", body,
                                  pika.BasicProperties(content_type="application/json"))
    finally:
        connection.close()


def queue_depth(broker: RabbitMQ, url: str, queue: str) -> int:
    """Messages ready or unacknowledged in ``queue``."""
    vhost = url.rsplit("/", 1)[1]
    out = broker.ctl("list_queues", "-p", vhost, "name", "messages")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    raise AssertionError(f"no queue {queue!r} in vhost {vhost}:\n{out}")
