"""What the cage's core asks its shell to do: values only, returned by every input. Pure.

Every input method of :class:`~zdse.cage.core.CageCore` (``receive``,
``tick``, ``unreachable``, ``reply``) returns one :class:`Effects`: the
frames to send on the ROUTER and on the PUB socket, the lifecycle lines to
log, and the control requests the shell answers itself (see
:meth:`CageCore.serve <zdse.cage.core.CageCore.serve>`). The core keeps no
outbox the shell reads and calls nothing of the shell's.

Frames stay plain lists of bytes, one list per multipart message, because
the hot path queues one per routed destination: a value object per frame
would cost more than the routing itself. The batch as a whole is the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Control", "Effects", "Log"]


@dataclass(frozen=True, slots=True)
class Log:
    """Log ``event`` with ``fields`` (a lifecycle change; never one per message)."""

    event: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Control:
    """A control request to the cage that the shell answers (through ``CageCore.reply``).

    Attributes:
        to: (identity, name, cid) of the requester, for the reply.
        dataindex: what is asked (``start``, ``services``, ...).
        args: the request's args.
        answer: the core's own answer (the registered nodes for
            ``services``), None if it has none.
    """

    to: tuple[bytes, bytes, int]
    dataindex: str
    args: Any
    answer: Any


@dataclass(slots=True)
class Effects:
    """What the shell must do after one input to the cage's core.

    Attributes:
        router: messages for the ROUTER, ``[identity, header, sender, key, body]``.
        pub: messages for the PUB socket, ``[topic, header, body]``.
        logs: lines to log.
        controls: control requests for the shell to answer.
    """

    router: list[list[bytes]] = field(default_factory=list)
    pub: list[list[bytes]] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.router or self.pub or self.logs or self.controls)

    def extend(self, other: Effects) -> None:
        """Append ``other``'s effects after these."""
        self.router += other.router
        self.pub += other.pub
        self.logs += other.logs
        self.controls += other.controls
