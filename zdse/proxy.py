"""The cage process: a ROUTER/PUB proxy around :class:`zdse.cage.CageCore`.

One thread, one loop: poll, drain what the ROUTER holds, let the core decide,
send what it decided. The clock is read once per iteration; nothing is logged
per message.
"""

from __future__ import annotations

import errno
import signal
import time
import uuid
from types import FrameType

import zmq

from zdse.cage import CageCore
from zdse.endpoints import Endpoints, is_loopback
from zdse.errors import ConfigError
from zdse.limits import HEARTBEAT_INTERVAL, MAX_MESSAGE_BYTES, NODE_QUEUE_HWM
from zdse.log import get_logger

__all__ = ["Proxy"]

#: Messages handled per poll before the loop looks at timers again, so a
#: flood cannot starve expiry.
DRAIN_LIMIT = 4096

log = get_logger(component="cage")


class Proxy:
    """Bind the cage's sockets and run its loop until :meth:`stop`.

    Args:
        endpoints: where to bind the ROUTER and the PUB socket.
        heartbeat: seconds between heartbeats, dictated to every node.
    """

    def __init__(self, endpoints: Endpoints, heartbeat: float = HEARTBEAT_INTERVAL) -> None:
        self.endpoints = endpoints
        self.core = CageCore(uuid.uuid4().hex[:12], heartbeat, started_at=time.monotonic())
        self._ctx = zmq.Context()
        self._running = False
        self.router = self._ctx.socket(zmq.ROUTER)
        self.pub = self._ctx.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
        # Without ROUTER_MANDATORY a send to a vanished node is dropped
        # silently; with it we learn at once and expire the node.
        self.router.router_mandatory = 1
        self.router.sndhwm = NODE_QUEUE_HWM
        self.router.rcvhwm = NODE_QUEUE_HWM
        # A hard cap above the core's named limit: the core answers
        # "too_large" up to it, ZeroMQ drops the peer beyond it.
        self.router.maxmsgsize = MAX_MESSAGE_BYTES + 1024 * 1024
        self.pub.sndhwm = NODE_QUEUE_HWM

    def bind(self) -> None:
        """Bind both sockets.

        Raises:
            ConfigError: an endpoint cannot be bound, naming it and why.
        """
        for sock, endpoint, flag in (
            (self.router, self.endpoints.router, "--router"),
            (self.pub, self.endpoints.pub, "--pub"),
        ):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                hint = " (is another zdse-proxy running?)" if exc.errno == errno.EADDRINUSE else ""
                self.close()
                raise ConfigError(f"cannot bind {flag} {endpoint}: {exc.strerror}{hint}") from exc
            if not is_loopback(endpoint):
                log.warning("cage.unencrypted", endpoint=endpoint,
                            why="bound beyond loopback without CURVE: traffic is readable "
                                "and anyone who reaches it can register")
        log.info("cage.started", router=self.endpoints.router, pub=self.endpoints.pub,
                 epoch=self.core.epoch, heartbeat=self.core.heartbeat)

    def run(self) -> None:
        """Serve until :meth:`stop` is called (or SIGTERM/SIGINT, see :meth:`serve`)."""
        core, router = self.core, self.router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        tick_every = core.heartbeat / 4
        next_tick = time.monotonic() + tick_every
        self._running = True
        while self._running:
            wait = max(0.0, next_tick - time.monotonic())
            if poller.poll(int(wait * 1000)):
                now = time.monotonic()
                for _ in range(DRAIN_LIMIT):
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    core.receive(frames, now)
            now = time.monotonic()
            if now >= next_tick:
                core.tick(now)
                next_tick = now + tick_every
            self._flush(now)
        self.close()

    def _flush(self, now: float) -> None:
        core = self.core
        to_router, to_pub = core.outbox.take()
        for frames in to_router:
            try:
                self.router.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                core.dropped()
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    raise
                core.unreachable(frames[0], now)
        for frames in to_pub:
            self.pub.send_multipart(frames, zmq.NOBLOCK, copy=False)
        if core.outbox.router or core.outbox.pub:
            self._flush(now)  # unreachable() may have queued "left" events
        if core.events:
            for event, fields in core.events:
                log.info(event, **fields)
            core.events.clear()

    def stop(self, *_: object) -> None:
        """Ask the loop to end after the current iteration."""
        self._running = False

    def serve(self) -> None:
        """Bind, install SIGTERM/SIGINT handlers and run."""
        self.bind()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("cage.stopping", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.run()

    def close(self) -> None:
        """Close the sockets and the context without waiting on unsent messages."""
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self._ctx.term()
