"""The command line every bus client starts from (zdse-ctl, zdse-web)."""

from __future__ import annotations

import argparse

from zdse.wire.endpoints import add_client_key_flags, add_endpoint_flags

__all__ = ["client_parser"]


def client_parser(prog: str, description: str, doc: str | None) -> argparse.ArgumentParser:
    """The start of a bus client's command line (zdse-ctl, zdse-web).

    Args:
        prog: the tool's name.
        description: one line on what it does.
        doc: the tool's module docstring: its ``Exit codes:`` part is the epilog.

    Returns:
        a parser with the endpoint and CURVE client key flags.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        epilog="".join((doc or "").partition("Exit codes:")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_endpoint_flags(parser)
    add_client_key_flags(parser)
    return parser
