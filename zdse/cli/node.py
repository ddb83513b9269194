"""``zdse-node --module NAME --name NAME``: run one data service."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from zdse.cli.args import add_log_flags, key_value
from zdse.errors import ConfigError, ProtocolError, RegistrationError
from zdse.log import configure, get_logger
from zdse.modules import registry as modules
from zdse.node.bus import Bus
from zdse.node.service import Service
from zdse.supervisor.processes import follow_parent
from zdse.tasks import cancel_and_wait
from zdse.wire import codec
from zdse.wire.curve import CurveClient
from zdse.wire.endpoints import Endpoints, add_client_key_flags, add_endpoint_flags


def build_parser() -> argparse.ArgumentParser:
    """The command line of zdse-node."""
    parser = argparse.ArgumentParser(
        prog="zdse-node",
        description="Run one data service (an instance of a module) on the bus.",
    )
    parser.add_argument("--module", required=True, help="the module, e.g. file or vsphere")
    parser.add_argument("--name", help="the service's unique name (default: the module's)")
    parser.add_argument(
        "--address", action="append", default=[], metavar="ADDR",
        help="an extra address, may be shared and hold * or # (repeatable; "
        "default: the module's own, e.g. NAME.# for amqp)",
    )
    parser.add_argument(
        "--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
        dest="options", help="a module option (repeatable)",
    )
    add_endpoint_flags(parser)
    add_client_key_flags(parser)
    add_log_flags(parser)
    return parser


async def run(service: Service, bus: Bus) -> int:
    """Register, start the service, run until SIGTERM/SIGINT, stop it."""
    log = get_logger(service=service.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service.attach(bus)
    try:
        if not await open_unless_stopped(bus, stop):
            log.info("node.stopped", registered=False)
            return 0
    except RegistrationError as exc:
        log.error("node.refused", error=str(exc))
        print(f"zdse-node: {exc}", file=sys.stderr)
        return 1
    try:
        await service.start()
        log.info("node.started")
        refused = asyncio.ensure_future(bus.wait_refused())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([refused, stopped], return_when=asyncio.FIRST_COMPLETED)
        refused.cancel()
        stopped.cancel()
        if not stop.is_set():
            print(f"zdse-node: {bus.refusal}", file=sys.stderr)
            return 1
        return 0
    finally:
        await service.stop()
        await bus.close()
        log.info("node.stopped")


async def open_unless_stopped(bus: Bus, stop: asyncio.Event) -> bool:
    """Open ``bus`` (it waits for the cage as long as it takes) unless ``stop`` is set first.

    Returns whether the bus opened; a stop closes it unopened.

    Raises:
        RegistrationError: the cage refused the name or the key.
    """
    opening = asyncio.ensure_future(bus.open())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([opening, stopping], return_when=asyncio.FIRST_COMPLETED)
        if opening.done():
            opening.result()
            return True
        return False
    finally:
        stopping.cancel()
        if not opening.done():
            await cancel_and_wait(opening)  # Bus.open closes what it opened


def client_curve(args: argparse.Namespace) -> CurveClient | None:
    """The client CURVE keys the flags name, or None.

    Raises:
        ConfigError: only one of --curve-key / --cage-key, or a bad file.
    """
    if args.curve_key is None and args.cage_key is None:
        return None
    if args.curve_key is None or args.cage_key is None:
        raise ConfigError(
            "--curve-key and --cage-key go together (or ZDSE_CURVE_KEY / ZDSE_CAGE_KEY)"
        )
    return CurveClient.from_files(args.curve_key, args.cage_key)


def main(argv: list[str] | None = None) -> int:
    """Entry point of zdse-node."""
    follow_parent()  # under a cage's supervision: end with the cage
    args = build_parser().parse_args(argv)
    configure(args.log_level, fmt=args.log_format)
    try:
        cls = modules.load(args.module)
        name = args.name or args.module
        codec.validate_name(name)
        addresses = args.address or cls.addresses_for(name)
        for address in addresses:
            codec.validate_pattern(address)
        endpoints = Endpoints.from_args(args, connect=True)
        curve = client_curve(args)
        service = modules.build(args.module, name, dict(args.options))
        bus = Bus(name, addresses, endpoints=endpoints, info={"module": args.module}, curve=curve)
    except (ConfigError, ProtocolError) as exc:
        print(f"zdse-node: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(service, bus))
    except ConfigError as exc:
        print(f"zdse-node: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
