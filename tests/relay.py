"""A TCP relay on loopback that a test can cut and mend: a partition between one node and one cage.

``Relay(target_port)`` listens on a free loopback port and copies bytes both
ways to ``127.0.0.1:target_port``. :meth:`Relay.cut` closes the listener and
every connection (the peer sees them closed, and cannot reconnect);
:meth:`Relay.mend` listens on the same port again. Threads only: the test's
own event loop is not involved.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support import free_port

__all__ = ["Relay"]


class Relay:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``, until cut."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None

    @property
    def endpoint(self) -> str:
        """The relay's own endpoint, to list instead of the target's."""
        return f"tcp://127.0.0.1:{self.port}"

    def mend(self) -> None:
        """Listen (again) and relay every connection made from now on."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and close every relayed connection."""
        with self._lock:
            socks, self._socks = self._socks, []
            listener, self._listener = self._listener, None
        for sock in [*socks, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                near.close()
                continue
            with self._lock:
                self._socks += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
