"""zdse: a data bus for data services, on ZeroMQ, msgpack and structlog.

The public API for module authors and clients::

    from zdse import Bus, Service, PollingService, Update
"""

from __future__ import annotations

from zdse.bus import Bus, Update
from zdse.errors import (
    BusClosed,
    ConfigError,
    NameTakenError,
    NoRouteError,
    ProtocolError,
    RemoteError,
    RequestError,
    RequestTimeout,
    ZdseError,
)
from zdse.service import PollingService, Service

__all__ = [
    "Bus",
    "BusClosed",
    "ConfigError",
    "NameTakenError",
    "NoRouteError",
    "PollingService",
    "ProtocolError",
    "RemoteError",
    "RequestError",
    "RequestTimeout",
    "Service",
    "Update",
    "ZdseError",
]
