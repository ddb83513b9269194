"""argparse value types shared by the command-line tools."""

from __future__ import annotations

import argparse

__all__ = ["key_value", "positive_float"]


def positive_float(text: str) -> float:
    """argparse type: a number (of seconds) above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above zero")
    return value


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``--set KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value
