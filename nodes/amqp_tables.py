"""The tables the amqp bridge publishes, and what each notification changes in them. Pure.

Dataindexes (see docs/amqp.md)::

    compute.instance.update               the recent window of that event type: a list
                                          of rows, oldest first, one row per notification
    compute.instance.update@instance_id   latest state: {payload["instance_id"]: row},
                                          for the event types configured with a key
    @event_types                          {event type: {"count": n, "last": timestamp}}
    @stats                                the bridge's counters (kept by the shell)

A row is :meth:`Notification.row`: a map holding ``message_id``, so two
notifications with equal payloads stay two rows (the bus's row deltas treat a
list table as a multiset), and a notification delivered twice (AMQP's
at-least-once) is one row.

Windows and latest-state tables are bounded by rows and by bytes (the size
of the AMQP bodies behind their rows). Each call of :meth:`Tables.take`
returns what the notification changed, as :class:`RowChange` and
:class:`KeyChange` values the bridge hands to the bus's incremental API:
the row added and the rows evicted, the key put and the keys evicted. So a
notification costs the same whatever the size of the tables.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .amqp_envelope import Notification

__all__ = [
    "EVENT_TYPES",
    "KEY_MARK",
    "STATS",
    "Change",
    "KeyChange",
    "Latest",
    "RowChange",
    "TableConfig",
    "Tables",
    "Window",
    "latest_name",
]

#: Marks a latest-state table (``event_type@field``) and the bridge's own
#: tables (``@...``). The envelope parser refuses event types holding it, so
#: no notification can land in one of these by name.
KEY_MARK = "@"
#: The dataindex of the event types seen so far.
EVENT_TYPES = "@event_types"
#: The dataindex of the bridge's counters.
STATS = "@stats"


def latest_name(event_type: str, key: str) -> str:
    """The dataindex of ``event_type``'s latest-state table keyed by payload field ``key``."""
    return f"{event_type}{KEY_MARK}{key}"


@dataclass(frozen=True, slots=True)
class RowChange:
    """Rows added to and removed from a window (a list table)."""

    dataindex: str
    add: list[dict[str, Any]]
    remove: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class KeyChange:
    """Keys put into and deleted from a map table."""

    dataindex: str
    put: dict[str, Any]
    delete: list[str]


Change = RowChange | KeyChange


@dataclass(frozen=True, slots=True)
class TableConfig:
    """Bounds of the tables, and which event types get a latest-state table.

    Attributes:
        window: most notifications kept per event type.
        window_bytes: most body bytes kept per event type.
        keys: event type -> payload fields to key a latest-state table by.
        latest_size: most entries kept per latest-state table.
        latest_bytes: most body bytes kept per latest-state table.
        max_event_types: most event types kept; notifications of further
            types are counted and dropped (a sender inventing event types
            must not grow the bridge without bound).
        event_types: event types whose (empty) window is published from the
            start, besides those in ``keys``.
    """

    window: int = 100
    window_bytes: int = 4 * 1024 * 1024
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    latest_size: int = 10_000
    latest_bytes: int = 8 * 1024 * 1024
    max_event_types: int = 1000
    event_types: tuple[str, ...] = ()


class _Bounded:
    """Rows by identity in order, dropping the oldest past ``size`` rows or ``max_bytes``."""

    def __init__(self, size: int, max_bytes: int) -> None:
        if size < 1 or max_bytes < 1:
            raise ValueError("bounds must be at least 1")
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._rows: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def _put(self, key: str, row: dict[str, Any],
             weight: int) -> tuple[dict[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
        """Hold ``row`` under ``key``; return the row it replaced and the (key, row) evicted."""
        old = self._rows.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._rows[key] = (row, weight)
        self.bytes += weight
        evicted: list[tuple[str, dict[str, Any]]] = []
        # The newest row always stays, even alone over the byte bound.
        while len(self._rows) > 1 and (len(self._rows) > self.size or self.bytes > self.max_bytes):
            gone_key, (gone_row, gone) = self._rows.popitem(last=False)
            self.bytes -= gone
            evicted.append((gone_key, gone_row))
        return (None if old is None else old[0]), evicted


class Window(_Bounded):
    """The recent notifications of one event type, oldest first, one per message id."""

    def add(self, message_id: str, row: dict[str, Any],
            weight: int) -> list[dict[str, Any]] | None:
        """Append a row; return the rows evicted.

        None (and nothing changed) if ``message_id`` is held already.
        """
        if message_id in self._rows:
            return None
        _, evicted = self._put(message_id, row, weight)
        return [gone for _, gone in evicted]

    def rows(self) -> list[dict[str, Any]]:
        """The rows, oldest first (a new list)."""
        return [row for row, _ in self._rows.values()]


class Latest(_Bounded):
    """The newest notification per value of one payload field; least recently changed go first."""

    def __init__(self, key: str, size: int, max_bytes: int) -> None:
        super().__init__(size, max_bytes)
        self.key = key

    def add(self, payload: Any, row: dict[str, Any], weight: int) -> KeyChange | None:
        """Make ``row`` the latest of its key; return the change.

        None if the payload has no usable key. The change puts the row under
        its key and deletes the keys evicted; its dataindex is left empty for
        the caller to name.
        """
        value = payload.get(self.key) if isinstance(payload, dict) else None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        key = str(value)
        _, evicted = self._put(key, row, weight)
        return KeyChange("", {key: row}, [gone for gone, _ in evicted])

    def table(self) -> dict[str, dict[str, Any]]:
        """Key -> latest row (a new map)."""
        return {key: row for key, (row, _) in self._rows.items()}


class Tables:
    """Every table of one bridge.

    Args:
        config: the bounds and the latest-state keys.
    """

    def __init__(self, config: TableConfig) -> None:
        self.config = config
        self.windows: dict[str, Window] = {}
        self.latest: dict[str, Latest] = {}
        self.event_types: dict[str, dict[str, Any]] = {}
        #: Redeliveries of a message id still in its window.
        self.duplicates = 0
        #: Notifications whose payload lacked a configured key field.
        self.unkeyed = 0
        #: Notifications of a new event type past ``max_event_types``.
        self.refused = 0
        self._local_ids = 0

    def initial(self) -> list[tuple[str, Any]]:
        """Empty tables for the configured event types, published at start.

        A subscriber that comes before the first notification then gets an
        empty table, and a request an answer, not ``UnknownRequest``.
        """
        out: list[tuple[str, Any]] = []
        for event_type in sorted({*self.config.event_types, *self.config.keys}):
            out.append((event_type, []))
            keys = self.config.keys.get(event_type, ())
            out.extend((latest_name(event_type, key), {}) for key in keys)
        out.append((EVENT_TYPES, {}))
        return out

    def take(self, note: Notification, weight: int) -> list[Change]:
        """Record a notification; return what it changed, table by table.

        Args:
            note: the notification.
            weight: its size in bytes, for the byte bounds.

        Returns:
            its window's row added (and the oldest evicted), its latest-state
            tables' key put (and keys evicted), and its ``@event_types``
            entry; nothing for a message id already in the window (a
            redelivery, counted in ``duplicates``) or for a new event type
            past the bound (counted in ``refused``).
        """
        message_id = note.message_id
        if not message_id:
            # A sender without oslo's ids: each such notification is its own row.
            self._local_ids += 1
            message_id = f"local-{self._local_ids}"
        row = note.row()
        row["message_id"] = message_id
        event_type = note.event_type
        window = self.windows.get(event_type)
        if window is None:
            if len(self.windows) >= self.config.max_event_types:
                self.refused += 1
                return []
            window = self.windows[event_type] = Window(self.config.window,
                                                       self.config.window_bytes)
        evicted = window.add(message_id, row, weight)
        if evicted is None:
            self.duplicates += 1
            return []
        out: list[Change] = [RowChange(event_type, [row], evicted)]
        for key in self.config.keys.get(event_type, ()):
            name = latest_name(event_type, key)
            latest = self.latest.get(name)
            if latest is None:
                latest = self.latest[name] = Latest(key, self.config.latest_size,
                                                    self.config.latest_bytes)
            change = latest.add(note.payload, row, weight)
            if change is not None:
                out.append(KeyChange(name, change.put, change.delete))
            else:
                self.unkeyed += 1
        seen = self.event_types.get(event_type, {"count": 0})
        # A new entry each time: the bus holds the one it was given.
        entry = {"count": seen["count"] + 1, "last": note.timestamp}
        self.event_types[event_type] = entry
        out.append(KeyChange(EVENT_TYPES, {event_type: entry}, []))
        return out
