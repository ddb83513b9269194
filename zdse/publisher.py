"""A service's published data and who subscribes to it (the DSE's pubData). Pure.

:meth:`Publications.publish` stores new data and, when it changed and
someone subscribes, returns one delta for the cage's PUB socket, whatever
the number of subscribers (the node sends it keyed by its dataindex).
:meth:`Publications.on_subscribe` records a subscriber and answers with a
snapshot unless the subscriber already holds the current epoch and
sequence number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zdse import delta
from zdse.actions import Send
from zdse.codec import Current, Delta, Snapshot, Subscribe, Unsubscribe
from zdse.slots import builder

__all__ = ["Publication", "Publications"]


_build_delta = builder(Delta)


@dataclass(slots=True)
class Publication:
    """One dataindex: its data, sequence number and subscribers' deadlines."""

    data: Any = None
    seq: int = 0
    #: (subscriber name, subscription id) -> time after which it is forgotten.
    subscribers: dict[tuple[str, str], float] = field(default_factory=dict)


class Publications:
    """Everything one service publishes.

    Args:
        name: the service's unique name (how subscribers key their views).
        epoch: identifies this run of the service; a restart changes it, so
            subscribers can tell its sequence numbers started over.
    """

    def __init__(self, name: str, epoch: str) -> None:
        self.name = name
        self.epoch = epoch
        self._pubs: dict[str, Publication] = {}

    def data(self, dataindex: str) -> Any:
        """The current data of ``dataindex`` (None if never published)."""
        pub = self._pubs.get(dataindex)
        return None if pub is None else pub.data

    def dataindexes(self) -> list[str]:
        """The dataindexes published or subscribed to."""
        return list(self._pubs)

    def publish(
        self, dataindex: str, data: Any, admit: Callable[[Delta], object] | None = None
    ) -> Delta | None:
        """Store ``data``; return the delta to send, if it changed and anyone listens.

        ``admit``, if given, is called with the delta before the data is
        stored (only when the data changed); whatever it raises leaves the
        publication as it was.
        """
        pub = self._pubs.get(dataindex)
        if pub is None:  # not setdefault: that would build a Publication per call
            pub = Publication()
        change = delta.diff(pub.data, data) if pub.seq else [delta.REPLACE, data]
        if change is None:
            return None
        # Built without the frozen __init__: this runs once per publish.
        d = _build_delta(dataindex, self.epoch, pub.seq + 1, change)
        if admit is not None:
            admit(d)
        self._pubs[dataindex] = pub
        pub.data = data
        pub.seq += 1
        return d if pub.subscribers else None

    def on_subscribe(self, sender: str, sub: Subscribe, now: float) -> list[Send]:
        """Record (or refresh) a subscriber; snapshot it, or confirm it is up to date."""
        pub = self._pubs.setdefault(sub.dataindex, Publication())
        pub.subscribers[(sender, sub.sid)] = now + sub.ttl
        if sub.seen.get(self.name) == [self.epoch, pub.seq]:
            # Up to date: say so (cheaply), so the subscriber knows we live.
            return [Send(sender, Current(sub.sid, sub.dataindex, self.epoch, pub.seq))]
        snapshot = Snapshot(sub.sid, sub.dataindex, self.epoch, pub.seq, pub.data)
        return [Send(sender, snapshot)]

    def on_unsubscribe(self, sender: str, unsub: Unsubscribe) -> None:
        """Forget one subscription."""
        pub = self._pubs.get(unsub.dataindex)
        if pub is not None:
            pub.subscribers.pop((sender, unsub.sid), None)

    def forget(self, subscriber: str) -> None:
        """Forget every subscription of a service that left the bus."""
        for pub in self._pubs.values():
            for key in [k for k in pub.subscribers if k[0] == subscriber]:
                del pub.subscribers[key]

    def expire(self, now: float) -> int:
        """Forget subscribers that stopped re-announcing; return how many."""
        gone = 0
        for pub in self._pubs.values():
            for key in [k for k, deadline in pub.subscribers.items() if deadline < now]:
                del pub.subscribers[key]
                gone += 1
        return gone

    def pubdata(self) -> dict[str, Any]:
        """What is published, at which sequence number, to whom (reserved request)."""
        return {
            dataindex: {
                "seq": pub.seq,
                "epoch": self.epoch,
                "size": len(pub.data) if isinstance(pub.data, list | dict) else None,
                "subscribers": sorted({name for name, _ in pub.subscribers}),
            }
            for dataindex, pub in sorted(self._pubs.items())
        }
