"""ZeroMQ sockets in an asyncio loop, without zmq.asyncio's futures; lean drains and sends.

:class:`SocketWatch` registers a plain (blocking-capable, used non-blocking)
ZeroMQ socket's FD with the event loop and calls back when the socket has
messages to read or, on request, room to send. Its owner then drains the
socket with non-blocking calls in the same loop iteration.

Why not ``zmq.asyncio``: it builds a future per receive and resolves it
through extra loop callbacks; on a small VM where every step counts, a
request round trip cost the node about 90 us more CPU that way than a read
straight from the FD callback (benchmarks/README.md).

ZeroMQ's FD is a signal, not the data. It turns readable when the socket's
state may have changed, and *any* call on the socket (a send or a SUB filter
change included) may consume that signal while messages wait. So every
wake-up drains until ``ZMQ_EVENTS`` says nothing waits (:func:`has_input`,
which also re-arms the FD), and the owner calls :meth:`SocketWatch.poke`
after every send: a read is scheduled whenever ``POLLIN`` says messages
wait, whoever consumed the signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import zmq

__all__ = ["SocketWatch", "has_input", "recv_frames", "send_frames"]

# Plain ints: the enum members would cost a Python-level Flag operation per
# use (pyzmq's send_multipart computes SNDMORE | flags per frame that way).
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """Send ``frames`` as one multipart message without blocking.

    What ``send_multipart(frames, zmq.NOBLOCK, copy=False)`` does, minus its
    per-frame checks and flag arithmetic on enums. ZeroMQ queues a
    multipart message whole or not at all: if the first frame fits, so does
    the rest.

    Raises:
        zmq.Again: the socket's queue is full; nothing was queued.
    """
    send = sock.send
    last = len(frames) - 1
    for i in range(last):
        send(frames[i], _MORE_NOBLOCK, copy=False)
    send(frames[last], _NOBLOCK, copy=False)


def recv_frames(sock: zmq.Socket[bytes], flags: int = _NOBLOCK) -> list[bytes]:
    """Receive one multipart message as a list of bytes (non-blocking by default).

    What ``recv_multipart(flags)`` returns, asking each frame whether more
    follow instead of asking the socket (``getsockopt(RCVMORE)`` builds an
    option enum per call): about 3 us less per message here.

    Raises:
        zmq.Again: no message waits (with ``zmq.NOBLOCK``).
    """
    recv = sock.recv
    frame = recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = recv(flags, copy=False)
        frames.append(frame.bytes)
    return frames


def has_input(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on ``sock``, asked without trying to read one.

    Drain loops ask this before each non-blocking read rather than reading
    until ``zmq.Again``: the raised error cost a round trip through a
    forwarder about 80 us more here (benchmarks/README.md).
    """
    return bool(cast(int, sock.getsockopt(_EVENTS)) & _POLLIN)


class SocketWatch:
    """Call ``on_readable`` while a ZeroMQ socket holds messages.

    ``on_readable()`` reads what it wants without blocking and returns True
    if it stopped with messages left (a turn's budget spent): it is then
    called again after the loop's other callbacks have had a turn.
    ``on_writable()`` is called once the socket has room again, after
    :meth:`want_writable`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: zmq.Socket[bytes],
        on_readable: Callable[[], bool],
        on_writable: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._on_readable = on_readable
        self._on_writable = on_writable
        self._scheduled: asyncio.Handle | None = None
        self._paused = False
        self._want_write = False
        self._closed = False
        loop.add_reader(self._fd, self._check)
        # Whatever came before the watch began has signalled nobody yet.
        self._scheduled = loop.call_soon(self._check)

    def poke(self) -> None:
        """After a call on the socket: read soon if messages wait (or room came)."""
        if self._scheduled is not None or self._closed:
            return
        events = cast(int, self._sock.getsockopt(_EVENTS))
        if (events & _POLLIN and not self._paused) or (events & _POLLOUT and self._want_write):
            self._scheduled = self._loop.call_soon(self._check)

    def want_writable(self) -> None:
        """Call ``on_writable`` once the socket can take a message again."""
        self._want_write = True
        self.poke()

    def pause(self) -> None:
        """Stop reading (the owner's consumers are behind); ZeroMQ queues meanwhile.

        Room to send is not watched either until :meth:`resume` (a poke
        still finds it).
        """
        if not self._paused and not self._closed:
            self._paused = True
            # Unwatched too: a signal left unconsumed would wake the loop
            # again and again while nothing reads.
            self._loop.remove_reader(self._fd)

    def resume(self) -> None:
        """Read again, starting with whatever queued while paused."""
        if self._paused and not self._closed:
            self._paused = False
            self._loop.add_reader(self._fd, self._check)
            if self._scheduled is None:
                self._scheduled = self._loop.call_soon(self._check)

    def close(self) -> None:
        """Stop watching; the owner closes the socket."""
        if not self._closed:
            self._closed = True
            if self._scheduled is not None:
                self._scheduled.cancel()
            if not self._paused:
                self._loop.remove_reader(self._fd)

    def _check(self) -> None:
        self._scheduled = None
        if self._closed:
            return
        if self._want_write and cast(int, self._sock.getsockopt(_EVENTS)) & _POLLOUT:
            self._want_write = False
            if self._on_writable is not None:
                self._on_writable()
        # The owner's drain looks at ZMQ_EVENTS (has_input), which also
        # re-arms the FD for the next change.
        if not self._paused and self._on_readable():
            self._scheduled = self._loop.call_soon(self._check)
