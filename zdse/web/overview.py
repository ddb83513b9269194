"""The front page's model: the cage's services, routes and counters. Pure.

Fed with the cage's answers to ``services``, ``routes`` and ``stats``
(:meth:`Overview.seen`) or with the failure to get them
(:meth:`Overview.unreachable`), it keeps what the page shows, including the
services that were there and are not any more: those stay listed with the
state ``gone`` (the newest :data:`GONE_KEPT` of them) until they come back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GONE_KEPT", "Overview"]

#: Gone services remembered; older ones are forgotten, so a bus with churning
#: client names (every zdse-ctl run is one) cannot grow the page without bound.
GONE_KEPT = 50


class Overview:
    """What the front page shows, and a version that changes with it."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.gone: dict[str, dict[str, Any]] = {}
        self.routes: list[Any] = []
        self.stats: dict[str, Any] = {}
        self.reachable = False
        self.error = "not connected to the cage yet"
        self.version = 0

    def seen(self, services: Any, routes: Any, stats: Any) -> None:
        """Take the cage's answers (entries that are not what the cage sends are skipped)."""
        current = {s["name"]: s for s in services if isinstance(s, dict)
                   and isinstance(s.get("name"), str)} if isinstance(services, list) else {}
        for name in self.services.keys() - current.keys():
            self.gone[name] = {**self.services[name], "state": "gone", "pid": None}
        for name in current:
            self.gone.pop(name, None)
        while len(self.gone) > GONE_KEPT:
            del self.gone[next(iter(self.gone))]
        self.services = current
        self.routes = routes if isinstance(routes, list) else []
        self.stats = stats if isinstance(stats, dict) else {}
        self.reachable = True
        self.error = ""
        self.version += 1

    def unreachable(self, error: str) -> None:
        """The cage did not answer: the page shows a banner, and the last data it had."""
        self.reachable = False
        self.error = error
        self.version += 1

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a service the page lists (gone ones included)."""
        return name in self.services or name in self.gone

    def state(self) -> dict[str, Any]:
        """The page's data (the JSON of ``/api/overview``)."""
        return {
            "reachable": self.reachable,
            "error": self.error,
            "services": [self.services[n] for n in sorted(self.services)]
            + [self.gone[n] for n in sorted(self.gone)],
            "routes": self.routes,
            "stats": self.stats,
        }
