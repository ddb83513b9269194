"""Where the cage listens: defaults, flags and the ZDSE_ROUTER / ZDSE_PUB environment."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from dataclasses import dataclass

from zdse.cli.args import env_default
from zdse.errors import ConfigError

__all__ = [
    "DEFAULT_PUB",
    "DEFAULT_ROUTER",
    "Endpoints",
    "add_client_key_flags",
    "add_endpoint_flags",
    "check_endpoint",
]

DEFAULT_ROUTER = "tcp://127.0.0.1:5570"
DEFAULT_PUB = "tcp://127.0.0.1:5571"

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+|\*)$")
#: Bytes in an ipc:// path: a Unix socket address (sockaddr_un.sun_path)
#: holds 108, the last one a NUL; ZeroMQ refuses a longer path.
IPC_PATH_MAX = 107
_WILDCARD = ("a client connects to one address and port, not to a wildcard (* is for the "
             "cage's own --router and --pub)")


def check_endpoint(endpoint: str, flag: str, connect: bool = False) -> str:
    """Return ``endpoint`` if it is a usable ZeroMQ endpoint.

    Args:
        endpoint: the value given.
        flag: what the error names (a flag, or a file and a key).
        connect: whether a client connects to it (a wildcard only binds).

    Raises:
        ConfigError: naming the flag and what is wrong with the value.
    """
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        path = endpoint[len("ipc://"):]
        size = len(path.encode(errors="surrogateescape"))
        if size > IPC_PATH_MAX:
            raise ConfigError(f"{flag} {endpoint!r}: the ipc path is {size} bytes long; "
                              f"a socket address holds at most {IPC_PATH_MAX}")
        if connect and path == "*":
            raise ConfigError(f"{flag} {endpoint!r}: {_WILDCARD}")
        return endpoint
    if endpoint.startswith("inproc://") and len(endpoint) > len("inproc://"):
        return endpoint
    match = _TCP.match(endpoint)
    if not match:
        raise ConfigError(
            f"{flag} {endpoint!r} is not an endpoint like tcp://127.0.0.1:5570 or ipc:///path"
        )
    port = match["port"]
    if port != "*" and not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {endpoint!r}: port {port} is out of range")
    if connect and "*" in (match["host"], port):
        raise ConfigError(f"{flag} {endpoint!r}: {_WILDCARD}")
    return endpoint


def is_loopback(endpoint: str) -> bool:
    """Tell whether a tcp endpoint is on the loopback interface (ipc/inproc are local)."""
    match = _TCP.match(endpoint)
    if not match:
        return True
    host = match["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The cage's ROUTER and PUB endpoints."""

    router: str = DEFAULT_ROUTER
    pub: str = DEFAULT_PUB

    @classmethod
    def from_args(cls, args: argparse.Namespace, connect: bool = False) -> Endpoints:
        """Build from parsed flags (which default to the environment).

        Args:
            args: the parsed flags.
            connect: whether a client connects to them (zdse-node, zdse-ctl),
                rather than the cage binding them.

        Raises:
            ConfigError: naming the flag (or the variable) and what is wrong.
        """
        return cls(check_endpoint(args.router, "--router", connect),
                   check_endpoint(args.pub, "--pub", connect))


def add_client_key_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--curve-key`` and ``--cage-key`` (env ZDSE_CURVE_KEY / ZDSE_CAGE_KEY)."""
    parser.add_argument(
        "--curve-key", metavar="FILE", default=os.environ.get("ZDSE_CURVE_KEY"),
        help="this client's CURVE secret key file, from zdse-ctl keygen (env ZDSE_CURVE_KEY)",
    )
    parser.add_argument(
        "--cage-key", metavar="FILE", default=os.environ.get("ZDSE_CAGE_KEY"),
        help="the cage's CURVE public key file (env ZDSE_CAGE_KEY)",
    )


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--router`` and ``--pub``, defaulting to $ZDSE_ROUTER / $ZDSE_PUB."""
    # env_default: an error about a value from the environment names the variable.
    parser.add_argument(
        "--router",
        default=env_default("ZDSE_ROUTER", DEFAULT_ROUTER),
        help="the cage's ROUTER endpoint (env ZDSE_ROUTER, default %(default)s)",
    )
    parser.add_argument(
        "--pub",
        default=env_default("ZDSE_PUB", DEFAULT_PUB),
        help="the cage's PUB endpoint (env ZDSE_PUB, default %(default)s)",
    )
