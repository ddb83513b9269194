"""Polls every cage's ``services``, ``routes`` and ``stats`` into an :class:`Overview`.

Each cage is asked for itself (:meth:`Bus.ask_cage`), all at once: a cage
that does not answer costs the poll its timeout, not the others their view.

It polls only while a front page is open (or the API asks), so a dashboard
nobody looks at costs the bus nothing. Each change of the overview wakes the
streams that wait on :meth:`CageWatch.wait_changed`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from zdse.errors import ZdseError
from zdse.log import get_logger
from zdse.node.bus import Bus
from zdse.web.overview import Overview

__all__ = ["POLL_INTERVAL", "CageWatch"]

#: Seconds between two polls while someone looks: what "live" means for the
#: front page's uptimes and counters.
POLL_INTERVAL = 1.0
#: Seconds one poll waits for the cage before the page says it is unreachable.
POLL_TIMEOUT = 2.0


class CageWatch:
    """The overview, kept fresh while it has watchers.

    Args:
        bus: the dashboard's connection to the cage.
        connected: set once the bus has registered with the cage.
    """

    def __init__(self, bus: Bus, connected: asyncio.Event) -> None:
        self.bus = bus
        self.connected = connected
        self.overview = Overview([cage.router for cage in bus.cages])
        self.watchers = 0
        self._changed = asyncio.Condition()
        self._wanted = asyncio.Event()
        self.log = get_logger(component="zdse-web")

    async def refresh(self) -> dict[str, Any]:
        """Ask every cage now; return the overview's state."""
        if not self.connected.is_set():
            for i, cage in enumerate(self.bus.cages):
                self.overview.unreachable(f"waiting for the cage at {cage.router}", i)
        else:
            await asyncio.gather(*(self._ask(i) for i in range(len(self.bus.cages))))
        async with self._changed:
            self._changed.notify_all()
        return self.overview.state()

    async def _ask(self, cage: int) -> None:
        """Ask cage ``cage`` its three tables; tell the overview what came."""
        view = self.overview.cages[cage]
        try:
            services, routes, stats = await asyncio.gather(
                *(self.bus.ask_cage(cage, what, None, POLL_TIMEOUT)
                  for what in ("services", "routes", "stats")))
        except ZdseError as exc:
            if view.reachable:
                self.log.warning("web.cage_unreachable", cage=view.router, error=str(exc))
            self.overview.unreachable(str(exc), cage)
        else:
            if not view.reachable and view.stats:
                self.log.info("web.cage_back", cage=view.router)
            self.overview.seen(services, routes, stats, cage)

    async def wait_changed(self, version: int) -> None:
        """Wait until the overview's version is past ``version``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.overview.version > version)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Keep polling while the ``with`` block runs (one open front page)."""
        self.watchers += 1
        self._wanted.set()
        try:
            yield
        finally:
            self.watchers -= 1

    async def run(self) -> None:
        """Poll every POLL_INTERVAL while there are watchers; sleep otherwise."""
        while True:
            if not self.watchers:
                self._wanted.clear()
                await self._wanted.wait()
            await self.refresh()
            await asyncio.sleep(POLL_INTERVAL)
