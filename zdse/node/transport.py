"""One connection to one cage: its sockets, their watches, the send queue and backlog.

:class:`Transport` owns a DEALER to the cage's ROUTER, a SUB to its PUB and a
monitor on the DEALER, all made on the zmq context it is given. It does the
I/O and nothing else: what a frame means, it asks the node's core (the
``take`` callables it is built with), and what the core's answer calls for it
carries out: frames queue here and leave coalesced, SUB filter changes apply
here, events go to the shell's dispatcher (``deliver``).

Outgoing frames queued in one loop iteration leave together at its end,
and what a read turn's callbacks queue at the turn's end: consecutive
messages of the same kind to the same key share one frame (never waiting
to fill it), so pyzmq's per-call cost is paid once per batch. When the
cage's queue is full the rest waits here, in order (the backlog), and is
dropped if the cage takes none of it for an expiry.

Incoming frames are read by a callback on the sockets' FDs
(:class:`~zdse.wire.zmqio.SocketWatch`), drained without blocking, each
handed to the core and the events of the whole turn delivered at its end.

A node holds one transport per cage it talks to (several with redundant
cages, docs/redundancy.md): nothing here is shared between cages but the
zmq context and the loop. With several, what a frame read here calls for
may go through other cages too, so the owner carries it out (``carry``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq
from zmq.utils.monitor import parse_monitor_message

from zdse.node.effects import Effects, Frame
from zdse.node.silence import Seen
from zdse.wire import codec
from zdse.wire.curve import CurveClient
from zdse.wire.zmqio import SocketWatch, has_input, recv_frames, send_frames

if TYPE_CHECKING:
    from zdse.node.events import Event

__all__ = ["BIG_FRAME_BYTES", "DRAIN_LIMIT", "DRAIN_SECONDS", "HWM", "Take", "Transport"]

#: Frames read per wake-up before other tasks get a turn.
DRAIN_LIMIT = 1024
#: Seconds spent reading one batch before other tasks get a turn: under a
#: flood, on a busy machine, 1,024 frames can take half a second, longer
#: than a fast heartbeat may wait.
DRAIN_SECONDS = 0.02
#: A body from this size up carries a big table's rows (a snapshot's part, a
#: big delta): counted for the owner at the end of the turn (``turned``).
BIG_FRAME_BYTES = 64 * 1024
#: ZeroMQ's high-water marks, in messages, of the DEALER (both ways) and the SUB.
HWM = 100_000

#: Hands one message read from a socket to the core; returns what to do.
Take = Callable[[list[bytes], float], Effects]

#: The events of the DEALER's connection that say why the cage is silent.
_WATCHED = (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class Transport:
    """A node's sockets to one cage, watched in ``loop``.

    Args:
        ctx: the zmq context to make the sockets on (the owner terms it).
        router: the cage's ROUTER endpoint.
        pub: the cage's PUB endpoint.
        curve: this node's CURVE keys and the cage's public key, if it uses CURVE.
        loop: the running event loop.
        clock: monotonic seconds, for the read turns' budget and the core.
        take: hands a DEALER message to the core.
        take_published: hands a SUB message to the core.
        deliver: takes the events of one read turn, in order.
        seen: told what the DEALER's connection went through (its monitor).
        count: told of frames sent (``frames_out``), for the node's statistics.
        dropped: told how many frames of the backlog were dropped.
        expiry: seconds without progress before the backlog is dropped.
        carry: with several cages, carries out what a frame read here calls
            for (frames for any cage, filters for every SUB); None: here.
        disconnected: with several cages, told when the DEALER's connection
            closes (a cage killed: its kernel said so).
        turned: told, after each read turn, the bytes of the big frames it read
            (BIG_FRAME_BYTES or more: a big table's parts and deltas), for
            the owner's work between turns (big deltas in slices, the heap).
    """

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        router: str,
        pub: str,
        curve: CurveClient | None,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        *,
        take: Take,
        take_published: Take,
        deliver: Callable[[list[Event]], None],
        seen: Callable[[Seen], None],
        count: Callable[[str, int], None],
        dropped: Callable[[int], None],
        expiry: Callable[[], float],
        carry: Callable[[Effects], None] | None = None,
        disconnected: Callable[[], None] | None = None,
        turned: Callable[[int], None] | None = None,
    ) -> None:
        self.router, self.pub = router, pub
        self._loop = loop
        self._clock = clock
        self._take, self._take_published = take, take_published
        self._deliver, self._seen, self._count = deliver, seen, count
        self._dropped, self._expiry = dropped, expiry
        self._carry, self._disconnected = carry, disconnected
        self._turned = turned
        self._dealer = dealer = ctx.socket(zmq.DEALER)
        self._sub = sub = ctx.socket(zmq.SUB)
        for sock in (dealer, sub):
            sock.linger = 0
            if curve is not None:
                curve.apply(sock)
        dealer.sndhwm = dealer.rcvhwm = HWM
        sub.rcvhwm = HWM
        sub.subscribe(codec.EVENT_TOPIC)
        # Watch before connecting: a refused key can fail the very first
        # handshake, and a monitor attached later would miss it.
        self._monitor = dealer.get_monitor_socket(
            _WATCHED | (zmq.EVENT_DISCONNECTED if disconnected is not None else 0))
        dealer.connect(router)
        sub.connect(pub)
        #: Frames queued to send, coalesced at the next flush.
        self._outbox: list[Frame] = []
        self._flush_handle: asyncio.Handle | None = None
        #: True while a read turn delivers its events: the turn flushes at its end.
        self._in_turn = False
        #: Coalesced frames the cage's queue had no room for yet, in order.
        self.backlog: list[list[bytes]] = []
        self._backlog_timer: asyncio.TimerHandle | None = None
        self._dealer_watch = SocketWatch(loop, dealer, self._read_dealer, self._send_backlog)
        self._sub_watch = SocketWatch(loop, sub, self._read_sub)
        self._watches = [self._dealer_watch, self._sub_watch,
                         SocketWatch(loop, self._monitor, self._read_monitor)]
        self._closed = False

    # --- output -------------------------------------------------------------

    def queue(self, frame: Frame) -> None:
        """Send ``frame`` with what else is queued, at the end of this loop iteration."""
        self._outbox.append(frame)
        if self._flush_handle is None and not self._in_turn:
            self._flush_handle = self._loop.call_soon(self._flush)

    def apply(self, step: Effects) -> None:
        """Carry out a step's frames (at the end of this loop iteration) and filter changes.

        Its events are the caller's to deliver.
        """
        if step.subscribe or step.unsubscribe:
            self._filter(step)
        if step.frames:
            self._outbox += step.frames
            if self._flush_handle is None and not self._in_turn:
                self._flush_handle = self._loop.call_soon(self._flush)

    def send_now(self, frame: Frame) -> None:
        """Send ``frame`` at once, after whatever was queued before it (a request: its
        caller waits on the round trip)."""
        self._outbox.append(frame)
        self.flush_now()

    def flush_now(self) -> None:
        """Send what is queued at once, not at the scheduled flush."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        elif self._outbox:
            self._flush()

    def filter(self, step: Effects) -> None:
        """Apply a step's SUB filter changes (the owner's, with several cages)."""
        self._filter(step)

    def _filter(self, step: Effects) -> None:
        sub = self._sub
        for t in step.subscribe:
            sub.subscribe(t)
        for t in step.unsubscribe:
            sub.unsubscribe(t)
        # A filter change may have taken the FD's signal of a message come meanwhile.
        self._sub_watch.poke()

    def _flush(self) -> None:
        self._flush_handle = None
        if self._closed:
            return
        queue, self._outbox = self._outbox, []
        frames_list = codec.coalesce(queue, packed=True)
        self._count("frames_out", len(frames_list))
        if self.backlog:
            self.backlog.extend(frames_list)
            return
        self.backlog = frames_list
        self._send_backlog()

    def _send_backlog(self) -> None:
        """Send what waits, in order, until done or the cage's queue is full."""
        backlog, sent = self.backlog, 0
        dealer = self._dealer
        try:
            for frames in backlog:
                send_frames(dealer, frames)
                sent += 1
        except zmq.Again:
            # The cage's queue is full: keep the rest in order, send it when
            # there is room, drop it if the cage takes none of it for an
            # expiry (each bit of progress starts the wait over).
            self.backlog = backlog[sent:]
            self._dealer_watch.want_writable()
            if sent or self._backlog_timer is None:
                if self._backlog_timer is not None:
                    self._backlog_timer.cancel()
                self._backlog_timer = self._loop.call_later(self._expiry(), self._drop_backlog)
        else:
            self.backlog = []
            if self._backlog_timer is not None:
                self._backlog_timer.cancel()
                self._backlog_timer = None
        # The sends may have taken the FD's signal of a message come meanwhile.
        self._dealer_watch.poke()

    def _drop_backlog(self) -> None:
        # The cage is gone; what we held is stale by now. Requests time out,
        # subscribers resync: drop, and let the owner count and log.
        self._backlog_timer = None
        if self.backlog:
            count, self.backlog = len(self.backlog), []
            self._dropped(count)

    # --- input --------------------------------------------------------------

    def _read_dealer(self) -> bool:
        return self._read(self._dealer, self._take)

    def _read_sub(self) -> bool:
        return self._read(self._sub, self._take_published)

    def _read(self, sock: zmq.Socket[bytes], take: Take) -> bool:
        """Drain ``sock`` for one turn and act on what came; True if frames are left."""
        clock = self._clock
        now = clock()
        events: list[Event] = []
        more = True
        carry = self._carry
        nbytes = 0
        for _ in range(DRAIN_LIMIT):
            if not has_input(sock):
                more = False
                break
            frames = recv_frames(sock)
            if len(frames[-1]) >= BIG_FRAME_BYTES:
                nbytes += len(frames[-1])
            step = take(frames, now)
            if carry is not None:
                carry(step)
            else:
                if step.subscribe or step.unsubscribe:
                    self._filter(step)
                if step.frames:
                    self._outbox += step.frames
            if step.events:
                events += step.events
            if clock() - now > DRAIN_SECONDS:
                break
        # What the frames just read called for (replies, snapshots, what sync
        # callbacks queue) leaves at the end of this turn, as one batch: not
        # one loop iteration later, nor in flushes of its own.
        self._in_turn = True
        try:
            if events:
                self._deliver(events)
        finally:
            self._in_turn = False
            self.flush_now()
        if self._turned is not None:
            self._turned(nbytes)
        return more

    def _read_monitor(self) -> bool:
        """Tell the owner what the connection last went through."""
        monitor = self._monitor
        if not has_input(monitor):
            return False
        event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
        if event["event"] == zmq.EVENT_DISCONNECTED:
            if self._disconnected is not None:
                self._disconnected()
            return True
        self._seen(_seen(event["event"], event["value"]))
        return True

    # --- flow control ---------------------------------------------------------

    def pause(self, everything: bool) -> None:
        """Stop reading the SUB (the publishers' flood); with ``everything``, the DEALER too.

        ZeroMQ's queues (and their high-water marks) hold what comes meanwhile.
        """
        self._sub_watch.pause()
        if everything:
            self._dealer_watch.pause()

    def resume(self) -> None:
        """Read again, starting with whatever queued while paused."""
        for watch in self._watches:
            watch.resume()

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Send what is queued, stop watching, close the sockets (the owner terms the context)."""
        if self._closed:
            return
        self.flush_now()
        self._closed = True
        for watch in self._watches:
            watch.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._backlog_timer is not None:
            self._backlog_timer.cancel()
        # An open monitor would hang ctx.term().
        if not self._monitor.closed:
            self._dealer.disable_monitor()
            self._monitor.close(linger=0)
        # A short linger lets a bye leave; never long enough to hang an exit.
        self._dealer.close(linger=100)
        self._sub.close(linger=0)


def _seen(event: int, value: int) -> Seen:
    """A monitor event of :data:`_WATCHED` as a :class:`Seen`."""
    if event == zmq.EVENT_CONNECTED:
        return Seen.CONNECTED
    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
        return Seen.HANDSHAKE_OK
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return Seen.REFUSED
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and (
            value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH):
        return Seen.MECHANISM_MISMATCH
    return Seen.HANDSHAKE_FAILED
