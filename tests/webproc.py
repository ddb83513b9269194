"""Start zdse-web on a free port of a test cluster and wait until it serves and is connected."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.harness import Cluster, Proc
from tests.support import BIN


def start_web(cluster: Cluster, *extra: str, connected: bool = True) -> tuple[Proc, str]:
    """Start zdse-web on 127.0.0.1 (port chosen by the kernel); return it and its base URL."""
    web = cluster.spawn("web", [str(BIN / "zdse-web"), "--listen", "127.0.0.1:0", *extra])
    url = str(web.wait_event("web.started")["url"]).rstrip("/")
    if connected:
        web.wait_event("web.connected")
    return web, url


def fetch(url: str, data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """GET (or POST ``data``) ``url``: (status, content type, body), error statuses included."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers.get_content_type(), response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get_content_type(), exc.read().decode()


def fetch_json(url: str, body: Any = None) -> tuple[int, Any]:
    """GET ``url`` (or POST ``body`` as JSON) and parse the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    status, _, text = fetch(url, data, {"Content-Type": "application/json"})
    return status, json.loads(text)
