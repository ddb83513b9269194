"""A node's protocol logic, whole: frames in, frames and events out. Pure.

:class:`NodeCore` joins the session (registration, heartbeats), the
publications (pubData), the subscriptions (subData) and the pending
requests. Its shell (:class:`zdse.node.bus.Bus`, or :class:`zdse.testing.FakeNet`
in tests) feeds it inputs (frames, local calls, the time) and carries out
what each returns (:mod:`zdse.node.effects`):

* a :class:`~zdse.node.effects.Effects` for frames read and ticks, and for the
  local calls that may do several things (start, bye, subscribe,
  unsubscribe, set_addresses, refuse): the frames to send, the SUB filter
  changes, and the :data:`~zdse.node.events.Event` values to dispatch
  (callbacks, settled requests, requests to answer);
* the one :data:`~zdse.node.effects.Frame` to send (or None) for the
  per-message calls: send, reply, request, publish and its kin.

It holds nothing for the shell between calls: the shell reads what it needs
through the queries at the end of the class, never the sub-cores.

With several cages (docs/redundancy.md) it keeps a session, a read count
and a probe per cage; the frames it reads come with the index of their
cage, an :class:`~zdse.node.effects.Effects` says each frame's cage, and
:meth:`NodeCore.route` says where the frame a per-message call returned goes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from zdse.errors import MessageTooLarge, ProtocolError
from zdse.log import sampled
from zdse.node import delta as deltas
from zdse.node import tableindex
from zdse.node.cages import Departures, RoundTrips
from zdse.node.dropped import Dropped
from zdse.node.effects import (
    NOTHING,
    AddFilter,
    Effect,
    Effects,
    Frame,
    RemoveFilter,
    Send,
    SendPacked,
    build_effects,
)
from zdse.node.events import (
    BadFrame,
    Change,
    Event,
    IncomingMessage,
    IncomingRequest,
    Membership,
    Registered,
    SessionChange,
)
from zdse.node.history import History
from zdse.node.parts import EntryParts, PartStream, RowParts
from zdse.node.publications import Prepared, Publications
from zdse.node.requests import Outcome, PendingRequests
from zdse.node.seen_requests import SeenRequests
from zdse.node.session import PROBE_DATAINDEX, Session, SessionState
from zdse.node.subscriptions import Subscriptions, Update
from zdse.node.tableindex import INDEX_MIN_ROWS, Steps
from zdse.wire import codec
from zdse.wire.codec import EVENT_TOPIC, FLAG_GATHER, Kind
from zdse.wire.frozen import builder
from zdse.wire.limits import GAP_WINDOW_BEATS, MAX_ENTRY_BYTES, MAX_MESSAGE_BYTES, PART_BYTES
from zdse.wire.receipts import ReadCount

__all__ = [
    "Event",
    "IncomingMessage",
    "IncomingRequest",
    "Membership",
    "NodeCore",
    "Registered",
    "SessionChange",
]


_MESSAGE_HEADER = codec.header(Kind.MESSAGE)
_DELTA_HEADER = codec.header(Kind.DELTA)
_PROBE_KEY = PROBE_DATAINDEX.encode()
_SNAPSHOT_HEADER = codec.header(Kind.SNAPSHOT)
_PART_HEADER = codec.header(Kind.PART)
#: What a snapshot of data adds to a "replace" delta of it, at most: a
#: subscription id (a uuid4 hex: 34 bytes packed) and a seq grown from 1
#: byte to 9, less the ["replace", ...] wrapper it lacks (9 bytes packed).
SNAPSHOT_OVER_REPLACE = 34 + (9 - 1) - 9
#: What a snapshot (or a part of one) adds to a table's packed rows, at
#: most: the array headers (5 bytes each), a subscription id, the dataindex
#: (at most 255 bytes and its header), an epoch (a uuid4 hex), the largest
#: seq, and a part's two numbers.
SNAPSHOT_OVER_TABLE = 5 + 34 + 258 + 34 + 9 + 2 * 9 + 5


# The per-message values of the hot paths, built without their frozen
# __init__ (see zdse.wire.frozen); every other value is built the usual way.
_build_message = builder(codec.Message)
_build_snapshot = builder(codec.Snapshot)
_build_delta = builder(codec.Delta)
_build_incoming = builder(IncomingMessage)
_NONE: list[Any] = NOTHING.frames
#: A frame's cage with several cages: every cage that knows the node.
EVERY = -1
#: A frame's cage with several cages: the one that carries requests (RoundTrips).
PREFERRED = -2
_DELTA_KIND = int(Kind.DELTA.value)


class NodeCore:
    """Everything a node decides.

    Args:
        register: the name, addresses and info to register with.
        epoch: identifies this run of the node (see Publications).
        refresh: seconds between re-announcements of each subscription.
        now: the time it starts.
        cages: how many cages the node lists.
    """

    def __init__(self, register: codec.Register, epoch: str, refresh: float, now: float,
                 cages: int = 1) -> None:
        self.name = register.name
        #: One session per cage, each the one-cage session machine.
        self.sessions = [Session(register, now) for _ in range(cages)]
        #: Whether the node lists more than one cage.
        self.several = cages > 1
        #: The deltas it published lately, as sent: resent to a subscriber that missed them.
        self.history = History()
        #: Big versions of our tables replaced, freed in slices (advance).
        self.dropped = Dropped(tableindex.SLICED_ROWS, tableindex.SLICE_ROWS)
        self.publications = Publications(register.name, epoch, self.history, self.dropped)
        self.subscriptions = Subscriptions(refresh)
        self.requests = PendingRequests()
        self.stats: Counter[str] = Counter()
        self.last_bad = ""
        #: Snapshots in parts under way, by (subscriber, sid): at most one
        #: each, holding a reference to a version's packed rows.
        self._streams: dict[tuple[bytes, str], PartStream] = {}
        #: Where this node's probes come back to it (see zdse.node.session).
        self._probe_topic = codec.topic(self.name, PROBE_DATAINDEX)
        #: What it read from each cage, for its receipts (zdse.wire.receipts).
        self.reads_of = [ReadCount() for _ in range(cages)]
        self.reads = self.reads_of[0]
        self.trips = RoundTrips(cages)
        self.departures = Departures()
        self.seen_requests = SeenRequests()
        #: Plain requests that met NoRoute: the cages tried so far, by cid.
        self._tried: dict[int, set[int]] = {}
        #: Gathered requests with several cages: (cages sent through, said NoRoute), by cid.
        self._gathers: dict[int, tuple[int, set[int]]] = {}
        #: Subscriptions whose announce met NoRoute: the cages that said so, by sid.
        self._announce_tried: dict[str, set[int]] = {}
        #: The cage that refused the name first, if one did.
        self.refused_by: int | None = None
        #: The cage the frame being handled came from, and the time last told.
        self._cage = 0
        self._now = now
        #: Where the frame the last per-message call returned goes (several cages).
        self._route: list[int] | None = None
        #: The cages a delta and a one-cage frame go through, kept until an input
        #: that may change them (route).
        self._routes: tuple[list[int], list[int], list[int]] | None = None
        # What the input being handled calls for so far: taken into its Effects
        # (see _step) before the call returns, never held across calls.
        self._frames: list[Frame] = []
        #: With several cages: the cage of each of those frames.
        self._targets: list[int] = []
        self._add: list[bytes] = []
        self._remove: list[bytes] = []
        self._news: list[Event] = []  # BadFrame: found where no events list is at hand

    # --- local calls --------------------------------------------------------

    def start(self, now: float) -> Effects:
        """The first registration (with every cage); listen for our own probes."""
        self._add.append(self._probe_topic)
        for cage, session in enumerate(self.sessions):
            self._control(session.start(now), cage)
        return self._step([])

    def bye(self) -> Effects:
        """A goodbye to every cage that knows us."""
        for cage, session in enumerate(self.sessions):
            if session.known:
                self._control(codec.Bye(), cage)
        return self._step([])

    def publish(self, dataindex: str, data: Any,
                prepared: Prepared | None = None) -> Frame | None:
        """Store data; return the delta to send if it changed and anyone subscribes.

        ``prepared``, if given, is ``data`` already indexed and diffed by
        :meth:`Publications.prepare` (a shell spreads that over its loop).

        Raises:
            MessageTooLarge: a snapshot of ``data`` would exceed MAX_MESSAGE_BYTES.
            ProtocolError: msgpack cannot represent ``data``, or ``dataindex``
                is the reserved PROBE_DATAINDEX.
            Either way nothing is stored or sent: no subscriber could ever
            be given a snapshot of it.
        """
        _not_reserved(dataindex)
        if prepared is None:
            if not (isinstance(data, list | dict) and len(data) >= INDEX_MIN_ROWS):
                return self._publish_value(dataindex, data)
            prepared = tableindex.run(self.publications.prepare(dataindex, data))
        return self._publish_table(dataindex, prepared)

    def _publish_value(self, dataindex: str, data: Any) -> Frame | None:
        """:meth:`publish` of a value too small to index: diffed at once (the hot path)."""
        bodies: list[bytes] = []

        def admit(d: codec.Delta) -> None:
            bodies.append(_encoded_value(d, data))

        return self._delta(dataindex, self.publications.publish(dataindex, data, admit), bodies)

    def _publish_table(self, dataindex: str, prepared: Prepared) -> Frame | None:
        """:meth:`publish` of a version prepared (a big table indexed and diffed)."""
        index = prepared.index
        bodies: list[bytes] = []

        def admit(d: codec.Delta) -> None:
            # Only data that changed gets here (an unchanged poll of a big
            # table costs no encoding).
            change = d.delta
            if index is not None and index.rows is not None:
                # A big list table: its snapshot travels in parts, and a
                # change too big for one message asks subscribers for one.
                largest = index.largest if index.largest >= 0 \
                    else max(map(len, index.rows), default=0)
                if largest + SNAPSHOT_OVER_TABLE > MAX_MESSAGE_BYTES:
                    raise MessageTooLarge(
                        f"a row of {dataindex!r} would exceed {MAX_MESSAGE_BYTES} bytes")
                try:
                    if change[0] == deltas.REPLACE and \
                            index.size + SNAPSHOT_OVER_TABLE > PART_BYTES:
                        # Whole, it would be one long decode for every
                        # subscriber: they fetch it in parts instead.
                        raise MessageTooLarge("a snapshot in parts instead")
                    if change[0] == deltas.REPLACE:
                        body = codec.encode_with_rows((d.dataindex, d.epoch, d.seq),
                                                      index.rows, deltas.REPLACE)
                    else:
                        body = codec.encode_one(d)
                except MessageTooLarge:
                    body = codec.encode_one(
                        _build_delta(d.dataindex, d.epoch, d.seq, [deltas.SNAPSHOT]))
            elif index is not None and index.keys is not None:
                # A big dict table: its snapshot travels in parts too, each
                # entry packed as its part goes (so it must leave room).
                if index.keys and max(map(len, index.keys.values())) + SNAPSHOT_OVER_TABLE \
                        > MAX_ENTRY_BYTES:
                    raise MessageTooLarge(
                        f"a value of {dataindex!r} would exceed {MAX_ENTRY_BYTES} bytes")
                try:
                    if change[0] == deltas.REPLACE and \
                            index.size + SNAPSHOT_OVER_TABLE > PART_BYTES:
                        raise MessageTooLarge("a snapshot in parts instead")
                    body = codec.encode_one(d)
                except MessageTooLarge:
                    body = codec.encode_one(
                        _build_delta(d.dataindex, d.epoch, d.seq, [deltas.SNAPSHOT]))
            else:
                body = _encoded_value(d, prepared.data)
            # The delta is encoded once, to send.
            bodies.append(body)

        return self._delta(dataindex, self.publications.commit(dataindex, prepared, admit),
                           bodies)

    def prepare(self, dataindex: str, data: Any) -> Steps[Prepared]:
        """``data`` indexed and diffed against what is published, in slices.

        What :meth:`publish` does before storing, as steps a shell spreads
        over its event loop (:meth:`Publications.prepare`); give the result
        to :meth:`publish`.

        Raises:
            ProtocolError: a row msgpack cannot represent, or ``dataindex`` is
                the reserved PROBE_DATAINDEX.
        """
        _not_reserved(dataindex)
        return self.publications.prepare(dataindex, data)

    def replace(self, dataindex: str, value: Any) -> Frame | None:
        """Store ``value`` whole; return it as a ``replace`` delta to send (no diff), if due.

        Raises:
            MessageTooLarge: a snapshot of ``value`` would exceed MAX_MESSAGE_BYTES.
            ProtocolError: msgpack cannot represent ``value``.
        """
        _not_reserved(dataindex)
        body: list[bytes] = []

        def admit(d: codec.Delta) -> None:
            encoded = codec.encode_one(d)
            if len(encoded) + SNAPSHOT_OVER_REPLACE > MAX_MESSAGE_BYTES:
                raise MessageTooLarge(
                    f"a snapshot of {dataindex!r} would exceed {MAX_MESSAGE_BYTES} bytes")
            body.append(encoded)

        return self._delta(dataindex, self.publications.replace(dataindex, value, admit), body)

    def change_keys(self, dataindex: str, put: Mapping[Any, Any],
                    delete: Iterable[Any] = ()) -> Frame | None:
        """Put and delete keys of a dict table; return exactly that delta to send, if due.

        See :meth:`Publications.change_keys` (and what it raises); a delta
        too big for one message is sent as a ``snapshot`` delta (subscribers
        fetch the table, in parts).
        """
        return self._change(dataindex, lambda admit: self.publications.change_keys(
            dataindex, put, delete, admit))

    def change_rows(self, dataindex: str, add: Iterable[Any] = (),
                    remove: Iterable[Any] = ()) -> Frame | None:
        """Add and remove rows of a list table; return exactly that delta to send, if due.

        See :meth:`Publications.change_rows` (and what it raises); a delta
        too big for one message is sent as a ``snapshot`` delta (subscribers
        fetch the table, in parts).
        """
        return self._change(dataindex, lambda admit: self.publications.change_rows(
            dataindex, add, remove, admit))

    def _change(self, dataindex: str,
                change: Callable[[Callable[[codec.Delta], None]], codec.Delta | None],
                ) -> Frame | None:
        """Make a change, its delta encoded (once) before anything is stored."""
        _not_reserved(dataindex)
        body: list[bytes] = []

        def admit(d: codec.Delta) -> None:
            try:
                body.append(codec.encode_one(d))
            except MessageTooLarge:
                # The table is sent in parts: subscribers fetch it instead.
                body.append(codec.encode_one(
                    _build_delta(d.dataindex, d.epoch, d.seq, [deltas.SNAPSHOT])))

        return self._delta(dataindex, change(admit), body)

    def _delta(self, dataindex: str, sent: codec.Delta | None, body: list[bytes]) -> Frame | None:
        """A stored change's encoded delta, if it is to be sent and a cage takes it."""
        # Sent while JOINING too: subscribers may hold a snapshot of ours;
        # and to a cage held for LOST (Session.carries): it may be stalled.
        if sent is None:
            if body:
                # Stored, and nobody subscribes: nobody can miss it either.
                self.history.forget(dataindex)
            return None
        # Kept as packed, whether a cage takes it now or not (zdse.node.history).
        self.history.record(dataindex, sent.seq, body[0])
        if not self.several:
            return (_DELTA_HEADER, dataindex.encode(), body[0]) \
                if self.sessions[0].carries(len(body[0])) else None
        if self.known or self.lost_cages():
            return (_DELTA_HEADER, dataindex.encode(), body[0])
        return None

    def subscribe(self, key: str, dataindex: str, now: float, sid: str | None = None,
                  refresh: float | None = None) -> tuple[str, Effects]:
        """Start a subscription; return its id and its announce (see Subscriptions.subscribe)."""
        codec.validate_pattern(key, "key")
        sid, actions = self.subscriptions.subscribe(key, dataindex, now, sid, refresh)
        if self.registered:
            self._act(actions)
        return sid, self._step([])

    def set_addresses(self, addresses: list[str]) -> Effects:
        """Listen on ``addresses`` besides the name from now on; tell the cage at once.

        The registration is sent again (the cage changes the routes in
        place); a node not registered yet registers with these.

        Raises:
            ProtocolError: an address is not valid (nothing changes then).
        """
        old = self.session.register
        register = codec.Register(old.name, list(addresses), old.info)
        for cage, session in enumerate(self.sessions):
            session.register = register
            if session.state is SessionState.REGISTERED:
                self._control(register, cage)
        return self._step([])

    def unsubscribe(self, sid: str) -> Effects:
        """End a subscription."""
        self._announce_tried.pop(sid, None)
        self._act(self.subscriptions.unsubscribe(sid))
        return self._step([])

    def request(self, key: str, dataindex: str, args: Any, gather: bool,
                timeout: float = 0.0) -> tuple[int, Frame]:
        """A request, to be answered within ``timeout`` seconds: its correlation id, its frame."""
        codec.validate_pattern(key, "key")
        cid = self.requests.new(key, gather)
        try:
            frame = _encode(key, codec.Request(cid, dataindex, args, timeout),
                            FLAG_GATHER if gather else 0)
        except (ProtocolError, MessageTooLarge):
            self.requests.cancel(cid)
            raise
        if self.several and gather:
            # Through every cage: each replier runs it once (SeenRequests),
            # and the requester counts replies by name.
            cages = self.registered_cages() or self.known_cages() or [0]
            gathers = self._gathers
            if len(gathers) > 4 * len(self.requests) + 64:
                # Those answered or timed out: only a pending one can meet NoRoute.
                self._gathers = gathers = {c: g for c, g in gathers.items() if c in self.requests}
            gathers[cid] = (len(cages), set())
            self._route = cages
        return cid, frame

    def send(self, key: str, dataindex: str, data: Any) -> Frame:
        """A one-way message's frame."""
        codec.validate_pattern(key, "key")
        # What _encode does, without its look-ups: the sender's per-message hot path.
        return (_MESSAGE_HEADER, key.encode(), codec.encode_one(_build_message(dataindex, data)))

    def reply(self, sender: str, cid: int, ok: bool, value: Any) -> Frame:
        """The answer to request ``cid`` of ``sender`` (a value that cannot be sent: an error).

        With several cages it goes back through the cage the request came by
        (the requester reached that one), else the preferred one (:meth:`route`).
        """
        if self.several:
            came = self.seen_requests.cage_of(sender, cid)
            self._route = [(self.preferred(self._now) or 0) if came is None else came]
        try:
            return _encode(sender, codec.Reply(cid, ok, value))
        except (ProtocolError, MessageTooLarge) as exc:
            return _encode(sender, codec.Reply(cid, False, [type(exc).__name__, str(exc)]))

    def timeout(self, cid: int) -> Outcome | None:
        """Request ``cid``'s deadline passed: how it ended (None if it already had)."""
        return self.requests.timeout(cid)

    def cancel(self, cid: int) -> None:
        """Forget request ``cid``: its caller went away."""
        self.requests.cancel(cid)

    def count(self, what: str, n: int = 1) -> int:
        """The shell reports what it did or saw (frames sent, a callback that
        failed, ...): counted among the node's statistics; return the count."""
        self.stats[what] += n
        return self.stats[what]

    # --- input from the cage -----------------------------------------------

    def receive(self, frames: list[bytes], now: float, cage: int = 0) -> Effects:
        """Take a message from the DEALER of cage ``cage``: ``[header, sender, key, body]``,
        or ``[sender, packed]`` (a routed message, :func:`zdse.wire.codec.pack`)."""
        self._cage = cage
        self._now = now
        reads = self.reads_of[cage]
        if reads.take(frames):
            self._receipt(cage)
        try:
            if len(frames) == 2:
                head, _, body = codec.unpack(frames[1])
                kind, flags = codec.parse_header(head)
                if kind not in codec.ROUTED_KINDS:
                    raise ProtocolError(f"{kind.name} is not sent packed")
                sender = frames[0].decode()
            elif len(frames) == 4:
                kind, flags = codec.parse_header(frames[0])
                sender = frames[1].decode()
                body = frames[3]
            else:
                raise ProtocolError(f"expected 2 or 4 frames from the cage, got {len(frames)}")
            messages = codec.decode_body(kind, body)
        except (ProtocolError, UnicodeDecodeError) as exc:
            self._bad(exc)
            return self._step([])
        if kind is Kind.WELCOME and messages:
            welcome = messages[-1]
            assert isinstance(welcome, codec.Welcome)
            reads.welcomed(welcome.sent, frames)
        if kind is Kind.MESSAGE:
            # A batch of one-way messages: nothing to dispatch but the events.
            # (decode_body of MESSAGE gives codec.Message values only.)
            build = _build_incoming
            return self._step([build(sender, msg) for msg in messages])
        events: list[Event] = []
        if self.several and kind is Kind.REQUEST:
            # A gathered request comes through every cage: take it once, and
            # answer by the cage it came by first.
            seen, first = self.seen_requests, list[codec.MessageValue]()
            for msg in messages:
                assert isinstance(msg, codec.Request)
                if not flags & FLAG_GATHER:
                    # A plain request comes by one cage: remember which, to answer by it.
                    seen.note(sender, msg.cid, msg.timeout, now, cage)
                    first.append(msg)
                elif seen.first(sender, msg.cid, msg.timeout, now, cage):
                    first.append(msg)
                else:
                    self.stats["requests_seen_twice"] += 1
            messages = first
        for msg in messages:
            try:
                self._dispatch(sender, msg, now, events)
            except (ProtocolError, MessageTooLarge) as exc:
                # Its answer cannot be sent (a huge subscription id, say):
                # bad input like any other, counted and dropped.
                self._bad(exc)
        return self._step(events)

    def receive_published(self, frames: list[bytes], now: float, cage: int = 0) -> Effects:
        """Take a message from the SUB socket of cage ``cage``: ``[topic, header, body]``."""
        self._cage = cage
        if frames and frames[0] != EVENT_TOPIC:
            # One message of the cage's PUB queue each: what it dropped for a
            # full queue shows as fewer of these than were published.
            self.stats["pub_frames"] += 1
        try:
            if len(frames) != 3:
                raise ProtocolError(f"expected 3 frames from the PUB socket, got {len(frames)}")
            kind, _ = codec.parse_header(frames[1])
            topic = frames[0]
            publisher = "" if topic == EVENT_TOPIC else topic.split(b"\x00", 1)[0].decode()
            if kind is Kind.DELTA:
                # A batch of one publisher's deltas, the fanout hot path: their
                # fields go to on_deltas, which builds a Delta only to keep it.
                batch = codec.decode_fields(kind, frames[2])
                if topic == self._probe_topic:
                    return self._step(self._on_probes(batch, now, cage))
            else:
                messages = codec.decode_body(kind, frames[2])
        except (ProtocolError, UnicodeDecodeError) as exc:
            self._bad(exc)
            return self._step([])
        if kind is Kind.DELTA:
            updates, actions = self.subscriptions.on_deltas(publisher, batch, now)
            if actions:
                self._act(actions)
            return self._step(updates)  # type: ignore[arg-type]  # Updates are Events
        events: list[Event] = []
        for msg in messages:
            if isinstance(msg, codec.Delta):
                self._take(self.subscriptions.on_delta(publisher, msg, now), events)
            elif isinstance(msg, codec.Joined):
                if self.several:
                    self.departures.on_joined(msg.name)
                self._act(self.subscriptions.on_joined(msg.name, msg.addresses, now))
                events.append(Membership("joined", msg.name,
                                          [a for a in msg.addresses if a != msg.name], ""))
            elif isinstance(msg, codec.Left):
                if self.several:
                    # One cage losing a service is not the service leaving:
                    # another cage may still carry it.
                    known = self.known_cages()
                    if not self.departures.on_left(msg.name, cage, known or [cage]):
                        continue
                self._left(msg.name, msg.reason, events)
        return self._step(events)

    @property
    def slicing(self) -> bool:
        """Whether work on a big view waits to be done in slices: call :meth:`advance`."""
        return self.subscriptions.slicing or bool(self.dropped)

    def advance(self, now: float) -> Effects:
        """Do the next slice (up to SLICE_ROWS rows) of the work big views left.

        A delta to a big view, applied in slices: the view changes, and its
        subscriptions' updates come, with the last one. Then big views
        dropped (their publisher left, a snapshot replaced them) and big
        versions of our own tables replaced, freed in slices. A shell calls
        this between its loop's turns while :attr:`slicing`, so the loop
        never waits for the whole of either.
        """
        self._now = now
        if not self.subscriptions.slicing:
            self.dropped.free_slice()
            return NOTHING
        events: list[Event] = []
        self._take(self.subscriptions.advance(now), events)
        return self._step(events)

    def _left(self, name: str, reason: str, events: list[Event]) -> None:
        """Service ``name`` left the bus: forget its subscriptions, lose its feeds."""
        self.publications.forget(name)
        self._take(self.subscriptions.on_left(name), events)
        events.append(Membership("left", name, [], reason))

    def _cage_gone(self, cage: int, events: list[Event]) -> None:
        """Cage ``cage`` no longer knows us: what the others all said left has left."""
        self.trips.restart(cage)
        if self.several:
            for name in self.departures.on_cage_gone(cage, self.known_cages()):
                self._left(name, "left", events)

    def refuse(self, why: str, now: float, cage: int = 0) -> Effects:
        """The shell saw cage ``cage`` refuse our CURVE key at the handshake: a final refusal."""
        self._cage = cage
        events: list[Event] = []
        self._on_error(codec.Error("forbidden", why), now, events)
        return self._step(events)

    def disconnected(self, cage: int) -> None:
        """The shell saw cage ``cage``'s connection close: carry requests elsewhere."""
        self.trips.disconnected(cage)
        self._routes = None

    def tick(self, now: float) -> Effects:
        """Beat, re-announce, expire; probe our SUBs; notice a silent cage."""
        self._now = now
        self._routes = None
        events: list[Event] = []
        for cage, session in enumerate(self.sessions):
            tick = session.tick(now)
            for msg in tick.send:
                self._control(msg, cage)
                if isinstance(msg, codec.Heartbeat):
                    self.trips.beat_sent(cage, now)
                    self._receipt(cage)
            if tick.probe:
                self._probe(cage)
            if tick.lost:
                silent = f"no word from the cage for {session.expiry}s"
                events.append(SessionChange(Change.LOST, silent, cage))
                self._cage_gone(cage, events)
            if tick.sub_silent:
                events.append(SessionChange(Change.SUB_SILENT, f"welcomed, but no probe came "
                                            f"back on the SUB for {session.expiry}s; still "
                                            "probing", cage))
        if self.registered:
            self._act(self.subscriptions.tick(now))
            self._take(self.subscriptions.expire(now), events)
        if self.known and self.publications.expire(now) and self._streams:
            # A subscriber forgotten for its silence takes no more parts.
            for key, stream in list(self._streams.items()):
                if (stream.fields[1], key[1]) not in self.publications.readers_of(key[0].decode()):
                    del self._streams[key]
        return self._step(events)

    def _probe(self, cage: int) -> None:
        """Publish a probe to ourselves through ``cage``: it comes back once its SUB receives."""
        epoch, number = self.sessions[cage].probe()
        body = codec.encode_one(codec.Delta(PROBE_DATAINDEX, epoch, number, None))
        self._emit((_DELTA_HEADER, _PROBE_KEY, body), cage)

    def _on_probes(self, batch: list[list[Any]], now: float, cage: int) -> list[Event]:
        """Our probe came back: the SUB receives, the node is registered with that cage."""
        session = self.sessions[cage]
        self._routes = None
        for _, epoch, number, _ in batch:
            others = self.several and any(
                s.state is SessionState.REGISTERED for s in self.sessions if s is not session)
            if session.on_probe(epoch, number):
                if not others:
                    # Subscriptions are announced only now: a snapshot taken
                    # before the SUB received would be followed by deltas it
                    # could miss unseen (see zdse.node.session). A cage
                    # joining others already registered needs no announce:
                    # the deltas' topics are filtered on every SUB alike.
                    self._act(self.subscriptions.reannounce_all(now))
                return [Registered(session.registrations > 1, session.cage_epoch, cage)]
        return []

    # --- what the shell may read ---------------------------------------------

    @property
    def session(self) -> Session:
        """The session that speaks for the node: with one cage, its only one.

        With several: a refused one (the node steps down), else a registered
        one, else one the cage knows, else the first.
        """
        sessions = self.sessions
        if not self.several:
            return sessions[0]
        for state in (SessionState.REFUSED, SessionState.REGISTERED, SessionState.JOINING):
            for session in sessions:
                if session.state is state:
                    return session
        return sessions[0]

    @property
    def registered(self) -> bool:
        """Whether a cage knows this node and its SUB has proven to receive."""
        if not self.several:
            return self.sessions[0].state is SessionState.REGISTERED
        return any(s.state is SessionState.REGISTERED for s in self.sessions)

    @property
    def known(self) -> bool:
        """Whether a cage knows this node (welcomed, its SUB proven or not)."""
        return any(s.known for s in self.sessions)

    def registered_cages(self) -> list[int]:
        """The cages whose session is registered, in the order listed."""
        return [i for i, s in enumerate(self.sessions) if s.state is SessionState.REGISTERED]

    def known_cages(self) -> list[int]:
        """The cages that know the node (welcomed, their probe back or not)."""
        return [i for i, s in enumerate(self.sessions) if s.known]

    def lost_cages(self) -> list[int]:
        """The cages held for lost: registered once, silent for an expiry."""
        return [i for i, s in enumerate(self.sessions) if s.state is SessionState.LOST]

    def connecting_cages(self) -> list[int]:
        """The cages that have neither welcomed nor refused the node (yet)."""
        return [i for i, s in enumerate(self.sessions) if s.state is SessionState.CONNECTING]

    def preferred(self, now: float, tried: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The cage for a request or message: the fastest registered one not ``tried``.

        Falls back on a cage that knows the node, then on any, when none is
        registered (it may be just joining). None when all were tried.
        """
        for pool in (self.registered_cages(), self.known_cages(),
                     range(len(self.sessions))):
            cage = self.trips.choose(pool, now, tried)
            if cage is not None:
                return cage
        return None

    def route(self, frame: Frame) -> list[int]:
        """With several cages, the cages the frame a per-message call just returned goes
        through: a delta through every cage that knows us (and, within a budget, those
        held for lost: :meth:`Session.carries`), a gathered request through
        every registered one, a reply back the way its request came, anything else
        through the preferred cage. (With one cage: [0].)
        """
        if not self.several:
            return [0]
        route, self._route = self._route, None
        if route is not None:
            return route
        # Per message (a sender's, a publisher's hot path): the choice is
        # kept between the inputs that may change it (ticks, a cage's word).
        routes = self._routes
        if routes is None:
            routes = self._routes = (self.known_cages(), [self.preferred(self._now) or 0],
                                     self.lost_cages())
        if frame[0][1] != _DELTA_KIND:
            return routes[1]
        if not routes[2]:
            return routes[0]
        # A cage held for lost may only be stalled: it gets deltas within a budget.
        size = len(frame[-1])
        return routes[0] + [c for c in routes[2] if self.sessions[c].carries(size)]

    @property
    def refusal(self) -> tuple[str, str]:
        """Why the cage refused the name: its error code and message ('' and '' if it did not).

        With several cages, :attr:`refused_by` says which cage refused.
        """
        return self.session.refusal_code, self.session.refusal

    @property
    def expiry(self) -> float:
        """Seconds of silence after which the cage is taken for lost (and a backlog stale)."""
        return self.session.expiry

    @property
    def addresses(self) -> list[str]:
        """The addresses the node registers besides its name."""
        return list(self.session.register.addresses)

    def tick_in(self, now: float) -> float:
        """Seconds until :meth:`tick` is next due."""
        session = self.session
        return min(session.heartbeat / 4, self.subscriptions.min_refresh() / 4,
                   min(s.due_in(now) for s in self.sessions))

    def published(self, dataindex: str) -> tuple[bool, Any]:
        """Whether ``dataindex`` is published here, and its data."""
        pubs = self.publications
        if dataindex in pubs.dataindexes():
            return True, pubs.data(dataindex)
        return False, None

    def pubdata(self) -> dict[str, Any]:
        """What this node publishes, and to whom (reserved request ``pubdata``)."""
        return self.publications.pubdata()

    def subdata(self) -> dict[str, Any]:
        """What this node subscribes to (reserved request ``subdata``)."""
        return self.subscriptions.subdata()

    def views(self, sid: str) -> dict[str, Any]:
        """Subscription ``sid``'s views, by publisher; {} if none."""
        return self.subscriptions.view(sid)

    def has_subscription(self, sid: str) -> bool:
        """Whether ``sid`` is a live subscription."""
        return self.subscriptions.has(sid)

    def sids_for(self, key: str, dataindex: str) -> list[str]:
        """The ids of the subscriptions to ``dataindex`` on ``key``."""
        return self.subscriptions.sids_for(key, dataindex)

    def statistics(self) -> dict[str, int]:
        """The node's counters, its subscriptions' and its publications' waiting ones among them."""
        pubs = self.publications
        return {**self.stats, **self.subscriptions.stats,
                "waiting_subscriptions": pubs.waiting, "waiting_refused": pubs.waiting_refused}

    # --- dispatch -----------------------------------------------------------

    def _dispatch(self, sender: str, msg: codec.MessageValue, now: float,
                  events: list[Event]) -> None:
        if isinstance(msg, codec.Request):
            events.append(IncomingRequest(sender, msg))
        elif isinstance(msg, codec.Reply):
            self._settle(self.requests.on_reply(sender, msg), events)
        elif isinstance(msg, codec.Snapshot):
            self._announce_tried.pop(msg.sid, None)
            self._take(self.subscriptions.on_snapshot(sender, msg, now), events)
        elif isinstance(msg, codec.SnapshotPart):
            self._take(self.subscriptions.on_part(sender, msg, now), events)
        elif isinstance(msg, codec.Current):
            self._announce_tried.pop(msg.sid, None)
            self.subscriptions.on_current(sender, msg, now)
        elif isinstance(msg, codec.Replay):
            self._take(self.subscriptions.on_replay(sender, msg, now), events)
        elif isinstance(msg, codec.PartTaken):
            self._on_taken(sender, msg)
        elif isinstance(msg, codec.Subscribe):
            # Answered through the cage it came by: the subscriber reached it.
            self._act(self.publications.on_subscribe(sender, msg, now), to=self._cage)
        elif isinstance(msg, codec.Unsubscribe):
            self.publications.on_unsubscribe(sender, msg)
            self._streams.pop((sender.encode(), msg.sid), None)
        elif isinstance(msg, codec.Message):
            events.append(IncomingMessage(sender, msg))
        elif isinstance(msg, codec.NoRoute):
            self._on_noroute(msg, events)
        elif isinstance(msg, codec.Fanout):
            self._on_fanout(msg, events)
        elif isinstance(msg, codec.Heartbeat):
            self._routes = None
            cage = self._cage
            self.trips.beat_answered(cage, now)
            session = self.sessions[cage]
            was = session.state
            again = session.on_heartbeat(msg.epoch, now)
            if again is not None:
                self._control(again, cage)
            if was is not SessionState.CONNECTING and session.state is SessionState.CONNECTING:
                self._cage_gone(cage, events)
        elif isinstance(msg, codec.Welcome):
            self._routes = None
            cage = self._cage
            session = self.sessions[cage]
            # Deltas sent meanwhile went through another cage, if one knew us.
            others = any(s.known for s in self.sessions if s is not session)
            session.on_welcome(msg.epoch, float(msg.heartbeat), now)
            if self.several:
                self.subscriptions.gap_window = session.heartbeat * GAP_WINDOW_BEATS
            if session.state is SessionState.JOINING:
                if not others:
                    self.publications.registered_again()
                self._probe(cage)
        elif isinstance(msg, codec.Error):
            self._on_error(msg, now, events)
        else:
            self._bad(ProtocolError(f"{msg.KIND.name} is not sent to nodes"))

    def _on_error(self, msg: codec.Error, now: float, events: list[Event]) -> None:
        self._routes = None
        cage = self._cage
        session = self.sessions[cage]
        was = session.state
        again = session.on_error(msg.code, msg.message, now)
        if session.state is SessionState.REFUSED:
            if self.refused_by is None:
                self.refused_by = cage
            if self.several:
                self._step_down(cage, msg, now)
            events.append(SessionChange(Change.REFUSED, msg.message, cage))
            return
        if session.state is SessionState.CONNECTING and was is not SessionState.CONNECTING:
            events.append(SessionChange(Change.REREGISTERING, msg.message, cage))
            self._cage_gone(cage, events)
        if again is not None:
            self._control(again, cage)
        if msg.code == "over_budget":
            # What the cage dropped for us may have been snapshots (or parts
            # of one) or confirmations: ask again for every view at once.
            self.subscriptions.drop_parts()
            self._act(self.subscriptions.reannounce_all(now))
        if msg.code != "not_registered":
            self.stats[f"error_{msg.code}"] += 1
            events.append(SessionChange(Change.ERROR, f"{msg.code}: {msg.message}"))

    def _step_down(self, cage: int, msg: codec.Error, now: float) -> None:
        """Cage ``cage`` refused our name: leave every cage that welcomed us, hold it nowhere."""
        for other, session in enumerate(self.sessions):
            if other == cage or session.state is SessionState.REFUSED:
                continue
            if session.known:
                self._control(codec.Bye(), other)
            session.on_error(msg.code, msg.message, now)

    def _on_noroute(self, msg: codec.NoRoute, events: list[Event]) -> None:
        try:
            inner = codec.decode_body(Kind(msg.kind), msg.body)
        except (ProtocolError, ValueError) as exc:
            self._bad(exc)
            return
        for original in inner:
            if isinstance(original, codec.Request):
                if not self.several or not self._route_elsewhere(msg, original.cid):
                    self._settle(self.requests.on_noroute(original.cid), events)
            elif isinstance(original, codec.Subscribe):
                if not self.several or not self._announce_elsewhere(msg, original.sid):
                    events.extend(self.subscriptions.on_noroute(original))
            else:
                self.stats["noroute"] += 1

    def _route_elsewhere(self, msg: codec.NoRoute, cid: int) -> bool:
        """A request met NoRoute at one of several cages: True if it may still find a route.

        A plain request tries the next registered cage at once; a gathered
        one went through all of them and is "no route" only once all said so.
        """
        cage = self._cage
        gathered = self._gathers.get(cid)
        if gathered is not None:
            sent, said = gathered
            said.add(cage)
            if len(said) < sent:
                return True
            del self._gathers[cid]
            return False
        if cid not in self.requests:
            self._tried.pop(cid, None)
            return True  # timed out or answered already: nothing to settle
        tried = self._tried.setdefault(cid, set())
        tried.add(cage)
        other = self._next_cage(tried)
        if other is None:
            del self._tried[cid]
            return False
        tried.add(other)
        self._emit((codec.header(Kind.REQUEST), msg.key.encode(), msg.body), other)
        if len(self._tried) > 4 * len(self.requests) + 64:
            self._tried = {c: t for c, t in self._tried.items() if c in self.requests}
        return True

    def _next_cage(self, tried: set[int]) -> int | None:
        """After a NoRoute: the fastest other cage that knows us and whose connection is up."""
        trips = self.trips
        live = [c for c in self.known_cages() if c not in tried and not trips.is_down(c)]
        return trips.choose(live, self._now)

    def _announce_elsewhere(self, msg: codec.NoRoute, sid: str) -> bool:
        """An announce met NoRoute at one of several cages: try the next one that knows us."""
        tried = self._announce_tried.setdefault(sid, set())
        tried.add(self._cage)
        other = self._next_cage(tried)
        if other is None or not self.subscriptions.has(sid):
            self._announce_tried.pop(sid, None)
            return False
        tried.add(other)
        self._emit((codec.header(Kind.SUBSCRIBE), msg.key.encode(), msg.body), other)
        return True

    def _on_fanout(self, msg: codec.Fanout, events: list[Event]) -> None:
        try:
            inner = codec.decode_body(Kind.REQUEST, msg.body)
        except ProtocolError as exc:
            self._bad(exc)
            return
        for original in inner:
            assert isinstance(original, codec.Request)
            self._settle(self.requests.on_fanout(original.cid, msg.count), events)

    @staticmethod
    def _settle(outcome: Outcome | None, events: list[Event]) -> None:
        if outcome is not None:
            events.append(outcome)

    def _take(self, result: tuple[list[Update], list[Effect]], events: list[Event]) -> None:
        updates, actions = result
        self._act(actions)
        events.extend(updates)

    # --- output -------------------------------------------------------------

    def _step(self, events: list[Event]) -> Effects:
        """What this input called for, handed over whole: the core keeps none of it."""
        if self._news:
            events, self._news = [*self._news, *events], []
        frames, add, remove = self._frames, self._add, self._remove
        if not (frames or add or remove):
            # The shared empty lists: the shell reads an Effects, never changes it.
            return build_effects(_NONE, _NONE, _NONE, events, _NONE) if events else NOTHING
        self._frames, self._add, self._remove = [], [], []
        if not self.several:
            return build_effects(frames, add, remove, events, _NONE)
        targets, self._targets = self._targets, []
        return build_effects(frames, add, remove, events, targets)

    def _act(self, actions: Sequence[Effect], to: int = PREFERRED) -> None:
        for action in actions:
            if isinstance(action, Send):
                msg = action.message
                if isinstance(msg, codec.Snapshot) and self._send_table(action.key.encode(), msg,
                                                                        to):
                    continue
                self._emit(_encode(action.key, msg), to)
            elif isinstance(action, SendPacked):
                self._emit((codec.header(action.kind), action.key.encode(), action.body), to)
            elif isinstance(action, AddFilter):
                self._add.append(action.topic)
            elif isinstance(action, RemoveFilter):
                self._remove.append(action.topic)

    def _emit(self, frame: Frame, to: int) -> None:
        """Queue ``frame`` for cage ``to``, every cage that knows us (EVERY) or the PREFERRED."""
        if not self.several:
            self._frames.append(frame)
            return
        if to == EVERY:
            for cage in self.known_cages():
                self._frames.append(frame)
                self._targets.append(cage)
            return
        if to == PREFERRED:
            to = self.preferred(self._now) or 0
        self._frames.append(frame)
        self._targets.append(to)

    def _send_table(self, key: bytes, msg: codec.Snapshot, to: int = PREFERRED) -> bool:
        """Queue a big table's snapshot; False if not one (it goes as one message as it is).

        A list table's in one message joined from its packed rows, if it
        fits in PART_BYTES; a table (list or dict) bigger than that in parts
        of about that size, in order, with the same (epoch, seq).
        """
        found = self.publications.table_of(msg.dataindex, msg.data)
        if found is None:
            return False
        table, size = found
        fields = (msg.sid, msg.dataindex, msg.epoch, msg.seq)
        if size + SNAPSHOT_OVER_TABLE <= PART_BYTES:
            if isinstance(table, dict):
                return False
            self._emit((_SNAPSHOT_HEADER, key, codec.encode_with_rows(fields, table)), to)
            return True
        limit = PART_BYTES - SNAPSHOT_OVER_TABLE
        # Copied (a pointer a row or entry): the parts are of this version,
        # whatever changes in place meanwhile.
        source = RowParts(list(table), limit) if isinstance(table, list) \
            else EntryParts(dict(table), size, limit)
        # Part 0 now, each next one when the subscriber says it took the one
        # before (PartTaken): one part on its way at a time, so the cage's
        # byte budget for the subscriber holds it, however big the table. A
        # new snapshot for the same subscription starts over.
        stream = PartStream(fields, source)
        self._streams[(key, msg.sid)] = stream
        self._send_part(key, stream, to)
        self.stats["parted_snapshots"] += 1
        return True

    def _send_part(self, key: bytes, stream: PartStream, to: int) -> None:
        """Queue the stream's part ``sent``; forget the stream after its last."""
        self._emit((_PART_HEADER, key, stream.body()), to)
        if stream.done:
            del self._streams[(key, stream.fields[0])]

    def _on_taken(self, sender: str, msg: codec.PartTaken) -> None:
        """The subscriber took a part: send the next (anything else is stale, ignored)."""
        key = sender.encode()
        stream = self._streams.get((key, msg.sid))
        if stream is None or (msg.sid, msg.dataindex, msg.epoch, msg.seq, msg.part) \
                != (*stream.fields, stream.sent):
            return
        stream.sent += 1
        # By the cage the subscriber's word came by: it reaches that one.
        self._send_part(key, stream, self._cage)


    def _control(self, msg: codec.Register | codec.Heartbeat | codec.Bye | codec.Receipt,
                 cage: int = 0) -> None:
        self._emit((codec.header(msg.KIND), b"", codec.encode_one(msg)), cage)

    def _receipt(self, cage: int = 0) -> None:
        """Tell cage ``cage`` how much we read from it, if more than last time."""
        receipt = self.reads_of[cage].receipt()
        if receipt is not None:
            self._control(receipt, cage)

    def _bad(self, exc: Exception) -> None:
        self.stats["bad_frames"] += 1
        self.last_bad = str(exc)
        if sampled(self.stats["bad_frames"]):
            self._news.append(BadFrame(self.stats["bad_frames"], self.last_bad))


def _encode(key: str, msg: codec.MessageValue, flags: int = 0) -> Frame:
    """One message to ``key``, encoded to send.

    Raises:
        ProtocolError: msgpack cannot represent it.
        MessageTooLarge: it exceeds MAX_MESSAGE_BYTES.
    """
    return (codec.header(msg.KIND, flags), key.encode(), codec.encode_one(msg))


def _not_reserved(dataindex: str) -> None:
    """Refuse to publish on the dataindex of the node's own probes (zdse.node.session)."""
    if dataindex == PROBE_DATAINDEX:
        raise ProtocolError(f"{PROBE_DATAINDEX!r} is reserved for the node's own probes")


def _encoded_value(d: codec.Delta, data: Any) -> bytes:
    """The delta of a value published whole (not a big table), encoded to send.

    Raises:
        MessageTooLarge: a snapshot of ``data`` would exceed MAX_MESSAGE_BYTES.
    """
    body = codec.encode_one(d)
    if d.delta[0] == deltas.REPLACE:
        # The delta holds the data whole: a snapshot is this body plus at
        # most a subscription id and a bigger seq.
        if len(body) + SNAPSHOT_OVER_REPLACE > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"a snapshot of {d.dataindex!r} would exceed {MAX_MESSAGE_BYTES} bytes")
    else:
        # Worst case of what a snapshot adds around the data: a uuid4 hex
        # subscription id, the largest seq.
        codec.encode_one(_build_snapshot("0" * 32, d.dataindex, d.epoch, 2**63 - 1, data))
    return body
