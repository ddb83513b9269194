"""``zdse-proxy``: run the cage."""

from __future__ import annotations

import argparse
import sys

from zdse.cage.authz import Authorized
from zdse.cage.config import read_text
from zdse.cage.operations import Operations, read_config
from zdse.cage.proxy import Proxy
from zdse.cli.args import add_log_flags, env_default, positive_float, positive_int
from zdse.errors import ConfigError
from zdse.log import configure, get_logger
from zdse.modules.options import at_least
from zdse.wire.curve import CurveServer, load_secret
from zdse.wire.endpoints import Endpoints, add_endpoint_flags
from zdse.wire.limits import (
    HEARTBEAT_INTERVAL,
    HEARTBEATS_TO_EXPIRE,
    MIN_HEARTBEAT,
    MIN_QUEUE_BYTES,
    NODE_QUEUE_BYTES,
    NODE_QUEUE_HWM,
)


def heartbeat(text: str) -> float:
    """argparse type of --heartbeat: seconds, at least MIN_HEARTBEAT."""
    value = positive_float(text)
    try:
        return at_least(value, repr(text), MIN_HEARTBEAT)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command line of zdse-proxy."""
    parser = argparse.ArgumentParser(prog="zdse-proxy", description="Run the zdse cage.")
    add_endpoint_flags(parser)
    parser.add_argument(
        "--heartbeat",
        type=heartbeat,
        default=env_default("ZDSE_HEARTBEAT", str(HEARTBEAT_INTERVAL)),
        help=f"seconds between heartbeats, at least {MIN_HEARTBEAT:g}; 3 missed expire a node "
        "(env ZDSE_HEARTBEAT, default %(default)s)",
    )
    parser.add_argument(
        "--queue-hwm",
        type=positive_int,
        metavar="N",
        default=env_default("ZDSE_QUEUE_HWM", str(NODE_QUEUE_HWM)),
        help="messages the cage queues for one node (or subscriber) before it drops "
        "what comes next for it; bounds the cage's memory per stalled peer "
        "(env ZDSE_QUEUE_HWM, default %(default)s)",
    )
    parser.add_argument(
        "--queue-bytes",
        type=queue_bytes,
        metavar="BYTES",
        default=env_default("ZDSE_QUEUE_BYTES", str(NODE_QUEUE_BYTES)),
        help="bytes that may wait unread on their way to one node before the cage drops "
        "what comes next for it (the node is told when it catches up); bounds the cage's "
        f"memory per peer that does not read (env ZDSE_QUEUE_BYTES, at least {MIN_QUEUE_BYTES}, "
        "default %(default)s)",
    )
    parser.add_argument(
        "--curve-secret", metavar="FILE",
        help="the cage's CURVE secret key file (zdse-ctl keygen); turns CURVE on",
    )
    parser.add_argument(
        "--authorized", metavar="FILE",
        help="TOML file: client public key -> names (and addresses) it may register",
    )
    add_log_flags(parser)
    parser.add_argument(
        "--config", metavar="FILE",
        help="TOML config: settings (flags and environment override them) and the services "
        "to supervise (docs/operations.md)",
    )
    parser.add_argument(
        "--metrics", metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    parser.set_defaults(heartbeats_to_expire=HEARTBEATS_TO_EXPIRE)
    return parser


def queue_bytes(text: str) -> int:
    """argparse type: a byte budget, a whole number of at least MIN_QUEUE_BYTES."""
    value = positive_int(text)
    if value < MIN_QUEUE_BYTES:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least {MIN_QUEUE_BYTES}")
    return value


def load_curve(args: argparse.Namespace) -> tuple[CurveServer, Authorized] | None:
    """The CURVE set-up the flags ask for.

    Raises:
        ConfigError: only one of the two flags, or a file that is wrong.
    """
    if args.curve_secret is None and args.authorized is None:
        return None
    if args.curve_secret is None or args.authorized is None:
        raise ConfigError("--curve-secret and --authorized go together")
    public, secret = load_secret(args.curve_secret)
    text = read_text(args.authorized, f"--authorized {args.authorized}")
    return CurveServer(public, secret), Authorized.parse(text, args.authorized)


def main(argv: list[str] | None = None) -> int:
    """Run the cage until SIGTERM or SIGINT."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # Files first: a mistake in one is one line on stderr, before any log.
        config = read_config(parser, args, argv)
        curve = load_curve(args)
    except ConfigError as exc:
        print(f"zdse-proxy: {exc}", file=sys.stderr)
        return 2
    configure(args.log_level, fmt=args.log_format)
    operations: Operations | None = None
    try:
        proxy = Proxy(Endpoints.from_args(args), heartbeat=args.heartbeat,
                      curve=curve, heartbeats_to_expire=args.heartbeats_to_expire,
                      queue_hwm=args.queue_hwm, queue_bytes=args.queue_bytes)
        operations = Operations(proxy, args, config)
        proxy.serve()
    except ConfigError as exc:
        get_logger().error("cage.config_error", error=str(exc))
        print(f"zdse-proxy: {exc}", file=sys.stderr)
        return 2
    finally:
        if operations is not None:
            operations.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
