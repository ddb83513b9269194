"""Tables shaped like vSphere's ``vms`` (13 columns, about 157 bytes a row packed).

Shared by ``zdse-bench table`` and the big-table tests, so both measure the
same rows.
"""

from __future__ import annotations

from typing import Any

__all__ = ["changed", "vms_rows"]


def _row(i: int, annotation: str | None = None) -> list[Any]:
    uuid = f"{i:08x}-0000-4000-8000-{i:012x}"
    host = f"{i % 500:08x}-0000-4000-8000-{i % 500:012x}"
    return [f"vm-{i:07d}", uuid, host, f"[datastore1] vm-{i}/vm-{i}.vmx", "green", "poweredOn",
            i % 3000, i % 2000, 4096, i % 4096, 10_000_000 + i, 20_000_000, annotation]


def vms_rows(n: int) -> list[list[Any]]:
    """``n`` distinct rows of a ``vms`` table."""
    return [_row(i) for i in range(n)]


def changed(rows: list[list[Any]], every: int = 100, tag: str = "changed") -> list[list[Any]]:
    """A copy of ``rows`` with one row in ``every`` changed in place (1% by default)."""
    out = list(rows)
    for i in range(0, len(out), every):
        out[i] = [*out[i][:-1], tag]
    return out
