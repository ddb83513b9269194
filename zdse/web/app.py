"""The dashboard's routes: HTML pages, the JSON API behind them, their event streams.

=====================================  =============================================
route                                  what
=====================================  =============================================
``GET /``                              cages, services, routes, counters (live)
``GET /service/NAME[/DATAINDEX]``      a service's tables (live); 404 if unknown
``GET /subscribe?key=K&dataindex=D``   one panel per publisher on K (live)
``GET|POST /request``                  send a request, see the answer or the error
``GET /api/overview``                  the front page's data
``GET /api/services/NAME``             the service's ``pubdata``
``GET /api/services/NAME/DATAINDEX``   the table's data now
``POST /api/request``                  ``{key, dataindex, args, timeout, all}``
``POST /api/services/NAME/ACTION``     start, stop, reload (only with ``--control``)
``GET /api/events/overview``           Server-Sent Events: the overview at each change
``GET /api/events/tables?key=K&...``   Server-Sent Events: snapshots and deltas
=====================================  =============================================
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from zdse.errors import NoRouteError, ProtocolError, RemoteError, RequestTimeout, ZdseError
from zdse.node.bus import Bus
from zdse.web import pages
from zdse.web.cagewatch import CageWatch
from zdse.web.encode import to_json
from zdse.web.forms import FormError, RequestForm, parse_request
from zdse.web.stream import overview_stream, table_stream
from zdse.wire.codec import CAGE, PUBDATA

__all__ = ["STATIC", "Dashboard", "build_app"]

#: The page script and style sheet, served as they are.
STATIC = Path(__file__).parent / "static"
#: Seconds a page waits for a service's ``pubdata`` before it is built.
LOOKUP_TIMEOUT = 3.0
#: Subscriptions one event stream may hold (a page asks for its tables).
MAX_STREAM_SUBSCRIPTIONS = 64
#: The supervisor's actions the API offers with --control.
ACTIONS = ("start", "stop", "reload")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=to_json(value), status=status, content_type="application/json")


def _html(text: str, status: int = 200) -> web.Response:
    # no-store: a page is live data, and one kept in the browser's
    # back-forward cache would keep its stream (and subscriptions) open.
    return web.Response(text=text, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


class Dashboard:
    """The handlers, around one bus connection.

    Args:
        bus: the dashboard's connection to the cage.
        connected: set once ``bus`` has registered.
        control: whether start, stop and reload are allowed.
    """

    def __init__(self, bus: Bus, connected: asyncio.Event, control: bool) -> None:
        self.bus = bus
        self.connected = connected
        self.control = control
        self.watch = CageWatch(bus, connected)

    # --- lookups ----------------------------------------------------------------

    async def _service(self, name: str) -> dict[str, Any]:
        """The pubdata of service ``name`` ({} when it is gone but was seen).

        Raises:
            web.HTTPNotFound: the cage knows no service ``name``.
            web.HTTPServiceUnavailable: the cage does not answer.
        """
        await self.watch.refresh()
        overview = self.watch.overview
        if not overview.reachable:
            raise web.HTTPServiceUnavailable(text=overview.error)
        if not overview.knows(name):
            raise web.HTTPNotFound(text=f"no service is called {name!r}")
        try:
            value = await self.bus.request(name, PUBDATA, None, LOOKUP_TIMEOUT)
        except NoRouteError:
            return {}
        except ZdseError as exc:
            raise web.HTTPServiceUnavailable(text=f"{name} does not answer: {exc}") from None
        return value if isinstance(value, dict) else {}

    async def _dataindex(self, name: str, dataindex: str) -> dict[str, Any]:
        pubdata = await self._service(name)
        if dataindex not in pubdata:
            raise web.HTTPNotFound(text=f"{name} publishes no dataindex {dataindex!r}")
        return pubdata

    # --- pages ------------------------------------------------------------------

    async def front(self, request: web.Request) -> web.Response:
        """The front page."""
        return _html(pages.front(self.control, [cage.router for cage in self.bus.cages]))

    async def service_page(self, request: web.Request) -> web.Response:
        """A service's page (all its tables, or one)."""
        name = request.match_info["name"]
        dataindex = request.match_info.get("dataindex")
        if dataindex is None:
            dataindexes = sorted(await self._service(name))
        else:
            await self._dataindex(name, dataindex)
            dataindexes = [dataindex]
        return _html(pages.service(name, dataindexes))

    async def subscribe_page(self, request: web.Request) -> web.Response:
        """The subscribe view (a form until key and dataindex are given)."""
        key = request.query.get("key", "").strip()
        dataindex = request.query.get("dataindex", "").strip()
        if key and dataindex:
            try:
                parse_request({"key": key, "dataindex": dataindex}, control=True)
            except FormError as exc:
                return _html(pages.message("Bad subscription", str(exc)), 400)
        return _html(pages.subscribe(key, dataindex))

    async def request_page(self, request: web.Request) -> web.Response:
        """The request form; a POST sends it and shows the answer or the error."""
        if request.method == "GET":
            return _html(pages.request_form({}))
        post = await request.post()
        fields = {k: v for k, v in post.items() if isinstance(v, str)}
        try:
            form = parse_request(fields, self.control)
        except FormError as exc:
            return _html(pages.request_form(fields, error=str(exc)), 400)
        status, value = await self._send(form)
        if status != 200:
            return _html(pages.request_form(fields, error=value["message"]), status)
        return _html(pages.request_form(fields, answer=json.dumps(value, indent=2,
                                                                  default=str)))

    # --- the JSON API -------------------------------------------------------

    async def api_overview(self, request: web.Request) -> web.Response:
        """The front page's data, asked of every cage now."""
        return _json({**await self.watch.refresh(), "control": self.control})

    async def api_service(self, request: web.Request) -> web.Response:
        """A service's pubdata."""
        return _json(await self._service(request.match_info["name"]))

    async def api_table(self, request: web.Request) -> web.Response:
        """A table's data now (the service's answer to a request for it)."""
        name, dataindex = request.match_info["name"], request.match_info["dataindex"]
        await self._dataindex(name, dataindex)
        status, value = await self._send(RequestForm(name, dataindex, None, LOOKUP_TIMEOUT,
                                                     False))
        return _json(value, status)

    async def api_request(self, request: web.Request) -> web.Response:
        """Send a request given as JSON; answer ``{"answer": ...}`` or an error."""
        try:
            body = await request.json()
        except ValueError as exc:
            return _json({"error": "bad_request", "message": f"body is not JSON: {exc}"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "bad_request", "message": "body must be a JSON object"}, 400)
        try:
            form = parse_request(body, self.control)
        except FormError as exc:
            return _json({"error": "bad_request", "message": str(exc)}, 400)
        status, value = await self._send(form)
        return _json({"answer": value} if status == 200 else value, status)

    async def api_control(self, request: web.Request) -> web.Response:
        """Start, stop or reload a supervised service (``--control`` only)."""
        if not self.control:
            return _json({"error": "read_only",
                          "message": "zdse-web is read-only: start it with --control"}, 403)
        action = request.match_info["action"]
        name = request.match_info["name"]
        # With several cages, the one that supervises the service (each has its own);
        # if the overview does not say (yet), after asking every cage now.
        cage = None
        if len(self.bus.cages) > 1:
            cage = self.watch.overview.supervisor_of(name)
            if cage is None:
                await self.watch.refresh()
                cage = self.watch.overview.supervisor_of(name)
        status, value = await self._send(RequestForm(CAGE, action, {"name": name}, 10.0,
                                                     False), cage)
        return _json(value, status)

    async def _send(self, form: RequestForm, cage: int | None = None) -> tuple[int, Any]:
        """Send ``form``'s request (to cage number ``cage`` itself, if given): (200, answer)
        or (an HTTP status, an error object)."""
        try:
            if form.gather:
                answers = await self.bus.request_all(form.key, form.dataindex, form.args,
                                                     form.timeout)
                return 200, {name: ({"error": a.kind, "message": str(a)}
                                    if isinstance(a, RemoteError) else a)
                             for name, a in answers.items()}
            if cage is not None:
                return 200, await self.bus.ask_cage(cage, form.dataindex, form.args,
                                                    form.timeout)
            return 200, await self.bus.request(form.key, form.dataindex, form.args,
                                               form.timeout)
        except NoRouteError as exc:
            return 404, {"error": "noroute", "message": str(exc)}
        except RequestTimeout as exc:
            return 504, {"error": "timeout", "message": str(exc)}
        except RemoteError as exc:
            return 502, {"error": exc.kind, "message": str(exc)}
        except (ProtocolError, ZdseError) as exc:
            return 503, {"error": type(exc).__name__, "message": str(exc)}

    # --- event streams ------------------------------------------------------

    async def events_overview(self, request: web.Request) -> web.StreamResponse:
        """The overview, at each change."""
        return await overview_stream(request, self.watch, lambda: {"control": self.control})

    async def events_tables(self, request: web.Request) -> web.StreamResponse:
        """Snapshots and deltas of ``dataindex`` (repeatable) on ``key``."""
        key = request.query.get("key", "")
        dataindexes = list(dict.fromkeys(request.query.getall("dataindex", [])))
        if not 0 < len(dataindexes) <= MAX_STREAM_SUBSCRIPTIONS:
            raise web.HTTPBadRequest(
                text=f"give 1 to {MAX_STREAM_SUBSCRIPTIONS} dataindex parameters")
        try:
            for dataindex in dataindexes:
                parse_request({"key": key, "dataindex": dataindex}, control=True)
        except FormError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        service = request.query.get("service") or None
        return await table_stream(request, self.bus, self.connected,
                                  [(key, d) for d in dataindexes], service)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as a page (or JSON under /api/); a cross-site POST refused."""
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            return _json({"error": "forbidden", "message": "cross-site request refused"}, 403)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if request.path.startswith("/api/"):
            return _json({"error": exc.reason.lower().replace(" ", "_"), "message": text},
                         exc.status)
        return _html(pages.message(f"{exc.status} {exc.reason}", text), exc.status)


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def build_app(dashboard: Dashboard) -> web.Application:
    """The aiohttp application serving ``dashboard``."""
    app = web.Application(middlewares=[_errors], client_max_size=256 * 1024)
    d = dashboard
    app.add_routes([
        web.get("/", d.front),
        web.get("/service/{name}", d.service_page),
        web.get("/service/{name}/{dataindex}", d.service_page),
        web.get("/subscribe", d.subscribe_page),
        web.get("/request", d.request_page),
        web.post("/request", d.request_page),
        web.get("/api/overview", d.api_overview),
        web.get("/api/services/{name}", d.api_service),
        web.get("/api/services/{name}/{dataindex}", d.api_table),
        web.post("/api/request", d.api_request),
        web.post("/api/services/{name}/{action:start|stop|reload}", d.api_control),
        web.get("/api/events/overview", d.events_overview),
        web.get("/api/events/tables", d.events_tables),
        web.get("/favicon.ico", _no_icon),
        web.static("/static", STATIC),
    ])
    return app
