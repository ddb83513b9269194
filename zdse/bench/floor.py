"""The transport's floor: a plain pyzmq ROUTER forwarder that does no routing.

It speaks just enough of the wire protocol for unmodified zdse nodes to
work through it: it welcomes every registration and answers heartbeats,
forwards a routed frame (packed or not) to the node whose *name* is the key (one dict
look-up: no patterns, no cache, no validation, no counters), and puts
deltas on its PUB socket. Its loop is the cage's loop (poll, drain, send)
minus :class:`zdse.cage.core.CageCore`, so the bench can tell how much of the
cage's time is routing and how much is pyzmq's own.

``python -m zdse.bench.floor --router ENDPOINT --pub ENDPOINT`` prints
``{"ready": true}`` once bound and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from types import FrameType

import zmq

from zdse.wire import codec
from zdse.wire.codec import Kind
from zdse.wire.limits import CAGE_DRAIN_LIMIT, NODE_QUEUE_HWM
from zdse.wire.zmqio import has_input, send_frames

__all__ = ["Floor"]

_REGISTER = codec.header(Kind.REGISTER)
_HEARTBEAT = codec.header(Kind.HEARTBEAT)
_DELTA = codec.header(Kind.DELTA)
_BYE = codec.header(Kind.BYE)
_WELCOME = codec.header(Kind.WELCOME)
_FLOOR = b"cage"
_EPOCH = "floor"


class Floor:
    """Bind a ROUTER and a PUB and forward by exact name until stopped."""

    def __init__(self, router: str, pub: str) -> None:
        self._ctx = zmq.Context()
        self.router = self._ctx.socket(zmq.ROUTER)
        self.pub = self._ctx.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
            sock.sndhwm = NODE_QUEUE_HWM
        self.router.rcvhwm = NODE_QUEUE_HWM
        # As in the cage: a full queue says so (EAGAIN) instead of dropping.
        self.router.router_mandatory = 1
        self.router.bind(router)
        self.pub.bind(pub)
        self._running = True
        self._welcome = codec.encode_one(codec.Welcome(_EPOCH, 1.0))
        self._beat = codec.encode_one(codec.Heartbeat(_EPOCH))

    def stop(self, *_: object) -> None:
        """End the loop after the current iteration."""
        self._running = False

    def run(self) -> None:
        """Forward until :meth:`stop`."""
        router, pub = self.router, self.pub
        names: dict[bytes, bytes] = {}  # name -> identity
        senders: dict[bytes, bytes] = {}  # identity -> name
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        out: list[list[bytes]] = []
        published: list[list[bytes]] = []
        while self._running:
            if not poller.poll(100):
                continue
            for _ in range(CAGE_DRAIN_LIMIT):  # as in the cage
                if not has_input(router):
                    break
                frames = router.recv_multipart(zmq.NOBLOCK)
                if len(frames) == 2:
                    # A routed message, packed: forwarded as it came.
                    identity, packed = frames
                    dest = names.get(packed[4:4 + packed[3]]) if len(packed) > 3 else None
                    if dest is not None:
                        out.append([dest, senders.get(identity, b""), packed])
                    continue
                if len(frames) != 4:
                    continue  # not ours to judge, just drop
                identity, head, key, body = frames
                if head == _DELTA:
                    published.append([senders.get(identity, b"") + b"\x00" + key + b"\x00",
                                      head, body])
                elif head == _HEARTBEAT:
                    out.append([identity, _HEARTBEAT, _FLOOR, b"", self._beat])
                elif head == _REGISTER:
                    register = codec.decode_body(Kind.REGISTER, body)[-1]
                    assert isinstance(register, codec.Register)
                    name = register.name.encode()
                    names[name] = identity
                    senders[identity] = name
                    out.append([identity, _WELCOME, _FLOOR, b"", self._welcome])
                elif head != _BYE:
                    dest = names.get(key)
                    if dest is not None:
                        out.append([dest, head, senders.get(identity, b""), key, body])
            for frames in out:
                # A full queue or a vanished peer: dropped, as the cage would.
                with contextlib.suppress(zmq.ZMQError):
                    send_frames(router, frames)
            for frames in published:
                send_frames(pub, frames)
            out.clear()
            published.clear()
        self.router.close(linger=0)
        self.pub.close(linger=0)
        self._ctx.term()


def main(argv: list[str] | None = None) -> int:
    """Bind, say ready on stdout, forward until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m zdse.bench.floor")
    parser.add_argument("--router", required=True)
    parser.add_argument("--pub", required=True)
    args = parser.parse_args(argv)
    floor = Floor(args.router, args.pub)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        floor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print('{"ready": true}', flush=True)
    floor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
