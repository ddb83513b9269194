"""What the node's pure cores ask their shell to do: the effect values. Pure.

Two levels, one rule (an input in, what to do out, never a callback):

* The sub-cores (:mod:`~zdse.node.publications`, :mod:`~zdse.node.subscriptions`)
  return :data:`Effect` values: :class:`Send` a message to a key, or change
  the SUB socket's filters (:class:`AddFilter`, :class:`RemoveFilter`).
* :class:`~zdse.node.core.NodeCore` encodes those and returns, for each
  input, a :class:`Effects`: the :data:`Frame` values to send through the cage,
  the SUB filter changes, and the :data:`~zdse.node.events.Event` values to
  dispatch. Its per-message calls (send, reply, request, publish) return
  their one :data:`Frame` (or None) instead: no Effects to build on the hot path.

The shell (:mod:`zdse.node.bus` with its transport and dispatcher, or
:class:`zdse.testing.FakeNet`) carries an Effects out in its field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zdse.wire.codec import Kind, MessageValue
from zdse.wire.frozen import builder

if TYPE_CHECKING:  # events imports the sub-cores, which import this module
    from zdse.node.events import Event

__all__ = [
    "NOTHING", "AddFilter", "Effect", "Effects", "Frame", "RemoveFilter", "Send", "SendPacked",
    "build_effects",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to ``key`` through the cage (a DELTA goes to its PUB)."""

    key: str
    message: MessageValue


@dataclass(frozen=True, slots=True)
class SendPacked:
    """Send messages of ``kind`` already packed (``body``: msgpack arrays back to back) to ``key``.

    For bytes a core keeps packed, so that sending them costs no packing
    (a publisher's history of deltas, :mod:`zdse.node.history`).
    """

    key: str
    kind: Kind
    body: bytes


@dataclass(frozen=True, slots=True)
class AddFilter:
    """Subscribe the SUB socket to ``topic``."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class RemoveFilter:
    """Unsubscribe the SUB socket from ``topic``."""

    topic: bytes


Effect = Send | SendPacked | AddFilter | RemoveFilter

#: One encoded message for the cage's ROUTER: ``(header, key, body)``. The
#: shell coalesces consecutive ones (:func:`zdse.wire.codec.coalesce`).
Frame = tuple[bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Effects:
    """What the shell must do after one input to :class:`~zdse.node.core.NodeCore`.

    In this order: send ``frames``; add the SUB filters ``subscribe``, then
    remove ``unsubscribe`` (ZeroMQ counts filters, so an add and a remove of
    one topic in one step cancel out); dispatch ``events``. The lists are
    the shell's to consume: the core keeps no reference to them.

    With several cages (docs/redundancy.md), ``cages`` says for each frame
    the index of the cage it goes through (empty with one cage), and the
    filter changes apply to every cage's SUB alike.
    """

    frames: list[Frame]
    subscribe: list[bytes]
    unsubscribe: list[bytes]
    events: list[Event]
    cages: list[int]


#: Builds an Effects without its frozen __init__ (zdse.wire.frozen): one is
#: built per frame read, on every hot path.
build_effects = builder(Effects)
#: The step of an input that calls for nothing. Shared: never mutate its lists.
NOTHING = Effects([], [], [], [], [])
