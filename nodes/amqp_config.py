"""The amqp bridge's options, its broker URLs, and how long to wait before reconnecting. Pure.

Every option is a ``--set KEY=VALUE`` of ``zdse-node --module amqp``; see
docs/amqp.md for the list. :func:`from_options` checks them all at once and
raises :class:`~zdse.errors.ConfigError` naming the option at fault; an
error about the URL never repeats the URL (it holds the password).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from zdse.errors import ConfigError
from zdse.modules.options import boolean, positive_float, positive_int, refuse_unknown

from .amqp_envelope import MAX_BODY_BYTES, Malformed, check_event_type
from .amqp_tables import TableConfig

__all__ = ["AmqpConfig", "from_options", "redact", "scrub"]

#: URL schemes taken: aio-pika's own, and oslo's ``transport_url`` form, so the
#: value of nova.conf's ``transport_url`` can be pasted as it is.
SCHEMES = {"amqp": "amqp", "amqps": "amqps", "rabbit": "amqp"}

#: Exchange names and topics: what RabbitMQ accepts, minus '#' and '*' (the
#: bridge binds ``<topic>.*`` itself) and minus ',' (the list separator).
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")

#: The options (docs/amqp.md), besides ``key.<event type>``; any other is refused.
OPTIONS = frozenset({
    "url", "url_file", "exchanges", "topics", "queue", "durable", "queue_expires", "prefetch",
    "max_body", "heartbeat", "reconnect_min", "reconnect_max", "window", "window_bytes",
    "latest_size", "latest_bytes", "max_event_types", "event_types",
})


@dataclass(frozen=True, slots=True)
class AmqpConfig:
    """The bridge's settings.

    Attributes:
        urls: broker URLs (with credentials: never log them; see :meth:`safe_urls`),
            tried in turn, as oslo does with a multi-host ``transport_url``.
        secrets: the passwords in ``urls``, scrubbed from every logged error.
        exchanges: the exchanges to bind to (each service's control_exchange).
        topics: the notification topics; the queue binds ``<topic>.*``.
        queue: the bridge's own queue.
        durable: declare the queue (and any missing exchange) durable, as oslo
            does with ``amqp_durable_queues``.
        queue_expires: seconds the broker keeps the queue after the bridge left.
        prefetch: unacknowledged deliveries in flight.
        max_body: larger messages are counted as malformed (``too_large``).
        heartbeat: AMQP heartbeat in seconds, so a dead broker is noticed.
        reconnect_min: first wait before a reconnect.
        reconnect_max: longest wait between reconnects.
        tables: bounds of the published tables and the latest-state keys.
    """

    urls: tuple[str, ...]
    secrets: tuple[str, ...] = ()
    exchanges: tuple[str, ...] = ("nova",)
    topics: tuple[str, ...] = ("notifications",)
    queue: str = ""
    durable: bool = False
    queue_expires: float = 3600.0
    prefetch: int = 64
    max_body: int = MAX_BODY_BYTES
    heartbeat: int = 30
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    tables: TableConfig = field(default_factory=TableConfig)

    @property
    def bindings(self) -> list[tuple[str, str]]:
        """(exchange, routing key) pairs the queue is bound with."""
        return [(exchange, f"{topic}.*") for exchange in self.exchanges for topic in self.topics]

    def safe_urls(self) -> list[str]:
        """The URLs with their passwords masked, for logs."""
        return [redact(url) for url in self.urls]


def from_options(name: str, options: Mapping[str, str]) -> AmqpConfig:
    """Build the settings of bridge ``name`` from its ``--set`` options, once
    ``url_file`` has been read into ``url`` (the bridge does it).

    Raises:
        ConfigError: an option is missing, unknown or out of range.
    """
    opts = dict(options)
    refuse_unknown("amqp", opts, OPTIONS, prefixes=("key.",))
    if "url" not in opts:
        raise ConfigError("module amqp needs --set url=amqp://USER:PASS@HOST:5672/VHOST "
                          "or --set url_file=FILE (a file holding the URL)")
    urls, secrets = _urls(opts["url"])
    max_body = positive_int(opts, "max_body", MAX_BODY_BYTES)
    tables = TableConfig(
        window=positive_int(opts, "window", 100),
        window_bytes=positive_int(opts, "window_bytes", 4 * 1024 * 1024),
        keys=_keys(opts),
        latest_size=positive_int(opts, "latest_size", 10_000),
        latest_bytes=positive_int(opts, "latest_bytes", 8 * 1024 * 1024),
        max_event_types=positive_int(opts, "max_event_types", 1000),
        event_types=_event_types(opts),
    )
    config = AmqpConfig(
        urls=urls,
        secrets=secrets,
        exchanges=_names(opts, "exchanges", "nova"),
        topics=_names(opts, "topics", "notifications"),
        queue=opts.get("queue") or f"zdse.{name}",
        durable=boolean(opts, "durable", False),
        queue_expires=positive_float(opts, "queue_expires", 3600.0),
        prefetch=positive_int(opts, "prefetch", 64),
        max_body=max_body,
        heartbeat=positive_int(opts, "heartbeat", 30),
        reconnect_min=positive_float(opts, "reconnect_min", 0.5),
        reconnect_max=positive_float(opts, "reconnect_max", 30.0),
        tables=tables,
    )
    if not _NAME.match(config.queue):
        raise ConfigError(f"--set queue={config.queue!r}: not a usable queue name")
    if config.reconnect_max < config.reconnect_min:
        raise ConfigError("--set reconnect_max must be at least reconnect_min")
    if config.prefetch > 65535:
        raise ConfigError("--set prefetch: AMQP allows at most 65535")
    return config


def redact(url: str) -> str:
    """Mask the password of an AMQP URL (each one of a multi-host URL)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>"
    hosts, slash, tail = rest.partition("/")
    masked = []
    for host in hosts.split(","):
        userinfo, at, hostport = host.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        masked.append(f"{userinfo}{at}{hostport}")
    return f"{scheme}://{','.join(masked)}{slash}{tail}"


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Mask every secret in ``text`` (a library's error may quote the URL)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _urls(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split ``scheme://u:p@h1:port,u:p@h2:port/vhost?query`` into one URL per host."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ConfigError(
            "--set url: not an amqp://, amqps:// or rabbit:// URL "
            f"(scheme {scheme.lower()!r})" if sep else "--set url: not a URL"
        )
    hosts, slash, tail = rest.partition("/")
    urls: list[str] = []
    secrets: set[str] = set()
    for number, host in enumerate(hosts.split(","), start=1):
        url = f"{SCHEMES[scheme.lower()]}://{host}{slash}{tail}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(f"--set url: host {number} has a bad port") from None
        if not parts.hostname:
            raise ConfigError(f"--set url: host {number} has no host name")
        if port == 0:
            raise ConfigError(f"--set url: host {number} has port 0")
        if parts.password:
            secrets.update({parts.password, unquote(parts.password)})
        urls.append(url)
    return tuple(urls), tuple(sorted(secrets))


def _keys(opts: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    keys: dict[str, tuple[str, ...]] = {}
    for option, value in sorted(opts.items()):
        if not option.startswith("key."):
            continue
        event_type = option[len("key."):]
        try:
            check_event_type(event_type)
        except Malformed as exc:
            raise ConfigError(f"--set {option}: {exc.detail}") from None
        if not event_type:
            raise ConfigError(f"--set {option}: no event type after 'key.'")
        fields = tuple(f.strip() for f in value.split(",") if f.strip())
        if not fields or any("@" in f or " " in f for f in fields):
            raise ConfigError(f"--set {option}={value!r}: give payload field names, "
                              "comma-separated, e.g. instance_id")
        keys[event_type] = fields
    return keys


def _event_types(opts: Mapping[str, str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in opts.get("event_types", "").split(",") if n.strip())
    for n in names:
        try:
            check_event_type(n)
        except Malformed as exc:
            raise ConfigError(f"--set event_types: {exc.detail}") from None
    return names


def _names(opts: Mapping[str, str], key: str, default: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in opts.get(key, default).split(",") if n.strip())
    if not names:
        raise ConfigError(f"--set {key}: give at least one name")
    for n in names:
        if not _NAME.match(n):
            raise ConfigError(f"--set {key}: {n!r} is not a usable name")
    return names



