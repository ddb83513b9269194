"""A Congress-style datasource driver ported to zdse: servers of a cloud API as three tables.

docs/congress.md walks through this port step by step. The shape is the
one of a Congress ``PollingDataSourceDriver``:

- *translators* turn one nested API answer (a list of servers, each with
  nested addresses and metadata) into flat tables of rows, each child row
  carrying its parent's id (:func:`translate`, a pure function);
- a *poll* fetches the answer and publishes each table
  (``update_from_datasource``): zdse computes the deltas, so the driver
  publishes whole tables and subscribers get only what changed;
- the life cycle is the service's: polling starts in ``start()``, stops in
  ``stop()``, and the reserved request ``refresh`` polls at once
  (``request_refresh``).

The API answer is read from a JSON file (``--set path=FILE``), standing in
for the HTTP call a real driver makes: the tests and the guide change the
file to change the "cloud".

Run it as a node (a cage must run; see README)::

    python examples/congress_port/servers_driver.py --path examples/congress_port/servers.json

or register it as a module in your own package's entry points
(``[project.entry-points."zdse.modules"] servers = "servers_driver:ServersDriver"``)
and run ``zdse-node --module servers --set path=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from zdse.cli.node import run
from zdse.errors import ConfigError
from zdse.log import configure
from zdse.modules.options import refuse_unknown
from zdse.node.bus import Bus
from zdse.node.service import PollingService
from zdse.wire.endpoints import Endpoints, add_endpoint_flags

#: The tables this driver publishes, and their columns (Congress's schema).
SCHEMA: dict[str, tuple[str, ...]] = {
    "servers": ("id", "name", "status", "tenant_id", "host_id", "flavor_id", "image_id"),
    "servers.addresses": ("server_id", "network", "addr", "version", "type", "mac"),
    "servers.metadata": ("server_id", "key", "value"),
}

OPTIONS = frozenset({"path", "poll_interval"})


def _nested_id(value: Any) -> Any:
    """``{"id": X, ...}`` -> X; anything else (Nova says ``""`` for "no image") -> None."""
    return value.get("id") if isinstance(value, dict) else None


def translate(answer: Any) -> dict[str, list[list[Any]]]:
    """Turn one API answer into the rows of each table of :data:`SCHEMA`.

    A missing field is None, as Congress's translators make it. Rows are
    lists in the order of the table's columns.

    Raises:
        ValueError: the answer is not ``{"servers": [...]}``.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("servers"), list):
        raise ValueError('the API answer is not {"servers": [...]}')
    servers: list[list[Any]] = []
    addresses: list[list[Any]] = []
    metadata: list[list[Any]] = []
    for server in answer["servers"]:
        if not isinstance(server, dict):
            continue
        sid = server.get("id")
        servers.append([sid, server.get("name"), server.get("status"), server.get("tenant_id"),
                        server.get("hostId"), _nested_id(server.get("flavor")),
                        _nested_id(server.get("image"))])
        # A dict of lists (network -> its addresses): one row per address,
        # keyed by the parent's id, as a Congress HDICT/LIST translator does.
        for network, entries in (server.get("addresses") or {}).items():
            for entry in entries if isinstance(entries, list) else []:
                addresses.append([sid, network, entry.get("addr"), entry.get("version"),
                                  entry.get("OS-EXT-IPS:type"),
                                  entry.get("OS-EXT-IPS-MAC:mac_addr")])
        # A flat dict (a VDICT): one row per key.
        for key, value in sorted((server.get("metadata") or {}).items()):
            metadata.append([sid, key, value])
    return {"servers": servers, "servers.addresses": addresses, "servers.metadata": metadata}


class ServersDriver(PollingService):
    """Options: ``path`` (the API answer as a JSON file), ``poll_interval`` (default 30).

    Raises:
        ConfigError: an unknown option, or no path.
    """

    poll_interval = 30.0

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        refuse_unknown("servers", options, OPTIONS)
        if not options.get("path"):
            raise ConfigError("the servers driver needs --set path=FILE")
        super().__init__(name, options)
        self.path = options["path"]

    async def poll(self) -> None:
        """Fetch the answer, translate it, publish every table (update_from_datasource)."""
        answer = await asyncio.to_thread(_read_json, self.path)
        for table, rows in translate(answer).items():
            self.publish(table, rows)
        self.log.info("servers.published", tables=sorted(SCHEMA))


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    """Run the driver as a node on the cage of ZDSE_ROUTER / ZDSE_PUB (or the flags)."""
    parser = argparse.ArgumentParser(description="The servers driver as a zdse node.")
    add_endpoint_flags(parser)
    parser.add_argument("--name", default="servers.demo", help="the service's unique name")
    parser.add_argument("--path", required=True, help="the API answer, a JSON file")
    parser.add_argument("--poll-interval", default="30", help="seconds between polls")
    args = parser.parse_args(argv)
    configure("info")
    try:
        service = ServersDriver(args.name, {"path": args.path,
                                            "poll_interval": args.poll_interval})
    except ConfigError as exc:
        print(f"servers_driver: {exc}", file=sys.stderr)
        return 2
    bus = Bus(args.name, ["servers.all"], endpoints=Endpoints.from_args(args),
              info={"module": "servers"})
    return asyncio.run(run(service, bus))


if __name__ == "__main__":
    sys.exit(main())
