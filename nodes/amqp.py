"""Module ``amqp``: an OpenStack instance's notification bus, bridged onto zdse.

One bridge per OpenStack instance, under that instance's prefix::

    zdse-node --module amqp --name openstack1 --address 'openstack1.#' \\
        --set url=amqp://USER:PASS@HOST:5672/VHOST --set exchanges=nova,neutron,cinder

The bridge consumes from a queue of its own (``zdse.<name>``), bound to each
exchange with ``notifications.*``, so it competes with no other consumer of
oslo's shared ``notifications.info`` queue. Each notification updates the
tables of :mod:`zdse_nodes.amqp_tables`, and exactly that change goes on
the bus (the incremental API: no table is published whole, so a
notification costs the same whatever the tables hold); a subscription to
``openstack1.compute.instance.update`` with dataindex
``compute.instance.update`` gets the recent window, then one delta per
batch of notifications (those the broker delivered together). docs/amqp.md has the whole story.

Delivery is at least once: a message is acknowledged only after its
notification was published (or after it was counted as malformed); a
broken connection is retried with backoff, forever, and unacknowledged
messages come again on the next connection (the window drops repeats).

This is the I/O shell: parsing and tables are pure
(:mod:`~zdse_nodes.amqp_envelope`, :mod:`~zdse_nodes.amqp_tables`,
:mod:`~zdse_nodes.amqp_config`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from zdse.backoff import backoff
from zdse.errors import ConfigError
from zdse.log import sampled
from zdse.node.service import Service
from zdse.tasks import cancel_and_wait

from .amqp_batch import Batch
from .amqp_config import AmqpConfig, from_options, redact, scrub
from .amqp_envelope import Malformed, Reason, parse
from .amqp_tables import STATS, Change, RowChange, Tables

try:
    import aio_pika
    import aio_pika.abc
    import aiormq.exceptions
except ImportError as exc:  # the optional extra is not installed
    raise ConfigError("module amqp needs its extra: pip install 'zdse[amqp]'") from exc

__all__ = ["AmqpBridge"]

#: Seconds to wait for the TCP connection and the AMQP handshake.
CONNECT_TIMEOUT = 10.0

#: The AMQP library's own loggers. What they report at warning and above
#: (a reset connection, a refused login) the bridge reports itself, with the
#: password scrubbed; theirs become debug events, as JSON like the rest.
LIBRARY_LOGGERS = ("aiormq", "aio_pika")


class Delivery(Protocol):
    """What the bridge needs of an AMQP delivery (aio-pika's IncomingMessage has it)."""

    body: bytes
    exchange: str | None
    routing_key: str | None

    async def ack(self, multiple: bool = False) -> None:
        """Acknowledge the delivery."""


def _with_url_file(options: Mapping[str, str]) -> dict[str, str]:
    """Read ``url_file`` (a file holding the URL) into ``url``.

    A URL given on the command line is visible to every local user in the
    process list; a file readable by the bridge alone is not.

    Raises:
        ConfigError: both are given, or the file cannot be read.
    """
    opts = dict(options)
    path = opts.pop("url_file", None)
    if path is None:
        return opts
    if "url" in opts:
        raise ConfigError("give --set url or --set url_file, not both")
    try:
        with open(path, encoding="utf-8") as f:
            opts["url"] = f.readline().strip()
    except OSError as exc:
        raise ConfigError(f"--set url_file={path!r}: {exc.strerror}") from None
    return opts


class _LibraryLog(logging.Handler):
    """Turns the AMQP library's log records into the bridge's debug events."""

    def __init__(self, bridge: AmqpBridge) -> None:
        super().__init__(logging.WARNING)
        self.bridge = bridge

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({self.bridge._describe(record.exc_info[1])})"
            self.bridge.log.debug("amqp.library", logger=record.name, level_was=record.levelname,
                                  message=scrub(text, self.bridge.config.secrets))
        except Exception:  # a log handler must never raise into the library
            self.handleError(record)


class _Closed:
    """Put on the delivery queue when the channel or connection closes."""

    def __init__(self, why: BaseException | None) -> None:
        self.why = why


class AmqpBridge(Service):
    """Bridge one OpenStack instance's notifications onto the bus (options: docs/amqp.md)."""

    #: Without --address, every event type of the instance is under its prefix.
    default_addresses = ("{name}.#",)

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        super().__init__(name, options)
        self.config: AmqpConfig = from_options(name, _with_url_file(options))
        self.tables = Tables(self.config.tables)
        self.counters: dict[str, Any] = {
            "received": 0,
            "notifications": 0,
            "batches": 0,
            "malformed": 0,
            **{f"malformed.{reason}": 0 for reason in Reason},
            "duplicates": 0,
            "unkeyed": 0,
            "refused_event_types": 0,
            "publish_errors": 0,
            "connects": 0,
            "connected": False,
            "broker": "",
            "queue": self.config.queue,
        }
        self._consumer: asyncio.Task[None] | None = None
        self._library_log = _LibraryLog(self)

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Publish the empty tables, then consume in the background (reconnecting as needed)."""
        await super().start()
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            logger.propagate = False
            logger.addHandler(self._library_log)
        for dataindex, data in self.tables.initial():
            self.publish(dataindex, data)
        self._publish_counters()
        if self._consumer is None:
            self._consumer = asyncio.create_task(self._consume_forever(),
                                                 name=f"amqp {self.name}")

    async def stop(self) -> None:
        """Stop consuming; unacknowledged messages go back to the queue."""
        await super().stop()
        consumer, self._consumer = self._consumer, None
        await cancel_and_wait(consumer)
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).removeHandler(self._library_log)

    # --- the connection loop -----------------------------------------------

    async def _consume_forever(self) -> None:
        """Connect, consume until the connection breaks, wait, and again; until cancelled."""
        failures = 0
        turn = 0
        while True:
            url = self.config.urls[turn % len(self.config.urls)]
            turn += 1
            try:
                await self._consume(url)
                why = "the broker closed the connection"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the broker or the network: retry
                why = self._describe(exc)
            # A connection that got as far as consuming starts the backoff over.
            consumed = bool(self.counters["connected"])
            if consumed:
                self.counters["connected"] = False
                self._publish_counters()
            failures = 1 if consumed else failures + 1
            delay = backoff(failures, self.config.reconnect_min, self.config.reconnect_max)
            self.log.warning("amqp.disconnected", broker=redact(url), error=why,
                             retry_in=delay, failures=failures)
            await asyncio.sleep(delay)

    async def _consume(self, url: str) -> None:
        """Consume over one connection until it closes.

        Raises:
            Exception: whatever the AMQP library raises when the broker refuses
                or the connection breaks.
        """
        connection = await aio_pika.connect(
            url,
            timeout=CONNECT_TIMEOUT,
            heartbeat=self.config.heartbeat,
            client_properties={"connection_name": f"zdse {self.name}"},
        )
        async with connection:
            channel = await self._channel(connection)
            channel = await self._declare_exchanges(connection, channel)
            queue = await channel.declare_queue(
                self.config.queue,
                durable=self.config.durable,
                arguments={"x-expires": int(self.config.queue_expires * 1000)},
            )
            for exchange, routing_key in self.config.bindings:
                await queue.bind(exchange, routing_key=routing_key)
            deliveries: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage | _Closed] = (
                asyncio.Queue()
            )

            def closed(_sender: Any, why: BaseException | None = None) -> None:
                deliveries.put_nowait(_Closed(why))

            connection.close_callbacks.add(closed)
            channel.close_callbacks.add(closed)

            async def deliver(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                deliveries.put_nowait(message)

            await queue.consume(deliver)
            self.counters["connects"] += 1
            self.counters["connected"] = True
            self.counters["broker"] = redact(url)
            self._publish_counters()
            self.log.info("amqp.consuming", broker=redact(url), queue=self.config.queue,
                          bindings=[f"{e}:{k}" for e, k in self.config.bindings],
                          connects=self.counters["connects"])
            while True:
                # Whatever else the broker delivered meanwhile goes in the same
                # turn: one change per table and one ack for all of them.
                items = [await deliveries.get()]
                # One turn of the loop for the AMQP reader: under load it
                # hands over the deliveries it has already read meanwhile.
                await asyncio.sleep(0)
                while len(items) < self.config.prefetch and not deliveries.empty():
                    items.append(deliveries.get_nowait())
                end = next((i for i, item in enumerate(items) if isinstance(item, _Closed)),
                           len(items))
                messages = [item for item in items[:end]
                            if not isinstance(item, _Closed)]  # for the type checker
                if messages:
                    await self.deliver_all(messages)
                if end < len(items):
                    why = items[end]
                    assert isinstance(why, _Closed)
                    if why.why is not None and not isinstance(why.why, asyncio.CancelledError):
                        raise why.why
                    return

    async def _channel(
        self, connection: aio_pika.abc.AbstractConnection
    ) -> aio_pika.abc.AbstractChannel:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.config.prefetch)
        return channel

    async def _declare_exchanges(
        self, connection: aio_pika.abc.AbstractConnection, channel: aio_pika.abc.AbstractChannel
    ) -> aio_pika.abc.AbstractChannel:
        """Make sure each exchange exists, creating the missing ones as oslo would.

        A passive declare first: an exchange that exists is used whatever its
        flags. A missing one (the service has sent nothing yet) is created as
        a topic exchange with oslo's flags, so the service's own declare agrees.
        """
        for exchange in self.config.exchanges:
            try:
                await channel.declare_exchange(exchange, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                # The failed passive declare closed the channel: take a new one.
                channel = await self._channel(connection)
                await channel.declare_exchange(
                    exchange, aio_pika.ExchangeType.TOPIC,
                    durable=self.config.durable, auto_delete=False,
                )
                self.log.info("amqp.exchange_created", exchange=exchange,
                              durable=self.config.durable)
        return channel

    # --- one delivery -------------------------------------------------------

    async def deliver(self, message: Delivery) -> None:
        """Publish one delivery's notification, then acknowledge it (:meth:`deliver_all`)."""
        await self.deliver_all([message])

    async def deliver_all(self, messages: Sequence[Delivery]) -> None:
        """Publish the notifications of ``messages``, then acknowledge them all at once.

        Each table gets one change for the whole batch (:class:`Batch`), and
        the last message is acknowledged with ``multiple``, which covers the
        others (deliveries on one channel are acknowledged in order). A
        malformed body is counted, logged (without its content: it may hold
        tokens) and acknowledged, so it never blocks the queue. The
        acknowledgement comes after the publication: if the bridge dies in
        between, the broker delivers the messages again.
        """
        batch = Batch()
        tables = self.tables
        self.counters["batches"] += 1
        for message in messages:
            self.counters["received"] += 1
            body = message.body
            try:
                note = parse(body, message.routing_key or "", self.config.max_body)
            except Malformed as exc:
                self._malformed(message, exc)
                continue
            batch.take(tables.take(note, len(body)))
            self.counters["notifications"] += 1
        self._publish_batch(batch)
        self.counters["duplicates"] = tables.duplicates
        self.counters["unkeyed"] = tables.unkeyed
        self.counters["refused_event_types"] = tables.refused
        self._publish_counters()
        await messages[-1].ack(multiple=len(messages) > 1)

    def _publish_batch(self, batch: Batch) -> None:
        """Send each table's merged change; one refused is sent change by change."""
        for merged in batch.merged():
            try:
                self._publish_change(merged.change)
            except Exception:
                # A value the bus cannot carry (or a bug): the changes one by
                # one, so only the notification that holds it is lost.
                for change in merged.parts:
                    try:
                        self._publish_change(change)
                    except Exception:
                        self.counters["publish_errors"] += 1
                        if sampled(self.counters["publish_errors"]):
                            self.log.exception("amqp.publish_failed",
                                               dataindex=change.dataindex,
                                               count=self.counters["publish_errors"])

    def _publish_change(self, change: Change) -> None:
        # What the notifications changed, as exactly that: no table is
        # published whole, so its cost does not grow with the tables.
        if isinstance(change, RowChange):
            self.change_rows(change.dataindex, change.add, change.remove)
        else:
            self.change_keys(change.dataindex, change.put, change.delete)

    def _malformed(self, message: Delivery, exc: Malformed) -> None:
        self.counters["malformed"] += 1
        key = f"malformed.{exc.reason}"
        self.counters[key] += 1
        count = self.counters[key]
        if sampled(count):  # the 1st, 2nd, 4th, ... of each reason: seen, never a flood
            self.log.warning("amqp.malformed", reason=str(exc.reason), detail=exc.detail,
                             exchange=message.exchange, routing_key=message.routing_key,
                             bytes=len(message.body), count=count)

    def _publish_counters(self) -> None:
        # Only the counters that moved are sent (and compared: a score of them).
        self.change_keys(STATS, self.counters)

    def _describe(self, exc: BaseException) -> str:
        """An error for the log: type and text, with every password masked."""
        text = str(exc) or repr(exc)
        return scrub(f"{type(exc).__name__}: {text}", self.config.secrets)
