"""A node's connection to the cage: the asyncio shell around the pure cores.

:class:`Bus` owns the two sockets (a DEALER to the cage's ROUTER, a SUB to its
PUB) and three tasks (read each socket, keep time). Everything it decides,
it asks a pure core: :class:`~zdse.session.Session` (registration,
heartbeats), :class:`~zdse.publisher.Publications` (pubData),
:class:`~zdse.subscriber.Subscriptions` (subData) and
:class:`~zdse.requests.PendingRequests`. Then it does the I/O they return.

Outgoing messages queued in one loop iteration leave together: consecutive
messages of the same kind to the same key share one frame (never waiting
to fill it), so pyzmq's per-call cost is paid once per batch.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self

import zmq
import zmq.asyncio

from zdse import codec
from zdse.actions import Action, AddFilter, RemoveFilter, Send
from zdse.codec import EVENT_TOPIC, FLAG_GATHER, Kind
from zdse.endpoints import Endpoints
from zdse.errors import (
    BusClosed,
    MessageTooLarge,
    NameTakenError,
    NoRouteError,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    ZdseError,
)
from zdse.limits import MAX_BATCH_BYTES, REQUEST_TIMEOUT, SUBSCRIPTION_REFRESH
from zdse.log import get_logger
from zdse.publisher import Publications
from zdse.requests import Outcome, PendingRequests
from zdse.session import Session, SessionState
from zdse.subscriber import Subscriptions, Update

__all__ = ["Bus", "Callback", "MessageHandler", "RequestHandler", "Update"]

#: A subscription's callback: called with each update, may be sync or async.
Callback = Callable[[Update], Any]
#: Answers a request: (sender, dataindex, args) -> value (or an awaitable of it).
RequestHandler = Callable[[str, str, Any], Any]
#: Takes a one-way message: (sender, dataindex, data).
MessageHandler = Callable[[str, str, Any], Any]

#: Frames read per wake-up before other tasks get a turn.
DRAIN_LIMIT = 1024
#: Reserved requests every service answers.
RESERVED = ("pubdata", "subdata")


class UnknownRequest(ZdseError):
    """A request for a dataindex the service neither publishes nor handles."""


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
        prepush_processor: grooms data before it is stored and deltas are made.
        refresh: seconds between re-announcements of each subscription.
        connect_timeout: seconds to wait for the cage when entering.
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
        refresh: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.endpoints = endpoints or Endpoints()
        self.epoch = uuid.uuid4().hex[:12]
        details = {"pid": os.getpid(), "host": socket.gethostname(), **(info or {})}
        register = codec.Register(name, list(addresses), details)
        self.session = Session(register, 0.0)
        self.publications = Publications(name, self.epoch)
        refresh = refresh or float(os.environ.get("ZDSE_SUB_REFRESH", SUBSCRIPTION_REFRESH))
        self.subscriptions = Subscriptions(refresh)
        self.requests = PendingRequests()
        self.stats: Counter[str] = Counter()
        self.on_request = on_request
        self.on_message = on_message
        self.prepush_processor = prepush_processor
        self.connect_timeout = connect_timeout
        self._callbacks: dict[str, Callback] = {}
        self._waiters: dict[int, asyncio.Future[Outcome]] = {}
        self._queue: list[tuple[bytes, bytes, bytes]] = []
        self._backlog: list[list[bytes]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._registered = asyncio.Event()
        self._refused = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._group: asyncio.TaskGroup | None = None
        self._closed = False
        self.log = get_logger(service=name)

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
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.asyncio.Context()
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._sub = self._ctx.socket(zmq.SUB)
        for sock in (self._dealer, self._sub):
            sock.linger = 0
        self._dealer.sndhwm = self._dealer.rcvhwm = 100_000
        self._sub.rcvhwm = 100_000
        self._sub.subscribe(EVENT_TOPIC)
        self._dealer.connect(self.endpoints.router)
        self._sub.connect(self.endpoints.pub)
        # Sync twins of the same sockets for non-blocking drains and sends,
        # which avoid a future per call on the hot path.
        self._dealer_now = zmq.Socket.shadow(self._dealer.underlying)
        self._sub_now = zmq.Socket.shadow(self._sub.underlying)
        self.session = Session(self.session.register, self._loop.time())
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        for coro in (self._read_dealer(), self._read_sub(), self._keep_time()):
            self._tasks.append(self._group.create_task(coro))
        self._send_control(self.session.start(self._loop.time()))
        try:
            await self._wait_registered(self.connect_timeout)
        except BaseException:
            await self.close(bye=False)
            raise

    async def _wait_registered(self, timeout: float | None) -> None:
        waits = [asyncio.ensure_future(self._registered.wait()),
                 asyncio.ensure_future(self._refused.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
        if self._refused.is_set():
            raise NameTakenError(self.session.refusal or f"name {self.name!r} is taken")
        if not self._registered.is_set():
            raise BusClosed(
                f"no answer from the cage at {self.endpoints.router} within {timeout}s "
                "(is zdse-proxy running there?)"
            )

    @property
    def registered(self) -> bool:
        """Whether the cage currently knows this service."""
        return self.session.state is SessionState.REGISTERED

    async def close(self, bye: bool = True) -> None:
        """Say bye to the cage, stop the tasks and close the sockets."""
        if self._closed:
            return
        self._closed = True
        if bye and self.session.state is SessionState.REGISTERED:
            self._send_control(codec.Bye())
            self._flush()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(BusClosed("the bus was closed"))
        for task in self._tasks:
            task.cancel()
        if self._group is not None:
            await self._group.__aexit__(None, None, None)
        # A short linger lets the bye leave; never long enough to hang an exit.
        self._dealer.close(linger=100)
        self._sub.close(linger=0)
        self._ctx.term()

    async def wait_refused(self) -> str:
        """Wait until the cage refuses this service's name; return its message."""
        await self._refused.wait()
        return self.session.refusal

    # --- publishing ---------------------------------------------------------

    def publish(self, dataindex: str, data: Any) -> None:
        """Store ``data`` under ``dataindex`` and send subscribers the delta.

        Nothing is sent when nothing changed or nobody subscribes.
        """
        if self.prepush_processor is not None:
            data = self.prepush_processor(dataindex, data)
        for action in self.publications.publish(dataindex, data):
            if self.registered:
                self._do(action)

    # --- subscribing --------------------------------------------------------

    def subscribe(self, key: str, dataindex: str, callback: Callback) -> str:
        """Subscribe to ``dataindex`` of every service that listens on ``key``.

        ``callback`` gets an :class:`Update` for the snapshot of each
        publisher, then for each delta; ``update.view`` is the merged view.

        Returns:
            the subscription id.
        """
        codec.validate_pattern(key, "key")
        sid, actions = self.subscriptions.subscribe(key, dataindex, self._loop.time())
        self._callbacks[sid] = callback
        if self.registered:
            self._do_all(actions)
        return sid

    def unsubscribe(self, sid: str) -> None:
        """End subscription ``sid``."""
        self._callbacks.pop(sid, None)
        self._do_all(self.subscriptions.unsubscribe(sid))

    # --- requests -----------------------------------------------------------

    async def request(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """Ask the service(s) on ``key`` for ``dataindex``; return the first answer.

        Raises:
            NoRouteError: nothing listens on ``key`` (at once, not at the timeout).
            RequestTimeout: no answer within ``timeout`` seconds.
            RemoteError: the service answered with an error.
        """
        outcome = await self._request(key, dataindex, args, timeout, gather=False)
        sender, reply = next(iter(outcome.replies.items()))
        return _value(sender, reply)

    async def request_all(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Ask every service on ``key``; return their answers by name.

        An answer that is an error is returned as a :class:`RemoteError`
        value. After ``timeout``, the answers that came are returned.

        Raises:
            NoRouteError: nothing listens on ``key``.
            RequestTimeout: not a single answer within ``timeout``.
        """
        outcome = await self._request(key, dataindex, args, timeout, gather=True)
        answers: dict[str, Any] = {}
        for sender, reply in sorted(outcome.replies.items()):
            try:
                answers[sender] = _value(sender, reply)
            except RemoteError as exc:
                answers[sender] = exc
        return answers

    async def _request(
        self, key: str, dataindex: str, args: Any, timeout: float, gather: bool
    ) -> Outcome:
        codec.validate_pattern(key, "key")
        deadline = self._loop.time() + timeout
        if not self.registered:
            try:
                await asyncio.wait_for(self._registered.wait(), timeout)
            except TimeoutError:
                raise RequestTimeout(
                    f"not connected to the cage at {self.endpoints.router}"
                ) from None
        cid = self.requests.new(key, gather)
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiters[cid] = fut
        self._do(Send(key, codec.Request(cid, dataindex, args)), FLAG_GATHER if gather else 0)
        try:
            outcome = await asyncio.wait_for(
                asyncio.shield(fut), max(0.0, deadline - self._loop.time())
            )
        except TimeoutError:
            late = self.requests.timeout(cid)
            outcome = late if late is not None else fut.result()
        finally:
            self._waiters.pop(cid, None)
            self.requests.cancel(cid)
        if outcome.error == "noroute":
            raise NoRouteError(f"no service listens on {key!r}")
        if not outcome.replies:
            raise RequestTimeout(f"no answer from {key!r} for {dataindex!r} within {timeout}s")
        return outcome

    # --- one-way messages --------------------------------------------------

    def send(self, key: str, dataindex: str, data: Any) -> None:
        """Send a one-way message to every service on ``key``."""
        codec.validate_pattern(key, "key")
        self._do(Send(key, codec.Message(dataindex, data)))

    # --- introspection ------------------------------------------------------

    def pubdata(self) -> dict[str, Any]:
        """What this service publishes, and to whom."""
        return self.publications.pubdata()

    def subdata(self) -> dict[str, Any]:
        """What this service subscribes to, and how far each view is."""
        return self.subscriptions.subdata()

    # --- output -------------------------------------------------------------

    def _do_all(self, actions: Iterable[Action]) -> None:
        for action in actions:
            self._do(action)

    def _do(self, action: Action, flags: int = 0) -> None:
        if isinstance(action, Send):
            msg = action.message
            try:
                body = codec.encode_one(msg)
            except MessageTooLarge as exc:
                self.stats["too_large"] += 1
                self.log.error("message.too_large", kind=msg.KIND.name, key=action.key,
                               error=str(exc))
                raise
            self._queue.append((codec.header(msg.KIND, flags), action.key.encode(), body))
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_soon(self._flush)
        elif isinstance(action, AddFilter):
            self._sub_now.subscribe(action.topic)
        elif isinstance(action, RemoveFilter):
            self._sub_now.unsubscribe(action.topic)

    def _send_control(self, msg: codec.Register | codec.Heartbeat | codec.Bye) -> None:
        self._queue.append((codec.header(msg.KIND), b"", codec.encode_one(msg)))
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        queue, self._queue = self._queue, []
        batches: list[list[bytes]] = []
        head = key = b""
        parts: list[bytes] = []
        size = 0
        for h, k, body in queue:
            if parts and h == head and k == key and size + len(body) <= MAX_BATCH_BYTES:
                parts.append(body)
                size += len(body)
                continue
            if parts:
                batches.append([head, key, b"".join(parts) if len(parts) > 1 else parts[0]])
            head, key, parts, size = h, k, [body], len(body)
        if parts:
            batches.append([head, key, b"".join(parts) if len(parts) > 1 else parts[0]])
        self.stats["batches_out"] += len(batches)
        if self._backlog:
            self._backlog.extend(batches)
            return
        for i, frames in enumerate(batches):
            try:
                self._dealer_now.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                # The cage's queue is full: keep order, wait until it drains.
                self._backlog = batches[i:]
                self._tasks.append(self._group.create_task(self._drain_backlog()))  # type: ignore[union-attr]
                return

    async def _drain_backlog(self) -> None:
        while self._backlog:
            wait = self.session.expiry
            if not await self._dealer.poll(wait * 1000, zmq.POLLOUT):
                # The cage is gone; what we held is stale by now. Requests
                # time out, subscribers resync: drop and count.
                self.stats["dropped_backlog"] += len(self._backlog)
                self.log.warning("send.dropped", frames=len(self._backlog), why="cage not draining")
                self._backlog = []
                return
            while self._backlog:
                try:
                    self._dealer_now.send_multipart(self._backlog[0], zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._backlog.pop(0)

    # --- input --------------------------------------------------------------

    async def _read_dealer(self) -> None:
        sock, now_sock = self._dealer, self._dealer_now
        while True:
            frames = await sock.recv_multipart()
            await self._on_frames(frames)
            for _ in range(DRAIN_LIMIT):
                try:
                    frames = now_sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                await self._on_frames(frames)

    async def _read_sub(self) -> None:
        sock, now_sock = self._sub, self._sub_now
        while True:
            frames = await sock.recv_multipart()
            await self._on_published(frames)
            for _ in range(DRAIN_LIMIT):
                try:
                    frames = now_sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                await self._on_published(frames)

    def _bad(self, what: str, exc: Exception) -> None:
        self.stats["bad_frames"] += 1
        n = self.stats["bad_frames"]
        if n & (n - 1) == 0:  # 1st, 2nd, 4th, ...: visible, never a flood
            self.log.warning("frame.bad", source=what, error=str(exc), count=n)

    async def _on_frames(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 4:
                raise ProtocolError(f"expected 4 frames from the cage, got {len(frames)}")
            kind, flags = codec.parse_header(frames[0])
            sender = frames[1].decode()
            messages = codec.decode_body(kind, frames[3])
        except (ProtocolError, UnicodeDecodeError) as exc:
            self._bad("cage", exc)
            return
        now = self._loop.time()
        for msg in messages:
            await self._dispatch(sender, msg, now)

    async def _dispatch(self, sender: str, msg: codec.MessageValue, now: float) -> None:
        if isinstance(msg, codec.Request):
            self._answer(sender, msg)
        elif isinstance(msg, codec.Reply):
            self._settle(self.requests.on_reply(sender, msg))
        elif isinstance(msg, codec.Snapshot):
            await self._deliver(*self.subscriptions.on_snapshot(sender, msg, now))
        elif isinstance(msg, codec.Subscribe):
            self._do_all(self.publications.on_subscribe(sender, msg, now))
        elif isinstance(msg, codec.Unsubscribe):
            self.publications.on_unsubscribe(sender, msg)
        elif isinstance(msg, codec.Message):
            if self.on_message is not None:
                await self._call("message", self.on_message, sender, msg.dataindex, msg.data)
        elif isinstance(msg, codec.NoRoute):
            await self._on_noroute(msg)
        elif isinstance(msg, codec.Fanout):
            self._on_fanout(msg)
        elif isinstance(msg, codec.Heartbeat):
            again = self.session.on_heartbeat(msg.epoch, now)
            if again is not None:
                self._send_control(again)
        elif isinstance(msg, codec.Welcome):
            self._on_welcome(msg, now)
        elif isinstance(msg, codec.Error):
            self._on_error(msg, now)
        else:
            self._bad("cage", ProtocolError(f"{msg.KIND.name} is not sent to nodes"))

    def _on_welcome(self, msg: codec.Welcome, now: float) -> None:
        again = self.session.on_welcome(msg.epoch, float(msg.heartbeat), now)
        self.log.info("node.registered", cage_epoch=msg.epoch, again=again)
        self._registered.set()
        self._do_all(self.subscriptions.reannounce_all(now))

    def _on_error(self, msg: codec.Error, now: float) -> None:
        was = self.session.state
        again = self.session.on_error(msg.code, msg.message, now)
        if self.session.state is SessionState.REFUSED:
            self.log.error("node.refused", error=msg.message)
            self._registered.clear()
            self._refused.set()
            return
        if self.session.state is SessionState.CONNECTING and was is not SessionState.CONNECTING:
            self.log.warning("node.reregistering", why=msg.message)
            self._registered.clear()
        if again is not None:
            self._send_control(again)
        if msg.code not in ("not_registered",):
            self.log.warning("cage.error", code=msg.code, error=msg.message)

    async def _on_noroute(self, msg: codec.NoRoute) -> None:
        try:
            inner = codec.decode_body(Kind(msg.kind), msg.body)
        except (ProtocolError, ValueError) as exc:
            self._bad("noroute", exc)
            return
        for original in inner:
            if isinstance(original, codec.Request):
                self._settle(self.requests.on_noroute(original.cid))
            elif isinstance(original, codec.Subscribe):
                await self._deliver(self.subscriptions.on_noroute(original), [])
            else:
                self.stats["noroute"] += 1

    def _on_fanout(self, msg: codec.Fanout) -> None:
        try:
            inner = codec.decode_body(Kind.REQUEST, msg.body)
        except ProtocolError as exc:
            self._bad("fanout", exc)
            return
        for original in inner:
            assert isinstance(original, codec.Request)
            self._settle(self.requests.on_fanout(original.cid, msg.count))

    def _settle(self, outcome: Outcome | None) -> None:
        if outcome is None:
            return
        fut = self._waiters.get(outcome.cid)
        if fut is not None and not fut.done():
            fut.set_result(outcome)

    async def _on_published(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 3:
                raise ProtocolError(f"expected 3 frames from the PUB socket, got {len(frames)}")
            kind, _ = codec.parse_header(frames[1])
            messages = codec.decode_body(kind, frames[2])
            topic = frames[0]
            publisher = "" if topic == EVENT_TOPIC else topic.split(b"\x00", 1)[0].decode()
        except (ProtocolError, UnicodeDecodeError) as exc:
            self._bad("pub", exc)
            return
        now = self._loop.time()
        for msg in messages:
            if isinstance(msg, codec.Delta):
                await self._deliver(*self.subscriptions.on_delta(publisher, msg, now))
            elif isinstance(msg, codec.Joined):
                self._do_all(self.subscriptions.on_joined(msg.name, msg.addresses, now))
            elif isinstance(msg, codec.Left):
                self.publications.forget(msg.name)
                await self._deliver(*self.subscriptions.on_left(msg.name))

    async def _deliver(self, updates: list[Update], actions: list[Action]) -> None:
        self._do_all(actions)
        for update in updates:
            callback = self._callbacks.get(update.sid)
            if callback is not None:
                await self._call("callback", callback, update)

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a user's callback; its failure is logged, never fatal to the bus."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception:
            self.stats[f"{what}_errors"] += 1
            self.log.exception(f"{what}.failed")
            return None

    def _answer(self, sender: str, req: codec.Request) -> None:
        if req.dataindex in RESERVED:
            value = self.pubdata() if req.dataindex == "pubdata" else self.subdata()
            self._do(Send(sender, codec.Reply(req.cid, True, value)))
            return
        handler = self.on_request or self.answer_published
        try:
            result = handler(sender, req.dataindex, req.args)
        except Exception as exc:
            self._reply_error(sender, req, exc)
            return
        if inspect.isawaitable(result):
            self._tasks.append(
                self._group.create_task(self._answer_later(sender, req, result))  # type: ignore[union-attr]
            )
            return
        self._reply(sender, req, result)

    async def _answer_later(self, sender: str, req: codec.Request, pending: Awaitable[Any]) -> None:
        try:
            result = await pending
        except Exception as exc:
            self._reply_error(sender, req, exc)
            return
        self._reply(sender, req, result)

    def _reply(self, sender: str, req: codec.Request, value: Any) -> None:
        try:
            self._do(Send(sender, codec.Reply(req.cid, True, value)))
        except (ProtocolError, MessageTooLarge) as exc:
            self._reply_error(sender, req, exc)

    def _reply_error(self, sender: str, req: codec.Request, exc: Exception) -> None:
        if not isinstance(exc, ZdseError):
            self.log.warning("request.failed", sender=sender, dataindex=req.dataindex,
                             error=repr(exc))
        self._do(Send(sender, codec.Reply(req.cid, False, [type(exc).__name__, str(exc)])))

    def answer_published(self, sender: str, dataindex: str, args: Any) -> Any:
        """The default request handler: the current data of a published dataindex.

        Raises:
            UnknownRequest: ``dataindex`` is not published here.
        """
        if dataindex in self.publications.dataindexes():
            return self.publications.data(dataindex)
        raise UnknownRequest(f"{self.name} does not publish or answer {dataindex!r}")

    # --- time ---------------------------------------------------------------

    async def _keep_time(self) -> None:
        while True:
            now = self._loop.time()
            tick = self.session.tick(now)
            for msg in tick.send:
                self._send_control(msg)
            if tick.lost:
                self._registered.clear()
                self.log.warning("cage.lost", silent_for=self.session.expiry)
            if self.registered:
                self._do_all(self.subscriptions.tick(now))
                self.publications.expire(now)
            await asyncio.sleep(min(self.session.heartbeat, self.subscriptions.refresh) / 4)


def _value(sender: str, reply: codec.Reply) -> Any:
    if reply.ok:
        return reply.value
    kind, message = ("Error", str(reply.value))
    if isinstance(reply.value, list) and len(reply.value) == 2:
        kind, message = str(reply.value[0]), str(reply.value[1])
    raise RemoteError(sender, kind, message)
