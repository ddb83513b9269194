"""Finding modules (Service classes) by name through the ``zdse.modules`` entry points."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

from zdse.cage.config import CageConfig, service_table
from zdse.errors import ConfigError
from zdse.modules.check import ModuleCheck, Verdict
from zdse.node.service import Service

__all__ = ["GROUP", "available", "build", "check", "check_services", "load", "refused"]

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
    except BaseException as exc:  # an optional extra missing, a broken module, its sys.exit()
        raise ConfigError(f"module {name!r} failed to load: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"module {name!r} ({matches[0].value}) is not a zdse Service")
    return cls


def check(module: str, name: str, options: Mapping[str, str]) -> None:
    """:func:`build` service ``name`` of ``module`` from ``options``, and drop it unstarted.

    What a node would refuse at start is refused here: a module that does
    not load, an unknown or bad option. A module's constructor reads its
    options (and the files they name) and connects to nothing: that waits
    for :meth:`Service.start`.

    Raises:
        ConfigError: the module's own message, or what its constructor raised.
    """
    build(module, name, options)


def build(module: str, name: str, options: Mapping[str, str]) -> Service:
    """Service ``name`` of ``module``, built from ``options`` and not started.

    Raises:
        ConfigError: the module's own message, or what its constructor raised
            (any exception, ``SystemExit`` and ``KeyboardInterrupt`` included:
            a module's constructor must not end the process that checks it).
    """
    cls = load(module)
    try:
        return cls(name, options)
    except ConfigError:
        raise
    except BaseException as exc:  # its own error type, or SystemExit, KeyboardInterrupt...
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ConfigError(f"module {module!r} refused its options: {detail}") from exc


def check_services(config: CageConfig, names: Iterable[str] | None = None) -> None:
    """:func:`check` the services of ``config`` (those in ``names``, or all) in a
    child process, waiting for it (see :mod:`zdse.modules.check`).

    Raises:
        ConfigError: naming the file and the service.
    """
    specs = [config.services[name] for name in sorted(config.services if names is None
                                                      else names)]
    if not specs:
        return
    try:
        verdict = ModuleCheck(specs).wait()
    except OSError as exc:
        raise ConfigError(f"{config.source}: cannot start the module check: {exc}") from exc
    refused(config, verdict)


def refused(config: CageConfig, verdict: Verdict) -> None:
    """Raise what ``verdict`` refused in ``config``, if anything.

    Raises:
        ConfigError: naming the file and the service.
    """
    if verdict.error is None:
        return
    where = f"[{service_table(verdict.service)}]: " if verdict.service is not None else ""
    raise ConfigError(f"{config.source}: {where}{verdict.error}")
