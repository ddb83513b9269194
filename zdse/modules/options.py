"""Reading a module's ``--set KEY=VALUE`` options: one set of parsers for all.

Every error is a :class:`~zdse.errors.ConfigError` naming the option and
the value, e.g. ``--set window='ten': not a whole number``. The same number
check serves the command-line flags (:mod:`zdse.cli.args`) and the
environment variables read outside argparse (:func:`positive_float_env`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

from zdse.errors import ConfigError

__all__ = ["at_least", "boolean", "finite_positive", "positive_float", "positive_float_env",
           "positive_int", "refuse_unknown", "whole_positive"]

T = TypeVar("T")

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def positive_float(options: Mapping[str, str], key: str, default: float,
                   least: float = 0.0) -> float:
    """Option ``key`` as a finite number above zero (``default`` when absent),
    and at least ``least`` (a documented floor) when one is given.

    Raises:
        ConfigError: not a number, not finite and above zero, or below ``least``.
    """
    return _parsed(options, key, default, lambda text, what: finite_positive(text, what, least))


def _parsed(options: Mapping[str, str], key: str, default: T,
            parse: Callable[[str, str], T]) -> T:
    """Option ``key`` through ``parse(text, what)``, or ``default`` when absent."""
    text = options.get(key)
    if text is None:
        return default
    return parse(text, f"--set {key}={text!r}")


def positive_float_env(variable: str, default: float,
                       env: Mapping[str, str] = os.environ) -> float:
    """Environment variable ``variable`` as a finite number above zero
    (``default`` when it is not set).

    Raises:
        ConfigError: naming the variable and its value, e.g.
            ``ZDSE_SUB_REFRESH='0': must be a finite number above zero``.
    """
    text = env.get(variable)
    if text is None:
        return default
    return finite_positive(text, f"{variable}={text!r}")


def finite_positive(text: str, what: str, least: float = 0.0) -> float:
    """``text`` as a finite number above zero, and at least ``least``.

    Raises:
        ConfigError: ``what`` (where the text came from), then what is wrong.
    """
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{what}: not a number") from None
    if not value > 0 or math.isinf(value):
        raise ConfigError(f"{what}: must be a finite number above zero")
    return at_least(value, what, least)


def at_least(value: float, what: str, least: float) -> float:
    """``value`` if it is at least ``least``, a documented floor.

    Raises:
        ConfigError: ``what`` (where the value came from), then the floor.
    """
    if value < least:
        raise ConfigError(f"{what}: must be at least {least:g} (the floor)")
    return value


def positive_int(options: Mapping[str, str], key: str, default: int) -> int:
    """Option ``key`` as a whole number of at least 1 (``default`` when absent).

    Raises:
        ConfigError: not a whole number, or below 1.
    """
    return _parsed(options, key, default, whole_positive)


def whole_positive(text: str, what: str) -> int:
    """``text`` as a whole number of at least 1.

    Raises:
        ConfigError: ``what`` (where the text came from), then what is wrong.
    """
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{what}: not a whole number") from None
    if value < 1:
        raise ConfigError(f"{what}: must be at least 1")
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


def refuse_unknown(module: str, options: Mapping[str, str], known: Collection[str],
                   prefixes: Collection[str] = ()) -> None:
    """Refuse option keys that module ``module`` does not know: a mistyped
    key must not vanish. Keys starting with one of ``prefixes`` are known too.

    The error names the keys only, never a value (a mistyped key may hold a
    password).

    Raises:
        ConfigError: e.g. ``module file has no option 'poll_intervall'
            (known: path, poll_interval)``.
    """
    unknown = sorted(k for k in options if k not in known and not k.startswith(tuple(prefixes)))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        shown = ", ".join([*sorted(known), *(f"{p}*" for p in sorted(prefixes))])
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"module {module} has no option{plural} {names} (known: {shown})")
