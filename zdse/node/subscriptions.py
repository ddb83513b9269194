"""A service's subscriptions and its merged views of each publisher (the DSE's subData). Pure.

One subscription (a key and a dataindex) may reach several publishers; the
subscriber keeps one *feed* per publisher and dataindex, shared by all local
subscriptions that reach it. A feed follows :data:`TRANSITIONS`::

    state    input      ->  state    what happens
    (none)   snapshot   ->  LIVE     view := data; SUB filter on; sync with publisher
    LIVE     snapshot   ->  LIVE     view := data (a newer epoch or seq)
    LIVE     next delta ->  LIVE     view changed by the delta, in place
    LIVE     old delta  ->  LIVE     dropped (already in the view)
    LIVE     missing    ->  REPAIR   a delta past the next seq of the same epoch:
                                     buffered; the deltas after the view asked of
                                     the publisher (its history resends them, or
                                     it sends a snapshot)
    LIVE     gap        ->  RESYNC   another epoch, or a delta that cannot be
                                     applied: buffered; snapshot asked
    LIVE     hold       ->  HOLD     (several cages) a delta past the next seq of the
                                     same epoch: held for the gap window (zdse.node.gaps)
    HOLD     next       ->  HOLD     applied, and the held deltas that follow on
    HOLD     filled     ->  LIVE     nothing held any more
    HOLD     hold, old  ->  HOLD     held too; dropped
    HOLD     missing    ->  REPAIR   the window passed (a tick): the held deltas
                                     buffered, the missing ones asked for
    HOLD     gap        ->  RESYNC   another epoch: snapshot asked
    LIVE     owed       ->  REPAIR   a Current said the publisher is further on,
                                     and its deltas never came: asked for
    REPAIR   next       ->  REPAIR   applied, and the buffered deltas that follow on
    REPAIR   filled     ->  LIVE     nothing buffered past the view any more
    REPAIR   missing    ->  REPAIR   buffered (up to MAX_BUFFERED_DELTAS)
    REPAIR   old        ->  REPAIR   dropped
    REPAIR   gap        ->  RESYNC   another epoch, a delta that cannot be applied,
                                     or the buffer full: snapshot asked
    REPAIR   snapshot   ->  LIVE     as RESYNC's (the history no longer held them)
    RESYNC   any delta  ->  RESYNC   buffered (up to MAX_BUFFERED_DELTAS)
    RESYNC   snapshot   ->  LIVE     view := data; buffered deltas above its seq
                                     applied in order (a gap among them: RESYNC)
    RESYNC   owed       ->  (error)  cannot happen: a resyncing feed owes nothing
    any      left       ->  (none)   the publisher left the bus: "lost"
    any      silence    ->  (none)   no snapshot or Current for ttl: "lost"

A pair missing from the table raises :class:`~zdse.errors.ProtocolError`
naming the feed and its state: a bug, not bad input (every delta and
snapshot a publisher may send is in it), counted and dropped like bad
input all the same, never fatal. The last two rows end the feed:
they are not transitions but its removal.

Why the sync after the first snapshot: the subscriber can only set its SUB
filter once it knows who publishes (the snapshot says), so a delta sent in
between may be missed. The sync tells the publisher which sequence number
the view holds; it answers with the deltas since, resent from its history
(:mod:`zdse.node.history`: a Replay, through the cage's ROUTER), or with a
Current saying how far it is when its history no longer holds them.

The sync, like later re-announces, may cross deltas in flight: the feed is
then *owed* deltas up to the Current's seq. They normally arrive within
milliseconds (by the cage's PUB, while the Current came by its ROUTER); a
feed still owed after CURRENT_GRACE lost them (its filter came too late,
or a queue overflowed), and resyncs, as it does at once when the next
delta shows a gap. A snapshot in answer would be wasted when the deltas
come, and would reach the subscriber before them, as a snapshot where
deltas were due.

A gap of the same epoch (or owed deltas that never came) is first asked of
the publisher's history: the feed *repairs*, announcing ``[epoch, seq,
GAP]`` to its publisher, which resends the deltas after ``seq`` if it still
holds them, else sends a snapshot. Only a new epoch, a delta that cannot be
applied or a ``snapshot`` delta go to RESYNC at once.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from zdse.errors import ProtocolError
from zdse.node import delta as deltas
from zdse.node import tableindex
from zdse.node.assembly import TOO_BIG, Assemblies
from zdse.node.dropped import Dropped
from zdse.node.effects import AddFilter, Effect, RemoveFilter, Send
from zdse.node.gaps import Held
from zdse.node.tableindex import INDEX_MIN_ROWS, SLICED_ROWS, Steps, TableIndex
from zdse.wire.codec import (
    GAP,
    Current,
    Delta,
    PartTaken,
    Replay,
    Snapshot,
    SnapshotPart,
    Subscribe,
    Unsubscribe,
    topic,
)
from zdse.wire.frozen import builder
from zdse.wire.limits import (
    CURRENT_GRACE,
    MAX_BUFFERED_DELTAS,
    MAX_SID_BYTES,
    REFRESHES_TO_EXPIRE,
    SUBSCRIPTION_REFRESH,
)
from zdse.wire.routes import pattern_matches

__all__ = ["TRANSITIONS", "FeedInput", "FeedState", "Subscriptions", "Update", "UpdateKind"]


class FeedState(enum.Enum):
    """Where a feed (one publisher's dataindex) stands."""

    LIVE = "live"
    RESYNC = "resync"
    HOLD = "hold"  # deltas past a gap held a moment for another cage to fill it
    REPAIR = "repair"  # the deltas after a gap asked of the publisher's history


class FeedInput(enum.Enum):
    """What can happen to a feed."""

    SNAPSHOT = "snapshot"
    NEXT = "next"  # the delta after the view's seq, of its epoch
    OLD = "old"  # a delta at or below the view's seq
    GAP = "gap"  # a delta of another epoch, or one that cannot be applied
    MISSING = "missing"  # a delta of the same epoch past the next
    OWED = "owed"  # a Current said the publisher is further on; its deltas never came
    HOLD = "hold"  # (several cages) a delta past the next, held for the gap window
    FILLED = "filled"  # (several cages) the held deltas all followed on: none held


_F, _FI = FeedState, FeedInput
#: (state, input) -> next state; the code below follows it. A missing pair
#: cannot happen (see the module's docstring).
TRANSITIONS: dict[tuple[FeedState, FeedInput], FeedState] = {
    (_F.LIVE, _FI.SNAPSHOT): _F.LIVE,
    (_F.LIVE, _FI.NEXT): _F.LIVE,
    (_F.LIVE, _FI.OLD): _F.LIVE,
    (_F.LIVE, _FI.GAP): _F.RESYNC,
    (_F.LIVE, _FI.MISSING): _F.REPAIR,
    (_F.LIVE, _FI.OWED): _F.REPAIR,
    (_F.RESYNC, _FI.NEXT): _F.RESYNC,
    (_F.RESYNC, _FI.OLD): _F.RESYNC,
    (_F.RESYNC, _FI.GAP): _F.RESYNC,
    (_F.RESYNC, _FI.MISSING): _F.RESYNC,
    (_F.RESYNC, _FI.SNAPSHOT): _F.LIVE,
    (_F.LIVE, _FI.HOLD): _F.HOLD,
    (_F.HOLD, _FI.NEXT): _F.HOLD,
    (_F.HOLD, _FI.FILLED): _F.LIVE,
    (_F.HOLD, _FI.HOLD): _F.HOLD,
    (_F.HOLD, _FI.OLD): _F.HOLD,
    (_F.HOLD, _FI.GAP): _F.RESYNC,
    (_F.HOLD, _FI.MISSING): _F.REPAIR,
    (_F.HOLD, _FI.SNAPSHOT): _F.LIVE,
    (_F.REPAIR, _FI.NEXT): _F.REPAIR,
    (_F.REPAIR, _FI.FILLED): _F.LIVE,
    (_F.REPAIR, _FI.MISSING): _F.REPAIR,
    (_F.REPAIR, _FI.OLD): _F.REPAIR,
    (_F.REPAIR, _FI.GAP): _F.RESYNC,
    (_F.REPAIR, _FI.SNAPSHOT): _F.LIVE,
}


class UpdateKind(enum.StrEnum):
    """What an :class:`Update` brings (:attr:`Update.kind`); equal to its string."""

    SNAPSHOT = "snapshot"
    DELTA = "delta"
    LOST = "lost"
    NOROUTE = "noroute"
    UNPUBLISHED = "unpublished"


_SNAPSHOT, _DELTA, _LOST = UpdateKind.SNAPSHOT, UpdateKind.DELTA, UpdateKind.LOST
_NOROUTE, _UNPUBLISHED = UpdateKind.NOROUTE, UpdateKind.UNPUBLISHED
_NEXT, _OLD, _GAP, _OWED = FeedInput.NEXT, FeedInput.OLD, FeedInput.GAP, FeedInput.OWED
_HOLD, _FILLED, _MISSING = FeedInput.HOLD, FeedInput.FILLED, FeedInput.MISSING


def _seen(feed: _Feed) -> list[Any]:
    """What a feed tells its publisher it holds: marked GAP when it misses what follows."""
    if feed.state is FeedState.REPAIR:
        return [feed.epoch, feed.seq, GAP]
    return [feed.epoch, feed.seq]


def _seq_of(d: Delta) -> int:
    return d.seq


class Update(NamedTuple):
    """What a subscription's callback receives (an immutable record).

    Attributes:
        sid: the subscription.
        publisher: the unique name of the service that published.
        dataindex: the table.
        kind: an :class:`UpdateKind`, equal to its string: ``"snapshot"``,
            ``"delta"``, ``"lost"`` (the publisher left),
            ``"noroute"`` (nothing listens on the key yet; ``data`` is the key)
            or ``"unpublished"`` (the publisher has never published this
            dataindex: ``seq`` is 0, ``data`` and ``view`` None; its first
            publish comes as a ``"delta"`` holding ``["replace", data]``).
        seq: the publisher's sequence number after this update.
        data: the snapshot's data, or the delta. A snapshot that came in
            parts is its view itself (put together here, not copied).
        view: the subscriber's whole view of this publisher's table. Deltas
            change it in place (in time that follows the change, not the
            table), so it is the view as of the latest update: copy it to
            keep the view as it was at this one.
    """

    sid: str
    publisher: str
    dataindex: str
    kind: UpdateKind
    seq: int
    data: Any
    view: Any


#: Builds a tuple subclass without its Python-level __new__: an Update is
#: built per delta and subscription, the fanout hot path (0.35 us, where a
#: frozen dataclass took 1).
_new = tuple.__new__


def _build_update(sid: str, publisher: str, dataindex: str, kind: UpdateKind, seq: int, data: Any,
                  view: Any) -> Update:
    return _new(Update, (sid, publisher, dataindex, kind, seq, data, view))


_build_delta = builder(Delta)


def _snapshot_kind(snap: Snapshot) -> UpdateKind:
    """A snapshot at seq 0 is of a dataindex its publisher never published."""
    return _UNPUBLISHED if snap.seq == 0 else _SNAPSHOT


def _own(data: Any) -> Any:
    """A view of its own for a snapshot's data: deltas change views in place."""
    if isinstance(data, list):
        return list(data)
    if isinstance(data, dict):
        return dict(data)
    return data


def _as_is(data: Any) -> Any:
    return data


def _apply(feed: _Feed, change: Any) -> Any:
    """The feed's view changed by ``change``; a big table's through its kept index.

    In place, as :func:`zdse.node.delta.patch`: a ``rows`` delta to a big list
    view is found through the index, then written back into the same list.

    Raises:
        ProtocolError: the delta does not fit the view.
    """
    view = feed.view
    if type(view) is not list or len(view) < INDEX_MIN_ROWS or not tableindex.is_rows(change):
        feed.index = None
        return deltas.patch(view, change)
    new, feed.index = tableindex.run(tableindex.apply_rows(view, feed.index, change))
    view[:] = new
    return view


def _sliced(feed: _Feed, change: Any) -> bool:
    """Whether ``change`` to the feed's view is applied in slices (a big list view)."""
    view = feed.view
    return type(view) is list and len(view) >= SLICED_ROWS and tableindex.is_rows(change)


@dataclass(slots=True)
class _Applying:
    """A delta being applied to a big view in slices (:meth:`Subscriptions.advance`).

    The view is left as it was until the last slice: then the new rows are
    put in place at once, so a reader never sees the delta half applied.
    """

    delta: Delta
    steps: Steps[tuple[list[Any], TableIndex]]
    #: The feed's deltas that came meanwhile, in order: taken after it.
    queued: list[Delta] = field(default_factory=list)


@dataclass(slots=True)
class _Feed:
    publisher: str
    dataindex: str
    epoch: str
    seq: int
    view: Any
    state: FeedState = FeedState.LIVE
    sids: set[str] = field(default_factory=set)
    buffer: list[Delta] = field(default_factory=list)
    resync_sent: float = 0.0
    #: When the publisher last showed it lives (a snapshot, or a Current).
    confirmed: float = 0.0
    #: The highest seq a Current said the publisher is at, and since when
    #: the view has been behind it.
    owed: int = 0
    owed_since: float = 0.0
    #: Deltas past a gap held for the gap window (several cages only).
    held: Held | None = None
    #: The kept index of a big view, built at its first delta.
    index: TableIndex | None = None
    #: A delta being applied to a big view in slices, if one is.
    applying: _Applying | None = None

    def move(self, what: FeedInput) -> None:
        target = TRANSITIONS.get((self.state, what))
        if target is None:
            raise ProtocolError(f"can't handle {what.value} when feed {self.publisher}/"
                             f"{self.dataindex} is {self.state.value}")
        self.state = target


@dataclass(slots=True)
class _Subscription:
    sid: str
    key: str
    dataindex: str
    next_announce: float
    refresh: float
    no_route: bool = False
    feeds: set[tuple[str, str]] = field(default_factory=set)

    @property
    def ttl(self) -> float:
        """How long its publishers keep it without a re-announce."""
        return self.refresh * REFRESHES_TO_EXPIRE


class Subscriptions:
    """Every subscription of one service.

    Args:
        refresh: seconds between re-announcements of each subscription.
    """

    def __init__(self, refresh: float = SUBSCRIPTION_REFRESH) -> None:
        self.refresh = refresh
        self.ttl = refresh * REFRESHES_TO_EXPIRE
        self._subs: dict[str, _Subscription] = {}
        self._feeds: dict[tuple[str, str], _Feed] = {}
        #: gaps: deltas missed that only a snapshot made up; resyncs: snapshots
        #: asked for; repairs: missed deltas asked of the publisher's history,
        #: repaired: ... and made up by it (zdse.node.history).
        self.stats: dict[str, int] = {"gaps": 0, "resyncs": 0, "bad_deltas": 0, "owed": 0,
                                      "held": 0, "lost_parts": 0, "repairs": 0, "repaired": 0}
        #: Seconds a delta past a gap is held for another cage to bring the
        #: missing ones (docs/redundancy.md); 0, with one cage: a gap at once.
        self.gap_window = 0.0
        self._parts = Assemblies()
        #: The feeds applying a delta in slices, in the order they began.
        self._applying: dict[tuple[str, str], None] = {}
        #: Big views (and their indexes' rows) dropped, freed a slice at a time.
        self.dropped = Dropped(SLICED_ROWS, tableindex.SLICE_ROWS)

    # --- local calls --------------------------------------------------------

    def subscribe(
        self, key: str, dataindex: str, now: float, sid: str | None = None,
        refresh: float | None = None,
    ) -> tuple[str, list[Effect]]:
        """Start a subscription; return its id and the announce to send.

        Args:
            sid: the subscription's id (a fresh uuid when None).
            refresh: seconds between its re-announcements (``self.refresh``
                when None); its publishers forget it after
                REFRESHES_TO_EXPIRE of them missed.

        Raises:
            ProtocolError: ``sid`` is empty, too long or in use, or
                ``refresh`` is not a finite number above zero.
        """
        if sid is None:
            sid = uuid.uuid4().hex
        elif not isinstance(sid, str) or not sid or len(sid.encode()) > MAX_SID_BYTES:
            raise ProtocolError(f"a subscription id is a string of 1 to {MAX_SID_BYTES} bytes")
        if sid in self._subs:
            raise ProtocolError(f"subscription id {sid!r} is in use")
        if refresh is None:
            refresh = self.refresh
        elif not (isinstance(refresh, int | float) and 0 < refresh < float("inf")):
            raise ProtocolError(f"refresh must be a number of seconds above zero, not {refresh!r}")
        sub = _Subscription(sid, key, dataindex, now + refresh, float(refresh))
        self._subs[sid] = sub
        return sid, [Send(key, Subscribe(sid, dataindex, {}, sub.ttl))]

    def sids_for(self, key: str, dataindex: str) -> list[str]:
        """The ids of the subscriptions to ``dataindex`` on ``key``."""
        return sorted(sid for sid, sub in self._subs.items()
                      if sub.key == key and sub.dataindex == dataindex)

    def min_refresh(self) -> float:
        """The shortest re-announcement interval of any subscription (or the default)."""
        return min((sub.refresh for sub in self._subs.values()), default=self.refresh)

    def unsubscribe(self, sid: str) -> list[Effect]:
        """End a subscription; tell its publishers and drop feeds nobody else uses."""
        sub = self._subs.pop(sid, None)
        if sub is None:
            return []
        self._parts.forget(sid=sid)
        actions: list[Effect] = [Send(sub.key, Unsubscribe(sid, sub.dataindex))]
        for fkey in sub.feeds:
            feed = self._feeds.get(fkey)
            if feed is None:
                continue
            feed.sids.discard(sid)
            if not feed.sids:
                del self._feeds[fkey]
                self._stop(feed)
                self._let_go(feed)
                actions.append(RemoveFilter(topic(*fkey)))
        return actions

    def has(self, sid: str) -> bool:
        """Tell whether ``sid`` is a live subscription."""
        return sid in self._subs

    def view(self, sid: str) -> dict[str, Any]:
        """The subscription's views, by publisher."""
        sub = self._subs.get(sid)
        if sub is None:
            return {}
        return {pub: self._feeds[(pub, di)].view for pub, di in sorted(sub.feeds)
                if (pub, di) in self._feeds}

    # --- from the bus -------------------------------------------------------

    def on_snapshot(
        self, sender: str, snap: Snapshot, now: float, index: TableIndex | None = None,
        ours: bool = False,
    ) -> tuple[list[Update], list[Effect]]:
        """Take a snapshot from ``sender``; ``index``, if given, is its data's (from its parts).

        ``ours``: its data was put together here (from parts) and nobody else
        holds it: it becomes the view as it is. Otherwise the view is a copy
        (deltas change views in place); for a million rows, a new list the
        collector's young generations would walk through twice.
        """
        own = _as_is if ours else _own
        sub = self._subs.get(snap.sid)
        if sub is None:
            # A snapshot for a subscription we dropped: tell the publisher.
            return [], [Send(sender, Unsubscribe(snap.sid, snap.dataindex))]
        sub.no_route = False
        fkey = (sender, snap.dataindex)
        sub.feeds.add(fkey)
        feed = self._feeds.get(fkey)
        actions: list[Effect] = []
        if feed is None:
            feed = _Feed(sender, snap.dataindex, snap.epoch, snap.seq, own(snap.data),
                         confirmed=now)
            feed.index = index
            self._feeds[fkey] = feed
            actions.append(AddFilter(topic(sender, snap.dataindex)))
            actions.append(self._sync(feed, snap.sid))
            feed.sids.add(snap.sid)
            return [self._update(feed, snap.sid, _snapshot_kind(snap), snap.data)], actions
        new_sid = snap.sid not in feed.sids
        feed.sids.add(snap.sid)
        feed.confirmed = now
        if feed.held is not None:
            # A snapshot settles it: the held deltas above it follow it.
            feed.buffer, feed.held = feed.held.take_all(), None
            feed.state = FeedState.RESYNC
        # A repairing feed's view is right up to its seq: an older snapshot
        # (answering another subscription's announce) is no answer to it.
        kept = feed.state is FeedState.LIVE or feed.state is FeedState.REPAIR
        stale = snap.epoch == feed.epoch and snap.seq < feed.seq and kept
        same = snap.epoch == feed.epoch and snap.seq == feed.seq and kept
        if stale or same:
            # Older than (or the same as) what the view holds: keep the view.
            # A subscription that just joined this feed still gets it whole.
            kind = _UNPUBLISHED if feed.seq == 0 else _SNAPSHOT
            return ([self._update(feed, snap.sid, kind, feed.view)] if new_sid else []), []
        if new_sid and snap.epoch == feed.epoch and feed.state is FeedState.LIVE:
            # Another subscription's first snapshot, newer than the shared view:
            # the deltas between are on their way by the PUB (the feed's filter
            # is on), so the view is kept, not jumped for the subscriptions that
            # hold it; it gets the view, and the deltas are owed, as after a
            # Current (lost ones are asked for CURRENT_GRACE later).
            if feed.owed <= feed.seq:
                feed.owed_since = now
            feed.owed = max(feed.owed, snap.seq)
            kind = _UNPUBLISHED if feed.seq == 0 else _SNAPSHOT
            return [self._update(feed, snap.sid, kind, feed.view)], []
        if feed.state is FeedState.REPAIR:
            # The publisher's history no longer held what the feed missed.
            self.stats["gaps"] += 1
            self.stats["resyncs"] += 1
        applying = self._stop(feed)
        if applying is not None:
            # Superseded by the snapshot: what it was applying, and what
            # waited behind it, follow the snapshot as buffered deltas do.
            feed.buffer += [applying.delta, *applying.queued]
        self._let_go(feed)
        feed.move(FeedInput.SNAPSHOT)
        feed.epoch, feed.seq, feed.view = snap.epoch, snap.seq, own(snap.data)
        # The view is a copy of the snapshot's rows, in order: their index fits it.
        feed.index = index
        kind = _snapshot_kind(snap)
        updates = [self._update(feed, sid, kind, snap.data) for sid in sorted(feed.sids)]
        buffered, feed.buffer = feed.buffer, []
        for d in sorted(buffered, key=lambda d: d.seq):
            more, acts = self.on_delta(sender, d, now)
            updates += more
            actions += acts
        return updates, actions

    def on_part(self, sender: str, part: SnapshotPart,
                now: float) -> tuple[list[Update], list[Effect]]:
        """Take a part of a snapshot; the snapshot when it is whole, a new ask if one is lost."""
        if part.sid not in self._subs:
            # Not (or no longer) ours: nothing kept, and the publisher is told.
            return [], [Send(sender, Unsubscribe(part.sid, part.dataindex))] if part.part == 0 \
                else []
        got = self._parts.take(sender, part, now)
        if got is None:
            # Kept, more to come: the publisher sends the next on this word.
            return [], [Send(sender, PartTaken(part.sid, part.dataindex, part.epoch, part.seq,
                                               part.part))]
        if isinstance(got, tuple):
            snap, index = got
            # Its index was built a part at a time, not at the first delta.
            return self.on_snapshot(sender, snap, now, index, ours=True)
        self.stats["lost_parts"] += 1
        sub = self._subs.get(part.sid)
        if sub is None or got == TOO_BIG:
            # Too big: asking at once would loop; the next re-announce asks.
            return [], []
        # Ask the publisher again, by name: its answer is a new snapshot.
        return [], [Send(sender, Subscribe(sub.sid, sub.dataindex, {}, self.ttl))]

    def on_delta(self, publisher: str, d: Delta, now: float) -> tuple[list[Update], list[Effect]]:
        """Take a delta published by ``publisher``."""
        feed = self._feeds.get((publisher, d.dataindex))
        if feed is None:
            return [], []  # a filter we just removed, or not ours
        if feed.applying is not None:
            return [], self._queue(feed, d, now)
        if d.epoch != feed.epoch:
            event = _GAP  # the publisher restarted: its numbers started over
        elif d.seq <= feed.seq:
            event = _OLD
        elif d.seq == feed.seq + 1:
            event = _NEXT
        else:
            event = _MISSING
        if feed.state is FeedState.HOLD:
            return self._on_held(feed, d, event, now)
        if feed.state is FeedState.REPAIR:
            return self._on_repair(feed, d, event, now)
        if feed.state is FeedState.RESYNC:
            feed.move(event)
            if event is not _OLD and len(feed.buffer) < MAX_BUFFERED_DELTAS:
                feed.buffer.append(d)
            elif event is not _OLD:
                feed.buffer.clear()  # the snapshot we wait for supersedes them
            return [], []
        if event is _OLD:
            return [], []
        if event is _NEXT and d.delta == [deltas.SNAPSHOT]:
            # The change was too big for one message: a snapshot brings it.
            return [], self._resync(feed, None, now, _GAP)
        if event is _MISSING:
            if self.gap_window > 0:
                # Another cage may bring the deltas between in a moment.
                self.stats["held"] += 1
                feed.move(_HOLD)
                feed.held = Held(now)
                feed.held.hold(d)
                return [], []
            return [], self._repair(feed, d, now, event)
        if event is _GAP:
            self.stats["gaps"] += 1
            return [], self._resync(feed, d, now, event)
        if _sliced(feed, d.delta):
            self._start(feed, d)
            return [], []
        try:
            feed.view = _apply(feed, d.delta)
        except ProtocolError:
            self.stats["bad_deltas"] += 1
            return [], self._resync(feed, d, now, _GAP)
        # Here the feed is LIVE and the event "next": the table keeps it LIVE,
        # so the per-delta hot path skips the look-up.
        feed.seq = d.seq
        sids = feed.sids
        change, seq, view = d.delta, d.seq, feed.view
        return [_build_update(sid, publisher, feed.dataindex, _DELTA, seq, change, view)
                for sid in (sids if len(sids) == 1 else sorted(sids))], []

    def _on_held(self, feed: _Feed, d: Delta, event: FeedInput,
                 now: float) -> tuple[list[Update], list[Effect]]:
        """A delta for a feed holding deltas past a gap (zdse.node.gaps)."""
        held = feed.held
        assert held is not None
        if event is _OLD:
            return [], []
        if d.epoch != feed.epoch:
            # The publisher restarted: what was held is of the old epoch.
            feed.held = None
            self.stats["gaps"] += 1
            return [], self._resync(feed, d, now, _GAP)
        if event is _MISSING:
            feed.move(_HOLD)
            if not held.hold(d):
                feed.held = None
                self.stats["gaps"] += 1
                return [], self._resync(feed, d, now, _GAP)
            return [], []
        feed.move(_NEXT)
        updates: list[Update] = []
        for one in [d, *held.run_after(d.seq)]:
            if feed.applying is not None:
                feed.applying.queued.append(one)
                continue
            if _sliced(feed, one.delta):
                self._start(feed, one)
                continue
            try:
                feed.view = _apply(feed, one.delta)
            except ProtocolError:
                self.stats["bad_deltas"] += 1
                rest = held.take_all()
                feed.held = None
                actions = self._resync(feed, one, now, _GAP)
                feed.buffer += rest
                return updates, actions
            feed.seq = one.seq
            updates += [self._update(feed, sid, _DELTA, one.delta) for sid in sorted(feed.sids)]
        if len(held) == 0:
            feed.held = None
            feed.move(_FILLED)
        else:
            held.since = now  # another gap further on: its own window
        return updates, []

    def _on_repair(self, feed: _Feed, d: Delta, event: FeedInput,
                   now: float) -> tuple[list[Update], list[Effect]]:
        """A delta for a feed that asked its publisher for the deltas after a gap."""
        if event is _OLD:
            return [], []
        if event is _GAP:
            # Another epoch: the publisher restarted, and its history with it.
            self.stats["gaps"] += 1
            return [], self._resync(feed, d, now, _GAP)
        if event is _MISSING:
            if len(feed.buffer) >= MAX_BUFFERED_DELTAS:
                self.stats["gaps"] += 1
                return [], self._resync(feed, None, now, _GAP)
            feed.move(_MISSING)
            feed.buffer.append(d)
            return [], []
        feed.move(_NEXT)
        updates: list[Update] = []
        run = [d, *sorted(feed.buffer, key=_seq_of)]
        feed.buffer = []
        for i, one in enumerate(run):
            if one.seq <= feed.seq:
                continue
            if one.seq != feed.seq + 1:
                feed.buffer = run[i:]  # past another gap: still asked for
                return updates, []
            if one.delta == [deltas.SNAPSHOT]:
                return updates, self._resync(feed, None, now, _GAP)
            try:
                feed.view = _apply(feed, one.delta)
            except ProtocolError:
                self.stats["bad_deltas"] += 1
                return updates, self._resync(feed, one, now, _GAP)
            feed.seq = one.seq
            updates += [self._update(feed, sid, _DELTA, one.delta) for sid in sorted(feed.sids)]
        feed.move(_FILLED)
        self.stats["repaired"] += 1
        return updates, []

    def on_replay(self, sender: str, replay: Replay,
                  now: float) -> tuple[list[Update], list[Effect]]:
        """Take a delta its publisher resent from its history, answering an announce.

        It counts as the publisher's answer (it lives), and is taken as the
        delta it was: applied if next, dropped if the view holds it already.
        """
        feed = self._feeds.get((sender, replay.dataindex))
        if feed is None:
            return [], []
        if feed.epoch == replay.epoch:
            feed.confirmed = now
        return self.on_delta(sender, _build_delta(replay.dataindex, replay.epoch, replay.seq,
                                                  replay.delta), now)

    def on_deltas(
        self, publisher: str, batch: list[list[Any]], now: float
    ) -> tuple[list[Update], list[Effect]]:
        """Take a frame's worth of deltas published by ``publisher``, in order.

        ``batch`` holds each delta's checked wire fields (codec.decode_fields):
        ``[dataindex, epoch, seq, delta]``. The same as :meth:`on_delta` for
        each, with the common case (a live feed, the next sequence number of
        the same epoch) in one loop that builds no Delta: the fanout hot path.
        Anything else goes through :meth:`on_delta`.
        """
        updates: list[Update] = []
        actions: list[Effect] = []
        feeds = self._feeds
        feed: _Feed | None = None
        apply = deltas.patch
        big, sliced = INDEX_MIN_ROWS, SLICED_ROWS
        live = FeedState.LIVE
        kind = _DELTA
        for fields in batch:
            dataindex, epoch, seq, change = fields
            if feed is None or dataindex != feed.dataindex:
                feed = feeds.get((publisher, dataindex))
            if feed is not None and feed.state is live and epoch == feed.epoch \
                    and seq == feed.seq + 1 and feed.applying is None \
                    and (type(feed.view) is not list or len(feed.view) < sliced):
                try:
                    view = feed.view
                    # A big table is changed through its kept index, not by
                    # freezing every row of it (see zdse.node.tableindex);
                    # a bigger one in slices (on_delta, advance).
                    if type(view) is list and len(view) >= big:
                        view = _apply(feed, change)
                    else:
                        feed.index = None  # else kept stale, should the view grow back
                        view = apply(view, change)
                except ProtocolError:
                    pass  # on_delta below counts it and resyncs
                else:
                    feed.view = view
                    feed.seq = seq
                    sids = feed.sids
                    if len(sids) == 1:
                        for sid in sids:
                            updates.append(_new(Update, (sid, publisher, dataindex, kind, seq,
                                                         change, view)))
                    else:
                        updates += [_new(Update, (sid, publisher, dataindex, kind, seq,
                                                  change, view)) for sid in sorted(sids)]
                    continue
            if feed is not None and epoch == feed.epoch and seq <= feed.seq:
                continue  # already in the view: the same delta by another cage
            more, acts = self.on_delta(publisher, _build_delta(*fields), now)
            updates += more
            actions += acts
            feed = None  # on_delta may have moved or dropped it
        return updates, actions

    # --- deltas applied in slices --------------------------------------------

    @property
    def slicing(self) -> bool:
        """Whether work on a big view waits to be done in slices: :meth:`advance` does it."""
        return bool(self._applying or self.dropped)

    def advance(self, now: float) -> tuple[list[Update], list[Effect]]:
        """Do one slice of the work big views left: apply a delta, or free a dropped view.

        A delta first (the oldest under way), its updates once it is whole:
        the feed's view, seq and index change only with the last slice, all
        at once; the deltas that came meanwhile are then taken, in order
        (the next of them may start applying in its turn).
        """
        if not self._applying:
            self.dropped.free_slice()
            return [], []
        feed = self._feeds[next(iter(self._applying))]
        work = feed.applying
        assert work is not None
        try:
            next(work.steps)
        except StopIteration as done:
            rows, index = done.value
        except ProtocolError:
            self._stop(feed)
            self.stats["bad_deltas"] += 1
            held, feed.held = feed.held, None
            resync = self._resync(feed, work.delta, now, _GAP)
            feed.buffer += [*work.queued, *(held.take_all() if held is not None else [])]
            return [], resync
        else:
            return [], []
        self._stop(feed)
        feed.view[:] = rows
        feed.index = index
        feed.seq = work.delta.seq
        updates = [self._update(feed, sid, _DELTA, work.delta.delta) for sid in sorted(feed.sids)]
        actions = []
        for d in work.queued:
            more, acts = self.on_delta(feed.publisher, d, now)
            updates += more
            actions += acts
        return updates, actions

    def _let_go(self, feed: _Feed) -> None:
        """The feed's view is no longer ours: a big one, and its index, freed in slices."""
        self.dropped.add(feed.view)
        if feed.index is not None:
            self.dropped.add(feed.index.rows)
        feed.index = None

    def _start(self, feed: _Feed, d: Delta) -> None:
        """Begin applying ``d`` (the next delta of a LIVE feed) to its big view in slices."""
        feed.applying = _Applying(d, tableindex.apply_rows(feed.view, feed.index, d.delta))
        self._applying[(feed.publisher, feed.dataindex)] = None

    def _stop(self, feed: _Feed) -> _Applying | None:
        """Forget the delta ``feed`` was applying, if any; return it."""
        applying, feed.applying = feed.applying, None
        if applying is not None:
            self._applying.pop((feed.publisher, feed.dataindex), None)
        return applying

    def _queue(self, feed: _Feed, d: Delta, now: float) -> list[Effect]:
        """Keep ``d`` until the delta ``feed`` is applying is whole; past the bound, resync."""
        work = feed.applying
        assert work is not None
        if len(work.queued) < MAX_BUFFERED_DELTAS:
            work.queued.append(d)
            return []
        # Far behind: a snapshot is cheaper than catching up.
        self._stop(feed)
        feed.held = None
        self.stats["gaps"] += 1
        return self._resync(feed, None, now, _GAP)

    def on_noroute(self, sub: Subscribe) -> list[Update]:
        """Nobody listens on the key of ``sub``: a "noroute" update if it has no publisher.

        The subscription stays (soft state): a publisher that joins later
        still gets it, through :meth:`on_joined` or the next re-announce.
        """
        own = self._subs.get(sub.sid)
        if own is None or own.feeds:
            return []
        own.no_route = True
        return [Update(own.sid, "", own.dataindex, _NOROUTE, 0, own.key, None)]

    def on_left(self, name: str) -> tuple[list[Update], list[Effect]]:
        """A publisher left the bus: its feeds end with a "lost" update."""
        self._parts.forget(sender=name)
        updates: list[Update] = []
        actions: list[Effect] = []
        for feed in [f for f in self._feeds.values() if f.publisher == name]:
            more, acts = self._drop_feed(feed)
            updates += more
            actions += acts
        return updates, actions

    def _drop_feed(self, feed: _Feed) -> tuple[list[Update], list[Effect]]:
        fkey = (feed.publisher, feed.dataindex)
        del self._feeds[fkey]
        self._stop(feed)
        self._let_go(feed)
        updates = []
        for sid in sorted(feed.sids):
            updates.append(
                Update(sid, feed.publisher, feed.dataindex, _LOST, feed.seq, None, None)
            )
            sub = self._subs.get(sid)
            if sub is not None:
                sub.feeds.discard(fkey)
        return updates, [RemoveFilter(topic(*fkey))]

    def on_joined(self, name: str, addresses: list[str], now: float) -> list[Effect]:
        """A service joined: announce at once the subscriptions it would receive."""
        actions: list[Effect] = []
        for sub in self._subs.values():
            if any(pattern_matches(p, sub.key) for p in [*addresses, "allservices"]):
                actions.append(Send(name, self._announce(sub)))
        return actions

    # --- time ---------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        """Re-announce subscriptions that are due; retry snapshots that did not come."""
        actions: list[Effect] = []
        for sender, sid in self._parts.stalled(now - 2 * self.refresh):
            # Its next part never came (lost on its way): ask again.
            self.stats["lost_parts"] += 1
            stalled = self._subs.get(sid)
            if stalled is not None:
                actions.append(Send(sender, Subscribe(sid, stalled.dataindex, {}, stalled.ttl)))
        for sub in self._subs.values():
            if now >= sub.next_announce:
                sub.next_announce = now + sub.refresh
                actions.append(Send(sub.key, self._announce(sub)))
        for feed in self._feeds.values():
            if feed.applying is not None:
                continue  # behind on purpose: its next delta is being applied
            if feed.held is not None:
                if feed.held.due(now, self.gap_window):
                    # No cage brought what was missing within the window:
                    # its publisher's history may still hold it.
                    held, feed.held = feed.held.take_all(), None
                    actions += self._repair(feed, None, now, _MISSING)
                    feed.buffer = held
            elif feed.state is FeedState.RESYNC or feed.state is FeedState.REPAIR:
                if now - feed.resync_sent >= self.refresh:
                    feed.resync_sent = now
                    # Not while its snapshot comes in parts: asking again would
                    # start them over (a big dict table's take longer than a
                    # refresh); a stalled one is asked again above.
                    if not any(self._parts.coming(feed.publisher, sid) for sid in feed.sids):
                        actions.append(self._sync(feed, min(feed.sids)))
            elif feed.owed > feed.seq and now - feed.owed_since >= CURRENT_GRACE:
                self.stats["owed"] += 1
                actions += self._repair(feed, None, now, _OWED)
        return actions

    def on_current(self, sender: str, current: Current, now: float) -> None:
        """The publisher lives, at ``current.seq``: the view holds it, or deltas are owed."""
        feed = self._feeds.get((sender, current.dataindex))
        if feed is not None and feed.epoch == current.epoch:
            feed.confirmed = now
            if current.seq > feed.seq:
                if feed.owed <= feed.seq:
                    feed.owed_since = now
                feed.owed = max(feed.owed, current.seq)
            elif feed.state is FeedState.REPAIR and not feed.buffer:
                feed.move(_FILLED)  # nothing was missing after all

    def expire(self, now: float) -> tuple[list[Update], list[Effect]]:
        """Drop, as "lost", feeds whose publisher has not answered for ``ttl``.

        A publisher answers every re-announce (a snapshot or a Current), so
        silence past the ttl means it is gone, even if no cage told us: it
        may have died while the cage was down.
        """
        gone = [f for f in self._feeds.values() if now - f.confirmed > self._ttl(f)]
        updates: list[Update] = []
        actions: list[Effect] = []
        for feed in gone:
            more, acts = self._drop_feed(feed)
            updates += more
            actions += acts
        return updates, actions

    def reannounce_all(self, now: float) -> list[Effect]:
        """Announce every subscription now (after registering again with a cage).

        Every feed gets a fresh ttl to be confirmed in: the cage was away,
        not necessarily its publisher.
        """
        for feed in self._feeds.values():
            feed.confirmed = now
        for sub in self._subs.values():
            sub.next_announce = now
        return self.tick(now)

    def subdata(self) -> dict[str, Any]:
        """What this service subscribes to (reserved request)."""
        return {
            sid: {
                "key": sub.key,
                "dataindex": sub.dataindex,
                "publishers": {
                    pub: {"seq": self._feeds[(pub, di)].seq,
                          "state": self._feeds[(pub, di)].state.value,
                          "buffered": len(self._feeds[(pub, di)].buffer)
                          + len(self._feeds[(pub, di)].held or ())}
                    for pub, di in sorted(sub.feeds) if (pub, di) in self._feeds
                },
            }
            for sid, sub in sorted(self._subs.items())
        }

    # --- helpers ------------------------------------------------------------

    def _announce(self, sub: _Subscription) -> Subscribe:
        # A snapshot in parts under way counts as held: the publisher carries
        # on with it (a Current), rather than start it over at every refresh.
        seen = self._parts.under_way(sub.sid)
        seen.update({
            pub: _seen(self._feeds[(pub, di)])
            for pub, di in sub.feeds
            if (pub, di) in self._feeds and self._feeds[(pub, di)].state is not FeedState.RESYNC
        })
        return Subscribe(sub.sid, sub.dataindex, seen, sub.ttl)

    def drop_parts(self) -> None:
        """Drop every snapshot in parts under way (a part of one may have been lost)."""
        self._parts.forget()

    def _ttl(self, feed: _Feed) -> float:
        """A feed's ttl: the longest of its subscriptions' (the one re-announced least often)."""
        subs = self._subs
        return max((subs[sid].ttl for sid in feed.sids if sid in subs), default=self.ttl)

    def _sync(self, feed: _Feed, sid: str) -> Send:
        seen = {feed.publisher: _seen(feed)}
        if feed.state is FeedState.RESYNC:
            seen = {}  # whatever the numbers say, we want a snapshot
        sub = self._subs.get(sid)
        ttl = self.ttl if sub is None else sub.ttl
        return Send(feed.publisher, Subscribe(sid, feed.dataindex, seen, ttl))

    def _repair(self, feed: _Feed, d: Delta | None, now: float,
                event: FeedInput) -> list[Effect]:
        """Ask for the deltas after the view (or a snapshot); ``d``, past the gap, waits."""
        return self._ask(feed, d, now, event, "repairs")

    def _resync(self, feed: _Feed, d: Delta | None, now: float,
                event: FeedInput) -> list[Effect]:
        """Ask for a snapshot; ``d``, the delta that showed a gap, waits for it."""
        return self._ask(feed, d, now, event, "resyncs")

    def _ask(self, feed: _Feed, d: Delta | None, now: float, event: FeedInput,
             counter: str) -> list[Effect]:
        """Move the feed on ``event`` and ask its publisher (what for, the new state says)."""
        self.stats[counter] += 1
        feed.move(event)
        feed.buffer = [] if d is None else [d]
        feed.resync_sent = now
        return [self._sync(feed, min(feed.sids))]

    @staticmethod
    def _update(feed: _Feed, sid: str, kind: UpdateKind, data: Any) -> Update:
        return _build_update(sid, feed.publisher, feed.dataindex, kind, feed.seq, data,
                             feed.view)
