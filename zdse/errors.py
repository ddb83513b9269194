"""The one exception tree of zdse.

::

    ZdseError
    ├── ProtocolError          bad bytes from the wire (never raised into a
    │                          process's top level: counted and dropped)
    ├── ConfigError            bad flags, options or endpoints given by a user
    ├── RegistrationError      the cage refused our registration
    │   └── NameTakenError     another live node holds the name
    ├── RequestError           a request did not get a normal reply
    │   ├── NoRouteError       no service listens on the key
    │   ├── RequestTimeout     no reply before the deadline
    │   └── RemoteError        the service answered with an error
    ├── MessageTooLarge        a message over MAX_MESSAGE_BYTES
    ├── SupervisorError        a start/stop/reload the cage's supervisor
    │                          cannot carry out (no such service, ...)
    └── BusClosed              the bus was closed while waiting

msgpack and zmq exceptions are mapped onto this tree at the boundary; they
never escape the public API.
"""

from __future__ import annotations

__all__ = [
    "BusClosed",
    "ConfigError",
    "MessageTooLarge",
    "NameTakenError",
    "NoRouteError",
    "ProtocolError",
    "RegistrationError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "SupervisorError",
    "ZdseError",
]


class ZdseError(Exception):
    """Base class of every error zdse raises."""


class ProtocolError(ZdseError):
    """Frames or a body that do not follow docs/protocol.md."""


class ConfigError(ZdseError):
    """A flag, option or endpoint given by the user is not usable."""


class RegistrationError(ZdseError):
    """The cage refused to register this node."""


class NameTakenError(RegistrationError):
    """The unique name is held by another live node."""


class RequestError(ZdseError):
    """A request ended without a normal reply."""


class NoRouteError(RequestError):
    """Nothing on the bus listens on the key."""


class RequestTimeout(RequestError):
    """No reply arrived before the deadline."""


class RemoteError(RequestError):
    """The service that got the request answered with an error.

    Attributes:
        sender: the service that answered.
        kind: the error's class name on the remote side.
    """

    def __init__(self, sender: str, kind: str, message: str) -> None:
        super().__init__(f"{sender} answered {kind}: {message}")
        self.sender = sender
        self.kind = kind


class MessageTooLarge(ZdseError):
    """A message is larger than the protocol allows."""


class SupervisorError(ZdseError):
    """A supervision request that cannot be carried out (unknown service, ...)."""


class BusClosed(ZdseError):
    """The bus connection was closed."""
