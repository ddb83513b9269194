"""What ``zdse-proxy`` adds around its loop for an operator: a config file,
supervised nodes, reloads on SIGHUP, Prometheus metrics."""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Mapping, Sequence
from types import FrameType

import zmq

from zdse.cage.config import CageConfig, apply_defaults, given_flags, load
from zdse.cage.metrics import Exchange, MetricsServer, take_readings
from zdse.cage.proxy import Proxy
from zdse.modules import registry as modules
from zdse.supervisor.processes import Launcher, Supervisor, connectable
from zdse.wire.endpoints import Endpoints

__all__ = ["Operations", "read_config"]


def read_config(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    env: Mapping[str, str] = os.environ,
) -> CageConfig:
    """Read ``--config`` (if given) and fill ``args`` from it where neither a
    flag nor the environment set a value.

    Raises:
        ConfigError: the file is wrong, naming the key, or a service's module
            refuses its options (see :func:`zdse.modules.registry.check`).
    """
    if args.config is None:
        return CageConfig()
    config = load(args.config, modules.available())
    modules.check_services(config)
    apply_defaults(args, config, given_flags(parser, argv, config.settings.keys()), env)
    return config


class Operations:
    """The supervisor and the metrics server of one cage.

    Args:
        proxy: the cage (not yet serving).
        args: zdse-proxy's options, after :func:`read_config`.
        config: the config file's services and restart policy.

    Raises:
        ConfigError: the metrics address is wrong or cannot be bound.
    """

    def __init__(self, proxy: Proxy, args: argparse.Namespace, config: CageConfig) -> None:
        launcher = Launcher(lambda: _connect_to(proxy), args.log_level,
                            cage_key=args.curve_secret)
        supervisor = self.supervisor = Supervisor(proxy.core, launcher, config, args.config)
        supervisor.install(proxy.tick_hooks, proxy.desk)
        self.metrics: MetricsServer | None = None
        if args.metrics:
            exchange = Exchange(
                lambda now: take_readings(proxy.core, supervisor.core.rows, now),
                timeout=max(2.0, 2 * proxy.core.heartbeat),
            )
            exchange.tick(time.monotonic())  # the loop runs not yet: a scrape now sees it fresh
            proxy.tick_hooks.append(exchange.tick)
            self.metrics = MetricsServer(args.metrics, exchange)

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            supervisor.request_reload()  # acted on at the next tick, in the loop

        signal.signal(signal.SIGHUP, on_hangup)

    def close(self) -> None:
        """Stop the supervised nodes and the metrics server."""
        self.supervisor.shutdown()
        if self.metrics is not None:
            self.metrics.close()


def _connect_to(proxy: Proxy) -> Endpoints:
    # The endpoints as bound (a port given as * is known only now), as a
    # node on this machine reaches them.
    return Endpoints(connectable(proxy.router.getsockopt_string(zmq.LAST_ENDPOINT)),
                     connectable(proxy.pub.getsockopt_string(zmq.LAST_ENDPOINT)))
