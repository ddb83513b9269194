"""Module ``file``: publish the tables of a JSON file, and deltas when it changes.

The file holds ``{dataindex: table}``; a table is a list of rows or a dict.
A file caught half-written (not valid JSON) is reported and skipped: the
last good content stays published until the file is whole again. A table
that cannot be published (its snapshot would be over MAX_MESSAGE_BYTES,
or for a big list or dict table, whose snapshot goes in parts, one of its
rows or entries)
is reported by name and size, and the others are published all the same.
A big file is parsed by a child process (:mod:`zdse_nodes.file_tables`),
never on the node's event loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from zdse.errors import ConfigError, MessageTooLarge, ProtocolError
from zdse.modules.options import refuse_unknown
from zdse.node.service import PollingService

from .file_tables import Invalid, Table, packed_size, read_tables

#: The module's options; any other is refused.
OPTIONS = frozenset({"path", "poll_interval"})


class FileService(PollingService):
    """Options: ``path`` (required), ``poll_interval`` (seconds, default 1).

    Raises:
        ConfigError: an unknown option, no path, or a bad poll_interval.
    """

    poll_interval = 1.0

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        refuse_unknown("file", options, OPTIONS)
        path = options.get("path")
        if not path:
            raise ConfigError("module file needs --set path=FILE (a JSON file)")
        super().__init__(name, options)
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._published: dict[str, Any] = {}
        self._invalid_since: tuple[int, int, int] | None = None

    async def poll(self) -> None:
        """Read the file if it changed since the last poll and publish its tables.

        Every table that can be published is; one that cannot (over the
        message size limit, or not representable) is reported by name and
        size, and its last good content stays published.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise ConfigError(f"file {self.path!r} does not exist") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        published = dict(self._published)
        seen: list[str] = []
        refused: list[str] = []
        try:
            async for table in read_tables(self.path, st.st_size):
                seen.append(table.dataindex)
                if self._publish(table):
                    published[table.dataindex] = table.data
                else:
                    refused.append(table.dataindex)
        except Invalid as exc:
            if self._invalid_since != stamp:
                self._invalid_since = stamp
                self.log.warning("file.invalid", path=self.path, error=str(exc),
                                 action="skipped; last good content stays published")
            return  # keep _stamp: look again at the next poll
        self._stamp = stamp
        self._invalid_since = None
        for dataindex in set(published) - set(seen):
            # A table removed from the file is published empty, not left stale.
            self.publish(dataindex, {} if isinstance(published[dataindex], dict) else [])
            del published[dataindex]
        self._published = published
        self.log.info("file.published", path=self.path,
                      dataindexes=sorted(set(seen) - set(refused)), refused=refused)

    def _publish(self, table: Table) -> bool:
        """Publish one table; False (and a warning naming it) if it cannot be."""
        error, size = table.error, table.size
        if not error:
            try:
                self.publish(table.dataindex, table.data)
                return True
            except (MessageTooLarge, ProtocolError) as exc:
                error, size = str(exc), size or packed_size(table.data)
        self.log.warning("file.table_refused", path=self.path, dataindex=table.dataindex,
                         bytes=size or None, error=error,
                         action="its last good content stays published")
        return False
