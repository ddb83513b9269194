"""The ``routes`` scenario: route-table look-ups per second as the table grows.

Tables of 100, 10,000 and 100,000 patterns are built the way a big cage's
table looks: mostly unique service names, some ``*`` and trailing ``#``
addresses (every pattern also a valid NATS subject once ``#`` is written
``>``), bound to a thousand nodes. Two kinds of keys are looked up:
*repeated* keys (a working set of 100 keys, answered from the cache, the
cage's steady state) and *first-seen* keys (every key new: a walk of the
trie, the cost of a cold cache). Runs in this process: no sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zdse.routes import RouteTable

__all__ = ["SIZES", "fresh_keys", "measure", "patterns", "repeated_keys"]

#: Table sizes measured.
SIZES = (100, 10_000, 100_000)
#: Keys in the repeated working set.
WORKING_SET = 100
#: Nodes the patterns are bound to.
NODES = 1000


def patterns(count: int) -> list[str]:
    """``count`` patterns: 80% names, 10% with ``*``, 10% ending in ``#``."""
    out = []
    for i in range(count):
        region, table = i % 64, i % 8
        if i % 10 == 8:
            out.append(f"r{region}.svc{i}.*")
        elif i % 10 == 9:
            out.append(f"r{region}.svc{i}.#")
        else:
            out.append(f"r{region}.svc{i}.t{table}")
    return out


def build(count: int) -> RouteTable[bytes]:
    """A table of ``count`` patterns bound to :data:`NODES` node identities."""
    table: RouteTable[bytes] = RouteTable()
    for i, pattern in enumerate(patterns(count)):
        table.add(pattern, b"node%d" % (i % NODES))
    return table


def repeated_keys(count: int) -> list[str]:
    """The working set: keys of services spread over the whole table."""
    step = max(1, count // WORKING_SET)
    return [f"r{(j * step) % 64}.svc{j * step}.t{(j * step) % 8}" for j in range(WORKING_SET)]


def fresh_keys(count: int, lookups: int, salt: int = 0) -> list[str]:
    """``lookups`` distinct keys, each reaching some service of the table (or none)."""
    return [f"r{(k % count) % 64}.svc{k % count}.f{salt}x{k}" for k in range(lookups)]


def _rate(lookup: Callable[[str], object], keys: list[str]) -> float:
    start = time.perf_counter()
    for key in keys:
        lookup(key)
    return len(keys) / (time.perf_counter() - start)


def measure(count: int, lookups: int, rounds: int) -> dict[str, float]:
    """Look-ups per second on a table of ``count`` patterns (the best of ``rounds``).

    The best round, not the median: a look-up loop in one process has no
    peer to interleave with, and the best round is the one least disturbed
    by the rest of the machine.
    """
    table = build(count)
    working = repeated_keys(count)
    repeated = (working * (lookups // len(working) + 1))[:lookups]
    for key in working:
        table.lookup(key)  # the steady state: the working set is cached
    best_repeated = best_fresh = 0.0
    matched = 0
    for r in range(rounds):
        best_repeated = max(best_repeated, _rate(table.lookup, repeated))
        fresh = fresh_keys(count, lookups, salt=r)
        best_fresh = max(best_fresh, _rate(table.lookup, fresh))
        matched = sum(1 for key in fresh[:1000] if table.lookup(key))
    return {
        "patterns": float(count),
        "repeated_per_s": best_repeated,
        "first_seen_per_s": best_fresh,
        "first_seen_matched_pct": matched / 10,
    }
