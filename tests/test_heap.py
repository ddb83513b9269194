"""The heap is frozen once enough big-table data came in, and unfrozen by the last bus to close."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from zdse.node.heap import Heap


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Whatever a test froze is unfrozen after it (the collector is process-wide)."""
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_once_enough_bytes_came_in_then_unfrozen_at_the_last_close() -> None:
    """Two buses: the freeze waits for FREEZE_BYTES; only the second close unfreezes."""
    heap = Heap(freeze_bytes=1000)
    heap.open()
    heap.open()
    table = [[i, "row"] for i in range(1000)]
    assert not heap.grew(600)
    assert gc.get_freeze_count() == 0
    assert heap.grew(600)
    assert gc.get_freeze_count() >= len(table)
    assert heap.freezes == 1
    heap.close()
    assert gc.get_freeze_count() > 0
    heap.close()
    assert gc.get_freeze_count() == 0
    assert heap.freezes == 0


def test_a_freeze_keeps_no_young_cyclic_garbage() -> None:
    """Cycles already garbage when it freezes are collected first, not frozen for good."""
    heap = Heap(freeze_bytes=1)
    heap.open()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # a cycle: only the collector frees it
    heap.grew(1)
    assert gone() is None
    heap.close()
