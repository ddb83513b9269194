"""The live-view bridge: bus subscriptions to a browser's Server-Sent Events.

A stream lives as long as the browser's connection: it subscribes when the
page opens it and unsubscribes when the connection ends, however it ends
(page closed, navigation, network gone). A stream writes at least every
:data:`KEEPALIVE` seconds, so a browser that vanished without a word is
noticed by the failed write within that time and costs the bus nothing
more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiohttp import web

from zdse.errors import NoRouteError, ZdseError
from zdse.log import get_logger
from zdse.node.bus import Bus
from zdse.node.subscriptions import Update
from zdse.tasks import cancel_and_wait
from zdse.web.cagewatch import CageWatch
from zdse.web.encode import to_json
from zdse.web.feed import Feed
from zdse.wire.codec import PUBDATA

__all__ = ["KEEPALIVE", "PUBDATA_INTERVAL", "overview_stream", "table_stream"]

#: Seconds between writes to an idle stream: how soon a vanished browser's
#: subscriptions end.
KEEPALIVE = 1.0
#: Seconds between two ``pubdata`` requests of a service page (its seq and
#: subscribers).
PUBDATA_INTERVAL = 2.0
#: Seconds a ``pubdata`` request waits for the service.
PUBDATA_TIMEOUT = 2.0

log = get_logger(component="zdse-web")

#: What a write to a browser that went away raises (aiohttp's
#: ClientConnectionResetError is a ConnectionResetError).
GONE = (ConnectionError,)


@contextlib.asynccontextmanager
async def _event_stream(request: web.Request) -> AsyncIterator[web.StreamResponse]:
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    yield response


async def _send(response: web.StreamResponse, events: Iterable[str]) -> None:
    # One write per drain: a burst of deltas costs one syscall.
    body = "".join(f"data: {text}\n\n" for text in events) or ": keepalive\n\n"
    await response.write(body.encode())


async def table_stream(
    request: web.Request,
    bus: Bus,
    connected: asyncio.Event,
    subscriptions: list[tuple[str, str]],
    service: str | None = None,
) -> web.StreamResponse:
    """Stream the updates of ``subscriptions`` (key, dataindex) until the browser leaves.

    With ``service``, the stream also carries that service's ``pubdata``
    every PUBDATA_INTERVAL, and ``{"t": "gone"}`` while nothing answers on
    its name.
    """
    feed = Feed()
    wake = asyncio.Event()

    def on_update(update: Update) -> None:
        feed.take(update)
        wake.set()

    async def poll_pubdata() -> None:
        assert service is not None
        while True:
            try:
                value = await bus.request(service, PUBDATA, None, PUBDATA_TIMEOUT)
                feed.add({"t": "pubdata", "data": value})
            except NoRouteError:
                feed.add({"t": "gone", "service": service})
            except ZdseError as exc:
                feed.add({"t": "pubdata_error", "error": str(exc)})
            wake.set()
            await asyncio.sleep(PUBDATA_INTERVAL)

    async with _event_stream(request) as response:
        await connected.wait()
        sids = [bus.subscribe(key, dataindex, on_update) for key, dataindex in subscriptions]
        peer = request.remote
        log.info("web.stream.opened", peer=peer, subscriptions=subscriptions)
        poller = asyncio.create_task(poll_pubdata()) if service is not None else None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), KEEPALIVE)
                wake.clear()
                await _send(response, feed.drain())
        except GONE:
            pass
        finally:
            await cancel_and_wait(poller)
            for sid in sids:
                bus.unsubscribe(sid)
            log.info("web.stream.closed", peer=peer, subscriptions=len(sids),
                     coalesced=feed.coalesced)
    return response


async def overview_stream(request: web.Request, watch: CageWatch,
                          extra: Callable[[], dict[str, Any]]) -> web.StreamResponse:
    """Stream the front page's overview (plus ``extra()``) at each change."""
    async with _event_stream(request) as response:
        version = -1
        with watch.watching():
            try:
                while True:
                    if watch.overview.version != version:
                        version = watch.overview.version
                        await _send(response, [to_json({**watch.overview.state(), **extra()})])
                    else:
                        await _send(response, [])
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(watch.wait_changed(version), KEEPALIVE)
            except GONE:
                pass
    return response
