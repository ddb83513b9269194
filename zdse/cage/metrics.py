"""Prometheus metrics of the cage: ``zdse-proxy --metrics HOST:PORT``.

Nothing here runs per message: the routing loop only bumps the counters it
keeps anyway (:class:`~zdse.cage.core.CageCore`), and a scrape turns them into
metrics. A scrape runs on one of the HTTP server's threads, which never
reads the cage's state while the loop changes it: the loop copies what the
metrics need into a :class:`Readings` at every tick (a quarter heartbeat),
and a scrape answers from the newest one at once, waiting on no lock and on
no other scrape. Scrapes of one reading share its rendered text.
docs/operations.md says what each metric means.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from zdse.cage.config import parse_host_port
from zdse.cage.core import CageCore
from zdse.errors import ConfigError, ProtocolError
from zdse.log import get_logger
from zdse.supervisor.core import State
from zdse.wire import codec
from zdse.wire.endpoints import is_loopback

__all__ = ["CageCollector", "Exchange", "MetricsServer", "Readings", "take_readings"]

#: Upper bounds of the batch-size histogram: 1, 2, 4, ... 8192 frames per
#: wake-up (the loop handles at most CAGE_DRAIN_LIMIT, 4096, per wake-up).
BATCH_BUCKETS = tuple(2**k for k in range(14))
#: Kinds a node is told about at once when nothing listens (NoRoute);
#: the other routed kinds are dropped silently.
_ANSWERED = {k.name.lower() for k in codec.NOROUTE_KINDS}
_ROUTED = sorted(k.name.lower() for k in codec.ROUTED_KINDS)

log = get_logger(component="metrics")


@dataclass(frozen=True, slots=True)
class Readings:
    """The cage's counters and state at one tick, for one scrape."""

    uptime: float
    stats: dict[str, int]
    routed: dict[str, int]
    noroute: dict[str, int]
    dropped_kinds: dict[str, int]
    dropped_nodes: dict[str, int]
    over_budget_kinds: dict[str, int]
    #: Bytes sent to each node that it has not acknowledged, by name.
    unread: dict[str, int]
    #: (name, module, seconds since last heard from)
    nodes: list[tuple[str, str, float]]
    routes: int
    subscriptions: int
    batches: dict[int, int]
    batch_frames: int
    #: The supervisor's rows (name, state, restarts, ...), if it runs.
    services: list[dict[str, Any]]


def take_readings(
    core: CageCore, services: Callable[[float], list[dict[str, Any]]] | None, now: float
) -> Readings:
    """Copy what the metrics need out of ``core`` (call it on the loop's thread)."""
    # Every routed kind, from zero, so each series exists before its first frame.
    routed = dict.fromkeys(_ROUTED, 0)
    for head, count in core.routed.items():
        if count:
            try:
                kind, _ = codec.parse_header(head)
            except ProtocolError:  # cannot happen: the keys are valid headers
                continue
            routed[kind.name.lower()] = routed.get(kind.name.lower(), 0) + count
    routed["delta"] = core.stats["published"]
    return Readings(
        uptime=now - core.started_at,
        stats=dict(core.stats),
        routed=routed,
        noroute=dict(core.noroute),
        dropped_kinds=dict(core.dropped_kinds),
        dropped_nodes=dict(core.dropped_nodes),
        over_budget_kinds=dict(core.over_budget_kinds),
        unread={r.name: core.accounts[r.identity].unacked for r in core.nodes.values()
                if r.identity in core.accounts},
        nodes=[(r.name, str(r.info.get("module", "")), now - r.last_seen)
               for r in core.nodes.values()],
        routes=len(core.routes),
        subscriptions=core.live_subscriptions(now),
        batches=dict(core.batches),
        batch_frames=core.batch_frames,
        services=services(now) if services is not None else [],
    )


class Exchange:
    """Hands the loop's newest :class:`Readings` to scrapes, on any thread, without a lock.

    The loop replaces the readings at every tick; a scrape reads the
    reference (one atomic read), so scrapes never wait for the loop or for
    each other.

    Args:
        make: takes the readings at a given time (runs on the loop's thread).
        timeout: readings older than this many seconds means the loop is
            stuck: scrapes get none.
        clock: the loop's clock (monotonic seconds).
    """

    def __init__(self, make: Callable[[float], Readings], timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._make = make
        self.timeout = timeout
        self._clock = clock
        self._latest: tuple[float, Readings] | None = None

    def tick(self, now: float) -> None:
        """On the loop's thread, every tick: take the readings scrapes will read."""
        self._latest = (now, self._make(now))

    def get(self) -> Readings | None:
        """On a scrape's thread: the newest readings, or None if the loop has not
        ticked within ``timeout``."""
        latest = self._latest
        if latest is None or self._clock() - latest[0] > self.timeout:
            return None
        return latest[1]


class CageCollector(Collector):
    """Turns a :class:`Readings` into Prometheus metric families."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def collect(self) -> Iterator[Metric]:
        """The cage's metrics, as of the loop's last tick."""
        snap = self.exchange.get()
        responsive = GaugeMetricFamily(
            "zdse_loop_responsive", "1 if the cage's loop took a sample within the last "
            f"{self.exchange.timeout}s; when 0, no other zdse_ metric is given")
        responsive.add_metric([], 1 if snap is not None else 0)
        yield responsive
        if snap is None:
            return
        yield from self._traffic(snap)
        yield from self._nodes(snap)
        yield from self._services(snap)

    @staticmethod
    def _traffic(snap: Readings) -> Iterator[Metric]:
        routed = CounterMetricFamily(
            "zdse_messages_routed", "Frames the cage forwarded, by kind: routed to one or more "
            "nodes (counted once, whatever the number of destinations), or for 'delta', "
            "published once on the PUB socket. A frame may carry a batch of messages.",
            labels=["kind"])
        for kind, count in sorted(snap.routed.items()):
            routed.add_metric([kind], count)
        yield routed
        dropped = CounterMetricFamily(
            "zdse_messages_dropped", "Frames the cage did not deliver, by kind and reason: "
            "'hwm', the destination node's queue was full (100,000 frames); 'noroute', a "
            "reply, unsubscribe, snapshot or current for a key nobody listens on any more; "
            "'budget', more than the cage's byte budget (--queue-bytes) waited unread for the "
            "destination node.",
            labels=["kind", "reason"])
        for kind in sorted(snap.dropped_kinds.keys() | set(_ROUTED)):
            dropped.add_metric([kind, "hwm"], snap.dropped_kinds.get(kind, 0))
        for kind in sorted(snap.over_budget_kinds.keys() | set(_ROUTED)):
            dropped.add_metric([kind, "budget"], snap.over_budget_kinds.get(kind, 0))
        for kind in _ROUTED:
            if kind not in _ANSWERED:
                dropped.add_metric([kind, "noroute"], snap.noroute.get(kind, 0))
        yield dropped
        noroute = CounterMetricFamily(
            "zdse_noroute_answers", "Requests, messages and subscribes to a key nobody listens "
            "on, answered at once with NoRoute, by kind.", labels=["kind"])
        for kind in sorted(_ANSWERED):
            noroute.add_metric([kind], snap.noroute.get(kind, 0))
        yield noroute
        bad = CounterMetricFamily(
            "zdse_bad_frames", "Frames that broke the protocol (counted, logged sparsely, "
            "dropped).")
        bad.add_metric([], snap.stats.get("bad_frames", 0))
        yield bad
        refused = CounterMetricFamily(
            "zdse_rejected_frames", "Frames refused with an error, by reason: too_large "
            "(over MAX_MESSAGE_BYTES), not_registered (sent before registering).",
            labels=["reason"])
        for reason in ("too_large", "not_registered"):
            refused.add_metric([reason], snap.stats.get(reason, 0))
        yield refused
        batches = HistogramMetricFamily(
            "zdse_loop_batch_size", "Frames the cage's loop handled per wake-up: the "
            "batches it drains from its ROUTER socket at once.",
            buckets=_buckets(snap.batches), sum_value=snap.batch_frames)
        yield batches
        uptime = GaugeMetricFamily("zdse_cage_uptime_seconds", "Seconds since the cage started.")
        uptime.add_metric([], snap.uptime)
        yield uptime

    @staticmethod
    def _nodes(snap: Readings) -> Iterator[Metric]:
        nodes = GaugeMetricFamily("zdse_nodes", "Nodes registered with the cage.")
        nodes.add_metric([], len(snap.nodes))
        yield nodes
        routes = GaugeMetricFamily(
            "zdse_routes", "Route bindings (pattern, node): a node's name, 'allservices' and "
            "each of its extra addresses.")
        routes.add_metric([], snap.routes)
        yield routes
        subs = GaugeMetricFamily(
            "zdse_subscriptions", "Distinct (subscriber, key) pairs that announced a "
            "subscription within the last 30 s (the default subscription ttl).")
        subs.add_metric([], snap.subscriptions)
        yield subs
        events = CounterMetricFamily(
            "zdse_node_events", "Node lifecycle changes: registered, refused, forbidden, "
            "and left_<reason> (bye, expired, disconnected, replaced, re_registered).",
            labels=["event"])
        for key, count in sorted(snap.stats.items()):
            if key in ("registered", "refused", "forbidden") or key.startswith("left_"):
                events.add_metric([key], count)
        yield events
        seen = GaugeMetricFamily(
            "zdse_node_last_seen_seconds", "Seconds since the cage last heard from each "
            "node (any message counts; heartbeats keep it below one interval).",
            labels=["node", "module"])
        for name, module, age in sorted(snap.nodes):
            seen.add_metric([name, module], max(0.0, age))
        yield seen
        backlog = CounterMetricFamily(
            "zdse_node_backlog_dropped", "Frames dropped on the way to each node because its "
            "queue in the cage was full: the part of a node's backlog ZeroMQ lets us see "
            "(it does not expose queue depths).", labels=["node"])
        for name, count in sorted(snap.dropped_nodes.items()):
            backlog.add_metric([name], count)
        yield backlog
        unread = GaugeMetricFamily(
            "zdse_node_unread_bytes", "Bytes the cage sent each node that it has not yet "
            "acknowledged reading (its receipts): what waits in the cage's queue for it, or on "
            "the way. Past --queue-bytes, what comes next for it is dropped.", labels=["node"])
        for name, count in sorted(snap.unread.items()):
            unread.add_metric([name], count)
        yield unread

    @staticmethod
    def _services(snap: Readings) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "zdse_service_state", "1 for the state each supervised service is in, 0 for the "
            "others.", labels=["service", "state"])
        restarts = CounterMetricFamily(
            "zdse_service_restarts", "Automatic restarts of each supervised service after a "
            "crash, since the cage started.", labels=["service"])
        for row in snap.services:
            for s in State:
                state.add_metric([row["name"], s.value], 1 if row["state"] == s.value else 0)
            restarts.add_metric([row["name"]], row["restarts"])
        yield state
        yield restarts


def _buckets(batches: dict[int, int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for k, bound in enumerate(BATCH_BUCKETS):
        total += batches.get(k, 0)
        out.append((str(bound), total))
    out.append(("+Inf", sum(batches.values())))
    return out


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per scrape: a slow client holds only its own."""

    daemon_threads = True
    #: Connections the kernel holds until they are accepted. Python's default,
    #: 5, drops the rest of a burst of scrapes, which retry a second later.
    request_queue_size = 1024


class _Quiet(WSGIRequestHandler):
    """Logs no request: the cage logs nothing per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


class MetricsServer:
    """Serve the cage's metrics over HTTP from a thread.

    Args:
        address: ``HOST:PORT`` to listen on.
        exchange: where scrapes get their readings.

    Raises:
        ConfigError: the address is wrong or cannot be bound.
    """

    def __init__(self, address: str, exchange: Exchange) -> None:
        host, port = parse_host_port(address, "--metrics")
        self.exchange = exchange
        self.registry = CollectorRegistry()
        self.registry.register(CageCollector(exchange))
        ProcessCollector(registry=self.registry)
        #: The text of the last readings, served to every scrape of it.
        self._rendered: tuple[Readings, bytes] | None = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Bound(_Server):
            address_family = family

        try:
            self._server: WSGIServer = make_server(host, port, self._app, Bound,
                                                   handler_class=_Quiet)
        except OSError as exc:
            raise ConfigError(f"cannot serve --metrics {address}: "
                              f"{exc.strerror or exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()
        self.port = self._server.server_port
        self.url = f"http://{address.rpartition(':')[0] or '127.0.0.1'}:{self.port}/metrics"
        if not is_loopback(f"tcp://{host}:{port}"):
            log.warning("metrics.public", address=address,
                        why="anyone who reaches it reads service names and counters")
        log.info("metrics.started", url=self.url)

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        snap = self.exchange.get()
        rendered = self._rendered
        if snap is not None and rendered is not None and rendered[0] is snap:
            body = rendered[1]
        else:
            body = generate_latest(self.registry)
            if snap is not None:
                self._rendered = (snap, body)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [body]

    def close(self) -> None:
        """Stop serving."""
        with contextlib.suppress(OSError):
            self._server.shutdown()
            self._server.server_close()
        self._thread.join(timeout=5)
