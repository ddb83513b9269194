"""Finding modules (Service classes) by name through the ``zdse.modules`` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from zdse.errors import ConfigError
from zdse.service import Service

__all__ = ["GROUP", "available", "load"]

GROUP = "zdse.modules"


def available() -> list[str]:
    """Names of every installed module."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load(name: str) -> type[Service]:
    """Return the Service class of module ``name``.

    Raises:
        ConfigError: no such module, or it does not load, or is not a Service.
    """
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise ConfigError(
            f"no module named {name!r}; installed modules: {', '.join(available()) or 'none'}"
        )
    try:
        cls = matches[0].load()
    except Exception as exc:  # an optional extra missing, or a broken module
        raise ConfigError(f"module {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"module {name!r} ({matches[0].value}) is not a zdse Service")
    return cls
