"""What happened, as the node's core tells its shell: the :data:`Event` values. Pure.

:class:`~zdse.node.core.NodeCore` returns these inside a
:class:`~zdse.node.effects.Effects`; the shell's dispatcher
(:mod:`zdse.node.dispatcher`) hands each to whoever waits for it: a
subscription's callback (:class:`~zdse.node.subscriptions.Update`), a request's
caller (:class:`~zdse.node.requests.Outcome`), the service's request and
message handlers, the bus's registration waiters and its log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from zdse.node.requests import Outcome
from zdse.node.subscriptions import Update
from zdse.wire import codec

__all__ = [
    "BadFrame",
    "Change",
    "Event",
    "IncomingMessage",
    "IncomingRequest",
    "Membership",
    "Registered",
    "SessionChange",
]


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A request to answer with :meth:`NodeCore.reply <zdse.node.core.NodeCore.reply>`."""

    sender: str
    request: codec.Request


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A one-way message for the service."""

    sender: str
    message: codec.Message


@dataclass(frozen=True, slots=True)
class Registered:
    """The cage welcomed us and our SUB receives; ``again`` if it was not the first time."""

    again: bool
    cage_epoch: str


class Change(enum.StrEnum):
    """How a node's session with its cage moved (:attr:`SessionChange.what`).

    A StrEnum: each compares equal to (and logs as) its string.
    """

    #: The cage has been silent for an expiry; the node keeps beating.
    LOST = "lost"
    #: The cage no longer knows the node (it restarted, or expired it): registering again.
    REREGISTERING = "reregistering"
    #: The name is not ours (taken, or our CURVE key may not have it): final.
    REFUSED = "refused"
    #: Welcomed, but no probe came back on the SUB for an expiry (a wrong PUB endpoint?).
    SUB_SILENT = "sub_silent"
    #: The cage answered one of our frames with an error (``over_budget``, a
    #: bad frame, ...): counted as ``error_<code>`` and logged; the session
    #: carries on.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class SessionChange:
    """The session moved (see :class:`Change`); ``detail`` says why, in words."""

    what: Change
    detail: str


@dataclass(frozen=True, slots=True)
class Membership:
    """A service joined the bus (or changed its addresses), or left it.

    Attributes:
        what: ``"joined"`` or ``"left"``.
        name: the service's unique name.
        addresses: its addresses besides the name (joined only).
        reason: why it left: ``"bye"``, ``"expired"``, ``"disconnected"``, ...
    """

    what: str
    name: str
    addresses: list[str]
    reason: str


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Frames that broke the protocol were counted and dropped: worth a log line.

    Said of the 1st, 2nd, 4th, 8th... bad frame only: visible from the
    first, never a flood.

    Attributes:
        count: bad frames so far.
        error: what was wrong with this one.
    """

    count: int
    error: str


Event = (Update | Outcome | IncomingRequest | IncomingMessage | Registered | SessionChange
         | Membership | BadFrame)
