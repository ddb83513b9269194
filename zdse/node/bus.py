"""The public face of a node's connection to the bus: :class:`Bus`, thin.

A Bus joins three parts, each in a file of its own:

* the pure core (:class:`~zdse.node.core.NodeCore`): what to send and what
  happened, decided without I/O;
* the transport (:class:`~zdse.node.transport.Transport`): the sockets to the
  cage, their watches, the send queue and its backlog;
* the dispatcher (:class:`~zdse.node.dispatcher.Dispatcher`): events to
  callbacks, waiting requests and handlers.

Each public call asks the core, hands the frames it returns to the
transport and the events to the dispatcher. A task keeps time (the core's
ticks); the clock is injected, so the shell and its core share one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, NoReturn, Self

import zmq

from zdse.errors import (
    BusClosed,
    NameTakenError,
    NoRouteError,
    RegistrationError,
    RemoteError,
    RequestTimeout,
    ZdseError,
)
from zdse.log import get_logger
from zdse.modules.options import positive_float_env
from zdse.node.core import NodeCore
from zdse.node.deadlines import Deadlines
from zdse.node.dispatcher import (
    Callback,
    Dispatcher,
    MembershipHandler,
    MessageHandler,
    NotPolling,
    RefreshHandler,
    RequestHandler,
    UnknownRequest,
)
from zdse.node.effects import Effects, Frame
from zdse.node.events import Membership
from zdse.node.heap import HEAP
from zdse.node.requests import Failure, Gathered, Outcome
from zdse.node.silence import Seen, after, explain, unreachable
from zdse.node.subscriptions import Update
from zdse.node.tableindex import SLICED_ROWS
from zdse.node.transport import Transport
from zdse.wire import codec
from zdse.wire.curve import CurveClient
from zdse.wire.endpoints import Endpoints
from zdse.wire.limits import REQUEST_TIMEOUT, SUBSCRIPTION_REFRESH

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

#: Seconds a Bus that waits for its cage without a deadline goes without an
#: answer before it logs ``node.waiting`` (then twice as long each time, up
#: to WAITING_NOTICE_MAX).
WAITING_NOTICE = 5.0
WAITING_NOTICE_MAX = 60.0
#: With several cages, heartbeats open() waits, once one cage registered the
#: node, for the others it is connected to to grant the name or refuse it
#: (a cage decides a contested name within 1.5 heartbeats: its probe of the
#: holder), and how often it looks.
NAME_VERDICT_BEATS = 2.0
VERDICT_POLL = 0.01
#: Seconds of slices of a big delta applied in one loop turn (NodeCore.advance):
#: a few slices, the loop free between them well within a quarter heartbeat.
APPLY_SECONDS = 0.01


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
        clock: monotonic seconds (the default: :func:`time.monotonic`).

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.endpoints = endpoints or Endpoints()
        #: One single-cage Endpoints per cage listed (docs/redundancy.md).
        self.cages = self.endpoints.cages
        details = {"pid": os.getpid(), "host": socket.gethostname(), **(info or {})}
        register = codec.Register(name, list(addresses), details)
        refresh = refresh or positive_float_env("ZDSE_SUB_REFRESH", SUBSCRIPTION_REFRESH)
        self.clock = clock
        self.core = NodeCore(register, uuid.uuid4().hex[:12], refresh, clock(),
                             cages=len(self.cages))
        self.prepush_processor = prepush_processor
        #: Column names by dataindex, for tables whose rows are lists: shown
        #: in ``pubdata`` (and by zdse-web). A Service sets its ``columns``.
        self.columns: dict[str, list[str]] = {}
        self.connect_timeout = connect_timeout
        self.curve = curve
        self.log = get_logger(service=name)
        self._tasks: list[asyncio.Task[None]] = []
        self._group: asyncio.TaskGroup | None = None
        self._dispatcher = Dispatcher(
            name, self.core, self.cages, send=self._queue, spawn=self._spawn,
            pause=self._pause, resume=self._resume, introspection=self, log=self.log)
        self._dispatcher.on_request = on_request
        self._dispatcher.on_message = on_message
        self._dispatcher.on_membership = on_membership
        #: One transport per cage; the first also as ``_transport``.
        self._transports: list[Transport] = []
        self._transport: Transport | None = None
        #: The transport when there is only one (the per-message paths take it
        #: as before); None with several cages, or before open.
        self._one: Transport | None = None
        self._opened = False
        #: What each cage's DEALER connection last went through.
        self._seen: list[Seen | None] = [None] * len(self.cages)
        self._closed = False
        #: Big tables waiting to be prepared in slices: the newest per dataindex.
        self._pending: dict[str, Any] = {}
        #: Per dataindex, how often a pending version was stored at once
        #: (_settle): a sliced preparation begun before is then outdated.
        self._settled: dict[str, int] = {}
        self._published_waiters: list[asyncio.Future[None]] = []
        #: Whether big deltas are being applied in slices (_apply_sliced).
        self._applier = False
        self._heap = HEAP

    # --- the handlers, kept by the dispatcher -----------------------------------

    @property
    def on_request(self) -> RequestHandler | None:
        """Answers requests; None: a request for a published dataindex gets its data."""
        return self._dispatcher.on_request

    @on_request.setter
    def on_request(self, handler: RequestHandler | None) -> None:
        self._dispatcher.on_request = handler

    @property
    def on_message(self) -> MessageHandler | None:
        """Takes one-way messages."""
        return self._dispatcher.on_message

    @on_message.setter
    def on_message(self, handler: MessageHandler | None) -> None:
        self._dispatcher.on_message = handler

    @property
    def on_membership(self) -> MembershipHandler | None:
        """Told of each service that joins or leaves the bus."""
        return self._dispatcher.on_membership

    @on_membership.setter
    def on_membership(self, handler: MembershipHandler | None) -> None:
        self._dispatcher.on_membership = handler

    @property
    def on_refresh(self) -> RefreshHandler | None:
        """Answers the reserved request ``refresh`` (a PollingService sets it); None: the
        service answers NotPolling."""
        return self._dispatcher.on_refresh

    @on_refresh.setter
    def on_refresh(self, handler: RefreshHandler | None) -> None:
        self._dispatcher.on_refresh = handler

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
        #: Every waiting request's deadline, under one loop timer.
        self._deadlines = Deadlines(loop, self._dispatcher.waiters)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        core = self.core
        several = len(self.cages) > 1
        for i, cage in enumerate(self.cages):
            take, take_published = core.receive, core.receive_published
            if i:
                take = partial(_at_cage, core.receive, i)
                take_published = partial(_at_cage, core.receive_published, i)
            self._transports.append(Transport(
                self._ctx, cage.router, cage.pub, self.curve, loop, self.clock,
                take=take, take_published=take_published,
                deliver=self._dispatcher.feed, seen=partial(self._on_seen, i),
                count=self._count, dropped=partial(self._dropped, cage=i) if i else self._dropped,
                expiry=lambda: core.expiry, carry=self._carry if several else None,
                disconnected=partial(core.disconnected, i) if several else None,
                turned=self._turned))
        self._transport = self._transports[0]
        self._one = None if several else self._transport
        self._opened = True
        self._heap.open()
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._tasks.append(self._group.create_task(self._keep_time()))
        self._do(core.start(self.clock()))
        try:
            await self._wait_registered(self.connect_timeout)
            if several:
                await self._wait_verdicts()
        except BaseException:
            await self.close(bye=False)
            raise

    async def _wait_registered(self, timeout: float | None) -> None:
        registered, refused = self._dispatcher.registered, self._dispatcher.refused
        waits = [asyncio.ensure_future(registered.wait()),
                 asyncio.ensure_future(refused.wait())]
        try:
            if timeout is not None:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            else:
                await self._wait_saying_so(waits)
        finally:
            for fut in waits:
                fut.cancel()
        if refused.is_set():
            self._raise_refusal()
        if not registered.is_set():
            raise BusClosed(f"no answer from the cage within {timeout}s: {self._why_silent()}")

    async def _wait_verdicts(self) -> None:
        """With several cages, one registered us: give the others we are connected to a
        moment (NAME_VERDICT_BEATS) to say whether they grant the name too.

        A name is held only if every cage the node reaches grants it
        (docs/redundancy.md): a refusal from any is raised here as from the
        first, rather than after open() returned. A cage not connected is
        not waited for; it may refuse later, and the node then steps down.
        """
        clock, refused = self.clock, self._dispatcher.refused
        deadline = clock() + NAME_VERDICT_BEATS * self.core.session.heartbeat
        while not refused.is_set() and clock() < deadline:
            pending = [i for i in self.core.connecting_cages()
                       if self._seen[i] in (Seen.CONNECTED, Seen.HANDSHAKE_OK)]
            if not pending:
                break
            # A short, bounded wait at open only: a welcome has no event of its own.
            await asyncio.sleep(VERDICT_POLL)
        if refused.is_set():
            self._raise_refusal()

    def _raise_refusal(self) -> NoReturn:
        """Raise the refusal of the name (with several cages, naming the cage that refused)."""
        code, why = self.core.refusal
        why = why or f"the cage refused {self.name!r}"
        by = self.core.refused_by
        if len(self.cages) > 1 and by is not None:
            why += f" (refused by the cage at {self.cages[by].router}; left every cage)"
        if code == "name_taken":
            raise NameTakenError(why)
        raise RegistrationError(why)

    def _why_silent(self) -> str:
        """Why no cage has registered this node yet, as one clause (one per cage)."""
        whys = []
        for i, (cage, session) in enumerate(zip(self.cages, self.core.sessions, strict=True)):
            if session.known:
                whys.append(f"the cage at {cage.router} welcomed {self.name!r}, but nothing "
                            f"came from its PUB at {cage.pub} (is that the cage's --pub?)")
            else:
                whys.append(explain(self._seen[i], cage.router, self.curve is not None))
        return "; ".join(whys)

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
        return self.core.refusal[1]

    async def close(self, bye: bool = True) -> None:
        """Say bye to the cage, stop the tasks and close the sockets."""
        if self._closed or not self._opened:
            return
        self._closed = True
        if bye:
            self._do(self.core.bye())
        # The bye leaves now, before the sockets close.
        for transport in self._transports:
            transport.close()
        self._dispatcher.close()
        self._deadlines.close()
        for task in self._tasks:
            task.cancel()
        if self._group is not None:
            await self._group.__aexit__(None, None, None)
        self._ctx.term()
        self._heap.close()

    async def wait_refused(self) -> str:
        """Wait until the cage refuses this service's name; return its message."""
        await self._dispatcher.refused.wait()
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
                self.core.count("prepush_dropped")
                return
        if self._opened and not self._closed and (
                dataindex in self._pending or (isinstance(data, list | dict)
                                               and len(data) >= SLICED_ROWS)):
            waiting = dataindex in self._pending
            self._pending[dataindex] = data
            if not waiting:
                self._spawn(self._publish_sliced(dataindex))
            return
        frame = self.core.publish(dataindex, data)
        if frame is not None:
            self._queue(frame)

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
            MessageTooLarge: an entry put (its key and value, packed) would
                exceed MAX_ENTRY_BYTES. (A table of any size is sent: its
                snapshot in parts, a delta too big for one message as a
                ``snapshot`` marker that makes subscribers fetch it.)
            ProtocolError: msgpack cannot represent a key or value.
            Whatever is raised, nothing is stored or sent.
        """
        self._settle(dataindex)
        frame = self.core.change_keys(dataindex, put or {}, delete)
        if frame is not None:
            self._queue(frame)

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
            MessageTooLarge: a row added would exceed MAX_ENTRY_BYTES packed
                (as :meth:`change_keys`, a table of any size is sent).
            ProtocolError: msgpack cannot represent a row.
            Whatever is raised, nothing is stored or sent.
        """
        self._settle(dataindex)
        frame = self.core.change_rows(dataindex, add, remove)
        if frame is not None:
            self._queue(frame)

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
        frame = self.core.replace(dataindex, value)
        if frame is not None:
            self._queue(frame)

    async def _publish_sliced(self, dataindex: str) -> None:
        """Prepare the newest pending version of ``dataindex`` in slices, then store it."""
        while dataindex in self._pending:
            data = self._pending[dataindex]
            settled = self._settled.get(dataindex, 0)
            started = time.monotonic()
            try:
                steps = self.core.prepare(dataindex, data)
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
                frame = self.core.publish(dataindex, data, prepared)
                if frame is not None:
                    self._queue(frame)
                if prepared.index is not None:
                    # In a turn of its own: its collection of the young
                    # generations walks the new index once more.
                    self._loop.call_soon(self._heap.grew, prepared.index.size)
                self._slice_on()  # the version it replaced, freed in slices
            except ZdseError as exc:
                if self._pending.get(dataindex) is data:
                    del self._pending[dataindex]
                self.log.error("publish.refused", dataindex=dataindex, error=str(exc))
            else:
                self.log.debug("publish.sliced", dataindex=dataindex,
                               seconds=round(time.monotonic() - started, 3))
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
            frame = self.core.publish(dataindex, data)
            if frame is not None:
                self._queue(frame)
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
        sid, step = self.core.subscribe(key, dataindex, self.clock(), sid, refresh)
        self._dispatcher.callbacks[sid] = callback
        self._do(step)
        return sid

    def unsubscribe(self, sid: str | None = None, *, key: str | None = None,
                    dataindex: str | None = None) -> list[str]:
        """End subscription ``sid``, or every subscription to ``dataindex`` on ``key``.

        Returns:
            the ids of the subscriptions ended.
        """
        if sid is not None:
            sids = [sid] if self.core.has_subscription(sid) else []
        elif key is not None and dataindex is not None:
            sids = self.core.sids_for(key, dataindex)
        else:
            raise TypeError("unsubscribe takes a sid, or both key and dataindex")
        for one in sids:
            self._dispatcher.callbacks.pop(one, None)
            self._do(self.core.unsubscribe(one))
        return sids

    def views(self, sid: str) -> dict[str, Any]:
        """Subscription ``sid``'s views, by publisher (Congress's subData); {} if none."""
        return self.core.views(sid)

    # --- addresses ----------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """The addresses this service listens on besides its name."""
        return self.core.addresses

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
        step = self.core.set_addresses(addresses)
        if not self.registered or self._closed:
            self._do(step)
            return
        welcomed: asyncio.Future[None] = self._loop.create_future()
        welcomes = self._dispatcher.welcomes
        welcomes.append(welcomed)
        self._do(step)
        self._flush_now()
        try:
            await asyncio.wait_for(welcomed, timeout)
        except TimeoutError:
            raise RequestTimeout(f"the cage did not confirm {self.name}'s addresses "
                                 f"within {timeout}s") from None
        finally:
            if welcomed in welcomes:
                welcomes.remove(welcomed)

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

    def cage_trouble(self, cage: int) -> str:
        """Why cage ``cage`` (an index into :attr:`cages`) cannot be asked now ('' if it can)."""
        core = self.core
        closed = self._opened and len(self.cages) > 1 and core.trips.is_down(cage)
        return unreachable(core.sessions[cage].state, closed, self._seen[cage],
                           self.cages[cage].router, self.curve is not None, core.expiry)

    async def wait_cage(self, cage: int, timeout: float) -> bool:
        """Wait until cage ``cage`` (an index into :attr:`cages`) can be asked, at most ``timeout``.

        :meth:`open` returns once one cage registered the node; another may
        register it a moment later. Returns whether it can be asked now
        (:meth:`cage_trouble` says why not).

        Raises:
            NameTakenError: a cage refused the name (held only if every cage grants it).
            RegistrationError: a cage refused this client otherwise (e.g. its CURVE key).
            BusClosed: the bus is (or gets) closed.
        """
        deadline = self._loop.time() + timeout
        welcomes, refused = self._dispatcher.welcomes, self._dispatcher.refused
        while self.cage_trouble(cage):
            if refused.is_set():
                self._raise_refusal()
            if self._closed:
                raise BusClosed("the bus was closed")
            left = deadline - self._loop.time()
            if left <= 0:
                return False
            welcomed: asyncio.Future[None] = self._loop.create_future()
            welcomes.append(welcomed)
            refusal = asyncio.ensure_future(refused.wait())
            waits: list[asyncio.Future[Any]] = [welcomed, refusal]
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                refusal.cancel()
                if welcomed in welcomes:
                    welcomes.remove(welcomed)
            if welcomed.done():
                welcomed.result()  # BusClosed if the bus closed meanwhile
        return True

    async def ask_cage(self, cage: int, dataindex: str, args: Any = None,
                       timeout: float = REQUEST_TIMEOUT) -> Any:
        """Ask cage ``cage`` (an index into :attr:`cages`) itself, e.g. for its ``services``.

        Each cage has its own view (docs/redundancy.md); :meth:`request` to
        ``cage`` asks whichever cage carries requests.

        Raises:
            RequestTimeout: that cage has not registered this node (the
                message says why: :meth:`cage_trouble`), or did not answer
                within ``timeout``.
            RemoteError: the cage answered with an error.
            BusClosed: the bus is (or gets) closed.
        """
        why = self.cage_trouble(cage)
        if why:
            raise RequestTimeout(why)
        outcome = await self._request(codec.CAGE, dataindex, args, timeout, False, via=cage)
        sender, reply = next(iter(outcome.replies.items()))
        return _value(sender, reply)

    async def _request(
        self, key: str, dataindex: str, args: Any, timeout: float, gather: bool,
        via: int | None = None,
    ) -> Outcome:
        clock = self.clock
        deadline = clock() + timeout
        if not self.registered and not self._closed:
            try:
                await asyncio.wait_for(self._dispatcher.registered.wait(), timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"not connected to the cage at {self.endpoints.router}"
                    if len(self.cages) == 1 else
                    f"not connected to any of the cages at {self.endpoints.router}"
                ) from None
        if self._closed:
            raise BusClosed("the bus was closed")
        core = self.core
        cid, frame = core.request(key, dataindex, args, gather, max(0.0, deadline - clock()))
        loop = self._loop
        fut: asyncio.Future[Outcome] = loop.create_future()
        waiters = self._dispatcher.waiters
        waiters[cid] = fut
        # The future itself and a deadline (wait_for(shield(fut)) costs three
        # more loop iterations between the reply and the caller): one timer
        # for all requests, not a call_later armed and cancelled per request.
        self._deadlines.add(loop.time() + max(0.0, deadline - clock()), cid)
        try:
            # A request leaves now, with whatever was queued before it, not
            # at the end of the loop iteration: the caller waits on the round
            # trip. (So requests made together are sent one by one.)
            one = self._one if via is None else self._transports[via]
            if one is not None:
                one.send_now(frame)
            else:
                for cage in core.route(frame):
                    self._transports[cage].send_now(frame)
            outcome = await fut
        except TimeoutError:
            late = core.timeout(cid)
            outcome = late if late is not None else Outcome(cid, key, {}, Failure.TIMEOUT)
        finally:
            waiters.pop(cid, None)
            core.cancel(cid)
        if outcome.error is Failure.NOROUTE:
            raise NoRouteError(f"no service listens on {key!r}")
        if not outcome.replies:
            raise RequestTimeout(f"no answer from {key!r} for {dataindex!r} within {timeout}s")
        return outcome

    def send(self, key: str, dataindex: str, data: Any) -> None:
        """Send a one-way message to every service on ``key``."""
        self._queue(self.core.send(key, dataindex, data))

    # --- introspection ------------------------------------------------------

    def pubdata(self) -> dict[str, Any]:
        """What this service publishes, and to whom (with its ``columns``, if declared)."""
        published = self.core.pubdata()
        for dataindex, names in self.columns.items():
            if dataindex in published:
                published[dataindex]["columns"] = names
        return published

    def subdata(self) -> dict[str, Any]:
        """What this service subscribes to, and how far each view is."""
        return self.core.subdata()

    def statistics(self) -> dict[str, int]:
        """This node's counters, its subscriptions' (gaps, resyncs, ...) among them.

        ``waiting_subscriptions`` counts subscribers held for dataindexes this
        service has not published, ``waiting_refused`` announces past their
        bound (MAX_WAITING_SUBSCRIPTIONS), answered but not held.
        """
        return self.core.statistics()

    def answer_published(self, sender: str, dataindex: str, args: Any) -> Any:
        """The default request handler: the current data of a published dataindex.

        Raises:
            UnknownRequest: ``dataindex`` is not published here.
        """
        found, data = self.core.published(dataindex)
        if found:
            return data
        raise UnknownRequest(f"{self.name} does not publish or answer {dataindex!r}")

    # --- the shell's plumbing ---------------------------------------------------

    def _do(self, step: Effects) -> None:
        """Carry out what the core called for: frames and filters, then events."""
        one = self._one
        if one is not None:
            one.apply(step)
        elif self._transports:
            self._carry(step)
        if step.events:
            self._dispatcher.feed(step.events)

    def _turned(self, nbytes: int) -> None:
        """A read turn ended, having read ``nbytes`` in big frames: the work it left."""
        if nbytes:
            self._loop.call_soon(self._heap.grew, nbytes)  # after this turn's work
        self._slice_on()

    def _slice_on(self) -> None:
        """Start doing in slices what big tables left (NodeCore.slicing), if not under way."""
        if self.core.slicing and not self._applier and not self._closed:
            self._applier = True
            self._spawn(self._apply_sliced())

    async def _apply_sliced(self) -> None:
        """Apply big deltas (and free dropped big views) a slice at a time (NodeCore.advance).

        A few slices a turn (APPLY_SECONDS), the loop free between turns.
        """
        core, clock = self.core, self.clock
        try:
            while core.slicing:
                started = clock()
                while core.slicing and clock() - started < APPLY_SECONDS:
                    self._do(core.advance(clock()))
                    self._flush_now()
                await asyncio.sleep(0)  # a turn for requests and heartbeats
        finally:
            self._applier = False

    def _carry(self, step: Effects) -> None:
        """With several cages: each frame through its cage, filters on every SUB."""
        transports = self._transports
        if step.subscribe or step.unsubscribe:
            for transport in transports:
                transport.filter(step)
        for frame, cage in zip(step.frames, step.cages, strict=True):
            transports[cage].queue(frame)

    def _queue(self, frame: Frame) -> None:
        """Send ``frame`` at the end of this loop iteration (with what else is queued)."""
        one = self._one
        if one is not None:
            one.queue(frame)
        elif self._transports:
            transports = self._transports
            for cage in self.core.route(frame):
                transports[cage].queue(frame)

    def _flush_now(self) -> None:
        for transport in self._transports:
            transport.flush_now()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coro)
        self._tasks.append(task)
        # One per async answer or callback: forget each once done, or a
        # service answering requests forever would keep every task.
        task.add_done_callback(self._tasks.remove)

    def _pause(self, everything: bool) -> None:
        for transport in self._transports:
            transport.pause(everything)

    def _resume(self) -> None:
        for transport in self._transports:
            transport.resume()

    def _count(self, what: str, n: int) -> None:
        self.core.count(what, n)

    def _dropped(self, frames: int, cage: int = 0) -> None:
        """A transport dropped its backlog: the cage took none of it for an expiry."""
        self.core.count("dropped_backlog", frames)
        self.log.warning("send.dropped", frames=frames, why="cage not draining",
                         cage=self.cages[cage].router)

    def _on_seen(self, cage: int, seen: Seen) -> None:
        """Keep what a cage's connection last went through (see :mod:`zdse.node.silence`);
        with CURVE, a key the cage does not know is a final refusal."""
        self._seen[cage] = after(self._seen[cage], seen)
        if seen is Seen.REFUSED:
            self._do(self.core.refuse(self._why_silent(), self.clock(), cage))

    # --- time ---------------------------------------------------------------

    async def _keep_time(self) -> None:
        clock, core = self.clock, self.core
        while True:
            self._do(core.tick(clock()))
            await asyncio.sleep(core.tick_in(clock()))


def _at_cage(take: Callable[[list[bytes], float, int], Effects], cage: int,
             frames: list[bytes], now: float) -> Effects:
    """Hands a frame of cage ``cage`` to the core (``take`` with the cage's index)."""
    return take(frames, now, cage)


def _value(sender: str, reply: codec.Reply) -> Any:
    if reply.ok:
        return reply.value
    kind, message = "Error", str(reply.value)
    if isinstance(reply.value, list) and len(reply.value) == 2:
        kind, message = str(reply.value[0]), str(reply.value[1])
    raise RemoteError(sender, kind, message)
