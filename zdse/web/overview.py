"""The front page's model: each cage's view, and the services, routes and counters. Pure.

zdse-web asks every cage it lists (they share nothing: docs/redundancy.md).
Each cage's answers to ``services``, ``routes`` and ``stats``
(:meth:`Overview.seen`), or the failure to get them
(:meth:`Overview.unreachable`), go into that cage's :class:`CageView`; the
page's lists merge the views of the cages that answered, each service and
route saying which cages know it. Services that were there and are not any
more stay listed with the state ``gone`` (the newest :data:`GONE_KEPT` of
them) until they come back. While no cage answers, the page keeps the
last data it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GONE_KEPT", "KEY_COUNTERS", "CageView", "Overview"]

#: Gone services remembered; older ones are forgotten, so a bus with churning
#: client names (every zdse-ctl run is one) cannot grow the page without bound.
GONE_KEPT = 50
#: The counters of a cage its row in the cages panel shows (all of them are
#: in the counters table).
KEY_COUNTERS = ("routed", "published", "noroute", "dropped_hwm", "dropped_budget")


@dataclass(slots=True)
class CageView:
    """One cage's last answers, and whether it gave them at the last poll."""

    router: str
    reachable: bool = False
    error: str = "not asked yet"
    services: list[dict[str, Any]] = field(default_factory=list)
    routes: list[list[Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def seen(self, services: Any, routes: Any, stats: Any) -> None:
        """Take the cage's answers (entries that are not what a cage sends are skipped)."""
        self.services = [s for s in services if isinstance(s, dict)
                         and isinstance(s.get("name"), str)] if isinstance(services, list) else []
        self.routes = [r for r in routes if isinstance(r, list) and len(r) == 2
                       and isinstance(r[0], str) and isinstance(r[1], list)
                       ] if isinstance(routes, list) else []
        self.stats = stats if isinstance(stats, dict) else {}
        self.reachable = True
        self.error = ""

    def unreachable(self, error: str) -> None:
        """The cage did not answer: its last answers are kept (its epoch, say)."""
        self.reachable = False
        self.error = error

    def row(self) -> dict[str, Any]:
        """The cage's row in the cages panel: its counters now, or while it does not answer
        only the epoch it had (a restart shows as a new one)."""
        stats = self.stats if self.reachable else {}
        return {
            "router": self.router,
            "reachable": self.reachable,
            "error": self.error,
            "epoch": self.stats.get("epoch"),
            "uptime": stats.get("uptime"),
            "nodes": stats.get("nodes"),
            "routes": stats.get("routes"),
            "counters": {k: stats[k] for k in KEY_COUNTERS if k in stats},
            "stats": stats,
        }


class Overview:
    """What the front page shows, and a version that changes with it.

    Args:
        routers: the ROUTER endpoint of each cage, in the order listed.
    """

    def __init__(self, routers: Sequence[str] = ("",)) -> None:
        self.cages = [CageView(router) for router in routers]
        self.services: dict[str, dict[str, Any]] = {}
        self.gone: dict[str, dict[str, Any]] = {}
        self.routes: list[list[Any]] = []
        self.stats: dict[str, Any] = {}
        self.reachable = False
        self.error = "not connected to the cage yet"
        self.version = 0

    def seen(self, services: Any, routes: Any, stats: Any, cage: int = 0) -> None:
        """Take cage ``cage``'s answers."""
        self.cages[cage].seen(services, routes, stats)
        self._merge()

    def unreachable(self, error: str, cage: int = 0) -> None:
        """Cage ``cage`` did not answer; with none answering, the page shows a banner
        and the last data it had."""
        self.cages[cage].unreachable(error)
        self._merge()

    def _merge(self) -> None:
        self.version += 1
        up = [view for view in self.cages if view.reachable]
        self.reachable = bool(up)
        if not up:
            views = self.cages
            self.error = views[0].error if len(views) == 1 else "; ".join(
                f"{v.router}: {v.error}" for v in views)
            return
        self.error = ""
        current: dict[str, dict[str, Any]] = {}
        for view in up:
            for row in view.services:
                name = row["name"]
                merged = current.get(name)
                if merged is None:
                    current[name] = {**row, "cages": [view.router]}
                    continue
                merged["cages"].append(view.router)
                if row.get("supervised") and not merged.get("supervised"):
                    # The cage that supervises it knows its pid, state and restarts.
                    current[name] = {**row, "cages": merged["cages"]}
        for name in self.services.keys() - current.keys():
            self.gone[name] = {**self.services[name], "state": "gone", "pid": None,
                               "cages": []}
        for name in current:
            self.gone.pop(name, None)
        while len(self.gone) > GONE_KEPT:
            del self.gone[next(iter(self.gone))]
        self.services = current
        routes: dict[str, tuple[set[str], list[str]]] = {}
        for view in up:
            for pattern, names in view.routes:
                known, cages = routes.setdefault(pattern, (set(), []))
                known.update(n for n in names if isinstance(n, str))
                cages.append(view.router)
        self.routes = [[p, sorted(routes[p][0]), routes[p][1]] for p in sorted(routes)]
        self.stats = up[0].stats

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a service the page lists (gone ones included)."""
        return name in self.services or name in self.gone

    def supervisor_of(self, name: str) -> int | None:
        """The index of the cage that supervises service ``name`` (None if no cage
        that answered does)."""
        for i, view in enumerate(self.cages):
            if view.reachable and any(s.get("name") == name and s.get("supervised")
                                      for s in view.services):
                return i
        return None

    def state(self) -> dict[str, Any]:
        """The page's data (the JSON of ``/api/overview``).

        ``services`` rows and ``routes`` entries (``[pattern, names, cages]``)
        name the cages that know them; ``stats`` are the first answering
        cage's counters, ``cages`` each cage's row (:meth:`CageView.row`).
        """
        return {
            "reachable": self.reachable,
            "error": self.error,
            "services": [self.services[n] for n in sorted(self.services)]
            + [self.gone[n] for n in sorted(self.gone)],
            "routes": self.routes,
            "stats": self.stats,
            "cages": [view.row() for view in self.cages],
        }
