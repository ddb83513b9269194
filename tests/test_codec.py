"""The wire codec: round trips, and garbage in gives ProtocolError, never anything else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zdse.errors import MessageTooLarge, ProtocolError
from zdse.wire import codec
from zdse.wire.codec import Kind
from zdse.wire.limits import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, PACK_LIMIT

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20),
    st.binary(max_size=20), st.floats(allow_nan=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
words = st.text(alphabet="abc*#", min_size=1, max_size=4)
names = st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=5), min_size=1, max_size=4).map(
    ".".join
)

messages = st.one_of(
    st.builds(codec.Request, st.integers(0, 2**40), st.text(max_size=10), values),
    st.builds(codec.Reply, st.integers(0, 2**40), st.booleans(), values),
    st.builds(codec.Message, st.text(max_size=10), values),
    st.builds(codec.Subscribe, st.text(max_size=10), st.text(max_size=10),
              st.dictionaries(names, st.tuples(st.text(max_size=5), st.integers(0, 99)).map(list)),
              st.floats(0.1, 100)),
    st.builds(codec.Snapshot, st.text(max_size=5), st.text(max_size=5), st.text(max_size=5),
              st.integers(0, 2**40), values),
    st.builds(codec.Delta, st.text(max_size=5), st.text(max_size=5), st.integers(0, 2**40),
              values),
    st.builds(codec.Register, names, st.lists(names, max_size=3), st.just({"pid": 1})),
    st.builds(codec.Error, st.text(max_size=10), st.text(max_size=30)),
    st.builds(codec.Left, names, st.text(max_size=10)),
)


@given(st.lists(messages, min_size=1, max_size=5))
def test_bodies_round_trip(msgs: list[codec.MessageValue]) -> None:
    """Messages of one kind packed into one body decode to equal values."""
    kind = msgs[0].KIND
    same_kind = [m for m in msgs if m.KIND is kind]
    assert codec.decode_body(kind, codec.encode_body(same_kind)) == same_kind


@given(st.binary(max_size=200), st.sampled_from(list(Kind)))
def test_garbage_bodies_raise_only_protocol_errors(data: bytes, kind: Kind) -> None:
    """Any bytes as a body either decode or raise ProtocolError."""
    with contextlib.suppress(ProtocolError):
        codec.decode_body(kind, data)


@given(st.binary(max_size=6))
def test_garbage_headers_raise_only_protocol_errors(data: bytes) -> None:
    """Any bytes as a header either parse or raise ProtocolError."""
    try:
        kind, flags = codec.parse_header(data)
    except ProtocolError:
        return
    assert data == bytes((codec.VERSION, kind, flags))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x01Q", "header must be 3 bytes"),
        (b"\x02Q\x00", "protocol version 2 not supported"),
        (b"\x01z\x00", "unknown message kind"),
    ],
)
def test_bad_headers_say_what_is_wrong(frame: bytes, message: str) -> None:
    """Each kind of bad header gets an error naming the problem."""
    with pytest.raises(ProtocolError, match=message):
        codec.parse_header(frame)


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        (Kind.REQUEST, b"\x93\x01\xa1x\xc0", "REQUEST must be an array of 4 fields"),
        (Kind.REQUEST, b"\x94\xa1x\xa1x\xc0\x00", "REQUEST.cid must be int"),
        (Kind.REQUEST, b"\x94\x01\xa1x\xc0\xa1x", "REQUEST.timeout must be"),
        (Kind.REGISTER, b"\x93\xa3a.*\x90\x80", "wildcard"),
        (Kind.REGISTER, b"\x93\xa4cage\x90\x80", "reserved"),
        (Kind.REGISTER, b"\x93\xa0\x90\x80", "must not be empty"),
        (Kind.HEARTBEAT, b"", "empty body"),
        (Kind.HEARTBEAT, b"\xc1", "not valid msgpack"),
    ],
)
def test_bad_bodies_say_what_is_wrong(kind: Kind, body: bytes, message: str) -> None:
    """Malformed bodies are refused with a message naming the field or rule."""
    with pytest.raises(ProtocolError, match=message):
        codec.decode_body(kind, body)


def test_oversized_bodies_are_refused_by_the_named_limit() -> None:
    """A body over MAX_MESSAGE_BYTES cannot be encoded."""
    with pytest.raises(MessageTooLarge, match=str(MAX_MESSAGE_BYTES)):
        codec.encode_one(codec.Message("x", b"\0" * (MAX_MESSAGE_BYTES + 1)))


def test_unencodable_values_are_protocol_errors() -> None:
    """A value msgpack cannot represent fails with ProtocolError, not TypeError."""
    with pytest.raises(ProtocolError, match="cannot encode"):
        codec.encode_one(codec.Message("x", object()))


def test_coalesce_joins_runs_of_one_kind_and_key_in_order() -> None:
    """Consecutive messages to one key share a frame; a new key or kind starts another."""
    q = codec.header(Kind.MESSAGE)
    r = codec.header(Kind.REQUEST)
    frames = codec.coalesce([(q, b"a", b"1"), (q, b"a", b"2"), (q, b"b", b"3"),
                             (r, b"b", b"4"), (q, b"a", b"5")])
    assert frames == [[q, b"a", b"12"], [q, b"b", b"3"], [r, b"b", b"4"], [q, b"a", b"5"]]


def test_packed_frames_round_trip() -> None:
    """pack then unpack gives back the header, key and body, for keys of 0 to 255 bytes."""
    q = codec.header(Kind.REQUEST)
    for key in (b"", b"a", b"k" * 255):
        for body in (b"", b"\x90", b"x" * 1000):
            assert codec.unpack(codec.pack(q, key, body)) == (q, key, body)


@pytest.mark.parametrize(("frame", "why"), [
    (b"", "shorter than a header"), (b"\x01Q\x00", "shorter than a header"),
    (b"\x01Q\x00\x03ab", "ends inside its key"), (b"\x01Q\x00\xff", "ends inside its key"),
])
def test_short_packed_frames_are_one_protocol_error(frame: bytes, why: str) -> None:
    """A packed frame that ends before its header or key is refused with one line."""
    with pytest.raises(ProtocolError, match=why) as caught:
        codec.unpack(frame)
    assert "\n" not in str(caught.value)


def test_coalesce_packs_small_routed_messages_only() -> None:
    """With packed=True, a routed message up to PACK_LIMIT becomes one frame; a delta, a
    register and a bigger body keep their three frames."""
    q = codec.header(Kind.REQUEST)
    d = codec.header(Kind.DELTA)
    r = codec.header(Kind.REGISTER)
    big = b"x" * (PACK_LIMIT + 1)
    frames = codec.coalesce([(q, b"a", b"1"), (q, b"a", b"2"), (d, b"t", b"3"), (r, b"", b"4"),
                             (q, b"b", big)], packed=True)
    assert frames == [[codec.pack(q, b"a", b"12")], [d, b"t", b"3"], [r, b"", b"4"],
                      [q, b"b", big]]


def test_coalesce_caps_frames_at_the_batch_limit() -> None:
    """No frame grows past MAX_BATCH_BYTES by joining."""
    q = codec.header(Kind.MESSAGE)
    body = b"x" * (MAX_BATCH_BYTES // 3 + 1)
    frames = codec.coalesce([(q, b"a", body)] * 6)
    assert [len(f[2]) for f in frames] == [2 * len(body)] * 3


@pytest.mark.parametrize("name", ["a.b", "vSphere.Boston", "x"])
def test_valid_names_pass(name: str) -> None:
    """Plain dotted names are valid unique names."""
    codec.validate_name(name)


@pytest.mark.parametrize("name", ["a.*", "#", "a.#.b", "allservices", "a\x00b", "x" * 256])
def test_invalid_names_fail(name: str) -> None:
    """Wildcard words, reserved names, NUL and overlong names are refused."""
    with pytest.raises(ProtocolError):
        codec.validate_name(name)


def test_topics_do_not_prefix_each_other() -> None:
    """A publisher's topic for one dataindex is never a prefix of another's."""
    assert not codec.topic("a", "vms2").startswith(codec.topic("a", "vms"))
    assert not codec.topic("ab", "x").startswith(codec.topic("a", "x"))
