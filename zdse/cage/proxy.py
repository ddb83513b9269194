"""The cage process: a ROUTER/PUB proxy around :class:`zdse.cage.core.CageCore`.

One thread, one loop: poll, drain what the ROUTER holds, let the core decide,
do what it returned (:class:`~zdse.cage.effects.Effects`): send, log, and
hand control requests to their handlers (:class:`~zdse.cage.control.ControlDesk`).
The clock is read once per iteration; nothing is logged per message.
"""

from __future__ import annotations

import errno
import logging
import signal
import time
import uuid
from collections.abc import Callable
from types import FrameType

import zmq
from zmq.auth.thread import ThreadAuthenticator

from zdse.cage.authz import Authorized
from zdse.cage.control import ControlDesk
from zdse.cage.core import CageCore
from zdse.cage.effects import Effects
from zdse.cage.handshakes import HandshakeMonitor
from zdse.errors import ConfigError
from zdse.log import get_logger
from zdse.wire.codec import Kind
from zdse.wire.curve import CurveServer
from zdse.wire.endpoints import Endpoints, is_loopback
from zdse.wire.limits import (
    CAGE_DRAIN_LIMIT,
    HEARTBEAT_INTERVAL,
    HEARTBEATS_TO_EXPIRE,
    MAX_MESSAGE_BYTES,
    NODE_QUEUE_BYTES,
    NODE_QUEUE_HWM,
)
from zdse.wire.zmqio import has_input, recv_frames, send_frames

__all__ = ["Proxy"]

log = get_logger(component="cage")


class Proxy:
    """Bind the cage's sockets and run its loop until :meth:`stop`.

    Args:
        endpoints: where to bind the ROUTER and the PUB socket.
        heartbeat: seconds between heartbeats, dictated to every node.
        curve: the cage's CURVE keys and the authorized client keys; None
            for plain TCP.
        heartbeats_to_expire: missed heartbeats after which a node is expired.
        queue_hwm: messages queued for one peer (on the ROUTER and on the
            PUB socket) before ZeroMQ drops what comes next for it.
        queue_bytes: bytes that may wait unread on their way to one node
            before the cage drops what comes next for it (its byte budget).
    """

    def __init__(
        self,
        endpoints: Endpoints,
        heartbeat: float = HEARTBEAT_INTERVAL,
        curve: tuple[CurveServer, Authorized] | None = None,
        heartbeats_to_expire: int = HEARTBEATS_TO_EXPIRE,
        queue_hwm: int = NODE_QUEUE_HWM,
        queue_bytes: int = NODE_QUEUE_BYTES,
    ) -> None:
        self.endpoints = endpoints
        self.core = CageCore(uuid.uuid4().hex[:12], heartbeat, heartbeats_to_expire,
                             started_at=time.monotonic(),
                             authorized=curve[1] if curve else None, queue_bytes=queue_bytes)
        #: Called with the time at every tick (heartbeat/4), after the core's
        #: own: the supervisor and the metrics hand-off. Must not block.
        self.tick_hooks: list[Callable[[float], None]] = []
        #: Control requests the shell answers (the supervisor's).
        self.desk = ControlDesk(self.core)
        self._ctx = zmq.Context()
        self._running = False
        self._auth: ThreadAuthenticator | None = None
        self._handshakes: HandshakeMonitor | None = None
        self.router = self._ctx.socket(zmq.ROUTER)
        self.pub = self._ctx.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
        if curve is not None:
            self._secure(*curve)
        # Without ROUTER_MANDATORY a send to a vanished node is dropped
        # silently; with it we learn at once and expire the node.
        self.router.router_mandatory = 1
        self.router.sndhwm = queue_hwm
        self.router.rcvhwm = queue_hwm
        # A hard cap above the core's named limit: the core answers
        # "too_large" up to it, ZeroMQ drops the peer beyond it.
        self.router.maxmsgsize = MAX_MESSAGE_BYTES + 1024 * 1024
        self.pub.sndhwm = queue_hwm

    def _secure(self, keys: CurveServer, authorized: Authorized) -> None:
        # ZeroMQ asks the authenticator (ZAP) about every CURVE handshake:
        # only keys in the authorized file get in; what each may register is
        # checked by the core, which learns the key from the User-Id.
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("zdse.zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", _KeyCheck(authorized))
        for sock in (self.router, self.pub):
            keys.apply(sock)
        self._handshakes = HandshakeMonitor({"router": self.router, "pub": self.pub},
                                            time.monotonic)
        if not authorized.grants:
            log.warning("cage.nobody_authorized",
                        why="the authorized file names no key: no node or client can join")

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
            if not is_loopback(endpoint) and self._auth is None:
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
        curve = self._auth is not None
        while self._running:
            wait = max(0.0, next_tick - time.monotonic())
            if poller.poll(int(wait * 1000)):
                now = time.monotonic()
                # The poll saw a message: read it, then ask before each next.
                batch: list[list[bytes]] = []
                keys: dict[bytes, str] = {}
                try:
                    while True:
                        batch.append(self._recv_curve(keys) if curve
                                     else recv_frames(router, zmq.NOBLOCK))
                        if len(batch) == CAGE_DRAIN_LIMIT or not has_input(router):
                            break
                except zmq.Again:
                    pass
                core.drained(len(batch))
                self._do(core.receive(batch, now, keys), now)
            now = time.monotonic()
            if now >= next_tick:
                self._do(core.tick(now), now)
                for hook in self.tick_hooks:
                    hook(now)
                next_tick = now + tick_every
            if self.desk.pending:
                self._do(self.desk.take(), now)
        self.close()

    def _recv_curve(self, keys: dict[bytes, str]) -> list[bytes]:
        """Receive one message; for a registration, note the sender's key in ``keys``."""
        frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
        head = frames[1].bytes if len(frames) > 1 else b""
        if len(head) == 3 and head[1] == Kind.REGISTER:
            keys[frames[0].bytes] = str(frames[1].get("User-Id") or "")
        return [f.bytes for f in frames]

    def _do(self, effects: Effects, now: float) -> None:
        """Carry out what the core returned: answer, send, log."""
        core, desk, router = self.core, self.desk, self.router
        while effects:
            if effects.controls or desk.pending:
                desk.settle(effects, now)
            fed: Effects | None = None
            for frames in effects.router:
                try:
                    send_frames(router, frames)
                except zmq.Again:
                    core.dropped(frames=frames)
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    # Its subscribers hear that it left: sent in the next round.
                    if fed is None:
                        fed = Effects()
                    fed.extend(core.unreachable(frames[0], now))
            for frames in effects.pub:
                send_frames(self.pub, frames)
            for line in effects.logs:
                log.info(line.event, **line.fields)
            if fed is None:
                return
            effects = fed

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
        if self._handshakes is not None:
            self._handshakes.stop()
            self._handshakes = None
        self.router.close(linger=0)
        self.pub.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()


class _KeyCheck:
    """ZAP credentials provider: a key may connect if the authorized file names it."""

    def __init__(self, authorized: Authorized) -> None:
        self.authorized = authorized

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = self.authorized.knows(key.decode("ascii", "replace"))
        if not allowed:
            log.warning("cage.key_refused", key=key[:8].decode("ascii", "replace") + "...")
        return allowed
