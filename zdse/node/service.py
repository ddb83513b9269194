"""What a module author writes: a :class:`Service` (or a :class:`PollingService`).

A module is a Service subclass, found by name through the ``zdse.modules``
entry-point group. ``zdse-node`` builds it from the ``--set`` options,
connects it to the cage, calls :meth:`Service.start`, and :meth:`Service.stop`
at the end. Methods may be plain or ``async``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from zdse.backoff import backoff
from zdse.errors import BusClosed, ConfigError
from zdse.log import get_logger
from zdse.modules import options
from zdse.node.bus import Bus, Callback, Membership, NotPolling
from zdse.tasks import cancel_and_wait
from zdse.wire.limits import MIN_POLL_INTERVAL, REQUEST_TIMEOUT

__all__ = ["PollingService", "Service"]


class Service:
    """Base class of a data service.

    A subclass's constructor checks its options, raising ConfigError for a
    bad one, and connects to nothing: the cage builds each service of its
    config this way, unstarted, to refuse what the module would refuse
    (:func:`zdse.modules.registry.check`, in a child process given
    :data:`~zdse.wire.limits.CONFIG_CHECK_TIMEOUT` seconds for all the services it
    checks). Connections start in :meth:`start`.

    Args:
        name: the service's unique name on the bus.
        options: the ``--set KEY=VALUE`` options, as strings.
    """

    #: Addresses a service of this module listens on when ``zdse-node`` is
    #: given no ``--address``; ``{name}`` stands for the service's name.
    default_addresses: tuple[str, ...] = ()
    #: Column names of the tables whose rows are lists, by dataindex, in row
    #: order. Every service answers them in ``pubdata`` (``"columns"``), so
    #: ``zdse-web`` can head its tables with them.
    columns: ClassVar[Mapping[str, Sequence[str]]] = {}

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        self.name = name
        self.options = dict(options)
        self.running = False
        self.log = get_logger(service=name, module=type(self).__name__)
        self._bus: Bus | None = None

    # --- wiring ---------------------------------------------------------------

    @classmethod
    def addresses_for(cls, name: str) -> list[str]:
        """The default addresses of a service of this module called ``name``."""
        return [a.format(name=name) for a in cls.default_addresses]

    def attach(self, bus: Bus) -> None:
        """Connect the service to its bus (done by the runner, or by tests)."""
        self._bus = bus
        bus.on_request = self.handle_request
        bus.on_message = self.handle_message
        bus.prepush_processor = self.prepush_processor
        bus.columns = {dataindex: list(names) for dataindex, names in self.columns.items()}
        bus.on_membership = self.handle_membership
        bus.on_refresh = self.refresh

    @property
    def bus(self) -> Bus:
        """The bus this service is attached to.

        Raises:
            BusClosed: the service is not attached to a bus.
        """
        if self._bus is None:
            raise BusClosed(f"service {self.name!r} is not attached to a bus")
        return self._bus

    # --- what a module overrides -----------------------------------------

    async def start(self) -> None:
        """Begin work (polling, consuming). Called once registered."""
        self.running = True

    async def stop(self) -> None:
        """End work. After it returns, the service publishes nothing more."""
        self.running = False

    def prepush_processor(self, dataindex: str, data: Any) -> Any:
        """Groom data before it is stored and deltas are computed.

        Return None to drop this publish: nothing is stored or sent.
        """
        return data

    def handle_membership(self, event: Membership) -> Any:
        """Told of each service that joins (or changes addresses) or leaves; ignored by default."""
        return None

    async def refresh(self) -> Any:
        """Answer the reserved request ``refresh``: a plain service does not poll.

        Raises:
            NotPolling: always (a PollingService polls).
        """
        raise NotPolling(f"{self.name} does not poll: refresh asks a polling service to poll now")

    def handle_request(self, sender: str, dataindex: str, args: Any) -> Any:
        """Answer a request; by default with the data of a published dataindex."""
        return self.bus.answer_published(sender, dataindex, args)

    def handle_message(self, sender: str, dataindex: str, data: Any) -> Any:
        """Take a one-way message; ignored by default."""
        return None

    # --- what a module calls ----------------------------------------------

    def publish(self, dataindex: str, data: Any) -> None:
        """Publish ``data`` as ``dataindex``; subscribers get a diff (see :meth:`Bus.publish`)."""
        self.bus.publish(dataindex, data)

    def change_keys(self, dataindex: str, put: Mapping[Any, Any] | None = None,
                    delete: Iterable[Any] = ()) -> None:
        """Put and delete keys of a dict table (see :meth:`Bus.change_keys`)."""
        self.bus.change_keys(dataindex, put, delete)

    def change_rows(self, dataindex: str, add: Iterable[Any] = (),
                    remove: Iterable[Any] = ()) -> None:
        """Add and remove rows of a list table (see :meth:`Bus.change_rows`)."""
        self.bus.change_rows(dataindex, add, remove)

    def replace(self, dataindex: str, value: Any) -> None:
        """Publish ``value`` whole, without a diff (see :meth:`Bus.replace`)."""
        self.bus.replace(dataindex, value)

    def subscribe(self, key: str, dataindex: str, callback: Callback, *,
                  sid: str | None = None, refresh: float | None = None) -> str:
        """Subscribe to ``dataindex`` on ``key``; return the subscription id (see Bus)."""
        return self.bus.subscribe(key, dataindex, callback, sid=sid, refresh=refresh)

    def unsubscribe(self, sid: str | None = None, *, key: str | None = None,
                    dataindex: str | None = None) -> list[str]:
        """End a subscription, or those to ``dataindex`` on ``key``; return their ids."""
        return self.bus.unsubscribe(sid, key=key, dataindex=dataindex)

    def views(self, sid: str) -> dict[str, Any]:
        """A subscription's views by publisher (Congress's subData)."""
        return self.bus.views(sid)

    async def add_address(self, address: str) -> None:
        """Listen on ``address`` too; return once the cage's routes have it (see Bus)."""
        await self.bus.add_address(address)

    async def remove_address(self, address: str) -> None:
        """Stop listening on ``address``; return once the cage's routes no longer have it."""
        await self.bus.remove_address(address)

    async def request(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> Any:
        """Send a one-off request and return the reply (see :meth:`Bus.request`)."""
        return await self.bus.request(key, dataindex, args, timeout)

    async def request_all(
        self, key: str, dataindex: str, args: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Ask every service on ``key`` (see :meth:`Bus.request_all`)."""
        return await self.bus.request_all(key, dataindex, args, timeout)

    def send(self, key: str, dataindex: str, data: Any) -> None:
        """Send a one-way message."""
        self.bus.send(key, dataindex, data)

    # --- options ------------------------------------------------------------

    def option(self, key: str, default: str | None = None) -> str:
        """Return option ``key``.

        Raises:
            ConfigError: it is missing and has no default.
        """
        value = self.options.get(key, default)
        if value is None:
            raise ConfigError(f"service {self.name!r} needs --set {key}=...")
        return value

    def float_option(self, key: str, default: float, least: float = 0.0) -> float:
        """Return option ``key`` as a finite number above zero, and at least ``least``.

        Raises:
            ConfigError: it is not one.
        """
        return options.positive_float(self.options, key, default, least)


class PollingService(Service):
    """A service that calls :meth:`poll` every ``poll_interval`` seconds (at least
    :data:`~zdse.wire.limits.MIN_POLL_INTERVAL`).

    It polls only between :meth:`start` and :meth:`stop`. A poll that raises
    is logged and retried with exponential backoff (1 s, 2 s, 4 s, ... up to
    ``max(poll_interval, 60)``); the first good poll restores the interval.
    """

    poll_interval: float = 30.0

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        super().__init__(name, options)
        self.poll_interval = self.float_option("poll_interval", type(self).poll_interval,
                                               MIN_POLL_INTERVAL)
        self.failures = 0
        self.last_error = ""
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: Callers of refresh() waiting for a poll that starts after they asked.
        self._refreshes: list[asyncio.Future[dict[str, Any]]] = []

    async def poll(self) -> None:
        """Fetch the data and publish it. Override this."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start polling (the first poll happens at once)."""
        await super().start()
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name=f"poll {self.name}")

    async def stop(self) -> None:
        """Stop polling and wait for the poll loop to end."""
        await super().stop()
        poller, self._poller = self._poller, None
        await cancel_and_wait(poller)

    def poll_now(self) -> None:
        """Cut the current wait short: poll at once."""
        self._wake.set()

    async def refresh(self) -> dict[str, Any]:
        """Poll now (Congress's request_refresh) and return once that poll is done.

        A poll already under way when it is asked does not count: it may have
        fetched its data before. Answers the reserved request ``refresh``.

        Returns:
            ``{"published": {dataindex: seq}}`` for each dataindex the poll
            changed, and ``"seqs"``, every published dataindex's seq after it.

        Raises:
            NotPolling: the service is not running (stopped, or not started).
            Whatever the poll raised.
        """
        if not self.running or self._poller is None:
            raise NotPolling(f"{self.name} is not running: start it before asking it to poll")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._refreshes.append(waiter)
        self.poll_now()
        return await waiter

    def _seqs(self) -> dict[str, int]:
        if self._bus is None:
            return {}
        return {di: row["seq"] for di, row in self.bus.pubdata().items() if row["seq"]}

    def retry_delay(self) -> float:
        """Seconds to wait after ``self.failures`` failed polls in a row."""
        cap = max(self.poll_interval, 60.0)
        return backoff(self.failures, 1.0, cap)

    async def _poll_loop(self) -> None:
        try:
            await self._polls()
        finally:
            for waiter in self._refreshes:
                if not waiter.done():
                    waiter.set_exception(NotPolling(f"{self.name} stopped polling"))
            self._refreshes = []

    async def _polls(self) -> None:
        while self.running:
            # The refreshes asked before this poll began are answered by it.
            asked, self._refreshes = self._refreshes, []
            before = self._seqs() if asked else {}
            try:
                await self.poll()
            except asyncio.CancelledError:
                self._refreshes[:0] = asked  # answered in _poll_loop's finally
                raise
            except Exception as exc:
                _settle(asked, exc)
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = self.retry_delay()
                self.log.error("poll.failed", error=self.last_error, failures=self.failures,
                               retry_in=delay)
            else:
                if self.failures:
                    self.log.info("poll.recovered", after_failures=self.failures)
                self.failures = 0
                self.last_error = ""
                delay = self.poll_interval
                if asked:
                    after = self._seqs()
                    _settle(asked, {"published": {di: seq for di, seq in after.items()
                                                  if before.get(di) != seq},
                                    "seqs": after})
            self._wake.clear()
            if self._refreshes:
                continue  # asked during the poll: poll again at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)


def _settle(waiters: list[asyncio.Future[dict[str, Any]]], outcome: Any) -> None:
    """Answer the refreshes a poll served: with its result, or its exception."""
    for waiter in waiters:
        if waiter.done():
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
