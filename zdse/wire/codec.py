"""The wire protocol: frames <-> message values. Pure: no zmq, no clock.

Every multipart message starts with a 3-byte header ``(VERSION, kind, flags)``.
A node sends ``[header, key, body]`` to the cage's ROUTER; the cage delivers
``[header, sender, key, body]`` to a node's DEALER and publishes
``[topic, header, body]`` on its PUB socket. A routed message with a small
body goes packed instead: ``[packed]`` to the cage, ``[sender, packed]`` from
it, ``packed`` being the header, one byte of key length, the key and the
body in one frame (:func:`pack`, :func:`unpack`). A body is one or more msgpack
arrays back to back: everything a node queued for the same kind and key in
one loop iteration travels as one frame. docs/protocol.md is the reference.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, ClassVar

import msgpack

from zdse.errors import MessageTooLarge, ProtocolError
from zdse.wire.frozen import builder
from zdse.wire.limits import MAX_ADDRESS_BYTES, MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, PACK_LIMIT

__all__ = [
    "ALL_SERVICES",
    "CAGE",
    "EVENT_TOPIC",
    "FLAG_GATHER",
    "GAP",
    "PUBDATA",
    "REFRESH",
    "RESERVED_DATAINDEXES",
    "SUBDATA",
    "VERSION",
    "Kind",
    "Message",
    "decode_body",
    "decode_fields",
    "encode_body",
    "header",
    "pack",
    "parse_header",
    "topic",
    "unpack",
    "validate_name",
    "validate_pattern",
]

VERSION = 1

#: The cage's own name: requests to it answer services, routes and stats.
CAGE = "cage"
#: The address every service listens on, for broadcasts.
ALL_SERVICES = "allservices"
#: Names no node may register.
RESERVED_NAMES = frozenset({CAGE, ALL_SERVICES})

#: Requests every service answers, whatever it publishes or handles: what it
#: publishes, what it subscribes to, and (a polling service) "poll now".
#: The cage answers the first two about itself.
PUBDATA = "pubdata"
SUBDATA = "subdata"
REFRESH = "refresh"
RESERVED_DATAINDEXES = frozenset({PUBDATA, SUBDATA, REFRESH})

#: PUB topic of the cage's own events (joined / left). Names never contain
#: NUL, so no publisher's topic can collide with it.
EVENT_TOPIC = b"\x00cage\x00"

#: Header flag on a request: the cage first answers with a Fanout telling
#: how many services the request reached, so the requester can gather all.
FLAG_GATHER = 0x01

#: The third element of a ``Subscribe``'s ``seen`` entry, ``[epoch, seq,
#: GAP]``: the subscriber holds ``seq`` and misses deltas after it; the
#: publisher resends them (Replay) or sends a snapshot, never a Current.
#: A publisher that does not know the mark finds no view held: a snapshot.
GAP = "gap"


class Kind(enum.IntEnum):
    """Message kinds, one ASCII letter each so captures stay readable."""

    REGISTER = ord("R")
    WELCOME = ord("W")
    HEARTBEAT = ord("H")
    BYE = ord("B")
    REQUEST = ord("Q")
    REPLY = ord("P")
    MESSAGE = ord("M")
    SUBSCRIBE = ord("S")
    UNSUBSCRIBE = ord("U")
    SNAPSHOT = ord("N")
    CURRENT = ord("C")
    DELTA = ord("D")
    NOROUTE = ord("X")
    FANOUT = ord("F")
    ERROR = ord("E")
    JOINED = ord("J")
    LEFT = ord("L")
    RECEIPT = ord("A")
    PART = ord("K")
    TAKEN = ord("G")
    REPLAY = ord("Y")


#: Kinds the cage routes by key to other nodes (everything else is for the
#: cage itself or, for DELTA, for its PUB socket).
ROUTED_KINDS = frozenset(
    {Kind.REQUEST, Kind.REPLY, Kind.MESSAGE, Kind.SUBSCRIBE, Kind.UNSUBSCRIBE, Kind.SNAPSHOT,
     Kind.CURRENT, Kind.PART, Kind.TAKEN, Kind.REPLAY}
)
#: Routed kinds whose sender wants to know at once that nobody listens.
NOROUTE_KINDS = frozenset({Kind.REQUEST, Kind.MESSAGE, Kind.SUBSCRIBE})

#: Kinds a node sends packed (one frame) when the body is small: the routed ones.
PACKED_KINDS = frozenset(int(k) for k in ROUTED_KINDS)

_KINDS = {int(k): k for k in Kind}
_HEADERS = {(k, f): bytes((VERSION, k, f)) for k in Kind for f in (0, FLAG_GATHER)}


def header(kind: Kind, flags: int = 0) -> bytes:
    """Return the header frame of a message of ``kind``."""
    return _HEADERS.get((kind, flags)) or bytes((VERSION, kind, flags))


def parse_header(frame: bytes) -> tuple[Kind, int]:
    """Return ``(kind, flags)`` of a header frame.

    Raises:
        ProtocolError: wrong length, version or kind.
    """
    if len(frame) != 3:
        raise ProtocolError(f"header must be 3 bytes, got {len(frame)}")
    if frame[0] != VERSION:
        raise ProtocolError(f"protocol version {frame[0]} not supported (this is {VERSION})")
    kind = _KINDS.get(frame[1])
    if kind is None:
        raise ProtocolError(f"unknown message kind {frame[1]!r}")
    return kind, frame[2]


def topic(publisher: str, dataindex: str) -> bytes:
    """PUB topic of one publisher's dataindex; NUL-terminated so no prefix clashes."""
    return f"{publisher}\x00{dataindex}\x00".encode()


def validate_pattern(pattern: str, what: str = "address") -> None:
    """Check an address pattern: non-empty UTF-8, no NUL, at most 255 bytes.

    Raises:
        ProtocolError: naming what is wrong.
    """
    if not isinstance(pattern, str):
        raise ProtocolError(f"{what} must be a string, got {type(pattern).__name__}")
    if not pattern:
        raise ProtocolError(f"{what} must not be empty")
    if "\x00" in pattern:
        raise ProtocolError(f"{what} {pattern!r} contains NUL")
    if len(pattern.encode()) > MAX_ADDRESS_BYTES:
        raise ProtocolError(f"{what} is longer than {MAX_ADDRESS_BYTES} bytes")


def validate_name(name: str) -> None:
    """Check a service's unique name: a pattern with no wildcard word, not reserved.

    Raises:
        ProtocolError: naming what is wrong.
    """
    validate_pattern(name, "name")
    if any(word in ("*", "#") for word in name.split(".")):
        raise ProtocolError(f"name {name!r} has a wildcard word; a unique name cannot")
    if name in RESERVED_NAMES:
        raise ProtocolError(f"name {name!r} is reserved")


# --- message values -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """Node -> cage: claim ``name`` and listen on ``addresses`` too."""

    KIND: ClassVar[Kind] = Kind.REGISTER
    name: str
    addresses: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not isinstance(self.addresses, list):
            raise ProtocolError("addresses must be a list")
        for address in self.addresses:
            validate_pattern(address)
        if not isinstance(self.info, dict):
            raise ProtocolError("info must be a map")


@dataclass(frozen=True, slots=True)
class Welcome:
    """Cage -> node: registered; the cage's epoch and heartbeat interval.

    ``sent`` is what the cage had sent this connection before the welcome,
    counted as receipts count it (see :class:`Receipt`): by the time the
    node reads the welcome it has read all of it.
    """

    KIND: ClassVar[Kind] = Kind.WELCOME
    epoch: str
    heartbeat: float
    sent: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Both ways: I am alive. From the cage it carries the cage's epoch."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Receipt:
    """Node -> cage: I have read ``read`` bytes from you on this connection.

    Counted by :func:`zdse.wire.receipts.wire_cost`, cumulative; the cage holds
    back what would put more than its byte budget unread on the way to the
    node (docs/protocol.md, "Byte budget").
    """

    KIND: ClassVar[Kind] = Kind.RECEIPT
    read: int


@dataclass(frozen=True, slots=True)
class Bye:
    """Node -> cage: I am leaving; drop my routes now."""

    KIND: ClassVar[Kind] = Kind.BYE


@dataclass(frozen=True, slots=True)
class Request:
    """A one-off request for ``dataindex`` with ``args``; ``cid`` correlates the reply."""

    KIND: ClassVar[Kind] = Kind.REQUEST
    cid: int
    dataindex: str
    args: Any = None
    #: Seconds the requester waits for the reply (0: it did not say): the
    #: service cancels an async handler still running after that long.
    timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to request ``cid``: a value, or ``[error kind, message]`` if not ok."""

    KIND: ClassVar[Kind] = Kind.REPLY
    cid: int
    ok: bool
    value: Any


@dataclass(frozen=True, slots=True)
class Message:
    """A one-way message: no reply, no state."""

    KIND: ClassVar[Kind] = Kind.MESSAGE
    dataindex: str
    data: Any


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscription ``sid`` to ``dataindex``; ``seen`` maps publisher -> [epoch, seq] held.

    Soft state: the publisher forgets it ``ttl`` seconds after the last announce.

    A publisher answers with a snapshot unless ``seen`` shows the subscriber
    already holds its current epoch and sequence number.
    """

    KIND: ClassVar[Kind] = Kind.SUBSCRIBE
    sid: str
    dataindex: str
    seen: dict[str, list[Any]] = field(default_factory=dict)
    #: Seconds the publisher keeps this subscription without a re-announce.
    ttl: float = 30.0


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Drop subscription ``sid`` to ``dataindex``."""

    KIND: ClassVar[Kind] = Kind.UNSUBSCRIBE
    sid: str
    dataindex: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Publisher -> subscriber: the whole of ``dataindex`` at ``(epoch, seq)``."""

    KIND: ClassVar[Kind] = Kind.SNAPSHOT
    sid: str
    dataindex: str
    epoch: str
    seq: int
    data: Any


@dataclass(frozen=True, slots=True)
class SnapshotPart:
    """Publisher -> subscriber: part ``part`` of ``parts`` of a table's snapshot.

    A snapshot too big for one message travels as parts, in order, each
    with the snapshot's ``(epoch, seq)``; ``rows`` are this part's rows (a
    list table) or entries (a dict table: a map), of the same shape in
    every part. The
    subscriber takes the table when the last part has come, and asks again
    if one is missing.
    """

    KIND: ClassVar[Kind] = Kind.PART
    sid: str
    dataindex: str
    epoch: str
    seq: int
    part: int
    parts: int
    rows: list[Any] | dict[Any, Any]


@dataclass(frozen=True, slots=True)
class PartTaken:
    """Subscriber -> publisher: I took part ``part`` of your snapshot; send the next.

    Parts are paced by these: a publisher sends the next part of a snapshot
    only once the subscriber took the one before, so at most one part is on
    its way to it, within the cage's byte budget for it however big the table.
    """

    KIND: ClassVar[Kind] = Kind.TAKEN
    sid: str
    dataindex: str
    epoch: str
    seq: int
    part: int


@dataclass(frozen=True, slots=True)
class Current:
    """Publisher -> subscriber: your view of ``dataindex`` is current at ``(epoch, seq)``.

    The answer to a re-announce that needs no snapshot: it tells the
    subscriber the publisher is still there.
    """

    KIND: ClassVar[Kind] = Kind.CURRENT
    sid: str
    dataindex: str
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Delta:
    """Publisher -> every subscriber via PUB: the change that made ``seq``."""

    KIND: ClassVar[Kind] = Kind.DELTA
    dataindex: str
    epoch: str
    seq: int
    delta: Any


@dataclass(frozen=True, slots=True)
class Replay:
    """Publisher -> one subscriber: a delta it missed, resent from the publisher's history.

    The same fields, and the same packed bytes, as the :class:`Delta` that
    made ``seq``; routed to the subscriber's name (through the cage's
    ROUTER) in answer to a ``Subscribe`` whose ``seen`` is behind.
    """

    KIND: ClassVar[Kind] = Kind.REPLAY
    dataindex: str
    epoch: str
    seq: int
    delta: Any


@dataclass(frozen=True, slots=True)
class NoRoute:
    """Cage -> node: nobody listens on ``key``; ``body`` is what was sent."""

    KIND: ClassVar[Kind] = Kind.NOROUTE
    kind: int
    key: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Fanout:
    """Cage -> node: the gather request(s) in ``body`` reached ``count`` services."""

    KIND: ClassVar[Kind] = Kind.FANOUT
    count: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Error:
    """Cage -> node: ``code`` (e.g. ``name_taken``) with a readable message."""

    KIND: ClassVar[Kind] = Kind.ERROR
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Joined:
    """Cage event: a service registered with these addresses."""

    KIND: ClassVar[Kind] = Kind.JOINED
    name: str
    addresses: list[str]

    def __post_init__(self) -> None:
        # Subscribers match these against their keys: a non-string would
        # raise there, so it is refused here, as bad input.
        for address in self.addresses:
            validate_pattern(address)


@dataclass(frozen=True, slots=True)
class Left:
    """Cage event: a service left (``bye``) or was expired."""

    KIND: ClassVar[Kind] = Kind.LEFT
    name: str
    reason: str


MessageValue = (
    Register | Welcome | Heartbeat | Bye | Request | Reply | Message | Subscribe | Unsubscribe
    | Snapshot | Current | Delta | NoRoute | Fanout | Error | Joined | Left | Receipt | SnapshotPart
    | PartTaken | Replay
)

_CLASSES: dict[Kind, type[Any]] = {
    cls.KIND: cls
    for cls in (
        Register, Welcome, Heartbeat, Bye, Request, Reply, Message, Subscribe, Unsubscribe,
        Snapshot, Current, Delta, NoRoute, Fanout, Error, Joined, Left, Receipt, SnapshotPart,
        PartTaken, Replay,
    )
}

# The wire type of each field, checked on decode (bool is an int, so int
# fields accept it; msgpack gives floats for heartbeat only if sent as such).
_SCHEMAS: dict[Kind, tuple[type | tuple[type, ...] | None, ...]] = {
    Kind.REGISTER: (str, list, dict),
    Kind.WELCOME: (str, (int, float), int),
    Kind.HEARTBEAT: (str,),
    Kind.BYE: (),
    Kind.REQUEST: (int, str, None, (int, float)),
    Kind.REPLY: (int, bool, None),
    Kind.MESSAGE: (str, None),
    Kind.SUBSCRIBE: (str, str, dict, (int, float)),
    Kind.UNSUBSCRIBE: (str, str),
    Kind.SNAPSHOT: (str, str, str, int, None),
    Kind.CURRENT: (str, str, str, int),
    Kind.DELTA: (str, str, int, None),
    Kind.NOROUTE: (int, str, bytes),
    Kind.FANOUT: (int, bytes),
    Kind.ERROR: (str, str),
    Kind.JOINED: (str, list),
    Kind.LEFT: (str, str),
    Kind.RECEIPT: (int,),
    Kind.PART: (str, str, str, int, int, int, (list, dict)),
    Kind.TAKEN: (str, str, str, int, int),
    Kind.REPLAY: (str, str, int, None),
}

# Field order on the wire is the declaration order. attrgetter reads them
# in C, where a list comprehension of getattr calls costs four times more.
def _getter(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names: tuple[str, ...] = cls.__slots__
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda msg: (one(msg),)
    return lambda msg: ()


_GETTERS = {cls: _getter(cls) for cls in _CLASSES.values()}

# One packer, reused: building a Packer is most of what msgpack.packb costs
# for a small message. Packer.pack runs in C under the GIL from start to end
# (no ``default`` hook calls back into Python), and resets itself after each
# call or error, so one shared instance is safe.
_pack = msgpack.Packer(use_bin_type=True).pack


def _fields(msg: MessageValue) -> tuple[Any, ...]:
    getter = _GETTERS.get(type(msg))
    if getter is None:
        return tuple(getattr(msg, name) for name in msg.__slots__)
    return getter(msg)


def encode_one(msg: MessageValue) -> bytes:
    """Pack one message's body.

    Raises:
        MessageTooLarge: the body exceeds MAX_MESSAGE_BYTES.
        ProtocolError: a value msgpack cannot represent.
    """
    try:
        body: bytes = _pack(_fields(msg))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from exc
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return body


def encode_body(messages: Iterable[MessageValue]) -> bytes:
    """Pack messages (all of one kind) into one body: their :func:`encode_one` bodies joined.

    Raises:
        MessageTooLarge: the body exceeds MAX_MESSAGE_BYTES.
        ProtocolError: a value msgpack cannot represent.
    """
    body = b"".join([encode_one(m) for m in messages])
    if len(body) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return body


_packer = msgpack.Packer(use_bin_type=True)


def encode_with_rows(fields: tuple[Any, ...], rows: list[bytes], wrap: str | None = None) -> bytes:
    """Pack a message whose last field is a list table given as its rows, each packed.

    ``fields`` are the message's other fields, in order; ``wrap``, if given,
    puts the table inside ``[wrap, table]`` (a ``replace`` delta). The same
    bytes as :func:`encode_one` of the whole message, without packing the
    rows again: a big table's snapshot is one join.

    Raises:
        MessageTooLarge: the body exceeds MAX_MESSAGE_BYTES.
        ProtocolError: a value msgpack cannot represent.
    """
    return _joined(fields, rows, wrap, _packer.pack_array_header(len(rows)))


def encode_with_entries(fields: tuple[Any, ...], entries: list[bytes]) -> bytes:
    """Pack a message whose last field is a dict table given as its entries, each packed.

    ``entries`` alternate a packed key and its packed value. As
    :func:`encode_with_rows`, for a map.

    Raises:
        MessageTooLarge: the body exceeds MAX_MESSAGE_BYTES.
        ProtocolError: a value msgpack cannot represent.
    """
    return _joined(fields, entries, None, _packer.pack_map_header(len(entries) // 2))


def _joined(fields: tuple[Any, ...], items: list[bytes], wrap: str | None, table: bytes) -> bytes:
    """The fields packed, then ``[wrap, ...]`` if given, the table's header and its packed items."""
    try:
        head = [_packer.pack_array_header(len(fields) + 1)]
        head += [_pack(f) for f in fields]
        if wrap is not None:
            head += [_packer.pack_array_header(2), _pack(wrap)]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from exc
    head.append(table)
    size = sum(map(len, head)) + sum(map(len, items))
    if size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"body of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    return b"".join(head) + b"".join(items)


#: The key-length byte of a packed frame, by length.
_KEY_LENGTHS = [bytes((n,)) for n in range(MAX_ADDRESS_BYTES + 1)]


def pack(head: bytes, key: bytes, body: bytes) -> bytes:
    """One frame holding a message's header, key and body: ``head, len(key), key, body``.

    The key is at most MAX_ADDRESS_BYTES (255), so its length takes one byte.
    """
    return b"".join((head, _KEY_LENGTHS[len(key)], key, body))


def unpack(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a packed frame (:func:`pack`) into its header, key and body.

    The header is not checked here (:func:`parse_header` does).

    Raises:
        ProtocolError: the frame is shorter than its header and key say.
    """
    if len(frame) < 4:
        raise ProtocolError(f"packed frame of {len(frame)} bytes, shorter than a header")
    end = 4 + frame[3]
    if len(frame) < end:
        raise ProtocolError(f"packed frame of {len(frame)} bytes ends inside its key")
    return frame[:3], frame[4:end], frame[end:]


def coalesce(queue: list[tuple[bytes, bytes, bytes]], packed: bool = False) -> list[list[bytes]]:
    """Turn queued ``(header, key, body)`` messages into ``[header, key, body]`` frames.

    Consecutive messages of one kind (and flags) to one key share a frame,
    their bodies back to back. Order is kept; no frame grows past
    MAX_BATCH_BYTES unless a single message does. With ``packed``, a routed
    message whose body is at most PACK_LIMIT becomes ``[pack(header, key,
    body)]``: what a node sends its cage.
    """
    frames: list[list[bytes]] = []
    head = key = b""
    parts: list[bytes] = []
    size = 0
    for h, k, body in queue:
        if parts and h == head and k == key and size + len(body) <= MAX_BATCH_BYTES:
            parts.append(body)
            size += len(body)
            continue
        if parts:
            frames.append(_frames(head, key, parts, size, packed))
        head, key, parts, size = h, k, [body], len(body)
    if parts:
        frames.append(_frames(head, key, parts, size, packed))
    return frames


def _frames(head: bytes, key: bytes, parts: list[bytes], size: int, packed: bool
            ) -> list[bytes]:
    """One coalesced message's frames: packed (its bodies joined once, behind the header
    and key) if asked and it may be, else ``[head, key, body]``."""
    if packed and size <= PACK_LIMIT and head[1] in PACKED_KINDS \
            and len(key) <= MAX_ADDRESS_BYTES:
        return [b"".join((head, _KEY_LENGTHS[len(key)], key, *parts))]
    return [head, key, parts[0] if len(parts) == 1 else b"".join(parts)]


def decode_body(kind: Kind, body: bytes) -> list[MessageValue]:
    """Unpack a body into message values of ``kind``.

    Raises:
        ProtocolError: the body is not msgpack, or a value does not fit the kind.
    """
    build = _BUILDERS[kind]
    out: list[MessageValue] = []
    append = out.append
    for fields in decode_fields(kind, body):
        try:
            append(build(*fields))
        except ProtocolError as exc:
            raise ProtocolError(f"{kind.name}: {exc}") from exc
    return out


def decode_fields(kind: Kind, body: bytes) -> list[list[Any]]:
    """Unpack a body into the field arrays of ``kind``'s values, checked, not yet built.

    For a hot path that builds values only when it keeps them; each array
    makes the value ``cls(*fields)`` would (:func:`decode_body` does that).

    Raises:
        ProtocolError: the body is not msgpack, or a value does not fit the kind.
    """
    arity = len(_SCHEMAS[kind])
    checks = _CHECKS[kind]
    # The whole body is unpacked in C first; the loop below is the hot path
    # of every node, so it does per value only what the schema asks.
    values = _values(body)
    for obj in values:
        if type(obj) is not list or len(obj) != arity:
            raise ProtocolError(
                f"{kind.name} must be an array of {arity} fields, got {_describe(obj)}"
            )
        for i, want in checks:
            if not isinstance(obj[i], want):
                raise ProtocolError(
                    f"{kind.name}.{_CLASSES[kind].__slots__[i]} must be {_type_name(want)}, "
                    f"got {type(obj[i]).__name__}"
                )
    if not values:
        raise ProtocolError(f"{kind.name} frame has an empty body")
    return values


# Per kind, the (position, type) pairs decode_body checks: fields typed None
# take any value and are skipped.
_CHECKS: dict[Kind, tuple[tuple[int, type | tuple[type, ...]], ...]] = {
    kind: tuple((i, want) for i, want in enumerate(schema) if want is not None)
    for kind, schema in _SCHEMAS.items()
}


# Per kind, how decode_body makes a value: the class itself when it checks
# its fields in __post_init__ (Register), else a builder twice as fast.
_BUILDERS: dict[Kind, Callable[..., Any]] = {
    kind: cls if hasattr(cls, "__post_init__") else builder(cls) for kind, cls in _CLASSES.items()
}


def _values(body: bytes) -> list[Any]:
    """All the msgpack values of a body, unpacked in one C loop."""
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=MAX_MESSAGE_BYTES + 1
    )
    try:
        unpacker.feed(body)
        return list(unpacker)
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise ProtocolError(f"body is not valid msgpack: {exc}") from exc
    except Exception as exc:  # msgpack's C code raises assorted types on garbage
        raise ProtocolError(f"body is not valid msgpack: {type(exc).__name__}: {exc}") from exc


def _describe(obj: Any) -> str:
    if isinstance(obj, list):
        return f"an array of {len(obj)}"
    return type(obj).__name__


def _type_name(want: type | tuple[type, ...]) -> str:
    if isinstance(want, tuple):
        return " or ".join(t.__name__ for t in want)
    return want.__name__
