"""Module ``file``: publish the tables of a JSON file, and deltas when it changes.

The file holds ``{dataindex: table}``; a table is a list of rows or a dict.
A file caught half-written (not valid JSON) is reported and skipped: the
last good content stays published until the file is whole again.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

from zdse.errors import ConfigError
from zdse.options import refuse_unknown
from zdse.service import PollingService

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
        """Read the file if it changed since the last poll and publish its tables."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise ConfigError(f"file {self.path!r} does not exist") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        text = await asyncio.to_thread(_read_text, self.path)
        try:
            tables = json.loads(text)
            if not isinstance(tables, dict):
                raise ValueError(f"top level is {type(tables).__name__}, not an object")
        except ValueError as exc:
            if self._invalid_since != stamp:
                self._invalid_since = stamp
                self.log.warning("file.invalid", path=self.path, error=str(exc),
                                 action="skipped; last good content stays published")
            return  # keep _stamp: look again at the next poll
        self._stamp = stamp
        self._invalid_since = None
        for dataindex, table in tables.items():
            self.publish(dataindex, table)
        for dataindex in set(self._published) - set(tables):
            # A table removed from the file is published empty, not left stale.
            self.publish(dataindex, {} if isinstance(self._published[dataindex], dict) else [])
        self._published = dict(tables)
        self.log.info("file.published", path=self.path, dataindexes=sorted(tables))


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
