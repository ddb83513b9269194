"""argparse value types, defaults and flags shared by the command-line tools."""

from __future__ import annotations

import argparse
import os

from zdse.errors import ConfigError
from zdse.log import FORMATS, LEVELS
from zdse.modules import options

__all__ = ["add_log_flags", "env_default", "key_value", "positive_float", "positive_int"]


class _FromEnvironment(str):
    """A flag's default read from an environment variable; its repr names the variable.

    argparse runs a flag's ``type=`` on a default that is a string, as on a
    value given on the command line, so a bad value is an argparse error
    (exit 2) and not a traceback. Since the types put ``repr(text)`` in
    their errors, and argparse does in its own, the error names the
    variable: ``argument --heartbeat: ZDSE_HEARTBEAT='0': must be a finite
    number above zero``.
    """

    variable: str

    def __new__(cls, text: str, variable: str) -> _FromEnvironment:
        self = super().__new__(cls, text)
        self.variable = variable
        return self

    def __repr__(self) -> str:
        return f"{self.variable}={str.__repr__(self)}"


def env_default(variable: str, default: str | None = None) -> str | None:
    """A flag's default: environment variable ``variable`` if set, else ``default``.

    Both are strings, so argparse checks them with the flag's ``type=``.
    """
    text = os.environ.get(variable)
    return default if text is None else _FromEnvironment(text, variable)


def positive_float(text: str) -> float:
    """argparse type: a finite number (of seconds) above zero."""
    try:
        return options.finite_positive(text, repr(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """argparse type: a whole number above zero."""
    try:
        return options.whole_positive(text, repr(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``--set KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def add_log_flags(parser: argparse.ArgumentParser, level: str = "info") -> None:
    """Add ``--log-level`` and ``--log-format``, as every zdse process takes them
    (see :func:`zdse.log.configure`)."""
    parser.add_argument("--log-level", choices=LEVELS, default=level,
                        help="the least level logged (default %(default)s)")
    parser.add_argument(
        "--log-format", choices=FORMATS, default="auto",
        help="auto: JSON lines unless stderr is a terminal (default %(default)s)",
    )
