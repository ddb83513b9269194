"""``zdse-web``: serve the live dashboard of the bus over HTTP.

It is a bus client like zdse-ctl (same --router/--pub, ZDSE_ROUTER/ZDSE_PUB
and CURVE flags), registered under the name ``web.<random>``. It starts
serving at once and connects to the cage meanwhile: until the cage answers,
and whenever it stops answering, the pages say so in a banner and recover by
themselves.

Read-only by default: with --control, the front page offers start, stop and
reload of supervised services (the cage's control requests, as zdse-ctl
sends them), and the request form may send them too. There is no login:
anyone who reaches --listen sees the bus (and with --control may steer it),
so keep it on loopback or behind a proxy that authenticates.

Exit codes:
    0  stopped by SIGINT or SIGTERM
    1  the cage refused this client (its CURVE key is not authorized for a web.* name)
    2  bad usage, or --listen cannot be bound
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import uuid

from aiohttp import web

from zdse.cli.args import add_log_flags, env_default
from zdse.cli.client import client_parser
from zdse.cli.node import client_curve
from zdse.errors import ConfigError, ProtocolError, RegistrationError
from zdse.log import configure, get_logger
from zdse.node.bus import Bus
from zdse.web.app import Dashboard, build_app
from zdse.wire.endpoints import Endpoints, is_loopback

__all__ = ["DEFAULT_LISTEN", "build_parser", "main", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:8570"
EXIT_REFUSED, EXIT_USAGE = 1, 2

log = get_logger(component="zdse-web")


def parse_listen(text: str) -> tuple[str, int]:
    """argparse type for ``--listen HOST:PORT`` (``[::1]:8570`` for IPv6; port 0: any free)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    """The command line of zdse-web."""
    parser = client_parser("zdse-web", "Serve a live web dashboard of the bus.", __doc__)
    parser.add_argument(
        "--listen", type=parse_listen, default=env_default("ZDSE_WEB_LISTEN", DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help="where to serve HTTP (env ZDSE_WEB_LISTEN, default %(default)s)")
    parser.add_argument(
        "--control", action="store_true",
        help="allow start, stop and reload of supervised services (default: read-only)")
    add_log_flags(parser)
    return parser


async def serve(args: argparse.Namespace, bus: Bus) -> int:
    """Serve until SIGINT/SIGTERM; connect ``bus`` to the cage meanwhile."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    connected = asyncio.Event()
    dashboard = Dashboard(bus, connected, args.control)
    runner = web.AppRunner(build_app(dashboard), access_log=None, handle_signals=False)
    await runner.setup()
    host, port = args.listen
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"zdse-web: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_USAGE
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{shown}:{bound[1]}/"
    if not is_loopback(f"tcp://{shown}:{bound[1]}"):
        log.warning("web.exposed", url=url,
                    why="no login: anyone who reaches it sees the bus")
    log.info("web.started", url=url, router=bus.endpoints.router, control=args.control)
    code = 0

    async def connect() -> None:
        nonlocal code
        try:
            await bus.open()
        except RegistrationError as exc:
            log.error("web.refused", error=str(exc))
            code = EXIT_REFUSED
            stop.set()
            return
        connected.set()
        log.info("web.connected", name=bus.name)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(connect()), group.create_task(dashboard.watch.run())]
        await stop.wait()
        for task in tasks:
            task.cancel()
    with contextlib.suppress(Exception):
        await runner.cleanup()
    await bus.close()
    log.info("web.stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of zdse-web."""
    args = build_parser().parse_args(argv)
    configure(args.log_level, fmt=args.log_format)
    try:
        bus = Bus(f"web.{uuid.uuid4().hex[:8]}", endpoints=Endpoints.from_args(args, connect=True),
                  info={"module": "zdse-web"}, curve=client_curve(args))
        return asyncio.run(serve(args, bus))
    except (ConfigError, ProtocolError) as exc:
        print(f"zdse-web: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
