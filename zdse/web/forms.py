"""The request form's fields, checked. Pure.

A form (or the JSON API's body) names a key, a dataindex, JSON args, a
timeout and whether to gather every service's answer. :func:`parse_request`
turns it into a :class:`RequestForm` or raises :class:`FormError` with one
line saying which field is wrong and why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zdse.errors import ProtocolError, ZdseError
from zdse.wire import codec

__all__ = ["CONTROL_REQUESTS", "MAX_TIMEOUT", "FormError", "RequestForm", "parse_request"]

#: The longest a request from the page may wait: a browser tab waits for it.
MAX_TIMEOUT = 60.0
#: The timeout when the form leaves it empty.
DEFAULT_TIMEOUT = 5.0
#: Bytes of JSON args a form may carry: a request, not an upload.
MAX_ARGS_BYTES = 64 * 1024
#: The cage's requests that change something: refused unless --control.
CONTROL_REQUESTS = frozenset({"start", "stop", "reload", "reload-config"})


class FormError(ZdseError):
    """A field of the request form is missing or malformed (the message says which)."""


@dataclass(frozen=True, slots=True)
class RequestForm:
    """A checked request: send ``dataindex`` with ``args`` to ``key``."""

    key: str
    dataindex: str
    args: Any
    timeout: float
    gather: bool


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name, "")
    if not isinstance(value, str):
        raise FormError(f"{name} must be text")
    return value.strip()


def _word(fields: Mapping[str, Any], name: str, hint: str) -> str:
    """A required field that goes on the wire as an address or dataindex."""
    value = _text(fields, name)
    if not value:
        raise FormError(f"{name} is missing: {hint}")
    try:
        codec.validate_pattern(value, name)
    except ProtocolError as exc:
        raise FormError(str(exc)) from None
    return value


def parse_request(fields: Mapping[str, Any], control: bool) -> RequestForm:
    """Check a request form's fields (strings, as a form posts them).

    Args:
        fields: ``key``, ``dataindex``, ``args`` (JSON, empty for null),
            ``timeout`` (seconds, empty for the default), ``all`` (any
            non-empty value: gather every service's answer).
        control: whether the dashboard may send the cage's control requests.

    Raises:
        FormError: which field is wrong, and why.
    """
    key = _word(fields, "key", "the address to send the request to, e.g. cage")
    dataindex = _word(fields, "dataindex", "what to ask for, e.g. services")
    if key == codec.CAGE and dataindex in CONTROL_REQUESTS and not control:
        raise FormError(f"{dataindex!r} changes the cage: zdse-web is read-only "
                        "(start it with --control to allow it)")
    raw = fields.get("args", "")
    if isinstance(raw, str):
        if len(raw.encode()) > MAX_ARGS_BYTES:
            raise FormError(f"args is longer than {MAX_ARGS_BYTES} bytes")
        try:
            args = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise FormError(f"args is not JSON: {exc}") from None
    else:
        args = raw  # the JSON API gives the value itself
    timeout_text = fields.get("timeout", "")
    if isinstance(timeout_text, int | float) and not isinstance(timeout_text, bool):
        timeout = float(timeout_text)
    elif isinstance(timeout_text, str) and timeout_text.strip():
        try:
            timeout = float(timeout_text)
        except ValueError:
            raise FormError(f"timeout {timeout_text!r} is not a number of seconds") from None
    elif timeout_text in ("", None):
        timeout = DEFAULT_TIMEOUT
    else:
        raise FormError("timeout must be a number of seconds")
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise FormError(f"timeout must be above 0 and at most {MAX_TIMEOUT:g} seconds")
    return RequestForm(key, dataindex, args, timeout, bool(fields.get("all")))
