"""Events to whoever waits for them: a node shell's callbacks, waiters and handlers.

:class:`Dispatcher` takes the :data:`~zdse.node.events.Event` values the core
returns and hands each on: an update to its subscription's callback, an
outcome to the request that waits for it, a request to the service's
handler (whose answer it sends back), a one-way message to its handler,
membership news to the membership handler, and the session's news to the
bus's registration waiters and its log.

Events are handled in order (:class:`~zdse.node.inorder.InOrder`): sync
callbacks inline; an async one is awaited by a task, and the events after
it wait their turn behind it. Replies and session news never wait (a
callback may be awaiting a reply). Past BEHIND_LIMIT waiting events the
owner is told to stop reading, and to read again once none wait.

A callback's or handler's failure is logged and counted, never fatal.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from structlog.stdlib import BoundLogger

from zdse.errors import BusClosed, ZdseError
from zdse.log import sampled
from zdse.node.core import NodeCore
from zdse.node.effects import Frame
from zdse.node.events import (
    BadFrame,
    Change,
    Event,
    IncomingMessage,
    IncomingRequest,
    Membership,
    Registered,
    SessionChange,
)
from zdse.node.inorder import InOrder
from zdse.node.requests import Outcome
from zdse.node.subscriptions import Update
from zdse.wire import codec
from zdse.wire.endpoints import Endpoints

__all__ = [
    "BEHIND_LIMIT",
    "Callback",
    "Dispatcher",
    "Introspection",
    "MembershipHandler",
    "MessageHandler",
    "NotPolling",
    "RefreshHandler",
    "RequestHandler",
    "UnknownRequest",
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

#: Events waiting behind a slow async callback before the node stops
#: reading deltas (and at ten times this, everything): from there ZeroMQ's
#: queues (and their high-water marks) hold the rest, not this process's
#: memory.
BEHIND_LIMIT = 10_000


class UnknownRequest(ZdseError):
    """A request for a dataindex the service neither publishes nor handles."""


class NotPolling(ZdseError):
    """A ``refresh`` request to a service that does not poll."""


class Introspection(Protocol):
    """What a service says of itself, for the reserved requests (the Bus)."""

    def pubdata(self) -> dict[str, Any]:
        """What it publishes, and to whom."""

    def subdata(self) -> dict[str, Any]:
        """What it subscribes to."""

    def views(self, sid: str) -> dict[str, Any]:
        """A subscription's views, by publisher."""

    def answer_published(self, sender: str, dataindex: str, args: Any) -> Any:
        """The default request handler."""


class Dispatcher:
    """Hands a node's events to its callbacks, waiters and handlers.

    Args:
        name: the service's name (for its error messages).
        core: the node's core: it encodes replies and counts failures.
        cages: each cage's endpoints (named in the log: its PUB when the SUB
            hears nothing, its ROUTER otherwise).
        send: queues a frame to send (a reply).
        spawn: starts a coroutine as a task the owner awaits at close.
        pause: stops reading: the SUB only, or (True) everything.
        resume: reads again.
        introspection: answers the reserved requests' questions.
        log: the service's logger.
    """

    def __init__(
        self,
        name: str,
        core: NodeCore,
        cages: Sequence[Endpoints],
        *,
        send: Callable[[Frame], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        pause: Callable[[bool], None],
        resume: Callable[[], None],
        introspection: Introspection,
        log: BoundLogger,
    ) -> None:
        self.name = name
        self._core = core
        self._cages = cages
        self._send = send
        self._spawn = spawn
        self._pause, self._resume = pause, resume
        self._introspection = introspection
        self.log = log
        self.on_request: RequestHandler | None = None
        self.on_message: MessageHandler | None = None
        self.on_membership: MembershipHandler | None = None
        self.on_refresh: RefreshHandler | None = None
        #: Each subscription's callback, by id.
        self.callbacks: dict[str, Callback] = {}
        #: Each request's caller, by correlation id.
        self.waiters: dict[int, asyncio.Future[Outcome]] = {}
        #: Callers waiting for the next registration by a cage (add_address,
        #: remove_address, wait_cage), each woken by the next Registered.
        self.welcomes: list[asyncio.Future[None]] = []
        self.registered = asyncio.Event()
        self.refused = asyncio.Event()
        # Nothing to settle after a run of events: what they queue is
        # scheduled to leave as it is queued (Transport.queue).
        self._events = InOrder(self._handle, spawn, _nothing, self._hold, BEHIND_LIMIT,
                               urgent=_urgent)
        #: What feeds events: the transport's read turns and the shell's own steps.
        self.feed: Callable[[list[Event]], None] = self._events.feed

    def close(self) -> None:
        """Wake every waiter with BusClosed."""
        waiting: list[asyncio.Future[Any]] = [*self.waiters.values(), *self.welcomes]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(BusClosed("the bus was closed"))

    def _hold(self, waiting: int) -> None:
        """Stop reading while async callbacks are far behind; read again after.

        Deltas stop first: the publishers' flood, and a subscriber that falls
        too far behind resyncs. The DEALER is read on, so heartbeats and the
        replies a callback may be awaiting still come, until ten times the
        limit wait: then it stops too (past its expiry the cage will drop
        this node, which registers again once it reads again).
        """
        if waiting == 0:
            self._resume()
        else:
            self._pause(waiting > 10 * BEHIND_LIMIT)

    # --- events -------------------------------------------------------------

    def _handle(self, event: Event) -> Awaitable[None] | None:
        """Act on one event; return what remains to await, if anything."""
        # The two per-message kinds first: a sync callback runs without a
        # coroutine or a helper call of its own. A failure is logged and
        # counted, never fatal.
        if isinstance(event, Update):
            callback = self.callbacks.get(event.sid)
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
            fut = self.waiters.get(event.cid)
            if fut is not None and not fut.done():
                fut.set_result(event)
        elif isinstance(event, IncomingRequest):
            self._answer(event.sender, event.request)
        elif isinstance(event, Registered):
            self.log.info("node.registered", cage_epoch=event.cage_epoch, again=event.again,
                          cage=self._cages[event.cage].router)
            self.registered.set()
            for welcomed in self.welcomes:
                if not welcomed.done():
                    welcomed.set_result(None)
        elif isinstance(event, SessionChange):
            self._on_session_change(event)
        elif isinstance(event, BadFrame):
            self.log.warning("frame.bad", error=event.error, count=event.count)
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
        what = event.what
        cage = self._cages[event.cage]
        if what is Change.REFUSED:
            if len(self._cages) > 1:
                # Held only if every cage grants it: stepped down at all of them.
                self.log.error("node.name_conflict", cage=cage.router, error=event.detail,
                               why="a cage refused the name: left every cage")
            self.log.error("node.refused", error=event.detail, cage=cage.router)
            self.registered.clear()
            self.refused.set()
        elif what is Change.LOST or what is Change.REREGISTERING:
            self.log.warning(f"cage.{what}", why=event.detail, cage=cage.router)
            if not self._core.registered:
                self.registered.clear()
        elif what is Change.SUB_SILENT:
            self.log.warning("cage.sub_silent", pub=cage.pub, why=event.detail)
        else:
            self.log.warning("cage.error", error=event.detail, cage=cage.router)

    async def _call(self, pending: Awaitable[Any], what: str) -> None:
        """Await what an async callback returned; its failure is logged, never fatal."""
        try:
            await pending
        except Exception:
            self._call_failed(what)

    def _call_failed(self, what: str) -> None:
        self._core.count(f"{what}_errors")
        self.log.exception(f"{what}.failed")

    # --- answering requests ---------------------------------------------------

    def _answer(self, sender: str, req: codec.Request) -> None:
        if req.dataindex in codec.RESERVED_DATAINDEXES:
            self._answer_reserved(sender, req)
            return
        handler = self.on_request or self._introspection.answer_published
        try:
            result = handler(sender, req.dataindex, req.args)
        except Exception as exc:
            self._reply_error(sender, req, exc)
            return
        if inspect.isawaitable(result):
            self._spawn(self._answer_later(sender, req, result))
            return
        self._send(self._core.reply(sender, req.cid, True, result))

    def _answer_reserved(self, sender: str, req: codec.Request) -> None:
        me = self._introspection
        if req.dataindex == codec.PUBDATA:
            self._send(self._core.reply(sender, req.cid, True, me.pubdata()))
        elif req.dataindex == codec.SUBDATA:
            value = me.subdata()
            if isinstance(req.args, dict) and req.args.get("views"):
                for sid, row in value.items():
                    row["views"] = me.views(sid)
            self._send(self._core.reply(sender, req.cid, True, value))
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
            self._send(self._core.reply(sender, req.cid, True, result))

    def _abandoned(self, sender: str, req: codec.Request) -> None:
        count = self._core.count("requests_abandoned")
        if sampled(count):
            self.log.warning("request.abandoned", sender=sender, dataindex=req.dataindex,
                             timeout=req.timeout, count=count,
                             why="its handler outlived the requester's timeout: cancelled")

    def _reply_error(self, sender: str, req: codec.Request, exc: Exception) -> None:
        if not isinstance(exc, ZdseError):
            self.log.warning("request.failed", sender=sender, dataindex=req.dataindex,
                             error=repr(exc))
        self._send(self._core.reply(sender, req.cid, False, [type(exc).__name__, str(exc)]))


def _nothing() -> None:
    pass


def _urgent(event: Event) -> bool:
    """Events that never wait behind a callback: replies, the session's news, bad frames.

    A callback that awaits a request must get the reply; none of these runs
    user code.
    """
    return isinstance(event, Outcome | Registered | SessionChange | BadFrame)
