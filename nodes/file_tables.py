"""Read the tables of a JSON file without holding up the node's event loop.

Python's JSON parser holds the GIL from start to end (a thread does not
help): a 200 MB file kept a node from beating for 4 s, and its cage expired
it. So a file over :data:`INLINE_BYTES` is parsed by a child process
(``python -m zdse_nodes.file_tables PATH``), which writes one msgpack value
per table to its stdout: the node reads them as they come and unpacks one
table at a time, each at most a message's size, so neither its loop nor its
memory takes the whole file at once. The child also weighs each table and
sends only its size when it is over MAX_MESSAGE_BYTES: no snapshot of it
could ever be sent. A big list or dict table (INDEX_MIN_ROWS rows or keys
or more) is not bounded as a whole, as the bus sends its snapshot in parts:
only each of its rows must fit a message, each of its entries
MAX_ENTRY_BYTES, and it comes in pieces of about PART_BYTES.

The stream: first ``["tables"]``, or ``["invalid", why]`` for a file that
is not a JSON object; then per table ``[dataindex, packed, size, error,
more]``, ``packed`` being the msgpack of the table (nil when it is refused,
and ``error`` then says why), ``size`` its length (0 if it could not be
packed); ``more`` true when the entry is a piece of a list table (an array
of some of its rows) or of a dict table (a map of some of its entries)
that further entries continue.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from zdse.node.tableindex import INDEX_MIN_ROWS
from zdse.wire.limits import MAX_ENTRY_BYTES, MAX_MESSAGE_BYTES, PART_BYTES

__all__ = ["INLINE_BYTES", "Invalid", "Table", "packed_size", "read_tables"]

#: Files up to this size are parsed on the event loop: that takes a few
#: milliseconds, less than starting a child process.
INLINE_BYTES = 1024 * 1024
#: Bytes of the child's stderr kept to explain its failure.
STDERR_BYTES = 4096


class Invalid(ValueError):
    """The file is not a JSON object (half-written, say)."""


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the file, or why it cannot be published."""

    dataindex: str
    data: Any = None
    #: Its size in bytes, packed, when known (else 0).
    size: int = 0
    #: Why it cannot be published ('' if it can).
    error: str = ""


async def read_tables(path: str, size: int) -> AsyncIterator[Table]:
    """Yield the tables of the JSON file at ``path`` (``size`` bytes), in file order.

    Raises:
        Invalid: the file is not valid JSON, or its top level is not an object.
        OSError: the file cannot be read, or the child parsing it failed.
    """
    if size <= INLINE_BYTES:
        text = await asyncio.to_thread(_read_text, path)
        for table in _tables(_parse(text)):
            yield table
        return
    async for table in _from_child(path):
        yield table


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _parse(text: str) -> dict[str, Any]:
    try:
        tables = json.loads(text)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if not isinstance(tables, dict):
        raise Invalid(f"top level is {type(tables).__name__}, not an object")
    return tables


def _tables(tables: dict[str, Any]) -> Iterator[Table]:
    for dataindex, data in tables.items():
        yield Table(dataindex, data)


def packed_size(data: Any) -> int:
    """The size of ``data`` packed as msgpack (0 if msgpack cannot represent it)."""
    try:
        return len(msgpack.packb(data, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        return 0


def _weigh(dataindex: str, data: Any) -> list[list[Any]]:
    """A table as the child sends it: packed (a big list or dict table in pieces), or refused."""
    pack = msgpack.Packer(use_bin_type=True).pack
    try:
        if isinstance(data, list) and len(data) >= INDEX_MIN_ROWS:
            return _weigh_big(dataindex, [pack(row) for row in data], "a row",
                              MAX_MESSAGE_BYTES, "MAX_MESSAGE_BYTES",
                              msgpack.Packer().pack_array_header)
        if isinstance(data, dict) and len(data) >= INDEX_MIN_ROWS:
            return _weigh_big(dataindex, [pack(k) + pack(v) for k, v in data.items()],
                              "an entry", MAX_ENTRY_BYTES, "MAX_ENTRY_BYTES",
                              msgpack.Packer().pack_map_header)
        packed = pack(data)
    except (TypeError, ValueError, OverflowError) as exc:
        return [[dataindex, None, 0, f"msgpack cannot represent it: {exc}", False]]
    if len(packed) > MAX_MESSAGE_BYTES:
        return [[dataindex, None, len(packed),
                 f"{len(packed)} bytes packed, over MAX_MESSAGE_BYTES ({MAX_MESSAGE_BYTES})",
                 False]]
    return [[dataindex, packed, len(packed), "", False]]


def _weigh_big(dataindex: str, packed: list[bytes], one: str, limit: int, limit_name: str,
               header: Callable[[int], bytes]) -> list[list[Any]]:
    """A big table's packed rows or entries in pieces, or refused for ``one`` over ``limit``."""
    size = sum(map(len, packed))
    biggest = max(map(len, packed))
    if biggest > limit:
        return [[dataindex, None, size,
                 f"{one} of {biggest} bytes packed, over {limit_name} ({limit})", False]]
    return _pieces(dataindex, packed, size, header)


def _pieces(dataindex: str, packed: list[bytes], size: int,
            header: Callable[[int], bytes]) -> list[list[Any]]:
    """Packed rows or entries in pieces of about PART_BYTES, each one msgpack array or map
    (``header`` gives its header), all but the last marked as continued."""
    pieces: list[list[Any]] = []
    start = taken = 0
    for i, one in enumerate(packed):
        if taken and taken + len(one) > PART_BYTES:
            pieces.append([dataindex, header(i - start) + b"".join(packed[start:i]), size, "",
                           True])
            start, taken = i, 0
        taken += len(one)
    pieces.append([dataindex, header(len(packed) - start) + b"".join(packed[start:]), size, "",
                   False])
    return pieces


async def _from_child(path: str) -> AsyncIterator[Table]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "zdse_nodes.file_tables", path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    errors = asyncio.ensure_future(_tail(proc.stderr))
    # One entry at a time: each is at most a message (a big list table
    # comes in pieces of about PART_BYTES).
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                max_buffer_size=2 * MAX_MESSAGE_BYTES)
    started = False
    whole: list[Any] | dict[Any, Any] | None = None  # a big table's pieces so far
    try:
        while chunk := await proc.stdout.read(1024 * 1024):
            unpacker.feed(chunk)
            for entry in unpacker:
                if not started:
                    started = True
                    if entry[0] == "invalid":
                        raise Invalid(str(entry[1]))
                    continue
                dataindex, packed, size, error, more = entry
                if packed is None:
                    yield Table(dataindex, None, size, error)
                elif more or whole is not None:
                    # A piece of a big list or dict table: joined until its last one.
                    piece = _unpack(packed)
                    if whole is None:
                        whole = piece
                    elif isinstance(whole, list):
                        whole.extend(piece)
                    else:
                        whole.update(piece)
                    if not more:
                        yield Table(dataindex, whole, size)
                        whole = None
                else:
                    yield Table(dataindex, _unpack(packed), size)
                await asyncio.sleep(0)  # one piece at a time: let the loop run between
        code = await proc.wait()
        if code != 0 or not started:
            why = (await errors).strip().splitlines()
            raise OSError(f"parsing {path!r} failed (exit {code}): "
                          f"{why[-1] if why else 'no message'}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        errors.cancel()


def _unpack(packed: bytes) -> Any:
    """Unpack one table with the cyclic GC paused.

    A table is lists, dicts and scalars, never a cycle; unpacking its rows
    with the GC on ran full collections over every object the node holds,
    several times per table (0.3 s each, for 2 million objects).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return msgpack.unpackb(packed, raw=False, strict_map_key=False)
    finally:
        if enabled:
            gc.enable()


async def _tail(stream: asyncio.StreamReader) -> str:
    """Read ``stream`` to its end; return its last STDERR_BYTES, decoded."""
    kept = b""
    while chunk := await stream.read(STDERR_BYTES):
        kept = (kept + chunk)[-STDERR_BYTES:]
    return kept.decode(errors="replace")


def main() -> int:
    """The child: parse the file named by argv[1], stream its tables to stdout."""
    path = sys.argv[1]
    out = sys.stdout.buffer
    text = _read_text(path)
    try:
        tables = _parse(text)
    except Invalid as exc:
        out.write(msgpack.packb(["invalid", str(exc)]))
        return 0
    del text
    out.write(msgpack.packb(["tables"]))
    for dataindex, data in tables.items():
        for entry in _weigh(dataindex, data):
            out.write(msgpack.packb(entry, use_bin_type=True))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
