"""Logging the CURVE handshakes the cage refuses, with the peer's address, rate-limited.

A client without a key, or with the wrong cage public key, fails its CURVE
handshake inside ZeroMQ: it never reaches the authenticator (ZAP), so
without this the cage says nothing and the client only sees silence.
ZeroMQ's socket monitor reports each failure; its events on a bound socket
name the bound endpoint, not the peer, so the peer's address is read from
the connection's file descriptor when it is accepted, and a failure is
matched to the disconnection that follows it (one I/O thread emits both in
a row). The address is best effort: a connection that ended before the
monitor read its acceptance shows as ``unknown``.

:class:`HandshakeLog` is the pure part (what to log, how often);
:class:`HandshakeMonitor` is the thread that reads the monitor sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zdse.log import get_logger

__all__ = ["LOG_INTERVAL", "MAX_TRACKED", "HandshakeLog", "HandshakeMonitor", "reason"]

#: Seconds between two lines about the same peer host and reason: one
#: misconfigured client retries ten times a second.
LOG_INTERVAL = 10.0
#: Connections (and peer, reason pairs) remembered at once; past it the
#: oldest is forgotten, so a flood of connections cannot grow the cage.
MAX_TRACKED = 1024

log = get_logger(component="cage")


def reason(event: int, value: int) -> str:
    """What a HANDSHAKE_FAILED_* monitor event means for whoever set up the client."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "its key is not authorized"
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "it does not use CURVE (no client key given?)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "it holds another cage public key than this cage's"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        try:
            return f"protocol error {zmq.Event(value).name}"
        except ValueError:
            return f"protocol error {value}"
    return "no detail"


class HandshakeLog:
    """Which failed handshakes to log: pure, fed with monitor events and the time.

    Args:
        interval: seconds between lines about one (peer host, reason).
    """

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self.failures = 0
        self._peers: dict[int, str] = {}
        self._failed: str | None = None
        #: (host, reason) -> (time of its last line, failures since then)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def accepted(self, fd: int, peer: str | None) -> None:
        """A connection came in on ``fd`` from ``peer`` (HOST:PORT, None if unknown)."""
        self._peers[fd] = peer or "unknown"
        _bound(self._peers)

    def failed(self, why: str) -> None:
        """The handshake of the connection about to be disconnected failed."""
        self._failed = why

    def disconnected(self, fd: int, now: float) -> dict[str, Any] | None:
        """The connection on ``fd`` ended; returns the fields of a line to log, if any."""
        peer = self._peers.pop(fd, "unknown")
        why, self._failed = self._failed, None
        if why is None:
            return None
        self.failures += 1
        host = peer.rpartition(":")[0].strip("[]") or peer
        key = (host, why)
        last, count = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[key] = (last, count + 1)
            return None
        self._last.pop(key, None)
        self._last[key] = (now, 0)
        _bound(self._last)
        return {"peer": peer, "peer_host": host, "why": why, "suppressed": count}

    def tracked(self) -> int:
        """Entries held: open connections and (host, reason) pairs."""
        return len(self._peers) + len(self._last)


def _bound(table: dict[Any, Any]) -> None:
    while len(table) > MAX_TRACKED:
        del table[next(iter(table))]


def _peer_of(fd: int) -> str | None:
    """HOST:PORT of the TCP peer on ``fd``, or None (closed, not TCP)."""
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    with dup:
        try:
            host, port = dup.getpeername()[:2]
        except (OSError, ValueError, TypeError):
            return None
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class HandshakeMonitor:
    """A thread that logs ``cage.handshake_failed`` for the sockets given.

    Args:
        ctx: the sockets' context.
        sockets: name ("router", "pub") -> socket.
        clock: monotonic seconds.
    """

    _EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
               | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

    def __init__(self, sockets: dict[str, zmq.Socket[bytes]],
                 clock: Callable[[], float]) -> None:
        self._clock = clock
        self._stop = threading.Event()
        self._watched = sockets
        self._monitors = {name: sock.get_monitor_socket(self._EVENTS)
                          for name, sock in sockets.items()}
        self.logs = {name: HandshakeLog() for name in sockets}
        self._thread = threading.Thread(target=self._run, name="handshakes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for monitor in self._monitors.values():
            poller.register(monitor, zmq.POLLIN)
        by_socket = {monitor: name for name, monitor in self._monitors.items()}
        while not self._stop.is_set():
            for monitor, _ in poller.poll(100):
                with contextlib.suppress(zmq.ZMQError):
                    self._take(by_socket[monitor], recv_monitor_message(monitor))

    def _take(self, name: str, message: dict[str, Any]) -> None:
        event, value = int(message["event"]), int(message["value"])
        book = self.logs[name]
        if event == zmq.EVENT_ACCEPTED:
            book.accepted(value, _peer_of(value))
        elif event == zmq.EVENT_DISCONNECTED:
            line = book.disconnected(value, self._clock())
            if line is not None:
                log.warning("cage.handshake_failed", socket=name,
                            endpoint=message["endpoint"].decode(errors="replace"), **line)
        else:
            book.failed(reason(event, value))

    def stop(self) -> None:
        """End the thread and close the monitor sockets (before the sockets themselves)."""
        self._stop.set()
        self._thread.join(timeout=5)
        for name, monitor in self._monitors.items():
            with contextlib.suppress(zmq.ZMQError):
                self._watched[name].disable_monitor()
            monitor.close(linger=0)
