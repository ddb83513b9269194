"""The cage as a publisher: its ``services`` and ``routes`` as tables. Pure.

In Congress's DSE the cage (d6cage) was itself a service that others could
subscribe to. Here a subscription to key ``cage`` is answered by this
object: the same snapshot, Current and delta messages a node's
:class:`~zdse.node.publications.Publications` sends, from the publisher named
``cage``, with the cage's epoch (a restarted cage starts a new epoch, so
every subscriber gets a snapshot, as after any publisher's restart).

The tables are the rows ``zdse-ctl services --json`` and ``zdse-ctl
routes --json`` print, without the fields that change with the clock alone
or the traffic (:data:`VOLATILE`): a delta per heartbeat would say nothing new.

Nothing here runs per routed message. The core marks the tables stale when
a registration (or the supervisor's rows) changes (:attr:`CageTables.stale`)
and calls :meth:`CageTables.refresh` at the end of an input when they are,
and at every tick. Rows are computed only while someone subscribes. The
messages to send are appended to the effects of the core's input being
handled; nothing here reaches the shell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zdse.cage.effects import Effects
from zdse.errors import MessageTooLarge, ProtocolError
from zdse.node.effects import Send
from zdse.node.publications import Publications
from zdse.wire import codec
from zdse.wire.codec import CAGE, Kind
from zdse.wire.limits import MAX_CAGE_SUBSCRIPTIONS, MAX_SID_BYTES

__all__ = ["TABLES", "VOLATILE", "CageTables"]

#: The dataindexes the cage publishes.
TABLES = ("services", "routes")
#: Fields of a services row that change with the clock or the traffic
#: alone: left out of the published rows (``zdse-ctl services`` still shows
#: them), so the table changes when a node joins, leaves or readdresses.
VOLATILE = frozenset({"uptime", "last_seen", "retry_in", "unread_bytes"})

_CAGE_BYTES = CAGE.encode()
_DELTA_HEADER = codec.header(Kind.DELTA)
_ERROR_HEADER = codec.header(Kind.ERROR)

#: ``rows(dataindex, now)``: the current rows of one of :data:`TABLES`.
RowSource = Callable[[str, float], Any]


class CageTables:
    """The publications of the cage.

    Args:
        epoch: the cage's epoch (its publications' epoch).
        rows: computes the current rows of a table (the core's answer to the
            control request of the same name, with the supervisor's rows
            merged in when it runs).
    """

    def __init__(self, epoch: str, rows: RowSource) -> None:
        self.publications = Publications(CAGE, epoch)
        self._rows = rows
        #: True when a registration changed since the last refresh() (the
        #: core sets it; the shell checks it once per loop iteration).
        self.stale = True
        #: True while the published tables may lag the registrations: they
        #: were not computed since, nobody subscribing.
        self._outdated = True

    def subscribed(self) -> bool:
        """Whether any service subscribes to a table of the cage."""
        return any(p["subscribers"] for p in self.publications.pubdata().values())

    def refresh(self, now: float, out: Effects) -> None:
        """Publish the tables anew if stale and anyone subscribes.

        A table that changed sends its subscribers one delta (into ``out``);
        nothing is computed while nobody subscribes (the next subscription
        computes it).
        """
        if not self.stale:
            return
        self.stale = False
        if self.subscribed():
            self._publish(now, out)
        else:
            self._outdated = True  # computed at the next subscription

    def receive(
        self, identity: bytes, name: str, kind: Kind, body: bytes, now: float, out: Effects
    ) -> None:
        """Take a Subscribe or Unsubscribe that node ``name`` sent to the cage;
        what to answer goes into ``out``.

        Raises:
            ProtocolError: the body is not one.
        """
        messages = codec.decode_body(kind, body)
        for msg in messages:
            if isinstance(msg, codec.Unsubscribe):
                self.publications.on_unsubscribe(name, msg)
            elif isinstance(msg, codec.Subscribe):
                self._subscribe(identity, name, msg, now, out)

    def _subscribe(
        self, identity: bytes, name: str, sub: codec.Subscribe, now: float, out: Effects
    ) -> None:
        name_bytes = name.encode()
        if len(sub.sid.encode()) > MAX_SID_BYTES:
            # Kept per subscription until it expires: a long one is refused.
            self._error(out, identity, "bad_subscription",
                        f"a subscription id is at most {MAX_SID_BYTES} bytes")
            return
        if sub.dataindex not in TABLES:
            # Never published: say so (the subscriber's update is
            # "unpublished") and keep no record of it.
            snap = codec.Snapshot(sub.sid, sub.dataindex, self.publications.epoch, 0, None)
            out.router.append([identity, codec.header(Kind.SNAPSHOT), _CAGE_BYTES,
                                       name_bytes, codec.encode_one(snap)])
            return
        held = self.publications.readers_of(name)
        if (sub.dataindex, sub.sid) not in held and len(held) >= MAX_CAGE_SUBSCRIPTIONS:
            self._error(out, identity, "too_many_subscriptions",
                        f"at most {MAX_CAGE_SUBSCRIPTIONS} subscriptions of one service to "
                        "the cage's tables")
            return
        if self._outdated or self.stale or self.publications.data(sub.dataindex) is None:
            # First subscriber, or a change not yet published: bring the
            # tables up to date before the snapshot (deltas go to the others).
            self._publish(now, out)
        for action in self.publications.on_subscribe(name, sub, now):
            if not isinstance(action, Send):
                continue  # a resend from a history: the cage's tables keep none
            msg = action.message
            try:
                body = codec.encode_one(msg)
            except (ProtocolError, MessageTooLarge):
                continue  # cannot be sent back: nothing to answer
            out.router.append([identity, codec.header(msg.KIND), _CAGE_BYTES,
                                       name_bytes, body])

    @staticmethod
    def _error(out: Effects, identity: bytes, code: str, message: str) -> None:
        body = codec.encode_one(codec.Error(code, message))
        out.router.append([identity, _ERROR_HEADER, _CAGE_BYTES, b"", body])

    def _publish(self, now: float, out: Effects) -> None:
        self.stale = self._outdated = False
        for dataindex in TABLES:
            sent = self.publications.publish(dataindex, self._clean(dataindex, now))
            if sent is not None:
                topic = codec.topic(CAGE, dataindex)
                out.pub.append([topic, _DELTA_HEADER, codec.encode_one(sent)])

    def _clean(self, dataindex: str, now: float) -> Any:
        rows = self._rows(dataindex, now)
        if dataindex == "services" and isinstance(rows, list):
            return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]
        return rows

    def forget(self, name: str) -> None:
        """A node left: forget its subscriptions."""
        self.publications.forget(name)

    def expire(self, now: float) -> None:
        """Forget subscriptions that stopped re-announcing."""
        self.publications.expire(now)
