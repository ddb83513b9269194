"""A node's connection to the cage: the asyncio shell around :class:`~zdse.node.core.NodeCore`.

:class:`Bus` owns the two sockets (a DEALER to the cage's ROUTER, a SUB to its
PUB), a watch on each and a task that keeps time. What to send and what
happened, it asks the pure core; then it does the I/O and runs the
callbacks, handlers and waiters the core's events call for.

Outgoing messages queued in one loop iteration leave together at its end,
and what a read turn's callbacks queue at the turn's end: consecutive
messages of the same kind to the same key share one frame (never waiting
to fill it), so pyzmq's per-call cost is paid once per batch. A request
leaves at once, after whatever was queued before it: its caller waits.

Incoming frames are read by a callback on the sockets' FDs
(:class:`~zdse.wire.zmqio.SocketWatch`), drained without blocking, and their
events handled right there (:class:`~zdse.node.inorder.InOrder`): sync callbacks
inline; an async one is awaited by a task, and the events after it wait
their turn behind it, in order.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import zmq
from zmq.utils.monitor import parse_monitor_message

from zdse.errors import (
    BusClosed,
    NameTakenError,
    NoRouteError,
    RegistrationError,
    RemoteError,
    RequestTimeout,
    ZdseError,
)
from zdse.log import get_logger, sampled
from zdse.modules.options import positive_float_env
from zdse.node.core import (
    Event,
    IncomingMessage,
    IncomingRequest,
    Membership,
    NodeCore,
    Registered,
    SessionChange,
)
from zdse.node.inorder import InOrder
from zdse.node.requests import Gathered, Outcome
from zdse.node.silence import Seen, after, explain
from zdse.node.subscriptions import Update
from zdse.node.tableindex import SLICED_ROWS
from zdse.wire import codec
from zdse.wire.curve import CurveClient
from zdse.wire.endpoints import Endpoints
from zdse.wire.limits import REQUEST_TIMEOUT, SUBSCRIPTION_REFRESH
from zdse.wire.zmqio import SocketWatch, has_input, recv_frames, send_frames

__all__ = [
    "Bus",
    "Callback",
    "Membership",
    "MembershipHandler",
    "MessageHandler",
    "NotPolling",
    "RequestHandler",
    "UnknownRequest",
    "Update",
]

#: A subscription's callback: called with each update, may be sync or async.
Callback = Callable[[Update], Any]
#: Answers a request: (sender, dataindex, args) -> value (or an awaitable of it).
RequestHandler = Callable[[str, str, Any], Any]
#: Takes a one-way message: (sender, dataindex, data).
MessageHandler = Callable[[str, str, Any], Any]
#: Told of each service that joins or leaves the bus; may be sync or async.
MembershipHandler = Callable[[Membership], Any]
#: Answers the reserved request ``refresh``: polls now, returns what it published.
RefreshHandler = Callable[[], Awaitable[Any]]

#: Frames read per wake-up before other tasks get a turn.
DRAIN_LIMIT = 1024
#: Seconds spent reading one batch before other tasks get a turn: under a
#: flood, on a busy machine, 1,024 frames can take half a second, longer
#: than a fast heartbeat may wait.
DRAIN_SECONDS = 0.02
#: Events waiting behind a slow async callback before the node stops
#: reading deltas (and at ten times this, everything): from there ZeroMQ's
#: queues (and their high-water marks) hold the rest, not this process's
#: memory.
BEHIND_LIMIT = 10_000
#: Reserved requests every service answers (``refresh``: see Bus.on_refresh).
RESERVED = ("pubdata", "subdata", "refresh")
#: Seconds a Bus that waits for its cage without a deadline goes without an
#: answer before it logs ``node.waiting`` (then twice as long each time, up
#: to WAITING_NOTICE_MAX).
WAITING_NOTICE = 5.0
WAITING_NOTICE_MAX = 60.0


class UnknownRequest(ZdseError):
    """A request for a dataindex the service neither publishes nor handles."""


class NotPolling(ZdseError):
    """A ``refresh`` request to a service that does not poll."""


class Bus:
    """One service's connection to the bus, under its unique name.

    Use it as ``async with Bus("monitor") as bus: ...``. Entering registers
    with the cage (waiting as long as ``connect_timeout``, forever if None)
    and raises :class:`NameTakenError` if a live node holds the name.

    Args:
        name: the unique, non-wildcard name.
        addresses: extra addresses (may be shared, may hold wildcards).
        endpoints: the cage's endpoints.
        info: shown by ``zdse-ctl services`` (module, ...).
        on_request: answers requests; by default a request for a published
            dataindex is answered with its data.
        on_message: takes one-way messages.
        prepush_processor: grooms data before it is stored and deltas are
            made; when it returns None, that publish is dropped: nothing is
            stored or sent (Congress's "send nothing").
        on_membership: told of each service that joins the bus (or changes
            its addresses) and each that leaves, as a :class:`Membership`.
        refresh: seconds between re-announcements of each subscription
            (default $ZDSE_SUB_REFRESH or 10).
        connect_timeout: seconds to wait for the cage when entering.
        curve: this node's CURVE keys and the cage's public key, when the
            cage requires CURVE.

    Raises:
        ProtocolError: the name or an address is not valid.
        ConfigError: ``$ZDSE_SUB_REFRESH`` is not a number above zero.
    """

    def __init__(
        self,
        name: str,
        addresses: Iterable[str] = (),
        *,
        endpoints: Endpoints | None = None,
        info: dict[str, Any] | None = None,
        on_request: RequestHandler | None = None,
        on_message: MessageHandler | None = None,
        prepush_processor: Callable[[str, Any], Any] | None = None,
        on_membership: MembershipHandler | None = None,
        refresh: float | None = None,
        connect_timeout: float | None = None,
        curve: CurveClient | None = None,
    ) -> None:
        self.name = name
        self.endpoints = endpoints or Endpoints()
        details = {"pid": os.getpid(), "host": socket.gethostname(), **(info or {})}
        register = codec.Register(name, list(addresses), details)
        refresh = refresh or positive_float_env("ZDSE_SUB_REFRESH", SUBSCRIPTION_REFRESH)
        self.core = NodeCore(register, uuid.uuid4().hex[:12], refresh, time.monotonic())
        self.on_request = on_request
        self.on_message = on_message
        self.prepush_processor = prepush_processor
        #: Column names by dataindex, for tables whose rows are lists: shown
        #: in ``pubdata`` (and by zdse-web). A Service sets its ``columns``.
        self.columns: dict[str, list[str]] = {}
        self.on_membership = on_membership
        #: Answers the reserved request ``refresh`` (a PollingService sets
        #: it); None: the service answers NotPolling.
        self.on_refresh: RefreshHandler | None = None
        self.connect_timeout = connect_timeout
        self.curve = curve
        self.log = get_logger(service=name)
        self._callbacks: dict[str, Callback] = {}
        self._waiters: dict[int, asyncio.Future[Outcome]] = {}
        self._backlog: list[list[bytes]] = []
        self._backlog_timer: asyncio.TimerHandle | None = None
        self._events = InOrder(self._handle, self._spawn, self._pump, self._hold, BEHIND_LIMIT,
                               urgent=_urgent)
        self._watches: list[SocketWatch] = []
        self._flush_handle: asyncio.Handle | None = None
        #: True while a read turn runs its callbacks: the turn flushes at its end.
        self._in_turn = False
        self._registered = asyncio.Event()
        #: add_address/remove_address callers waiting for the cage's Welcome.
        self._readdressing: list[asyncio.Future[None]] = []
        self._refused = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._group: asyncio.TaskGroup | None = None
        self._opened = False
        self._monitor: zmq.Socket[bytes] | None = None
        self._seen: Seen | None = None
        self._closed = False
        #: Big tables waiting to be prepared in slices: the newest per dataindex.
        self._pending: dict[str, Any] = {}
        #: Per dataindex, how often a pending version was stored at once
        #: (_settle): a sliced preparation begun before is then outdated.
        self._settled: dict[str, int] = {}
        self._published_waiters: list[asyncio.Future[None]] = []

    # --- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, register and start the reader and timer tasks.

        Raises:
            NameTakenError: a live node holds the name.
            BusClosed: the cage did not answer within ``connect_timeout``.
        """
        self._loop = loop = asyncio.get_running_loop()
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._sub = self._ctx.socket(zmq.SUB)
        for sock in (self._dealer, self._sub):
            sock.linger = 0
            if self.curve is not None:
                self.curve.apply(sock)
        self._dealer.sndhwm = self._dealer.rcvhwm = 100_000
        self._sub.rcvhwm = 100_000
        self._sub.subscribe(codec.EVENT_TOPIC)
        # Watch before connecting: a refused key can fail the very first
        # handshake, and a monitor attached later would miss it.
        monitor = self._dealer.get_monitor_socket(_WATCHED)
        self._dealer.connect(self.endpoints.router)
        self._sub.connect(self.endpoints.pub)
        self._opened = True
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._tasks.append(self._group.create_task(self._keep_time()))
        self._dealer_watch = SocketWatch(loop, self._dealer, self._read_dealer,
                                         self._send_backlog)
        self._sub_watch = SocketWatch(loop, self._sub, self._read_sub)
        self._watches = [self._dealer_watch, self._sub_watch]
        self._monitor = monitor
        self._watches.append(SocketWatch(loop, monitor, self._read_monitor))
        self.core.start(time.monotonic())
        self._pump()
        try:
            await self._wait_registered(self.connect_timeout)
        except BaseException:
            await self.close(bye=False)
            raise

    async def _wait_registered(self, timeout: float | None) -> None:
        waits = [asyncio.ensure_future(self._registered.wait()),
                 asyncio.ensure_future(self._refused.wait())]
        try:
            if timeout is not None:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            else:
                await self._wait_saying_so(waits)
        finally:
            for fut in waits:
                fut.cancel()
        if self._refused.is_set():
            session = self.core.session
            if session.refusal_code == "name_taken":
                raise NameTakenError(session.refusal)
            raise RegistrationError(session.refusal or f"the cage refused {self.name!r}")
        if not self._registered.is_set():
            raise BusClosed(f"no answer from the cage within {timeout}s: {self._why_silent()}")

    def _why_silent(self) -> str:
        """Why the cage has not registered this node yet, as one clause."""
        if self.core.session.known:
            return (f"the cage at {self.endpoints.router} welcomed {self.name!r}, but nothing "
                    f"came from its PUB at {self.endpoints.pub} (is that the cage's --pub?)")
        return explain(self._seen, self.endpoints.router, self.curve is not None)

    async def _wait_saying_so(self, waits: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for the first of ``waits``, logging ``node.waiting`` now and then meanwhile."""
        waited, patience = 0.0, WAITING_NOTICE
        while True:
            done, _ = await asyncio.wait(waits, timeout=patience,
                                         return_when=asyncio.FIRST_COMPLETED)
            if done:
                return
            waited += patience
            self.log.warning("node.waiting", router=self.endpoints.router, waited=waited,
                             why=f"{self._why_silent()}; still trying")
            patience = min(2 * patience, WAITING_NOTICE_MAX)

    @property
    def registered(self) -> bool:
        """Whether the cage currently knows this service."""
        return self.core.registered

    @property
    def refusal(self) -> str:
        """Why the cage refused the name ('' if it did not)."""
        return self.core.session.refusal

    async def close(self, bye: bool = True) -> None:
        """Say bye to the cage, stop the tasks and close the sockets."""
        if self._closed or not self._opened:
            return
        self._closed = True
        if bye:
            self.core.bye()
            self._flush()
        waiting: list[asyncio.Future[Any]] = [*self._waiters.values(), *self._readdressing]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(BusClosed("the bus was closed"))
        for watch in self._watches:
            watch.close()
        if self._backlog_timer is not None:
            self._backlog_timer.cancel()
        for task in self._tasks:
            task.cancel()
        if self._group is not None:
            await self._group.__aexit__(None, None, None)
        self._close_monitor()
        # A short linger lets the bye leave; never long enough to hang an exit.
        self._dealer.close(linger=100)
        self._sub.close(linger=0)
        self._ctx.term()

    async def wait_refused(self) -> str:
        """Wait until the cage refuses this service's name; return its message."""
        await self._refused.wait()
        return self.refusal

    # --- publishing ---------------------------------------------------------

    def publish(self, dataindex: str, data: Any) -> None:
        """Store ``data`` under ``dataindex`` and send subscribers the delta.

        The ``prepush_processor`` grooms the data first; if it returns None,
        nothing is stored or sent. The delta comes from comparing the data
        with what was stored: for a module that knows only the new whole.
        One that knows what changed says so with :meth:`change_keys`,
        :meth:`change_rows` or :meth:`replace`, at a cost that follows the
        change. Nothing is sent when nothing changed or nobody subscribes.

        A big table (:data:`~zdse.node.tableindex.SLICED_ROWS` rows or more) is
        indexed and diffed in slices, between which the loop answers requests
        and heartbeats: it is stored when that ends (:meth:`wait_published`),
        and a failure is logged (``publish.refused``), not raised. Versions
        published meanwhile are coalesced: the newest wins. An incremental
        change of the same dataindex stores a version still in slices first,
        at once, so changes apply in the order they were made.

        Raises:
            MessageTooLarge: a snapshot of ``data`` would exceed the message limit.
            ProtocolError: msgpack cannot represent ``data``.
        """
        if self.prepush_processor is not None:
            data = self.prepush_processor(dataindex, data)
            if data is None:
                self.core.stats["prepush_dropped"] += 1
                return
        if self._opened and not self._closed and (
                dataindex in self._pending or (isinstance(data, list | dict)
                                               and len(data) >= SLICED_ROWS)):
            waiting = dataindex in self._pending
            self._pending[dataindex] = data
            if not waiting:
                self._spawn(self._publish_sliced(dataindex))
            return
        self.core.publish(dataindex, data)
        self._pump()

    def change_keys(self, dataindex: str, put: Mapping[Any, Any] | None = None,
                    delete: Iterable[Any] = ()) -> None:
        """Put and delete keys of the dict table ``dataindex``; send exactly that delta.

        The cost follows the change, not the table: no diff. Keys put with
        the value they hold, or deleted but not held, are left out; nothing
        is sent when nothing changed or nobody subscribes. A dataindex never
        published starts as an empty dict. The ``prepush_processor`` is not
        called (it grooms whole tables). The stored table changes in place:
        what :meth:`publish` gave it last is copied first, never changed.

        Args:
            dataindex: the table.
            put: key -> new value.
            delete: keys to remove.

        Raises:
            TypeError: the table holds something other than a dict.
            ValueError: a key is both put and deleted, or is not hashable.
            MessageTooLarge: the delta, or a snapshot of the changed table,
                would exceed MAX_MESSAGE_BYTES.
            ProtocolError: msgpack cannot represent a key or value.
            Whatever is raised, nothing is stored or sent.
        """
        self._settle(dataindex)
        self.core.change_keys(dataindex, put or {}, delete)
        self._pump()

    def change_rows(self, dataindex: str, add: Iterable[Any] = (),
                    remove: Iterable[Any] = ()) -> None:
        """Add and remove rows of the list table ``dataindex``; send exactly that delta.

        A list table is a multiset: removing a row removes one copy of an
        equal row held before this change; one not held is left out. As
        :meth:`change_keys` otherwise (cost, prepush, a new dataindex starts
        as an empty list, the table changes in place).

        Args:
            dataindex: the table.
            add: rows to add.
            remove: rows to remove.

        Raises:
            TypeError: the table holds something other than a list.
            MessageTooLarge: the delta, or a snapshot of the changed table,
                would exceed MAX_MESSAGE_BYTES.
            ProtocolError: msgpack cannot represent a row.
            Whatever is raised, nothing is stored or sent.
        """
        self._settle(dataindex)
        self.core.change_rows(dataindex, add, remove)
        self._pump()

    def replace(self, dataindex: str, value: Any) -> None:
        """Store ``value`` whole under ``dataindex`` and send it whole, without a diff.

        For a scalar (a count, a status), or a value rebuilt whole anyway.
        Nothing is sent when it equals the value held, or nobody subscribes.
        The ``prepush_processor`` grooms it first, as in :meth:`publish`.

        Raises:
            MessageTooLarge: a snapshot of ``value`` would exceed MAX_MESSAGE_BYTES.
            ProtocolError: msgpack cannot represent ``value``.
        """
        if self.prepush_processor is not None:
            value = self.prepush_processor(dataindex, value)
        self._settle(dataindex)
        self.core.replace(dataindex, value)
        self._pump()

    async def _publish_sliced(self, dataindex: str) -> None:
        """Prepare the newest pending version of ``dataindex`` in slices, then store it."""
        while dataindex in self._pending:
            data = self._pending[dataindex]
            settled = self._settled.get(dataindex, 0)
            started = time.monotonic()
            try:
                steps = self.core.publications.prepare(dataindex, data)
                while True:
                    try:
                        next(steps)
                    except StopIteration as done:
                        prepared = done.value
                        break
                    await asyncio.sleep(0)  # a turn for requests and heartbeats
                if self._settled.get(dataindex, 0) != settled:
                    # Stored at once meanwhile (_settle), and maybe changed
                    # since: this version is older. A newer one has its own task.
                    break
                if self._pending.get(dataindex) is data:
                    del self._pending[dataindex]
                self.core.publish(dataindex, data, prepared)
            except ZdseError as exc:
                if self._pending.get(dataindex) is data:
                    del self._pending[dataindex]
                self.log.error("publish.refused", dataindex=dataindex, error=str(exc))
            else:
                self.log.debug("publish.sliced", dataindex=dataindex,
                               seconds=round(time.monotonic() - started, 3))
            self._pump()
        for fut in self._published_waiters:
            if not fut.done() and not self._pending:
                fut.set_result(None)

    def _settle(self, dataindex: str) -> None:
        """Store at once a version of ``dataindex`` still being prepared in slices.

        Before an incremental change: it applies to what was published last.
        """
        if dataindex not in self._pending:
            return
        data = self._pending.pop(dataindex)
        self._settled[dataindex] = self._settled.get(dataindex, 0) + 1
        try:
            self.core.publish(dataindex, data)
        except ZdseError as exc:  # as the sliced path would have: logged, not raised
            self.log.error("publish.refused", dataindex=dataindex, error=str(exc))
        if not self._pending:
            for fut in self._published_waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_published(self) -> None:
        """Wait until every big table handed to :meth:`publish` is stored."""
        if not self._pending:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._published_waiters.append(fut)
        try:
            await fut
        finally:
            self._published_waiters.remove(fut)

    # --- subscribing --------------------------------------------------------

    def subscribe(self, key: str, dataindex: str, callback: Callback, *,
                  sid: str | None = None, refresh: float | None = None) -> str:
        """Subscribe to ``dataindex`` of every service that listens on ``key``.

        ``callback`` gets an :class:`Update` for the snapshot of each
        publisher, then one per delta; ``update.view`` is the merged view.

        Args:
            sid: the subscription's id; a fresh one when None.
            refresh: seconds between its re-announcements; the Bus's when None.

        Returns:
            the subscription id.

        Raises:
            ProtocolError: a bad key, ``sid`` in use or too long, a bad ``refresh``.
        """
        sid = self.core.subscribe(key, dataindex, time.monotonic(), sid, refresh)
        self._callbacks[sid] = callback
        self._pump()
        return sid

    def unsubscribe(self, sid: str | None = None, *, key: str | None = None,
                    dataindex: str | None = None) -> list[str]:
        """End subscription ``sid``, or every subscription to ``dataindex`` on ``key``.

        Returns:
            the ids of the subscriptions ended.
        """
        if sid is not None:
            sids = [sid] if self.core.subscriptions.has(sid) else []
        elif key is not None and dataindex is not None:
            sids = self.core.subscriptions.sids_for(key, dataindex)
        else:
            raise TypeError("unsubscribe takes a sid, or both key and dataindex")
        for one in sids:
            self._callbacks.pop(one, None)
            self.core.unsubscribe(one)
        self._pump()
        return sids

    def views(self, sid: str) -> dict[str, Any]:
        """Subscription ``sid``'s views, by publisher (Congress's subData); {} if none."""
        return self.core.subscriptions.view(sid)

    # --- addresses ----------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """The addresses this service listens on besides its name."""
        return list(self.core.session.register.addresses)

    async def add_address(self, address: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Listen on ``address`` too; return once the cage's routes have it.

        Not registered (the cage is away), it returns at once: the next
        registration carries the address.

        Raises:
            ProtocolError: the address is not valid.
            RequestTimeout: the cage did not confirm within ``timeout`` (the
                address is kept, and sent again with the next registration).
            BusClosed: the bus was closed meanwhile.
        """
        if address not in self.addresses:
            await self._readdress([*self.addresses, address], timeout)

    async def remove_address(self, address: str, timeout: float = REQUEST_TIMEOUT) -> None:
        """Stop listening on ``address``; return once the cage's routes no longer have it.

        Raises:
            RequestTimeout: as for :meth:`add_address`.
        """
        if address in self.addresses:
            await self._readdress([a for a in self.addresses if a != address], timeout)

    async def _readdress(self, addresses: list[str], timeout: float) -> None:
        self.core.set_addresses(addresses)
        if not self.registered or self._closed:
            return
        welcomed: asyncio.Future[None] = self._loop.create_future()
        self._readdressing.append(welcomed)
        self._flush_now()
        try:
            await asyncio.wait_for(welcomed, timeout)
        except TimeoutError:
            raise RequestTimeout(f"the cage did not confirm {self.name}'s addresses "
                                 f"within {timeout}s") from None
        finally:
            if welcomed in self._readdressing:
                self._readdressing.remove(welcomed)

    # --- requests -----------------------------------------------------------

    async def request(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """Ask the service(s) on ``key`` for ``dataindex``; return the first answer.

        Raises:
            NoRouteError: nothing listens on ``key`` (at once, not at the timeout).
            RequestTimeout: no answer within ``timeout`` seconds.
            RemoteError: the service answered with an error.
            BusClosed: the bus is (or gets) closed.
        """
        outcome = await self._request(key, dataindex, args, timeout, gather=False)
        sender, reply = next(iter(outcome.replies.items()))
        return _value(sender, reply)

    async def request_all(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Ask every service on ``key``; return their answers by name.

        An answer that is an error is returned as a :class:`RemoteError`
        value. After ``timeout``, the answers that came are returned
        (:meth:`gather` tells whether some are missing).

        Raises:
            NoRouteError: nothing listens on ``key``.
            RequestTimeout: not a single answer within ``timeout``.
            BusClosed: the bus is (or gets) closed.
        """
        return (await self.gather(key, dataindex, args, timeout)).answers

    async def gather(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> Gathered:
        """As :meth:`request_all`, and say how many services the request reached.

        Raises:
            NoRouteError: nothing listens on ``key``.
            RequestTimeout: not a single answer within ``timeout``.
            BusClosed: the bus is (or gets) closed.
        """
        outcome = await self._request(key, dataindex, args, timeout, gather=True)
        answers: dict[str, Any] = {}
        for sender, reply in sorted(outcome.replies.items()):
            try:
                answers[sender] = _value(sender, reply)
            except RemoteError as exc:
                answers[sender] = exc
        return Gathered(answers, outcome.expected)

    async def _request(
        self, key: str, dataindex: str, args: Any, timeout: float, gather: bool
    ) -> Outcome:
        deadline = time.monotonic() + timeout
        if not self.registered and not self._closed:
            try:
                await asyncio.wait_for(self._registered.wait(), timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"not connected to the cage at {self.endpoints.router}"
                ) from None
        if self._closed:
            raise BusClosed("the bus was closed")
        cid = self.core.request(key, dataindex, args, gather,
                                max(0.0, deadline - time.monotonic()))
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiters[cid] = fut
        # A timer and the future itself: wait_for(shield(fut)) costs three
        # more loop iterations between the reply and the caller.
        timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), _expire, fut)
        try:
            # A request leaves now, with whatever was queued before it, not
            # at the end of the loop iteration: the caller waits on the round
            # trip. (So requests made together are sent one by one.)
            self._flush_now()
            outcome = await fut
        except TimeoutError:
            late = self.core.requests.timeout(cid)
            outcome = late if late is not None else Outcome(cid, key, {}, "timeout")
        finally:
            timer.cancel()
            self._waiters.pop(cid, None)
            self.core.requests.cancel(cid)
        if outcome.error == "noroute":
            raise NoRouteError(f"no service listens on {key!r}")
        if not outcome.replies:
            raise RequestTimeout(f"no answer from {key!r} for {dataindex!r} within {timeout}s")
        return outcome

    def send(self, key: str, dataindex: str, data: Any) -> None:
        """Send a one-way message to every service on ``key``."""
        self.core.send(key, dataindex, data)
        self._pump()

    # --- introspection ------------------------------------------------------

    def pubdata(self) -> dict[str, Any]:
        """What this service publishes, and to whom (with its ``columns``, if declared)."""
        published = self.core.publications.pubdata()
        for dataindex, names in self.columns.items():
            if dataindex in published:
                published[dataindex]["columns"] = names
        return published

    def subdata(self) -> dict[str, Any]:
        """What this service subscribes to, and how far each view is."""
        return self.core.subscriptions.subdata()

    def statistics(self) -> dict[str, int]:
        """This node's counters, its subscriptions' (gaps, resyncs, ...) among them.

        ``waiting_subscriptions`` counts subscribers held for dataindexes this
        service has not published, ``waiting_refused`` announces past their
        bound (MAX_WAITING_SUBSCRIPTIONS), answered but not held.
        """
        pubs = self.core.publications
        return {**self.core.stats, **self.core.subscriptions.stats,
                "waiting_subscriptions": pubs.waiting, "waiting_refused": pubs.waiting_refused}

    # --- output -------------------------------------------------------------

    def _pump(self) -> None:
        """Apply the core's filter changes and schedule a flush of its outbox.

        Messages queued within one loop iteration leave together, coalesced,
        at the end of it.
        """
        self._apply_filters()
        if (self.core.outbox and self._flush_handle is None and self._opened
                and not self._in_turn):
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush_now(self) -> None:
        """Apply the filter changes and send what is queued at once, not at the scheduled flush."""
        self._apply_filters()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        elif self.core.outbox and self._opened:
            self._flush()

    def _apply_filters(self) -> None:
        filters = self.core.filters
        if filters.add or filters.remove:
            for t in filters.add:
                self._sub.subscribe(t)
            for t in filters.remove:
                self._sub.unsubscribe(t)
            filters.add.clear()
            filters.remove.clear()
            self._sub_watch.poke()

    def _flush(self) -> None:
        self._flush_handle = None
        queue, self.core.outbox = self.core.outbox, []
        frames_list = codec.coalesce(queue)
        self.core.stats["frames_out"] += len(frames_list)
        if self._backlog:
            self._backlog.extend(frames_list)
            return
        self._backlog = frames_list
        self._send_backlog()

    def _send_backlog(self) -> None:
        """Send what waits, in order, until done or the cage's queue is full."""
        backlog, sent = self._backlog, 0
        dealer = self._dealer
        try:
            for frames in backlog:
                send_frames(dealer, frames)
                sent += 1
        except zmq.Again:
            # The cage's queue is full: keep the rest in order, send it when
            # there is room, drop it if the cage takes none of it for an
            # expiry (each bit of progress starts the wait over).
            self._backlog = backlog[sent:]
            self._dealer_watch.want_writable()
            if sent or self._backlog_timer is None:
                if self._backlog_timer is not None:
                    self._backlog_timer.cancel()
                self._backlog_timer = self._loop.call_later(
                    self.core.session.expiry, self._drop_backlog)
        else:
            self._backlog = []
            if self._backlog_timer is not None:
                self._backlog_timer.cancel()
                self._backlog_timer = None
        # The sends may have taken the FD's signal of a message come meanwhile.
        self._dealer_watch.poke()

    def _drop_backlog(self) -> None:
        # The cage is gone; what we held is stale by now. Requests time out,
        # subscribers resync: drop and count.
        self._backlog_timer = None
        if self._backlog:
            self.core.stats["dropped_backlog"] += len(self._backlog)
            self.log.warning("send.dropped", frames=len(self._backlog), why="cage not draining")
            self._backlog = []

    def _spawn(self, coro: Any) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.append(task)
        # One per async answer or callback: forget each once done, or a
        # service answering requests forever would keep every task.
        task.add_done_callback(self._tasks.remove)

    # --- input --------------------------------------------------------------

    def _read_dealer(self) -> bool:
        return self._read(self._dealer, self.core.receive)

    def _read_sub(self) -> bool:
        return self._read(self._sub, self.core.receive_published)

    def _read(
        self, sock: zmq.Socket[bytes], take: Callable[[list[bytes], float], list[Event]]
    ) -> bool:
        """Drain ``sock`` for one turn and act on what came; True if frames are left."""
        now = time.monotonic()
        events: list[Event] = []
        more = True
        bad = self.core.stats["bad_frames"]
        for _ in range(DRAIN_LIMIT):
            if not has_input(sock):
                more = False
                break
            events += take(recv_frames(sock), now)
            if time.monotonic() - now > DRAIN_SECONDS:
                break
        self._apply_filters()
        # What the frames just read called for (replies, snapshots, what sync
        # callbacks queue) leaves at the end of this turn, as one batch: not
        # one loop iteration later, nor in flushes of its own.
        self._in_turn = True
        try:
            if events:
                self._events.feed(events)
        finally:
            self._in_turn = False
            self._flush_now()
        if self.core.stats["bad_frames"] != bad:
            bad = self.core.stats["bad_frames"]
            if sampled(bad):
                self.log.warning("frame.bad", error=self.core.last_bad, count=bad)
        return more

    def _hold(self, waiting: int) -> None:
        """Stop reading while async callbacks are far behind; read again after.

        Deltas stop first: the publishers' flood, and a subscriber that falls
        too far behind resyncs. The DEALER is read on, so heartbeats and the
        replies a callback may be awaiting still come, until ten times the
        limit wait: then it stops too (past its expiry the cage will drop
        this node, which registers again once it reads again).
        """
        if waiting == 0:
            for watch in self._watches:
                watch.resume()
            return
        self._sub_watch.pause()
        if waiting > 10 * BEHIND_LIMIT:
            self._dealer_watch.pause()

    def _handle(self, event: Event) -> Awaitable[None] | None:
        """Act on one event; return what remains to await, if anything."""
        # The two per-message kinds first: a sync callback runs without a
        # coroutine or a helper call of its own. A failure is logged and
        # counted, never fatal.
        if isinstance(event, Update):
            callback = self._callbacks.get(event.sid)
            if callback is None:
                return None
            try:
                result = callback(event)
            except Exception:
                self._call_failed("callback")
                return None
            if result is not None and inspect.isawaitable(result):
                return self._call(result, "callback")
        elif isinstance(event, IncomingMessage):
            on_message = self.on_message
            if on_message is None:
                return None
            msg = event.message
            try:
                result = on_message(event.sender, msg.dataindex, msg.data)
            except Exception:
                self._call_failed("message")
                return None
            if result is not None and inspect.isawaitable(result):
                return self._call(result, "message")
        elif isinstance(event, Outcome):
            fut = self._waiters.get(event.cid)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, IncomingRequest):
            self._answer(event.sender, event.request)
        elif isinstance(event, Registered):
            self.log.info("node.registered", cage_epoch=event.cage_epoch, again=event.again)
            self._registered.set()
            for welcomed in self._readdressing:
                if not welcomed.done():
                    welcomed.set_result(None)
        elif isinstance(event, SessionChange):
            self._on_session_change(event)
        elif isinstance(event, Membership) and self.on_membership is not None:
            try:
                result = self.on_membership(event)
            except Exception:
                self._call_failed("membership")
                return None
            if result is not None and inspect.isawaitable(result):
                return self._call(result, "membership")
        return None

    def _on_session_change(self, event: SessionChange) -> None:
        if event.what == "refused":
            self.log.error("node.refused", error=event.detail)
            self._registered.clear()
            self._refused.set()
        elif event.what in ("lost", "reregistering"):
            self.log.warning(f"cage.{event.what}", why=event.detail)
            self._registered.clear()
        elif event.what == "sub_silent":
            self.log.warning("cage.sub_silent", pub=self.endpoints.pub, why=event.detail)
        else:
            self.log.warning("cage.error", error=event.detail)

    async def _call(self, pending: Awaitable[Any], what: str) -> None:
        """Await what an async callback returned; its failure is logged, never fatal."""
        try:
            await pending
        except Exception:
            self._call_failed(what)

    def _call_failed(self, what: str) -> None:
        self.core.stats[f"{what}_errors"] += 1
        self.log.exception(f"{what}.failed")

    def _answer(self, sender: str, req: codec.Request) -> None:
        if req.dataindex in RESERVED:
            self._answer_reserved(sender, req)
            return
        handler = self.on_request or self.answer_published
        try:
            result = handler(sender, req.dataindex, req.args)
        except Exception as exc:
            self._reply_error(sender, req, exc)
            return
        if inspect.isawaitable(result):
            self._spawn(self._answer_later(sender, req, result))
            return
        self.core.reply(sender, req.cid, True, result)

    def _answer_reserved(self, sender: str, req: codec.Request) -> None:
        if req.dataindex == "pubdata":
            self.core.reply(sender, req.cid, True, self.pubdata())
        elif req.dataindex == "subdata":
            value = self.subdata()
            if isinstance(req.args, dict) and req.args.get("views"):
                for sid, row in value.items():
                    row["views"] = self.views(sid)
            self.core.reply(sender, req.cid, True, value)
        elif self.on_refresh is None:
            self._reply_error(sender, req, NotPolling(
                f"{self.name} does not poll: refresh asks a polling service to poll now"))
        else:
            self._spawn(self._answer_later(sender, req, self.on_refresh()))

    async def _answer_later(self, sender: str, req: codec.Request, pending: Any) -> None:
        """Await an async handler's answer and send it; cancel it once its requester gave up.

        Past the requester's timeout (counted from the request's arrival)
        nobody waits for the answer: the handler is cancelled, so one that
        never finishes holds no task, and no memory, for ever.
        """
        try:
            async with asyncio.timeout(req.timeout if req.timeout > 0 else None) as scope:
                result = await pending
        except Exception as exc:
            if isinstance(exc, TimeoutError) and scope.expired():
                self._abandoned(sender, req)
                return
            self._reply_error(sender, req, exc)  # the handler's own TimeoutError too
        else:
            self.core.reply(sender, req.cid, True, result)
        self._pump()

    def _abandoned(self, sender: str, req: codec.Request) -> None:
        count = self.core.stats["requests_abandoned"] = self.core.stats["requests_abandoned"] + 1
        if sampled(count):
            self.log.warning("request.abandoned", sender=sender, dataindex=req.dataindex,
                             timeout=req.timeout, count=count,
                             why="its handler outlived the requester's timeout: cancelled")

    def _reply_error(self, sender: str, req: codec.Request, exc: Exception) -> None:
        if not isinstance(exc, ZdseError):
            self.log.warning("request.failed", sender=sender, dataindex=req.dataindex,
                             error=repr(exc))
        self.core.reply(sender, req.cid, False, [type(exc).__name__, str(exc)])

    def answer_published(self, sender: str, dataindex: str, args: Any) -> Any:
        """The default request handler: the current data of a published dataindex.

        Raises:
            UnknownRequest: ``dataindex`` is not published here.
        """
        pubs = self.core.publications
        if dataindex in pubs.dataindexes():
            return pubs.data(dataindex)
        raise UnknownRequest(f"{self.name} does not publish or answer {dataindex!r}")

    def _read_monitor(self) -> bool:
        """Keep what the connection last went through (see :mod:`zdse.node.silence`);
        with CURVE, a key the cage does not know is a final refusal."""
        monitor = self._monitor
        assert monitor is not None
        if not has_input(monitor):
            return False
        event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
        seen = _seen(event["event"], event["value"])
        self._seen = after(self._seen, seen)
        if seen is Seen.REFUSED:
            why = self._why_silent()
            self.core.session.on_error("forbidden", why, time.monotonic())
            self._on_session_change(SessionChange("refused", why))
        return True

    def _close_monitor(self) -> None:
        # An open monitor would hang ctx.term().
        if self._monitor is not None and not self._monitor.closed:
            self._dealer.disable_monitor()
            self._monitor.close(linger=0)

    # --- time ---------------------------------------------------------------

    async def _keep_time(self) -> None:
        while True:
            events = self.core.tick(time.monotonic())
            self._pump()
            if events:
                self._events.feed(events)
            session = self.core.session
            now = time.monotonic()
            refresh = self.core.subscriptions.min_refresh()
            await asyncio.sleep(min(session.heartbeat / 4, refresh / 4, session.due_in(now)))


#: The events of the DEALER's connection that say why the cage is silent.
_WATCHED = (zmq.EVENT_CONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


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


def _urgent(event: Event) -> bool:
    """Events that never wait behind a callback: replies and the session's news.

    A callback that awaits a request must get the reply; none of these runs
    user code.
    """
    return isinstance(event, Outcome | Registered | SessionChange)


def _expire(fut: asyncio.Future[Outcome]) -> None:
    """A request's deadline passed: wake its caller with TimeoutError."""
    if not fut.done():
        fut.set_exception(TimeoutError())


def _value(sender: str, reply: codec.Reply) -> Any:
    if reply.ok:
        return reply.value
    kind, message = "Error", str(reply.value)
    if isinstance(reply.value, list) and len(reply.value) == 2:
        kind, message = str(reply.value[0]), str(reply.value[1])
    raise RemoteError(sender, kind, message)
