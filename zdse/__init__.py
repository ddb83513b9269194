"""zdse: a data bus for data services, on ZeroMQ, msgpack and structlog.

The public API for module authors and clients::

    from zdse import Bus, Service, PollingService, Update
"""

from __future__ import annotations

from zdse.errors import (
    BusClosed,
    ConfigError,
    MessageTooLarge,
    NameTakenError,
    NoRouteError,
    ProtocolError,
    RegistrationError,
    RemoteError,
    RequestError,
    RequestTimeout,
    ZdseError,
)
from zdse.node.bus import Bus, Membership, NotPolling, Update
from zdse.node.service import PollingService, Service

__all__ = [
    "Bus",
    "BusClosed",
    "ConfigError",
    "Membership",
    "MessageTooLarge",
    "NameTakenError",
    "NoRouteError",
    "NotPolling",
    "PollingService",
    "ProtocolError",
    "RegistrationError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "Service",
    "Update",
    "ZdseError",
]
