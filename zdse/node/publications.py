"""A service's published data and who subscribes to it (the DSE's pubData). Pure.

:meth:`Publications.publish` stores new data and, when it changed and
someone subscribes, returns one delta for the cage's PUB socket, whatever
the number of subscribers (the node sends it keyed by its dataindex).
:meth:`Publications.on_subscribe` records a subscriber and answers with a
snapshot, unless the subscriber holds the current epoch and sequence number
or is behind only by deltas it was sent: then a Current, which says how far
the publisher is (the deltas may still be on their way; see
:class:`Reader`). Deltas it missed that the publisher's history
(:mod:`zdse.node.history`) still holds are resent instead of a snapshot.

A module that knows what changed says so instead of publishing the whole:
:meth:`Publications.change_keys` (a dict table), :meth:`Publications.change_rows`
(a list table) and :meth:`Publications.replace` (any value, sent whole with
no diff) send exactly that change, at a cost that follows the change, not
the table (see :mod:`zdse.node.table`). Both ways may be mixed on one dataindex:
the stored table is what snapshots and requests give either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zdse.errors import MessageTooLarge
from zdse.node import delta, tableindex
from zdse.node.dropped import Dropped
from zdse.node.effects import Send, SendPacked
from zdse.node.history import History
from zdse.node.table import KeyPlan, KeyTable, RowPlan, RowTable
from zdse.node.tableindex import INDEX_MIN_ROWS, Steps, TableIndex
from zdse.wire.codec import GAP, Current, Delta, Kind, Snapshot, Subscribe, Unsubscribe
from zdse.wire.frozen import builder
from zdse.wire.limits import MAX_ENTRY_BYTES, MAX_WAITING_SUBSCRIPTIONS

__all__ = ["Prepared", "Publication", "Publications", "Reader"]


_build_delta = builder(Delta)
_T = TypeVar("_T", KeyTable, RowTable)


@dataclass(slots=True)
class Reader:
    """One subscription to a publication.

    ``covered`` is the sequence number of the last answer to its announces
    (a snapshot or a Current): every delta after it went out by the cage's
    PUB, for the subscriber to take, and is not sent again whole. Cleared
    by :meth:`Publications.registered_again` (those deltas may have gone to
    a dead cage). An announce behind ``pub.seq`` but not behind ``covered``
    crossed deltas in flight (the sync that follows a first snapshot, a
    re-announce): a snapshot would be wasted on it, and would reach it
    before them (it comes through the cage's ROUTER, they through its PUB),
    as a snapshot instead of deltas. It gets a Current: deltas it then
    lacks (its filter went on too late for them) show as a gap, or as a
    Current it has not caught up with CURRENT_GRACE later, and it asks
    for a snapshot itself.
    """

    #: Time after which it is forgotten, unless it re-announces.
    deadline: float
    covered: int | None = None
    #: Whether its last answer was a snapshot: its next announce is then the
    #: sync that follows it, sent once its SUB filter is on, and the deltas
    #: published meanwhile may have gone before the filter took effect at
    #: the cage (the start race): they are resent from the history.
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class Prepared:
    """A new version of a dataindex, indexed and diffed against the one at ``base``."""

    data: Any
    index: TableIndex | None
    #: The delta from the version at ``base``, None if nothing changed.
    change: list[Any] | None
    base: int


@dataclass(slots=True)
class Publication:
    """One dataindex: its data, sequence number and subscribers."""

    seq: int = 0
    #: The kept index of ``data``, if it is a big table (see zdse.node.tableindex).
    index: TableIndex | None = None
    #: (subscriber name, subscription id) -> its reader.
    subscribers: dict[tuple[str, str], Reader] = field(default_factory=dict)
    #: The value last published whole (the module's own: never changed here).
    value: Any = None
    #: The table the publisher owns, from the first incremental change
    #: after the value was published whole (None until then).
    table: KeyTable | RowTable | None = None

    @property
    def data(self) -> Any:
        """The current data: what snapshots and requests give."""
        table = self.table
        if table is None:
            return self.value
        return table.data if isinstance(table, KeyTable) else table.rows()

    @data.setter
    def data(self, data: Any) -> None:
        self.value = data
        self.table = None

    def owned(self, kind: type[_T]) -> _T:
        """The data as a table of ``kind`` the publisher owns and changes in place.

        Made from the data at its first change after it was published whole
        (copied: the module's value is never changed); an empty one for
        null, held once a change stores it.

        Raises:
            TypeError: the data is not of the table's shape (a dict for a
                KeyTable, a list for a RowTable).
        """
        table = self.table
        if isinstance(table, kind):
            return table
        shape: type[Any] = dict if kind is KeyTable else list
        current = self.data
        if current is None:
            # Held from its first change on: until then the data stays null.
            empty: Any = shape()
            return kind(empty)
        if not isinstance(current, shape):
            other = "change_rows" if shape is dict else "change_keys"
            raise TypeError(f"the data is a {type(current).__name__}, not a {shape.__name__} "
                            f"table: publish a {shape.__name__} first, or use {other} or replace")
        owned = self.table = kind(current)
        return owned


class Publications:
    """Everything one service publishes.

    Args:
        name: the service's unique name (how subscribers key their views).
        epoch: identifies this run of the service; a restart changes it, so
            subscribers can tell its sequence numbers started over.
        history: the deltas it sent lately, to resend what a subscriber
            missed (its owner records them; none: never resent).
        dropped: where big versions replaced (and their indexes) go, for
            its owner to free a slice at a time; none: let go at once (an
            owner that frees no slices, such as the cage, must not keep them).
    """

    def __init__(self, name: str, epoch: str, history: History | None = None,
                 dropped: Dropped | None = None) -> None:
        self.name = name
        self.epoch = epoch
        self.history = history
        self.dropped = dropped
        self._pubs: dict[str, Publication] = {}
        #: Subscriptions held for dataindexes not published yet (seq 0), all
        #: together: anyone may announce any name, so they are bounded
        #: (MAX_WAITING_SUBSCRIPTIONS) and leave with their last subscriber.
        self.waiting = 0
        #: Announces to an unpublished dataindex answered but not recorded,
        #: the bound being reached.
        self.waiting_refused = 0

    def data(self, dataindex: str) -> Any:
        """The current data of ``dataindex`` (None if never published)."""
        pub = self._pubs.get(dataindex)
        return None if pub is None else pub.data

    def dataindexes(self) -> list[str]:
        """The dataindexes published (a subscription alone does not make one)."""
        return [dataindex for dataindex, pub in self._pubs.items() if pub.seq]

    def publish(
        self, dataindex: str, data: Any, admit: Callable[[Delta], object] | None = None
    ) -> Delta | None:
        """Store ``data``; return the delta to send, if it changed and anyone listens.

        ``admit``, if given, is called with the delta before the data is
        stored (only when the data changed); whatever it raises leaves the
        publication as it was. A big table is indexed and diffed at once
        (:meth:`prepare` spreads that over slices); a smaller value is
        diffed directly: a publisher's hot path.

        Raises:
            ProtocolError: a row msgpack cannot represent.
        """
        if isinstance(data, list | dict) and len(data) >= INDEX_MIN_ROWS:
            return self.commit(dataindex, tableindex.run(self.prepare(dataindex, data)), admit)
        pub = self._pubs.get(dataindex)
        if pub is None:  # not setdefault: that would build a Publication per call
            pub = Publication()
        if not pub.seq:
            return self._commit(dataindex, pub, [delta.REPLACE, data], admit, data=data)
        change = delta.diff(pub.data, data)
        if change is None:
            return None
        return self._commit(dataindex, pub, change, admit, data=data)

    def prepare(self, dataindex: str, data: Any) -> Steps[Prepared]:
        """Index ``data`` and diff it against what is published, in slices.

        What :meth:`publish` does before storing, as steps a shell can spread
        over its event loop; :meth:`commit` stores the result.

        Raises:
            ProtocolError: a row msgpack cannot represent.
        """
        pub = self._pubs.get(dataindex)
        old, old_index, seq = (None, None, 0) if pub is None else (pub.data, pub.index, pub.seq)
        new_index = None
        if isinstance(data, list | dict) and len(data) >= INDEX_MIN_ROWS:
            new_index = yield from tableindex.index(data)
        if not seq:
            return Prepared(data, new_index, [delta.REPLACE, data], seq)
        change = yield from tableindex.diff(old, old_index, data, new_index)
        return Prepared(data, new_index, change, seq)

    def commit(self, dataindex: str, prepared: Prepared,
               admit: Callable[[Delta], object] | None = None) -> Delta | None:
        """Store a prepared version; return the delta to send, as :meth:`publish`.

        A version prepared against an older one than is now published (another
        publish came in between) is diffed again, at once.
        """
        pub = self._pubs.get(dataindex)
        if prepared.base != (0 if pub is None else pub.seq):
            return self.publish(dataindex, prepared.data, admit)
        if prepared.change is None:
            return None
        return self._commit(dataindex, pub or Publication(), prepared.change, admit,
                            data=prepared.data, index=prepared.index)

    def index(self, dataindex: str) -> TableIndex | None:
        """The kept index of ``dataindex``'s data, if it is a big table."""
        pub = self._pubs.get(dataindex)
        return None if pub is None else pub.index

    def replace(
        self, dataindex: str, value: Any, admit: Callable[[Delta], object] | None = None
    ) -> Delta | None:
        """Store ``value`` whole; return its ``replace`` delta, if it changed and anyone listens.

        No diff: for a scalar, or a value rebuilt whole anyway. ``admit`` as
        in :meth:`publish`.
        """
        pub = self._pubs.get(dataindex)
        if pub is None:
            pub = Publication()
        if pub.seq and delta.same(pub.data, value):
            return None
        return self._commit(dataindex, pub, [delta.REPLACE, value], admit, data=value)

    def change_keys(
        self,
        dataindex: str,
        put: Mapping[Any, Any],
        delete: Iterable[Any] = (),
        admit: Callable[[Delta], object] | None = None,
    ) -> Delta | None:
        """Put and delete keys of a dict table; return the ``keys`` delta to send.

        Only what changes is sent (a put of the value held, or a delete of a
        key not held, is left out); None when nothing changed or nobody
        listens. The first change of a dataindex never published is sent as
        a ``replace`` of the new table. ``admit`` as in :meth:`publish`.

        Raises:
            TypeError: the data is not a dict table.
            ValueError: a key is both put and deleted, or is not hashable.
            MessageTooLarge: an entry (key and value, packed) would exceed
                MAX_ENTRY_BYTES (a big table's snapshot goes in parts, each
                holding at least one entry).
            ProtocolError: msgpack cannot represent a key or value.
            Whatever is raised, the publication is left as it was.
        """
        pub = self._pubs.get(dataindex)
        if pub is None:
            pub = Publication()
        table = pub.owned(KeyTable)
        plan = table.plan(put, delete)
        if not plan.put and not plan.delete:
            return None
        self._check_entry(dataindex, plan.largest)
        if pub.seq:
            change = [delta.KEYS, plan.put, plan.delete]
        else:
            change = [delta.REPLACE, {**table.data, **plan.put}]
        return self._commit(dataindex, pub, change, admit, lambda: _store(pub, table, plan))

    def change_rows(
        self,
        dataindex: str,
        add: Iterable[Any] = (),
        remove: Iterable[Any] = (),
        admit: Callable[[Delta], object] | None = None,
    ) -> Delta | None:
        """Add and remove rows of a list table (a multiset); return the ``rows`` delta to send.

        Removals count against the rows held before the change; a row to
        remove that is not held is left out. None when nothing changed or
        nobody listens; the first change of a dataindex never published is
        sent as a ``replace``. ``admit`` as in :meth:`publish`.

        Raises:
            TypeError: the data is not a list table.
            MessageTooLarge: a row would exceed MAX_ENTRY_BYTES packed.
            ProtocolError: msgpack cannot represent a row.
            Whatever is raised, the publication is left as it was.
        """
        pub = self._pubs.get(dataindex)
        if pub is None:
            pub = Publication()
        table = pub.owned(RowTable)
        plan = table.plan(add, remove)
        if not plan.add and not plan.remove:
            return None
        self._check_entry(dataindex, plan.largest)
        # Nothing held before the first: none removed, and it replaces a snapshot of null.
        change = [delta.ROWS, plan.add, plan.remove] if pub.seq else [delta.REPLACE, plan.add]
        return self._commit(dataindex, pub, change, admit, lambda: _store(pub, table, plan))

    def _check_entry(self, dataindex: str, size: int) -> None:
        """Refuse an entry that could not travel in a part of a snapshot."""
        if size + _snapshot_overhead(dataindex, self.epoch) > MAX_ENTRY_BYTES:
            raise MessageTooLarge(
                f"an entry of {dataindex!r} would exceed {MAX_ENTRY_BYTES} bytes")

    def table_of(self, dataindex: str,
                 data: Any) -> tuple[list[bytes] | dict[Any, Any], int] | None:
        """What a snapshot of ``data`` can be sent from without packing it whole, and its size.

        The packed rows of a list table (published whole and indexed, or
        changed in place), or the entries of a dict table (indexed, or
        changed in place), with their packed size; None for other data, or
        for ``data`` that is no longer the current. Held by the publication,
        and changed in place by the next change: a caller keeping them copies them.
        """
        pub = self._pubs.get(dataindex)
        if pub is None or pub.data is not data:
            return None
        table = pub.table
        if isinstance(table, RowTable):
            return table.packed(), table.bytes
        if isinstance(table, KeyTable):
            return table.data, table.bytes
        index = pub.index
        if index is None:
            return None
        if index.rows is not None:
            return index.rows, index.size
        return pub.value, index.size

    def _commit(self, dataindex: str, pub: Publication, change: list[Any],
                admit: Callable[[Delta], object] | None,
                store: Callable[[], object] | None = None, *, data: Any = None,
                index: TableIndex | None = None) -> Delta | None:
        """Admit the delta, then store the change and count it.

        ``store`` applies an incremental change to the kept table; without
        it, ``data`` replaces what is held, with its kept ``index`` (None:
        after an incremental change the index of the data published whole is
        stale, and the next whole publish diffs without it).
        """
        d = _build_delta(dataindex, self.epoch, pub.seq + 1, change)
        if admit is not None:
            admit(d)
        old = pub.index
        if self.dropped is not None and old is not None and old.rows is not None:
            # A big version replaced (or its index, stale after a change in
            # place): freed in slices (NodeCore.advance), not at once.
            if store is None:
                self.dropped.add(pub.data)
            self.dropped.add(old.rows)
        if store is None:
            pub.data = data
        else:
            store()
        pub.index = index
        self._pubs[dataindex] = pub
        if not pub.seq:  # its subscribers wait no more
            self.waiting -= len(pub.subscribers)
        pub.seq += 1
        return d if pub.subscribers else None

    def on_subscribe(self, sender: str, sub: Subscribe,
                     now: float) -> list[Send | SendPacked]:
        """Record (or refresh) a subscriber; snapshot it, resend what it missed, or confirm.

        A Current when the view it holds is ours and current, or behind only
        by deltas sent since it was covered (they crossed the announce); the
        deltas it lacks, resent from the history (a Replay), when it says it
        misses them (``seen`` marked GAP), when this is the sync after its
        snapshot (the start race), or when it is behind otherwise and the
        history holds them; a snapshot else.
        """
        pub = self._pubs.get(sub.dataindex)
        key = (sender, sub.sid)
        reader = None if pub is None else pub.subscribers.get(key)
        if reader is not None:
            reader.deadline = now + sub.ttl
        elif pub is not None and pub.seq:
            reader = pub.subscribers[key] = Reader(now + sub.ttl)
        elif self.waiting < MAX_WAITING_SUBSCRIPTIONS:
            if pub is None:
                pub = self._pubs[sub.dataindex] = Publication()
            reader = pub.subscribers[key] = Reader(now + sub.ttl)
            self.waiting += 1
        else:
            # Answered as if recorded, not recorded: its re-announces come
            # back for a snapshot once the dataindex is published.
            self.waiting_refused += 1
        seq = 0 if pub is None else pub.seq
        seen = sub.seen.get(self.name)
        covered, fresh = None, False
        if reader is not None:
            covered, fresh = reader.covered, reader.fresh
            reader.covered, reader.fresh = seq, False
        held, gap = self._held(seen)
        crossed = covered is not None and held is not None and covered <= held <= seq
        if held == seq:
            # Say so cheaply; the subscriber also learns that we live.
            return [Send(sender, Current(sub.sid, sub.dataindex, self.epoch, seq))]
        if held is not None and held < seq and self.history is not None \
                and (gap or fresh or not crossed):
            missed = self.history.since(sub.dataindex, held, seq)
            if missed is not None:
                return [SendPacked(sender, Kind.REPLAY, missed)]
        if crossed and not gap:
            # The deltas since are on their way by the PUB socket.
            return [Send(sender, Current(sub.sid, sub.dataindex, self.epoch, seq))]
        if reader is not None:
            reader.fresh = True
        data = None if pub is None else pub.data
        return [Send(sender, Snapshot(sub.sid, sub.dataindex, self.epoch, seq, data))]

    def _held(self, seen: list[Any] | None) -> tuple[int | None, bool]:
        """The sequence number of a view of this epoch that ``seen`` shows held, if any,
        and whether the subscriber says it misses the deltas after it (GAP)."""
        if isinstance(seen, list) and 2 <= len(seen) <= 3 and seen[0] == self.epoch:
            seq = seen[1]
            gap = len(seen) == 3
            if isinstance(seq, int) and not isinstance(seq, bool) and (not gap or seen[2] == GAP):
                return seq, gap
        return None, False

    def registered_again(self) -> None:
        """The session with a cage began anew: deltas since may not have reached anyone.

        They went to a cage that died, or were not sent while the session
        was lost; every subscriber behind gets a snapshot at its next
        re-announce.
        """
        for pub in self._pubs.values():
            for reader in pub.subscribers.values():
                reader.covered = None

    def on_unsubscribe(self, sender: str, unsub: Unsubscribe) -> None:
        """Forget one subscription."""
        pub = self._pubs.get(unsub.dataindex)
        if pub is not None and pub.subscribers.pop((sender, unsub.sid), None) is not None:
            self._drop_readers(unsub.dataindex, pub, 1)

    def forget(self, subscriber: str) -> None:
        """Forget every subscription of a service that left the bus."""
        for dataindex, pub in list(self._pubs.items()):
            keys = [k for k in pub.subscribers if k[0] == subscriber]
            for key in keys:
                del pub.subscribers[key]
            self._drop_readers(dataindex, pub, len(keys))

    def readers_of(self, subscriber: str) -> set[tuple[str, str]]:
        """The (dataindex, sid) of every subscription ``subscriber`` holds here."""
        return {(dataindex, sid) for dataindex, pub in self._pubs.items()
                for name, sid in pub.subscribers if name == subscriber}

    def expire(self, now: float) -> int:
        """Forget subscribers that stopped re-announcing; return how many."""
        gone = 0
        for dataindex, pub in list(self._pubs.items()):
            keys = [k for k, reader in pub.subscribers.items() if reader.deadline < now]
            for key in keys:
                del pub.subscribers[key]
            self._drop_readers(dataindex, pub, len(keys))
            gone += len(keys)
        return gone

    def _drop_readers(self, dataindex: str, pub: Publication, count: int) -> None:
        """``count`` readers of ``pub`` were removed: an unpublished one goes when none is left."""
        if pub.seq or not count:
            return
        self.waiting -= count
        if not pub.subscribers:
            del self._pubs[dataindex]

    def pubdata(self) -> dict[str, Any]:
        """What is published, at which sequence number, to whom (reserved request)."""
        return {
            dataindex: {
                "seq": pub.seq,
                "epoch": self.epoch,
                "size": _size(pub),
                "subscribers": sorted({name for name, _ in pub.subscribers}),
            }
            for dataindex, pub in sorted(self._pubs.items())
        }


def _store(pub: Publication, table: KeyTable | RowTable, plan: KeyPlan | RowPlan) -> None:
    """Make a planned change and hold the table (a new one, for data that was null)."""
    table.commit(plan)  # type: ignore[arg-type]  # each table's plan, from its own plan()
    pub.table = table


def _size(pub: Publication) -> int | None:
    """Rows or keys held (without compacting a row table to count them)."""
    if pub.table is not None:
        return len(pub.table.data) if isinstance(pub.table, KeyTable) else len(pub.table)
    return len(pub.value) if isinstance(pub.value, list | dict) else None


def _snapshot_overhead(dataindex: str, epoch: str) -> int:
    """What a snapshot adds around its data's entries, at most.

    An array header, a subscription id (a uuid4 hex: 33 bytes packed), the
    dataindex and epoch (5 bytes of header each at most), the largest seq
    (9) and the data's own map or array header (5).
    """
    return 1 + 33 + 5 + len(dataindex.encode()) + 5 + len(epoch.encode()) + 9 + 5
