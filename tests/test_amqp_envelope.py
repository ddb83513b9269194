"""The oslo.messaging envelope parser of the amqp bridge: tables of bodies, and fuzzing."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from zdse_nodes.amqp_envelope import MAX_EVENT_TYPE_BYTES, Malformed, Reason, parse

MESSAGE: dict[str, Any] = {
    "message_id": "5f0c8c2e-0d6a-4e55-9a53-6d6a0a4c3a11",
    "publisher_id": "compute.host1",
    "event_type": "compute.instance.update",
    "priority": "INFO",
    "payload": {"instance_id": "i-1", "state": "active"},
    "timestamp": "2024-05-01 12:00:00.000001",
    "_unique_id": "e1f0",
    "_context_request_id": "req-1",
    "_context_user_id": "u1",
    "_context_auth_token": "SECRET-TOKEN",
    "_context_service_catalog": [{"endpoints": []}],
}


def v2(message: Any) -> bytes:
    """A body as oslo's messagingv2 driver writes it."""
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


def v1(message: Any) -> bytes:
    """A body as oslo's messaging (v1) driver writes it: unwrapped."""
    return json.dumps(message).encode()


def test_messagingv2_envelope_is_unwrapped() -> None:
    """A messagingv2 body gives every field of the message inside it."""
    note = parse(v2(MESSAGE), "notifications.info")
    assert note.envelope == "2.0"
    assert note.message_id == MESSAGE["message_id"]
    assert note.event_type == "compute.instance.update"
    assert note.priority == "INFO"
    assert note.publisher_id == "compute.host1"
    assert note.timestamp == "2024-05-01 12:00:00.000001"
    assert note.payload == {"instance_id": "i-1", "state": "active"}


def test_unwrapped_format_gives_the_same_notification() -> None:
    """The older unwrapped format is read the same, save the envelope version."""
    wrapped, bare = parse(v2(MESSAGE)), parse(v1(MESSAGE))
    assert bare.envelope == "1.0"
    assert bare.row() == wrapped.row()


def test_context_keeps_whitelisted_fields_and_never_the_token() -> None:
    """Only whitelisted context fields are kept: no auth token, no service catalog."""
    note = parse(v2(MESSAGE))
    assert note.context == {"request_id": "req-1", "user_id": "u1"}
    assert "SECRET-TOKEN" not in json.dumps(note.row())


@pytest.mark.parametrize(
    ("change", "routing_key", "field", "expected"),
    [
        ({"priority": None}, "notifications.error", "priority", "ERROR"),
        ({"priority": "warn"}, "notifications.warn", "priority", "WARN"),
        ({"priority": None}, "", "priority", ""),
        ({"message_id": None}, "", "message_id", ""),
        ({"timestamp": 1714564800.5}, "", "timestamp", "1714564800.5"),
        ({"publisher_id": None}, "", "publisher_id", ""),
        ({"payload": [1, "two"]}, "", "payload", [1, "two"]),
        ({"payload": None}, "", "payload", None),
        ({"payload": {"n": 2**70}}, "", "payload", {"n": str(2**70)}),
        ({"payload": {"n": -(2**63)}}, "", "payload", {"n": -(2**63)}),
        ({"payload": {"n": 2**64 - 1}}, "", "payload", {"n": 2**64 - 1}),
    ],
)
def test_field_defaults_and_conversions(
    change: dict[str, Any], routing_key: str, field: str, expected: Any
) -> None:
    """Missing fields get defaults; numbers msgpack cannot carry become text."""
    message = {k: v for k, v in {**MESSAGE, **change}.items() if v is not None}
    note = parse(v2(message), routing_key)
    assert getattr(note, field) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", Reason.NOT_JSON),
        (b"\xff\xfe\x00garbage", Reason.NOT_JSON),
        (b"", Reason.NOT_JSON),
        (b'{"event_type": "a", "x": NaN}', Reason.NOT_JSON),
        (b"[" * 100_000, Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'"compute.instance.update"', Reason.NOT_AN_OBJECT),
        (b"null", Reason.NOT_AN_OBJECT),
        (json.dumps({"oslo.version": "2.0", "oslo.message": "{oops"}).encode(), Reason.NOT_JSON),
        (json.dumps({"oslo.version": "2.0", "oslo.message": "[]"}).encode(),
         Reason.NOT_AN_OBJECT),
        (json.dumps({"oslo.version": "3.0", "oslo.message": "{}"}).encode(),
         Reason.UNKNOWN_ENVELOPE),
        (json.dumps({"oslo.version": "2.0", "oslo.message": MESSAGE}).encode(),
         Reason.UNKNOWN_ENVELOPE),
        (json.dumps({"oslo.message": json.dumps(MESSAGE)}).encode(), Reason.UNKNOWN_ENVELOPE),
        (json.dumps({"oslo.version": "2.0"}).encode(), Reason.UNKNOWN_ENVELOPE),
        (v2({"payload": {}}), Reason.NO_EVENT_TYPE),
        (v1({"payload": {}, "_context_auth_token": "SECRET-TOKEN"}), Reason.NO_EVENT_TYPE),
        (v2({"event_type": ""}), Reason.NO_EVENT_TYPE),
        (v2({"event_type": None}), Reason.NO_EVENT_TYPE),
        (v2({"event_type": 5}), Reason.BAD_EVENT_TYPE),
        (v2({"event_type": ["a"]}), Reason.BAD_EVENT_TYPE),
        (v2({"event_type": "compute@instance"}), Reason.BAD_EVENT_TYPE),
        (v2({"event_type": "compute instance"}), Reason.BAD_EVENT_TYPE),
        (v2({"event_type": "compute\x00instance"}), Reason.BAD_EVENT_TYPE),
        (v2({"event_type": "x" * (MAX_EVENT_TYPE_BYTES + 1)}), Reason.BAD_EVENT_TYPE),
        (v2({"event_type": "a.b", "publisher_id": 5}), Reason.BAD_FIELD),
        (v2({"event_type": "a.b", "message_id": []}), Reason.BAD_FIELD),
        (v2({"event_type": "a.b", "priority": {}}), Reason.BAD_FIELD),
        (v2({"event_type": "a.b", "timestamp": True}), Reason.BAD_FIELD),
    ],
)
def test_malformed_bodies_name_their_reason(body: bytes, reason: Reason) -> None:
    """Each kind of bad body raises Malformed with its own reason, and never quotes a token."""
    with pytest.raises(Malformed) as caught:
        parse(body, "notifications.info")
    assert caught.value.reason is reason
    assert "SECRET-TOKEN" not in str(caught.value)


def test_too_large_bodies_are_refused_unread() -> None:
    """A body over the limit is refused before it is parsed."""
    with pytest.raises(Malformed) as caught:
        parse(b"x" * 101, max_bytes=100)
    assert caught.value.reason is Reason.TOO_LARGE
    assert parse(v2(MESSAGE), max_bytes=len(v2(MESSAGE))).event_type == MESSAGE["event_type"]


def test_event_type_at_the_length_limit_is_taken() -> None:
    """An event type of exactly MAX_EVENT_TYPE_BYTES bytes is fine."""
    event_type = "e." + "x" * (MAX_EVENT_TYPE_BYTES - 2)
    assert parse(v2({"event_type": event_type})).event_type == event_type


# --- fuzzing ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)
event_types = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="@"), min_size=1, max_size=40
)
messages = st.fixed_dictionaries(
    {"event_type": event_types},
    optional={
        "message_id": st.text(max_size=36),
        "publisher_id": st.text(max_size=20),
        "priority": st.sampled_from(["INFO", "error", "WARN", "debug"]),
        "timestamp": st.text(max_size=26),
        "payload": json_values,
        "_context_request_id": st.text(max_size=10),
        "_context_auth_token": st.just("SECRET-TOKEN"),
    },
)


def _outcome(body: bytes) -> Any:
    try:
        return parse(body, "notifications.info")
    except Malformed as exc:
        return exc


@given(st.binary(max_size=200))
def test_random_bytes_give_a_notification_or_malformed_never_another_error(body: bytes) -> None:
    """Garbage in gives Malformed (or, by chance, a notification), never another exception."""
    _outcome(body)


@given(json_values)
def test_any_json_value_in_either_envelope_never_raises_another_error(value: Any) -> None:
    """Any JSON value, bare or wrapped, gives a notification or Malformed."""
    _outcome(v1(value))
    _outcome(v2(value))
    _outcome(json.dumps({"oslo.version": "2.0", "oslo.message": value}).encode())


@given(messages)
def test_a_parsed_notification_is_the_same_in_both_envelopes_and_fits_the_bus(
    message: dict[str, Any],
) -> None:
    """Both envelopes give the same row; the row is msgpack-encodable and holds no token."""
    wrapped, bare = _outcome(v2(message)), _outcome(v1(message))
    assert type(wrapped) is type(bare)
    if isinstance(wrapped, Malformed):
        assert isinstance(bare, Malformed)
        assert wrapped.reason is bare.reason
        assert "SECRET-TOKEN" not in str(wrapped)
        return
    assert wrapped.row() == bare.row()
    assert wrapped.event_type == message["event_type"]
    msgpack.packb(wrapped.row())
    assert "SECRET-TOKEN" not in json.dumps(wrapped.row())
