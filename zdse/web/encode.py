"""Values from the bus as JSON text a browser's ``JSON.parse`` takes. Pure.

Published data is msgpack: it may hold bytes, non-string map keys, NaN or
infinities, none of which JSON (or JavaScript's parser) has. They are shown,
not refused: bytes and unknown types as their ``str``, a float that JSON
cannot hold as a string (``"nan"``, ``"inf"``).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["to_json"]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _sanitize(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_sanitize(v) for v in value]
    if isinstance(value, dict):
        return {(k if isinstance(k, str | int | float | bool) or k is None else _text(k)):
                _sanitize(v) for k, v in value.items()}
    return value


def to_json(value: Any) -> str:
    """``value`` as compact JSON (see the module's docstring for what is changed)."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_text)
    except (ValueError, TypeError):
        # A NaN somewhere, or a map key JSON cannot hold: the slow path, rarely.
        return json.dumps(_sanitize(value), separators=(",", ":"), allow_nan=False,
                          default=_text)
