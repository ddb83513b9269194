"""The HTML of each page. Pure: strings in, a document out.

A page is a shell: its data comes from the JSON API and its event stream,
which ``static/dashboard.js`` reads (``<main data-page=...>`` says which
page it is). Only the request form's answer, posted without script, is
rendered here whole. Every value from the bus is escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

__all__ = ["cage_label", "document", "front", "message", "request_form", "service", "subscribe"]

NAV = (
    '<nav><a href="/">Services</a> <a href="/subscribe">Subscribe</a> '
    '<a href="/request">Request</a> <a href="/api/overview">JSON</a></nav>'
)


def document(title: str, main: str, page: str, **data: Any) -> str:
    """A whole page: ``main`` inside the common frame; ``data`` goes to the script."""
    attrs = "".join(f' data-{escape(k)}="{escape(json.dumps(v))}"' for k, v in data.items())
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · zdse</title>"
        '<link rel=stylesheet href="/static/style.css">'
        '<script defer src="/static/dashboard.js"></script></head><body>'
        f'<header><h1><a href="/">zdse</a></h1>{NAV}</header>'
        '<div id=banner class=banner hidden></div>'
        f'<main id=app data-page="{escape(page)}"{attrs}>{main}</main></body></html>'
    )


def cage_label(router: str) -> str:
    """How the page names a cage: its ROUTER endpoint without ``tcp://``."""
    return router.removeprefix("tcp://")


def front(control: bool, routers: list[str] | None = None) -> str:
    """The front page: services, routes, counters (filled in live).

    With several cages (``routers``), also the cages panel, a Cages column
    in the services and routes tables, and a column of counters per cage.
    """
    routers = routers or []
    several = len(routers) > 1
    cages_th = "<th>Cages</th>" if several else ""
    panel = (
        "<section><h2>Cages</h2><table id=cages class=grid><thead><tr>"
        "<th>Cage (ROUTER)</th><th>State</th><th>Epoch</th><th>Uptime</th><th>Nodes</th>"
        "<th>Routes</th><th>Routed</th><th>Published</th><th>No route</th><th>Dropped</th>"
        "<th>Why</th></tr></thead><tbody></tbody></table></section>"
    ) if several else ""
    counters = "".join(f"<th>{escape(cage_label(r))}</th>" for r in routers) if several \
        else "<th>Value</th>"
    main = (
        panel
        + "<section><h2>Services</h2><table id=services class=grid><thead><tr>"
        "<th>Name</th><th>State</th>" + cages_th + "<th>Module</th><th>PID</th><th>Restarts</th>"
        "<th>Uptime</th><th>Last seen</th><th>Addresses</th><th>Last error</th>"
        + ("<th>Control</th>" if control else "")
        + "</tr></thead><tbody></tbody></table></section>"
        "<div class=columns><section><h2>Routes</h2><table id=routes class=grid><thead><tr>"
        "<th>Pattern</th><th>Services</th>" + cages_th + "</tr></thead><tbody></tbody></table>"
        "</section><section><h2>Cage counters</h2><table id=stats class=grid><thead><tr>"
        f"<th>Counter</th>{counters}</tr></thead><tbody></tbody></table></section></div>"
    )
    return document("services", main, "front", control=control, cages=len(routers))


def service(name: str, dataindexes: list[str]) -> str:
    """A service's page: its published tables (filled in live)."""
    main = (
        f"<h2>Service <span id=service-name>{escape(name)}</span> "
        "<span id=service-state class=state>…</span></h2>"
        "<table id=pubdata class=grid><thead><tr><th>Dataindex</th><th>Seq</th>"
        "<th>Rows</th><th>Subscribers</th></tr></thead><tbody></tbody></table>"
        "<div id=panels></div>"
    )
    return document(name, main, "service", service=name, key=name, dataindexes=dataindexes)


def subscribe(key: str, dataindex: str) -> str:
    """The subscribe view: a form, and one panel per publisher once subscribed."""
    form = (
        "<form class=inline method=get action=/subscribe>"
        f'<label>Key <input name=key required value="{escape(key)}"></label> '
        f'<label>Dataindex <input name=dataindex required value="{escape(dataindex)}"></label> '
        "<button>Subscribe</button></form>"
    )
    main = f"<h2>Subscribe</h2>{form}<div id=panels></div>"
    if key and dataindex:
        return document(f"{key} {dataindex}", main, "subscribe", key=key,
                        dataindexes=[dataindex])
    return document("subscribe", main, "form")


def request_form(fields: dict[str, str], answer: str = "", error: str = "") -> str:
    """The request form, with the answer (JSON) or the error of the last one sent."""
    def field(name: str) -> str:
        return escape(fields.get(name, ""))

    checked = " checked" if fields.get("all") else ""
    result = ""
    if error:
        result = f"<p id=request-error class=error>{escape(error)}</p>"
    elif answer:
        result = f"<h3>Answer</h3><pre id=request-answer>{escape(answer)}</pre>"
    main = (
        "<h2>Request</h2><form method=post action=/request class=stacked>"
        f'<label>Key <input name=key required value="{field("key")}"></label>'
        f'<label>Dataindex <input name=dataindex required value="{field("dataindex")}"></label>'
        f"<label>Args (JSON) <textarea name=args rows=4>{field('args')}</textarea></label>"
        f'<label>Timeout (s) <input name=timeout value="{field("timeout")}" '
        'placeholder=5></label>'
        f"<label><input type=checkbox name=all value=1{checked}> every service on the key"
        "</label><button>Send</button></form>" + result
    )
    return document("request", main, "request")


def message(title: str, text: str) -> str:
    """A page that only says something (not found, unavailable, bad request)."""
    main = f"<h2>{escape(title)}</h2><p class=error id=message>{escape(text)}</p>"
    return document(title, main, "message")
