"""Reading a module's ``--set KEY=VALUE`` options: one set of parsers for all. Pure.

Every error is a :class:`~zdse.errors.ConfigError` naming the option and
the value, e.g. ``--set window='ten': not a whole number``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from zdse.errors import ConfigError

__all__ = ["boolean", "positive_float", "positive_int"]

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def positive_float(options: Mapping[str, str], key: str, default: float) -> float:
    """Option ``key`` as a finite number above zero (``default`` when absent).

    Raises:
        ConfigError: not a number, or not finite and above zero.
    """
    text = options.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text!r}: not a number") from None
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"--set {key}={text!r}: must be a finite number above zero")
    return value


def positive_int(options: Mapping[str, str], key: str, default: int) -> int:
    """Option ``key`` as a whole number of at least 1 (``default`` when absent).

    Raises:
        ConfigError: not a whole number, or below 1.
    """
    text = options.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--set {key}={text!r}: not a whole number") from None
    if value < 1:
        raise ConfigError(f"--set {key}={text!r}: must be at least 1")
    return value


def boolean(options: Mapping[str, str], key: str, default: bool) -> bool:
    """Option ``key`` as true (1, true, yes, on) or false (0, false, no, off).

    Raises:
        ConfigError: anything else.
    """
    text = options.get(key)
    if text is None:
        return default
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ConfigError(f"--set {key}={text!r}: say true or false")
