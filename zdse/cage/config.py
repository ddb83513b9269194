"""The cage's config file, ``zdse-proxy --config FILE``: TOML, checked key by key.

::

    [cage]
    router = "tcp://127.0.0.1:5570"      # as --router
    pub = "tcp://127.0.0.1:5571"         # as --pub
    heartbeat = 1.0                      # as --heartbeat
    heartbeats_to_expire = 3             # missed heartbeats that expire a node
    queue_hwm = 100000                   # as --queue-hwm
    queue_bytes = 67108864               # as --queue-bytes
    metrics = "127.0.0.1:9570"           # as --metrics
    curve_secret = "keys/cage.key_secret"  # as --curve-secret
    authorized = "keys/authorized.toml"  # as --authorized

    [log]
    level = "info"                       # as --log-level
    format = "auto"                      # as --log-format: auto, json, console

    [restart]                            # see zdse.supervisor.core.RestartPolicy
    backoff = 1.0
    backoff_max = 30.0
    max_restarts = 5
    window = 60.0
    stop_timeout = 5.0
    start_timeout = 60.0

    [services."files.boston"]            # a name with dots must be quoted
    module = "file"
    addresses = ["files.all"]
    options = { path = "build/demo/boston.json" }
    autostart = true
    curve_key = "keys/boston.key_secret"  # the node's --curve-key, with CURVE

A value in the file is a default: a command-line flag overrides it, and so
does the environment variable of a flag that has one (``ZDSE_ROUTER``,
``ZDSE_PUB``, ``ZDSE_HEARTBEAT``). Relative paths are relative to the
directory the cage runs in, as they are for flags. In a service's
``options`` and ``curve_key``, ``${NAME}`` stands for the cage's environment
variable NAME (a ``$`` not followed by ``{`` is just a ``$``).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zdse.errors import ConfigError, ProtocolError
from zdse.log import FORMATS, LEVELS
from zdse.supervisor.core import RestartPolicy, ServiceSpec
from zdse.wire import codec
from zdse.wire.endpoints import check_endpoint
from zdse.wire.limits import MIN_HEARTBEAT, MIN_QUEUE_BYTES

__all__ = ["ENV", "CageConfig", "apply_defaults", "given_flags", "load", "parse", "parse_host_port",
           "read_text", "service_table"]

#: Settings that have an environment variable; it overrides the file too.
ENV = {"router": "ZDSE_ROUTER", "pub": "ZDSE_PUB", "heartbeat": "ZDSE_HEARTBEAT",
       "queue_hwm": "ZDSE_QUEUE_HWM", "queue_bytes": "ZDSE_QUEUE_BYTES"}

_CAGE_KEYS = ("router", "pub", "heartbeat", "heartbeats_to_expire", "queue_hwm", "queue_bytes",
              "metrics", "curve_secret", "authorized")
_LOG_KEYS = ("level", "format")
_RESTART_KEYS = ("backoff", "backoff_max", "max_restarts", "window", "stop_timeout",
                 "start_timeout")
_SERVICE_KEYS = ("module", "addresses", "options", "autostart", "curve_key")
_SECTIONS = ("cage", "log", "restart", "services")


@dataclass(frozen=True, slots=True)
class CageConfig:
    """A checked config file.

    Attributes:
        source: where it came from (for messages).
        settings: cage settings present in the file, by the ``zdse-proxy``
            option they stand for: router, pub, heartbeat,
            heartbeats_to_expire, queue_hwm, queue_bytes, metrics, curve_secret,
            authorized, log_level, log_format.
        policy: the restart policy.
        services: the supervised services, by name.
    """

    source: str = "defaults"
    settings: dict[str, Any] = field(default_factory=dict)
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    services: dict[str, ServiceSpec] = field(default_factory=dict)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load(
    path: str | Path,
    known_modules: Collection[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> CageConfig:
    """Read and check a config file.

    Args:
        path: the TOML file.
        known_modules: module names a service may use; None checks nothing.
        env: the variables ``${NAME}`` may name (default: the environment).

    Raises:
        ConfigError: the file cannot be read, is not TOML, or a key is wrong
            (the message names the file and the key).
    """
    source = str(path)
    text = read_text(path, f"config {source}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse(data, source, known_modules, env)


def read_text(path: str | Path, what: str) -> str:
    """The text of a UTF-8 file.

    Raises:
        ConfigError: ``cannot read WHAT: why`` (missing, unreadable, not UTF-8).
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read {what}: not UTF-8 text (byte "
                          f"{exc.object[exc.start]:#04x} at offset {exc.start})") from None


def parse(
    data: Mapping[str, Any],
    source: str,
    known_modules: Collection[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> CageConfig:
    """Check parsed TOML (see :func:`load`).

    Raises:
        ConfigError: naming the key that is wrong.
    """
    check = _Checker(source, os.environ if env is None else env)
    check.known(data, _SECTIONS, "")
    settings: dict[str, Any] = {}
    cage = check.table(data, "cage")
    check.known(cage, _CAGE_KEYS, "cage")
    for key in ("router", "pub"):
        if key in cage:
            settings[key] = check_endpoint(check.string(cage, key, "cage"),
                                           f"{source}: cage.{key}")
    if "heartbeat" in cage:
        settings["heartbeat"] = check.positive(cage, "heartbeat", "cage", MIN_HEARTBEAT)
    if "heartbeats_to_expire" in cage:
        settings["heartbeats_to_expire"] = check.integer(cage, "heartbeats_to_expire", "cage", 2)
    if "queue_hwm" in cage:
        settings["queue_hwm"] = check.integer(cage, "queue_hwm", "cage", 1)
    if "queue_bytes" in cage:
        settings["queue_bytes"] = check.integer(cage, "queue_bytes", "cage", MIN_QUEUE_BYTES)
    if "metrics" in cage:
        text = check.string(cage, "metrics", "cage")
        parse_host_port(text, f"{source}: cage.metrics")
        settings["metrics"] = text
    for key in ("curve_secret", "authorized"):
        if key in cage:
            settings[key] = check.string(cage, key, "cage")
    log = check.table(data, "log")
    check.known(log, _LOG_KEYS, "log")
    if "level" in log:
        settings["log_level"] = check.choice(log, "level", "log", LEVELS)
    if "format" in log:
        settings["log_format"] = check.choice(log, "format", "log", FORMATS)
    restart = check.table(data, "restart")
    check.known(restart, _RESTART_KEYS, "restart")
    values: dict[str, Any] = {}
    for key in ("backoff", "backoff_max", "window", "stop_timeout", "start_timeout"):
        if key in restart:
            values[key] = check.positive(restart, key, "restart")
    if "max_restarts" in restart:
        values["max_restarts"] = check.integer(restart, "max_restarts", "restart", 0)
    policy = RestartPolicy(**values)
    services = {
        name: check.service(name, table, known_modules)
        for name, table in check.table(data, "services").items()
    }
    return CageConfig(source, settings, policy, services)


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6; ``:PORT`` means 127.0.0.1).

    Raises:
        ConfigError: naming ``what`` and what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{what} {text!r} is not HOST:PORT, e.g. 127.0.0.1:9570")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: {host!r} is not an IP address") from None
    return host, int(port_text)


def given_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                dests: Collection[str]) -> set[str]:
    """The options among ``dests`` that ``argv`` sets explicitly.

    argparse only fills in a default for an attribute the namespace lacks, so
    parsing into a namespace pre-set to a marker shows which ones the command
    line set.
    """
    unset = object()
    namespace = argparse.Namespace(**dict.fromkeys(dests, unset))
    parser.parse_args(argv, namespace)
    return {d for d in dests if getattr(namespace, d) is not unset}


def apply_defaults(
    args: argparse.Namespace, config: CageConfig, given: Collection[str], env: Mapping[str, str]
) -> None:
    """Set ``args`` from the config file where no flag, and no environment variable, did."""
    for dest, value in config.settings.items():
        if dest in given or (dest in ENV and ENV[dest] in env):
            continue
        setattr(args, dest, value)


class _Checker:
    """Typed reads of TOML values, with errors naming the file and the key."""

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def expand(self, text: str, where: str, key: str) -> str:
        def variable(match: re.Match[str]) -> str:
            value = self.env.get(match[1])
            if value is None:
                raise self.fail(where, key, f"${{{match[1]}}} is not set in the environment")
            return value
        return _VARIABLE.sub(variable, text)

    def fail(self, where: str, key: str, why: str) -> ConfigError:
        path = f"{where}.{key}" if where else key
        return ConfigError(f"{self.source}: {path}: {why}")

    def known(self, table: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
        for key in table:
            if key not in keys:
                raise self.fail(where, key, f"unknown key (known: {', '.join(keys)})")

    def table(self, parent: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.fail("", key, f"expected a table, got {_show(value)}")
        return value

    def string(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table[key]
        if not isinstance(value, str) or not value:
            raise self.fail(where, key, f"expected a non-empty string, got {_show(value)}")
        return value

    def positive(self, table: Mapping[str, Any], key: str, where: str,
                 least: float = 0.0) -> float:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(where, key, f"expected a number above zero, got {_show(value)}")
        if value < least:
            raise self.fail(where, key, f"must be at least {least:g} (the floor), "
                                        f"got {_show(value)}")
        return float(value)

    def integer(self, table: Mapping[str, Any], key: str, where: str, least: int) -> int:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise self.fail(where, key, f"expected a whole number of at least {least}, "
                                        f"got {_show(value)}")
        return value

    def choice(self, table: Mapping[str, Any], key: str, where: str, choices: Sequence[str]) -> str:
        value = table[key]
        if value not in choices:
            raise self.fail(where, key, f"expected one of {', '.join(choices)}; got {_show(value)}")
        return str(value)

    def service(
        self, name: str, table: Any, known_modules: Collection[str] | None
    ) -> ServiceSpec:
        where = service_table(name)
        if not isinstance(table, dict):
            raise self.fail("services", _quote(name), f"expected a table, got {_show(table)}")
        if "module" not in table:
            hint = ""
            if table and all(isinstance(v, dict) for v in table.values()):
                inner = next(iter(table))
                hint = (f"; a name that holds dots must be quoted: "
                        f'[services."{name}.{inner}"]')
            raise ConfigError(f"{self.source}: [{where}] has no module{hint}")
        self.known(table, _SERVICE_KEYS, where)
        try:
            codec.validate_name(name)
        except ProtocolError as exc:
            raise ConfigError(f"{self.source}: [{where}]: {exc}") from None
        module = self.string(table, "module", where)
        if known_modules is not None and module not in known_modules:
            raise self.fail(where, "module", f"no module named {module!r}; installed: "
                                             f"{', '.join(sorted(known_modules)) or 'none'}")
        addresses = table.get("addresses", [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise self.fail(where, "addresses", f"expected a list of strings, got "
                                                f"{_show(addresses)}")
        for address in addresses:
            try:
                codec.validate_pattern(address)
            except ProtocolError as exc:
                raise self.fail(where, "addresses", str(exc)) from None
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise self.fail(where, "options", f"expected a table, got {_show(options)}")
        pairs = []
        for key, value in options.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = self.expand(value, f"{where}.options", key)
            elif isinstance(value, int | float):
                text = str(value)
            else:
                raise self.fail(f"{where}.options", key,
                                f"expected a string, number or boolean, got {_show(value)}")
            pairs.append((str(key), text))
        autostart = table.get("autostart", True)
        if not isinstance(autostart, bool):
            raise self.fail(where, "autostart", f"expected true or false, got {_show(autostart)}")
        curve_key = (self.expand(self.string(table, "curve_key", where), where, "curve_key")
                     if "curve_key" in table else None)
        return ServiceSpec(name, module, tuple(addresses), tuple(pairs), autostart, curve_key)


def service_table(name: str) -> str:
    """How a message names the config table of service ``name``: ``services."a.b"``."""
    return f"services.{_quote(name)}"


def _quote(name: str) -> str:
    return f'"{name}"' if "." in name or not name.replace("-", "").replace("_", "").isalnum() \
        else name


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
