"""OpenStack notifications as oslo.messaging puts them on an AMQP bus. Pure.

An AMQP message body holds one notification in one of two envelopes::

    messagingv2   {"oslo.version": "2.0", "oslo.message": "<the message, as JSON text>"}
    messaging     the message itself, unwrapped (oslo's v1 driver, pre-oslo services)

and the message is a JSON object::

    {"message_id": "...", "publisher_id": "compute.host1",
     "event_type": "compute.instance.update", "priority": "INFO",
     "payload": {...}, "timestamp": "2024-05-01 12:00:00.000000",
     "_context_request_id": "...", "_context_auth_token": "...", ...}

:func:`parse` turns a body into a :class:`Notification` or raises
:class:`Malformed` with a :class:`Reason` the bridge counts by. It never
raises anything else, whatever the bytes (a hypothesis test holds it to that).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTEXT_FIELDS",
    "MAX_BODY_BYTES",
    "MAX_EVENT_TYPE_BYTES",
    "Malformed",
    "Notification",
    "Reason",
    "check_event_type",
    "parse",
]

#: Largest body taken by default. Nova's biggest notifications (an instance
#: with its block devices) are a few KiB; a megabyte is a runaway sender, and
#: the window of recent notifications must still fit in one bus snapshot.
MAX_BODY_BYTES = 1024 * 1024

#: An event type becomes a dataindex and part of a PUB topic; AMQP's own limit
#: on a routing key is the same.
MAX_EVENT_TYPE_BYTES = 255

#: The oslo.messaging envelope version this module understands.
OSLO_VERSION = "2.0"

#: The request-context fields copied into a notification's ``context``. A
#: whitelist, not a blacklist: contexts carry ``auth_token`` and the service
#: catalog, and whatever a service adds tomorrow must not leak onto the bus.
CONTEXT_FIELDS = frozenset({
    "request_id", "global_request_id", "user_identity",
    "user", "user_id", "user_name", "user_domain", "user_domain_name",
    "project", "project_id", "project_name", "project_domain", "project_domain_name",
    "tenant", "tenant_id", "tenant_name", "domain", "domain_id", "system_scope",
    "roles", "is_admin", "read_only", "read_deleted", "show_deleted", "timestamp",
})

#: Integers msgpack can carry; JSON has no limit, so larger ones become text.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

_CONTEXT_PREFIX = "_context_"


class Reason(enum.StrEnum):
    """Why a body is not a notification (the bridge counts each reason)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_ENVELOPE = "unknown_envelope"
    NO_EVENT_TYPE = "no_event_type"
    BAD_EVENT_TYPE = "bad_event_type"
    BAD_FIELD = "bad_field"


class Malformed(ValueError):
    """A body that is not an OpenStack notification.

    Attributes:
        reason: the kind of fault, for counting.
        detail: what exactly is wrong (never the body itself: it may hold tokens).
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification, with only the fields that are safe to publish.

    Attributes:
        message_id: oslo's unique id of the notification ('' if the sender gave none).
        event_type: e.g. ``compute.instance.update``.
        priority: upper case, e.g. ``INFO``.
        publisher_id: e.g. ``compute.host1``.
        timestamp: as the sender wrote it (oslo: ``YYYY-MM-DD HH:MM:SS.ffffff``, UTC).
        payload: the service's payload.
        context: the whitelisted request-context fields (:data:`CONTEXT_FIELDS`).
        envelope: ``"2.0"`` (messagingv2) or ``"1.0"`` (unwrapped).
    """

    message_id: str
    event_type: str
    priority: str
    publisher_id: str
    timestamp: str
    payload: Any
    context: dict[str, Any]
    envelope: str

    def row(self) -> dict[str, Any]:
        """The notification as a table row (what subscribers see)."""
        return {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "priority": self.priority,
            "publisher_id": self.publisher_id,
            "timestamp": self.timestamp,
            "payload": self.payload,
            "context": self.context,
        }


def parse(body: bytes, routing_key: str = "", max_bytes: int = MAX_BODY_BYTES) -> Notification:
    """Read one AMQP message body as a notification.

    Args:
        body: the message body.
        routing_key: the AMQP routing key (``notifications.info``); its last
            word stands in for a missing priority.
        max_bytes: larger bodies are refused unread.

    Returns:
        the notification.

    Raises:
        Malformed: the body is not a notification in a known envelope.
    """
    if len(body) > max_bytes:
        raise Malformed(Reason.TOO_LARGE, f"{len(body)} bytes, the limit is {max_bytes}")
    outer = _json(body, "body")
    if not isinstance(outer, dict):
        raise Malformed(Reason.NOT_AN_OBJECT, f"the body is a JSON {_kind(outer)}")
    if "oslo.version" in outer or "oslo.message" in outer:
        version = outer.get("oslo.version")
        inner = outer.get("oslo.message")
        if version != OSLO_VERSION or not isinstance(inner, str):
            raise Malformed(
                Reason.UNKNOWN_ENVELOPE,
                f"oslo.version {version!r} with an oslo.message of type {_kind(inner)} "
                f"(only {OSLO_VERSION!r} with a JSON string is known)",
            )
        message = _json(inner.encode(), "oslo.message")
        if not isinstance(message, dict):
            raise Malformed(Reason.NOT_AN_OBJECT, f"oslo.message is a JSON {_kind(message)}")
        envelope = OSLO_VERSION
    else:
        message, envelope = outer, "1.0"
    return _notification(message, envelope, routing_key)


def _notification(message: dict[str, Any], envelope: str, routing_key: str) -> Notification:
    event_type = message.get("event_type")
    if event_type is None or event_type == "":
        raise Malformed(Reason.NO_EVENT_TYPE, "the message has no event_type")
    check_event_type(event_type)
    fallback_priority = routing_key.rpartition(".")[2] if "." in routing_key else ""
    context = {
        key[len(_CONTEXT_PREFIX):]: value
        for key, value in message.items()
        if key.startswith(_CONTEXT_PREFIX) and key[len(_CONTEXT_PREFIX):] in CONTEXT_FIELDS
    }
    return Notification(
        message_id=_text(message, "message_id", ""),
        event_type=event_type,
        priority=_text(message, "priority", fallback_priority).upper(),
        publisher_id=_text(message, "publisher_id", ""),
        timestamp=_text(message, "timestamp", "", numbers=True),
        payload=message.get("payload"),
        context=context,
        envelope=envelope,
    )


def check_event_type(event_type: Any) -> None:
    """Check that ``event_type`` can name a table.

    Raises:
        Malformed: (``bad_event_type``) it is not a string, is too long, or
            holds '@', a space or a control character.
    """
    if not isinstance(event_type, str):
        raise Malformed(Reason.BAD_EVENT_TYPE, f"event_type is a JSON {_kind(event_type)}")
    if len(event_type.encode()) > MAX_EVENT_TYPE_BYTES:
        raise Malformed(Reason.BAD_EVENT_TYPE, f"event_type is over {MAX_EVENT_TYPE_BYTES} bytes")
    # '@' names the bridge's own tables and latest-state tables (docs/amqp.md);
    # control characters and spaces have no place in a dataindex read from a shell.
    bad = [c for c in event_type if c == "@" or c.isspace() or not c.isprintable()]
    if bad:
        raise Malformed(Reason.BAD_EVENT_TYPE, f"event_type {event_type!r} holds {bad[0]!r}")


def _text(message: dict[str, Any], key: str, default: str, numbers: bool = False) -> str:
    value = message.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Malformed(Reason.BAD_FIELD, f"{key} is a JSON {_kind(value)}, not a string")


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, parse_int=_int, parse_constant=_constant)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError too; its text names no content.
        raise Malformed(Reason.NOT_JSON, f"{what}: {_short(exc)}") from None


def _int(text: str) -> int | str:
    value = int(text)
    return value if _INT_MIN <= value <= _INT_MAX else text


def _constant(text: str) -> Any:
    # NaN and Infinity are not JSON; Python's reader takes them by default.
    raise ValueError(f"{text} is not a JSON value")


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__
