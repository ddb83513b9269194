"""``zdse-ctl``: look at the bus and talk to its services.

``zdse-ctl --help`` ends with the rest of this docstring.

Exit codes:
    0  done; for sub also: its --timeout passed without --count, or SIGINT/SIGTERM
    1  sub --count N: fewer than N updates within --timeout
    2  bad usage
    3  no service listens on the key (req; sub without --wait)
    4  a request timed out
    5  the service, or the cage, answered with an error (e.g. an unknown name)
    6  the cage cannot be reached
    7  the cage refused this client (its CURVE key is not authorized for a ctl.* name)
    8  req --all: not every service answered in time (stderr names them; stdout has the rest)
  130  interrupted (Ctrl-C) before the answer came

With several cages (--router and --pub list them, docs/redundancy.md), services,
routes and stats ask every cage (each one itself, through one client that lists
them all) and print each one's answer under its ROUTER (--json: {router:
answer, or {"error": ...}}); a cage that does not answer is named on stderr,
one line each, and the exit code is 0 if any cage answered (7 if a cage refused
this client: it then holds its name at no cage). start, stop,
reload and reload-config act on one cage's supervisor: give that cage alone.
Other commands go through the bus, which uses every cage.

sub prints a publisher's "lost" update like any other (it counts toward
--count) and goes on: the publisher may come back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from typing import Any, TextIO

from zdse.cli.args import add_log_flags, env_default, positive_float, positive_int
from zdse.cli.client import client_parser
from zdse.cli.node import client_curve
from zdse.errors import (
    BusClosed,
    ConfigError,
    NoRouteError,
    ProtocolError,
    RegistrationError,
    RemoteError,
    RequestTimeout,
    ZdseError,
)
from zdse.log import configure
from zdse.node.bus import Bus, Update
from zdse.node.requests import Gathered
from zdse.wire.codec import CAGE, REFRESH
from zdse.wire.curve import generate, load_public
from zdse.wire.endpoints import Endpoints
from zdse.wire.limits import CONFIG_CHECK_TIMEOUT
from zdse.wire.routes import pattern_matches

(EXIT_OK, EXIT_SUB, EXIT_USAGE, EXIT_NOROUTE, EXIT_TIMEOUT, EXIT_REMOTE, EXIT_UNREACHABLE,
 EXIT_REFUSED, EXIT_PARTIAL) = range(9)
#: The shell's code for a command ended by SIGINT.
EXIT_INTERRUPTED = 130
#: Seconds a command to the cage waits for its answer (reload-config waits
#: CONFIG_CHECK_TIMEOUT more: the cage answers it when its check is done).
CAGE_TIMEOUT = 5.0


#: Commands that, given several cages, ask each one (each has its own view).
PER_CAGE = ("services", "routes", "stats")
#: Commands to one cage's supervisor: refused given several cages.
SUPERVISOR = ("start", "stop", "reload", "reload-config")

#: How each error ends zdse-ctl.
EXIT_CODES: dict[type[ZdseError], int] = {
    NoRouteError: EXIT_NOROUTE,
    RequestTimeout: EXIT_TIMEOUT,
    RemoteError: EXIT_REMOTE,
    BusClosed: EXIT_UNREACHABLE,
    RegistrationError: EXIT_REFUSED,
}


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--args is not JSON: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of zdse-ctl."""
    parser = client_parser("zdse-ctl", "Look at and talk to zdse.", __doc__)
    parser.add_argument(
        "--connect-timeout", type=positive_float,
        default=env_default("ZDSE_CONNECT_TIMEOUT", "5"),
        help="seconds to wait for the cage (env ZDSE_CONNECT_TIMEOUT, default %(default)s)",
    )
    add_log_flags(parser, level="warning")
    cmds = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("services", "the services registered with the cage, and those it supervises"),
        ("routes", "the route table: pattern -> services"),
        ("stats", "the cage's counters"),
        ("reload-config", "make the cage read its config file again: start added services, "
                          "stop removed ones, reload changed ones"),
    ):
        p = cmds.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, text in (
        ("start", "start a supervised service (at once, even if it failed)"),
        ("stop", "stop a supervised service; it stays stopped until started"),
        ("reload", "restart a supervised service in a new process (its code imported anew)"),
    ):
        p = cmds.add_parser(name, help=text, description=text)
        p.add_argument("service", metavar="NAME", help="the service's name")
        p.add_argument("--json", action="store_true", help="print JSON instead of a line")

    sub = cmds.add_parser("sub", help="subscribe and print each update as JSON")
    sub.add_argument("key")
    sub.add_argument("dataindex")
    sub.add_argument("--count", type=positive_int, help="exit after N updates (N >= 1)")
    sub.add_argument("--timeout", type=positive_float, help="give up after S seconds")
    sub.add_argument("--view", action="store_true",
                     help="print the whole merged view after each update as data")
    sub.add_argument("--json", action="store_true", help="one compact JSON object per line")
    sub.add_argument("--wait", action="store_true",
                     help="keep waiting when no service listens on KEY yet")

    refresh = cmds.add_parser(
        "refresh", help="make a polling service poll now; print what it published",
        description="Send the reserved request refresh: the service polls at once and "
                    "answers when that poll is done, with the seqs it published. A service "
                    "that does not poll answers NotPolling (exit 5).")
    refresh.add_argument("service", metavar="NAME", help="the service's name")
    refresh.add_argument("--timeout", type=positive_float, default=30.0,
                         help="seconds to wait for the poll (default %(default)s)")

    keygen = cmds.add_parser("keygen", help="write a CURVE key pair: PREFIX.key, PREFIX.key_secret")
    keygen.add_argument("prefix", help="path and name, e.g. keys/vsphere-boston")
    keygen.add_argument("--force", action="store_true",
                        help="replace an existing pair (by default keygen refuses to)")

    req = cmds.add_parser("req", help="send a request and print the reply as JSON")
    req.add_argument("key")
    req.add_argument("dataindex")
    req.add_argument("--args", type=_json_arg, default=None, help="the request's args, as JSON")
    req.add_argument("--timeout", type=positive_float, default=10.0)
    req.add_argument("--all", action="store_true",
                     help="gather the replies of every service on KEY, by name")
    return parser


#: Levels of nesting JSON printing gets beyond its caller's own stack: the
#: codec (msgpack) carries at most 1,024, and a printed update wraps the data
#: in a record (and --view in a view). Python's recursion limit (1,000 by
#: default, counted from the bottom of the stack) would otherwise decide,
#: and ``sub`` prints from deeper in the stack than ``req``.
PRINT_NESTING = 1_100


def _print_json(value: Any, out: TextIO, compact: bool) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + PRINT_NESTING)
    try:
        if compact:
            text = json.dumps(value, separators=(",", ":"), default=repr)
        else:
            text = json.dumps(value, indent=2, default=repr)
    finally:
        sys.setrecursionlimit(limit)
    out.write(text + "\n")
    out.flush()


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [headers, *rows]]
    return "\n".join(lines)


def render(command: str, value: Any) -> str:
    """Render a cage answer as a readable table."""
    if command == "services":
        return _table(
            [[s["name"], s.get("state", "running"), s["module"], str(s["pid"] or "-"),
              str(s["restarts"]) if s.get("supervised") else "-",
              f"{s['uptime']:.1f}s" if s["pid"] else "-",
              f"{s['last_seen']:.1f}s" if s.get("last_seen") is not None else "-",
              ", ".join(s["addresses"]), s.get("last_error", "")] for s in value],
            ["NAME", "STATE", "MODULE", "PID", "RESTARTS", "UPTIME", "LAST SEEN", "ADDRESSES",
             "LAST ERROR"],
        )
    if command in ("start", "stop", "reload"):
        pid = f" (pid {value['pid']})" if value.get("pid") else ""
        error = f"; last error: {value['last_error']}" if value.get("last_error") else ""
        return f"{value['name']}: {value['state']}{pid}{error}"
    if command == "reload-config":
        return "\n".join(f"{what}: {', '.join(value[what]) or '-'}"
                         for what in ("added", "removed", "changed", "unchanged"))
    if command == "routes":
        return _table([[p, ", ".join(names)] for p, names in value], ["PATTERN", "SERVICES"])
    return _table([[k, str(v)] for k, v in value.items()], ["COUNTER", "VALUE"])


async def _cage(bus: Bus, args: argparse.Namespace, out: TextIO) -> int:
    service = getattr(args, "service", None)
    # reload-config is answered once the new services passed their check.
    timeout = CAGE_TIMEOUT + (CONFIG_CHECK_TIMEOUT if args.command == "reload-config" else 0)
    value = await bus.request(CAGE, args.command, None if service is None else {"name": service},
                              timeout=timeout)
    if args.json:
        _print_json(value, out, compact=False)
    else:
        out.write(render(args.command, value) + "\n")
    return EXIT_OK


async def _req(bus: Bus, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.all:
        value = await bus.request(args.key, args.dataindex, args.args, args.timeout)
        _print_json(value, out, compact=not out.isatty())
        return EXIT_OK
    gathered = await bus.gather(args.key, args.dataindex, args.args, args.timeout)
    _print_json({
        name: ({"error": a.kind, "message": str(a)} if isinstance(a, RemoteError) else a)
        for name, a in gathered.answers.items()
    }, out, compact=not out.isatty())
    if gathered.complete:
        return EXIT_OK
    err.write(f"zdse-ctl: {await _unanswered(bus, args.key, gathered)} "
              f"did not answer within {args.timeout}s\n")
    return EXIT_PARTIAL


async def _unanswered(bus: Bus, key: str, gathered: Gathered) -> str:
    """Who, of the services on ``key``, did not answer (by name if the cage's routes tell)."""
    try:
        routes = await bus.request(CAGE, "routes", timeout=CAGE_TIMEOUT)
        listening = {name for pattern, names in routes if pattern_matches(pattern, key)
                     for name in names}
    except ZdseError:
        listening = set()
    silent = sorted(listening - set(gathered.answers))
    if gathered.reached is None:
        count = f"{len(silent) or 'some'} service(s)"
    else:
        count = f"{gathered.reached - len(gathered.answers)} of {gathered.reached} services"
    return f"{count} on {key!r}" + (f" ({', '.join(silent)})" if silent else "")


async def _sub(bus: Bus, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen = 0
    compact = args.json or not out.isatty()

    def on_update(update: Update) -> None:
        nonlocal seen
        if done.done():
            return
        if update.kind == "noroute":
            if not args.wait:
                err.write(f"zdse-ctl: no service listens on {args.key!r}\n")
                done.set_result(EXIT_NOROUTE)
            return
        record = {
            "publisher": update.publisher,
            "dataindex": update.dataindex,
            "seq": update.seq,
            "kind": update.kind,
            "data": update.view if args.view else update.data,
        }
        _print_json(record, out, compact)
        seen += 1
        if args.count is not None and seen >= args.count:
            done.set_result(EXIT_OK)

    bus.subscribe(args.key, args.dataindex, on_update)
    loop = asyncio.get_running_loop()
    def interrupted() -> None:
        if not done.done():
            done.set_result(EXIT_OK)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted)
    try:
        return await asyncio.wait_for(done, args.timeout)
    except TimeoutError:
        if args.count is not None:
            err.write(f"zdse-ctl: {seen} of {args.count} updates within {args.timeout}s\n")
            return EXIT_SUB
        return EXIT_OK


async def _ask_cage(bus: Bus, cage: int, args: argparse.Namespace,
                    deadline: float) -> tuple[Any, ZdseError | None]:
    """Cage ``cage``'s answer to ``args.command`` (once it registered ``bus``), or the error."""
    try:
        if not await bus.wait_cage(cage, max(0.0, deadline - asyncio.get_running_loop().time())):
            raise BusClosed(f"no answer from the cage within {args.connect_timeout}s: "
                            f"{bus.cage_trouble(cage)}")
        return await bus.ask_cage(cage, args.command, None, timeout=CAGE_TIMEOUT), None
    except ZdseError as exc:
        if not any(isinstance(exc, kind) for kind in EXIT_CODES):
            raise
        return None, exc


async def _each_cage(bus: Bus, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Ask every cage (they share nothing) through ``bus``; print each one's view under its
    ROUTER. ``bus`` is not open yet: a cage has ``--connect-timeout`` to register it.

    Exits 0 if any cage answered, unless a cage refused the client (7); otherwise with
    the first cage's error code.
    """
    cages = bus.cages
    deadline = asyncio.get_running_loop().time() + args.connect_timeout
    answers: list[tuple[Any, ZdseError | None]]
    try:
        await bus.open()
    except BusClosed:
        # No cage registered the bus in time: each says why.
        answers = [(None, BusClosed(f"no answer from the cage within {args.connect_timeout}s: "
                                    f"{bus.cage_trouble(i)}")) for i in range(len(cages))]
    except RegistrationError as refused:
        answers = [(None, refused)] * len(cages)  # it names the cage that refused
    else:
        try:
            answers = await asyncio.gather(*(_ask_cage(bus, i, args, deadline)
                                             for i in range(len(cages))))
        finally:
            await bus.close()
    if args.json:
        _print_json({cage.router: ({"error": str(exc)} if exc is not None else value)
                     for cage, (value, exc) in zip(cages, answers, strict=True)}, out,
                    compact=False)
    else:
        parts = []
        for cage, (value, exc) in zip(cages, answers, strict=True):
            if exc is None:
                parts.append(f"cage {cage.router}:\n{render(args.command, value)}")
            else:
                parts.append(f"cage {cage.router}: no answer: {exc}")
        out.write("\n\n".join(parts) + "\n")
    failed = [(cage, exc) for cage, (_, exc) in zip(cages, answers, strict=True) if exc]
    for cage, exc in failed:
        err.write(f"zdse-ctl: cage {cage.router}: {exc}\n")
    # A refusal by any cage is the client's: it then holds its name at none.
    errors = [error for _, error in failed]
    refusal = next((e for e in errors if isinstance(e, RegistrationError)), None)
    if refusal is None and len(failed) < len(cages):
        return EXIT_OK
    first = refusal or errors[0]
    return next(c for kind, c in EXIT_CODES.items() if isinstance(first, kind))


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Connect under a throw-away name and run one command."""
    if args.command == "keygen":
        public, secret = generate(args.prefix, force=args.force)
        out.write(f"public key: {load_public(str(public)).decode()}\n"
                  f"wrote {public} and {secret}\n")
        return EXIT_OK
    endpoints = Endpoints.from_args(args, connect=True)
    several = len(endpoints.cages) > 1
    if several and args.command in SUPERVISOR:
        raise ConfigError(f"{args.command} acts on one cage's supervisor: give that cage's "
                          f"--router and --pub alone (these list {len(endpoints.cages)} cages)")
    name = f"ctl.{uuid.uuid4().hex[:8]}"
    bus = Bus(name, endpoints=endpoints, info={"module": "zdse-ctl"},
              connect_timeout=args.connect_timeout, curve=client_curve(args))
    try:
        if several and args.command in PER_CAGE:
            return await _each_cage(bus, args, out, err)
        await bus.open()
        try:
            if args.command == "sub":
                return await _sub(bus, args, out, err)
            if args.command == "req":
                return await _req(bus, args, out, err)
            if args.command == "refresh":
                value = await bus.request(args.service, REFRESH, None, args.timeout)
                _print_json(value, out, compact=not out.isatty())
                return EXIT_OK
            return await _cage(bus, args, out)
        finally:
            await bus.close()
    except ZdseError as exc:
        code = next((c for kind, c in EXIT_CODES.items() if isinstance(exc, kind)), None)
        if code is None:
            raise
        err.write(f"zdse-ctl: {exc}\n")
        return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of zdse-ctl."""
    args = build_parser().parse_args(argv)
    configure(args.log_level, fmt=args.log_format)
    try:
        return asyncio.run(run(args, sys.stdout, sys.stderr))
    except (ConfigError, ProtocolError) as exc:
        print(f"zdse-ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zdse-ctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
