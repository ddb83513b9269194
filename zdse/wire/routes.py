"""The route table: AMQP topic patterns -> destinations, as RabbitMQ matches them.

An address is a sequence of words separated by ``.``. In a pattern, a word that
is exactly ``*`` matches exactly one word and a word that is exactly ``#``
matches zero or more words; ``*`` or ``#`` inside a longer word are literal.
Words may be empty (``a..b``, ``a.``), and the empty string is the address of
zero words, exactly as RabbitMQ's topic exchange splits routing keys.

Patterns live in a trie, so a lookup walks only the branches the key can
reach, whatever the number of unrelated patterns; repeated keys are answered
from a bounded cache that any change to the table clears. Pure: no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["RouteTable", "pattern_matches", "split_words"]

D = TypeVar("D", bound=Hashable)

#: Entries kept in the lookup cache. A cage serves a working set of keys far
#: smaller than this; past it the oldest entries are evicted one at a time.
CACHE_SIZE = 65_536

STAR = "*"
HASH = "#"


def split_words(address: str) -> tuple[str, ...]:
    """Split an address into words the way RabbitMQ does (``""`` is no words)."""
    if not address:
        return ()
    return tuple(address.split("."))


def pattern_matches(pattern: str, key: str) -> bool:
    """Tell whether one pattern matches one key (reference matcher, no trie)."""
    pwords = split_words(pattern)
    kwords = split_words(key)
    seen: set[tuple[int, int]] = set()

    def walk(p: int, k: int) -> bool:
        if (p, k) in seen:
            return False
        seen.add((p, k))
        if p == len(pwords):
            return k == len(kwords)
        word = pwords[p]
        if word == HASH:
            return walk(p + 1, k) or (k < len(kwords) and walk(p, k + 1))
        if k == len(kwords):
            return False
        if word == STAR or word == kwords[k]:
            return walk(p + 1, k + 1)
        return False

    return walk(0, 0)


class _Node(Generic[D]):
    __slots__ = ("children", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _Node[D]] = {}
        self.dests: set[D] = set()


class RouteTable(Generic[D]):
    """Patterns mapped to the destinations bound to them.

    Example:
        >>> table: RouteTable[str] = RouteTable()
        >>> table.add("vSphere.#", "monitor")
        >>> sorted(table.lookup("vSphere.node.list"))
        ['monitor']
    """

    def __init__(self) -> None:
        self._root: _Node[D] = _Node()
        self._bindings: dict[str, set[D]] = {}
        # An OrderedDict, not a dict: evicting a dict's oldest entry with
        # next(iter(...)) walks every slot deleted before it, so a stream of
        # first-seen keys made each look-up O(cache size).
        self._cache: OrderedDict[str, frozenset[D]] = OrderedDict()

    def add(self, pattern: str, dest: D) -> bool:
        """Bind ``dest`` to ``pattern``.

        Returns:
            True if the binding is new, False if it was already there.
        """
        dests = self._bindings.setdefault(pattern, set())
        if dest in dests:
            return False
        dests.add(dest)
        node = self._root
        for word in split_words(pattern):
            node = node.children.setdefault(word, _Node())
        node.dests.add(dest)
        self._cache.clear()
        return True

    def remove(self, pattern: str, dest: D) -> bool:
        """Unbind ``dest`` from ``pattern``, pruning branches left empty.

        Returns:
            True if the binding existed, False otherwise.
        """
        dests = self._bindings.get(pattern)
        if dests is None or dest not in dests:
            return False
        dests.discard(dest)
        if not dests:
            del self._bindings[pattern]
        path: list[tuple[_Node[D], str]] = []
        node = self._root
        for word in split_words(pattern):
            path.append((node, word))
            node = node.children[word]
        node.dests.discard(dest)
        for parent, word in reversed(path):
            child = parent.children[word]
            if child.dests or child.children:
                break
            del parent.children[word]
        self._cache.clear()
        return True

    def remove_dest(self, dest: D) -> list[str]:
        """Unbind ``dest`` from every pattern; return the patterns it had."""
        patterns = [p for p, dests in self._bindings.items() if dest in dests]
        for pattern in patterns:
            self.remove(pattern, dest)
        return patterns

    def lookup(self, key: str) -> frozenset[D]:
        """Return every destination bound to a pattern that matches ``key``."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found: set[D] = set()
        self._match(self._root, split_words(key), 0, found, set())
        result = frozenset(found)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.popitem(last=False)
        self._cache[key] = result
        return result

    def _match(
        self,
        node: _Node[D],
        words: tuple[str, ...],
        i: int,
        found: set[D],
        visited: set[tuple[int, int]],
    ) -> None:
        # ``visited`` keeps patterns with several ``#`` linear instead of
        # exponential: each (trie node, word position) is expanded once.
        mark = (id(node), i)
        if mark in visited:
            return
        visited.add(mark)
        children = node.children
        hash_node = children.get(HASH)
        if hash_node is not None:
            for j in range(i, len(words) + 1):
                self._match(hash_node, words, j, found, visited)
        if i == len(words):
            found.update(node.dests)
            return
        exact = children.get(words[i])
        if exact is not None:
            self._match(exact, words, i + 1, found, visited)
        star = children.get(STAR)
        if star is not None and star is not exact:
            self._match(star, words, i + 1, found, visited)

    def bindings(self) -> Iterator[tuple[str, frozenset[D]]]:
        """Yield each pattern with the destinations bound to it."""
        for pattern, dests in self._bindings.items():
            yield pattern, frozenset(dests)

    def __len__(self) -> int:
        return sum(len(d) for d in self._bindings.values())
