"""What a module author writes: a :class:`Service` (or a :class:`PollingService`).

A module is a Service subclass, found by name through the ``zdse.modules``
entry-point group. ``zdse-node`` builds it from the ``--set`` options,
connects it to the cage, calls :meth:`Service.start`, and :meth:`Service.stop`
at the end. Methods may be plain or ``async``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from zdse import options
from zdse.bus import Bus, Callback
from zdse.errors import BusClosed, ConfigError
from zdse.limits import MIN_POLL_INTERVAL, REQUEST_TIMEOUT
from zdse.log import get_logger

__all__ = ["PollingService", "Service"]


class Service:
    """Base class of a data service.

    A subclass's constructor checks its options, raising ConfigError for a
    bad one, and connects to nothing: the cage builds each service of its
    config this way, unstarted, to refuse what the module would refuse
    (:func:`zdse.modules.check`, in a child process given
    :data:`~zdse.limits.CONFIG_CHECK_TIMEOUT` seconds for all the services it
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
        """Groom data before it is stored and deltas are computed."""
        return data

    def handle_request(self, sender: str, dataindex: str, args: Any) -> Any:
        """Answer a request; by default with the data of a published dataindex."""
        return self.bus.answer_published(sender, dataindex, args)

    def handle_message(self, sender: str, dataindex: str, data: Any) -> Any:
        """Take a one-way message; ignored by default."""
        return None

    # --- what a module calls ----------------------------------------------

    def publish(self, dataindex: str, data: Any) -> None:
        """Publish ``data`` as ``dataindex``; subscribers get the delta."""
        self.bus.publish(dataindex, data)

    def subscribe(self, key: str, dataindex: str, callback: Callback) -> str:
        """Subscribe to ``dataindex`` on ``key``; return the subscription id."""
        return self.bus.subscribe(key, dataindex, callback)

    def unsubscribe(self, sid: str) -> None:
        """End a subscription."""
        self.bus.unsubscribe(sid)

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
    :data:`~zdse.limits.MIN_POLL_INTERVAL`).

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
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    def poll_now(self) -> None:
        """Cut the current wait short: poll at once."""
        self._wake.set()

    def retry_delay(self) -> float:
        """Seconds to wait after ``self.failures`` failed polls in a row."""
        cap = max(self.poll_interval, 60.0)
        return float(min(cap, 2 ** (self.failures - 1)))

    async def _poll_loop(self) -> None:
        while self.running:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
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
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
