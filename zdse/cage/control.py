"""The shell's side of the cage's control requests: handlers the core hands requests to.

The core answers ``services``, ``routes`` and ``stats`` itself. The
supervisor adds ``start``, ``stop``, ``reload``, ``reload-config`` and its
own view of ``services``: :meth:`ControlDesk.add` tells the core to pass
those on (as :class:`~zdse.cage.effects.Control` effects), and
:meth:`ControlDesk.answer` runs the handler and has the core reply. No
sockets here: the proxy and the in-memory test shell share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zdse.cage.core import CageCore
from zdse.cage.effects import Control, Effects, Log
from zdse.errors import ZdseError

__all__ = ["ControlDesk", "ControlHandler", "Later"]

#: ``handler(args, answer, now)`` gets the request's args and the core's own
#: answer (None if it has none) and returns the reply's value; a ZdseError
#: it raises is sent back as an error reply. A handler that answers later
#: (after a check that must not hold the loop) returns a :class:`Later`.
ControlHandler = Callable[[Any, Any, float], Any]


@dataclass(slots=True)
class Later:
    """A control reply to be sent later, with :meth:`ControlDesk.answer_later`."""

    #: Whom to answer; set by the desk, cleared once answered.
    to: tuple[bytes, bytes, int] | None = None


class ControlDesk:
    """The control handlers of one cage, by dataindex.

    Args:
        core: the cage's core, which replies.
    """

    def __init__(self, core: CageCore) -> None:
        self._core = core
        self._handlers: dict[str, ControlHandler] = {}
        #: Replies given later (answer_later), for the shell to send.
        self._pending = Effects()

    def add(self, handlers: Mapping[str, ControlHandler]) -> None:
        """Answer these dataindexes from now on (the core passes them on)."""
        self._handlers.update(handlers)
        self._core.serve(self._handlers)

    def answer(self, control: Control, now: float) -> Effects:
        """Run the handler of ``control`` and return the reply to send (none if put off)."""
        handler = self._handlers[control.dataindex]
        try:
            value = handler(control.args, control.answer, now)
        except ZdseError as exc:
            return self._core.reply(control.to, False, [type(exc).__name__, str(exc)], now)
        except Exception as exc:
            # A bug in a handler must not stop the routing of every node.
            out = self._core.reply(control.to, False, ["InternalError", repr(exc)], now)
            out.logs.append(Log("control.failed", {"request": control.dataindex,
                                                   "error": repr(exc)}))
            return out
        if isinstance(value, Later):
            value.to = control.to
            return Effects()
        return self._core.reply(control.to, True, value, now)

    def answer_later(self, later: Later, ok: bool, value: Any, now: float) -> None:
        """Queue the reply a handler put off (``value``, or ``[kind, message]`` if not ok).

        Only the first answer is sent; the shell sends it with :meth:`take`.
        """
        if later.to is None:
            return
        to, later.to = later.to, None
        self._pending.extend(self._core.reply(to, ok, value, now))

    @property
    def pending(self) -> bool:
        """Whether replies put off by handlers wait for :meth:`take`."""
        return bool(self._pending)

    def take(self) -> Effects:
        """Return and forget the replies queued by :meth:`answer_later`."""
        pending, self._pending = self._pending, Effects()
        return pending

    def settle(self, effects: Effects, now: float) -> Effects:
        """Answer every control request in ``effects``; return all there is to do."""
        controls, effects.controls = effects.controls, []
        for control in controls:
            effects.extend(self.answer(control, now))
        effects.extend(self.take())
        return effects
