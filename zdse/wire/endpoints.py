"""Where the cages listen: defaults, flags and the ZDSE_ROUTER / ZDSE_PUB environment.

A client may list several cages (docs/redundancy.md): comma-separated, paired by
position. A cage binds one ROUTER and one PUB.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Iterable
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
    "split_list",
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
    try:
        endpoint.encode()
    except UnicodeEncodeError:
        # ZeroMQ takes endpoints as UTF-8: bytes that are not (from argv or the
        # environment) would end in a traceback when the socket connects.
        raise ConfigError(f"{flag} {endpoint!r} is not UTF-8 text") from None
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


def split_list(value: str, flag: str) -> list[str]:
    """The entries of a comma-separated endpoint list (spaces around them ignored).

    Raises:
        ConfigError: an entry is empty, or one is listed twice.
    """
    entries = [entry.strip() for entry in value.split(",")]
    if "" in entries:
        raise ConfigError(f"{flag} {value!r} holds an empty entry (a list is "
                          "tcp://h1:5570,tcp://h2:5570)")
    for i, entry in enumerate(entries):
        if entry in entries[:i]:
            raise ConfigError(f"{flag} {value!r} lists {entry!r} twice")
    return entries


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The endpoints of one cage's ROUTER and PUB, or of several cages.

    Each field may hold a comma-separated list: the cages, paired by
    position (the first ROUTER with the first PUB, ...). One entry is one
    cage, as always; :attr:`cages` gives one single-cage value per cage.

    Raises:
        ConfigError: the two lists do not have the same length, or one has
            an empty entry or an entry twice.
    """

    router: str = DEFAULT_ROUTER
    pub: str = DEFAULT_PUB

    def __post_init__(self) -> None:
        if "," in self.router or "," in self.pub:
            self._pairs()

    def _pairs(self) -> list[tuple[str, str]]:
        routers = split_list(self.router, "--router")
        pubs = split_list(self.pub, "--pub")
        if len(routers) != len(pubs):
            raise ConfigError(f"--router lists {_cages(len(routers))} but --pub lists "
                              f"{_cages(len(pubs))}: they are paired by position")
        return list(zip(routers, pubs, strict=True))

    @property
    def cages(self) -> tuple[Endpoints, ...]:
        """One single-cage Endpoints per listed cage, in the order listed."""
        if "," not in self.router:
            return (self,)
        return tuple(Endpoints(router, pub) for router, pub in self._pairs())

    @classmethod
    def of(cls, pairs: Iterable[Endpoints | tuple[str, str]]) -> Endpoints:
        """The endpoints of several cages, from one ``(router, pub)`` pair (or Endpoints) each.

        Raises:
            ConfigError: no pair at all, or a list as in the constructor.
        """
        cages = [(p.router, p.pub) if isinstance(p, Endpoints) else p for p in pairs]
        if not cages:
            raise ConfigError("no cage listed: give at least one --router and --pub")
        return cls(",".join(r for r, _ in cages), ",".join(p for _, p in cages))

    @classmethod
    def from_args(cls, args: argparse.Namespace, connect: bool = False) -> Endpoints:
        """Build from parsed flags (which default to the environment).

        Args:
            args: the parsed flags.
            connect: whether a client connects to them (zdse-node, zdse-ctl),
                rather than the cage binding them. A client may list several
                cages; a cage binds one ROUTER and one PUB.

        Raises:
            ConfigError: naming the flag (or the variable) and what is wrong.
        """
        router, pub = args.router, args.pub
        if "," not in router and "," not in pub:
            # One cage: checked exactly as ever (an error names the variable).
            return cls(check_endpoint(router, "--router", connect),
                       check_endpoint(pub, "--pub", connect))
        if not connect:
            raise ConfigError(f"a cage binds one --router and one --pub, not a list "
                              f"({router!r}, {pub!r}): run one zdse-proxy per cage")
        cages = cls(router, pub).cages
        for i, cage in enumerate(cages, 1):
            check_endpoint(cage.router, f"--router (cage {i} of {router!r})", connect)
            check_endpoint(cage.pub, f"--pub (cage {i} of {pub!r})", connect)
        return cls.of(cages)


def _cages(count: int) -> str:
    return f"{count} cage" + ("" if count == 1 else "s")


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


def add_endpoint_flags(parser: argparse.ArgumentParser, client: bool = True) -> None:
    """Add ``--router`` and ``--pub``, defaulting to $ZDSE_ROUTER / $ZDSE_PUB.

    Args:
        parser: the command line to add them to.
        client: a client's flags, which may list several cages (the cage's
            own flags name one endpoint each).
    """
    several = ("; several cages: comma-separated, paired by position with --pub"
               if client else "")
    # env_default: an error about a value from the environment names the variable.
    parser.add_argument(
        "--router",
        default=env_default("ZDSE_ROUTER", DEFAULT_ROUTER),
        help=f"the cage's ROUTER endpoint (env ZDSE_ROUTER, default %(default)s{several})",
    )
    parser.add_argument(
        "--pub",
        default=env_default("ZDSE_PUB", DEFAULT_PUB),
        help="the cage's PUB endpoint (env ZDSE_PUB, default %(default)s"
             + (several.replace("--pub", "--router") + ")" if client else ")"),
    )
