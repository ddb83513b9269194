"""The route table: AMQP topic patterns -> destinations, as RabbitMQ matches them.

An address is a sequence of words separated by ``.``. In a pattern, a word that
is exactly ``*`` matches exactly one word and a word that is exactly ``#``
matches zero or more words; ``*`` or ``#`` inside a longer word are literal.
Words may be empty (``a..b``, ``a.``), and the empty string is the address of
zero words, exactly as RabbitMQ's topic exchange splits routing keys.

A pattern without a wildcard matches only the key equal to it, so those
(most of a cage's: unique service names) are one dict look-up. The others
live in a trie, so a lookup walks only the branches the key can reach,
whatever the number of unrelated patterns. Repeated keys are answered from a
bounded cache that any change to the table clears. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["RouteTable", "pattern_matches", "split_words"]

D = TypeVar("D", bound=Hashable)

#: Entries kept in each of the lookup cache's two generations. A cage serves a
#: working set of keys far smaller than this; past it the older generation is
#: dropped whole, so at most twice this many answers are cached: 65,536, the
#: bound of the single LRU this replaced (plus PROBATION_SIZE on probation).
CACHE_SIZE = 32_768
#: Keys seen once, kept until this many more arrive: a key seen again within
#: them moves to the cache. A stream of keys seen once then fills only this
#: small dict, which stays in the CPU's caches, not the big one.
PROBATION_SIZE = 4096

STAR = "*"
HASH = "#"
#: The answer for a key no pattern matches: one shared value, no allocation.
_EMPTY: frozenset[Any] = frozenset()


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


def _literal(words: tuple[str, ...]) -> bool:
    """Whether a pattern's words hold no wildcard (it then matches only itself)."""
    return STAR not in words and HASH not in words


class _Node(Generic[D]):
    """One trie node: literal-word children in a dict, the ``*`` and ``#``
    children apart (a word that is exactly ``*`` or ``#`` is never literal),
    and the destinations of the patterns that end here."""

    __slots__ = ("children", "dests", "frozen", "hash", "leaf", "multi", "star")

    def __init__(self, multi: bool) -> None:
        self.children: dict[str, _Node[D]] = {}
        self.star: _Node[D] | None = None
        self.hash: _Node[D] | None = None
        self.dests: set[D] = set()
        #: ``dests`` as the frozenset a look-up returns, kept current by
        #: add/remove so a key matching one pattern allocates nothing.
        self.frozen: frozenset[D] = _EMPTY
        #: No child of any kind: a ``#`` leaf matches whatever words remain.
        self.leaf = True
        #: At least two ``#`` on the path from the root (this node included):
        #: only then can a walk reach this node at one key position twice.
        self.multi = multi

    def child(self, word: str) -> _Node[D] | None:
        if word == STAR:
            return self.star
        if word == HASH:
            return self.hash
        return self.children.get(word)

    def make_child(self, word: str, hashes: int) -> _Node[D]:
        node = self.child(word)
        if node is None:
            node = _Node(hashes >= 2)
            if word == STAR:
                self.star = node
            elif word == HASH:
                self.hash = node
            else:
                self.children[word] = node
            self.leaf = False
        return node

    def drop_child(self, word: str) -> None:
        if word == STAR:
            self.star = None
        elif word == HASH:
            self.hash = None
        else:
            del self.children[word]
        self.leaf = not self.children and self.star is None and self.hash is None

    def set_dests(self) -> None:
        self.frozen = frozenset(self.dests) if self.dests else _EMPTY


class RouteTable(Generic[D]):
    """Patterns mapped to the destinations bound to them.

    Example:
        >>> table: RouteTable[str] = RouteTable()
        >>> table.add("vSphere.#", "monitor")
        >>> sorted(table.lookup("vSphere.node.list"))
        ['monitor']
    """

    def __init__(self) -> None:
        self._root: _Node[D] = _Node(False)
        self._bindings: dict[str, set[D]] = {}
        # Patterns without a wildcard (most of a cage's: unique service names)
        # match only the key equal to them: one dict, not the trie, which
        # then holds only wildcard patterns and stays small.
        self._exact: dict[str, frozenset[D]] = {}
        # The cache is plain dicts, not an LRU. A first answer goes on
        # probation in ``_new`` (a small dict, dropped whole when full); a key
        # asked again while there moves to ``_cache``. When ``_cache`` is
        # full it becomes ``_old`` (the previous ``_old`` is dropped whole)
        # and a hit in ``_old`` moves back. So a working set smaller than
        # CACHE_SIZE stays cached, a stream of keys seen once never evicts
        # it, and each such key costs one insert into a dict small enough to
        # stay in the CPU's caches, with no per-key eviction.
        self._cache: dict[str, frozenset[D]] = {}
        self._old: dict[str, frozenset[D]] = {}
        self._new: dict[str, frozenset[D]] = {}

    def add(self, pattern: str, dest: D) -> bool:
        """Bind ``dest`` to ``pattern``.

        Returns:
            True if the binding is new, False if it was already there.
        """
        dests = self._bindings.setdefault(pattern, set())
        if dest in dests:
            return False
        dests.add(dest)
        self._clear_cache()
        words = split_words(pattern)
        if _literal(words):
            self._exact[pattern] = frozenset(dests)
            return True
        node = self._root
        hashes = 0
        for word in words:
            hashes += word == HASH
            node = node.make_child(word, hashes)
        node.dests.add(dest)
        node.set_dests()
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
        self._clear_cache()
        words = split_words(pattern)
        if _literal(words):
            if dests:
                self._exact[pattern] = frozenset(dests)
            else:
                del self._exact[pattern]
            return True
        path: list[tuple[_Node[D], str]] = []
        node: _Node[D] | None = self._root
        for word in words:
            assert node is not None  # every bound pattern has its path
            path.append((node, word))
            node = node.child(word)
        assert node is not None
        node.dests.discard(dest)
        node.set_dests()
        for parent, word in reversed(path):
            child = parent.child(word)
            assert child is not None
            if child.dests or not child.leaf:
                break
            parent.drop_child(word)
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
        hit = self._old.get(key)
        if hit is None:
            hit = self._new.get(key)
            if hit is None:
                hit = self._match(key.split(".") if key else [])
                exact = self._exact.get(key)
                if exact is not None:
                    hit = hit | exact if hit else exact
                if len(self._new) >= PROBATION_SIZE:
                    self._new = {}
                self._new[key] = hit
                return hit
        if len(self._cache) >= CACHE_SIZE:
            self._old = self._cache
            self._cache = {}
        self._cache[key] = hit
        return hit

    def _clear_cache(self) -> None:
        self._cache = {}
        self._old = {}
        self._new = {}

    def _match(self, words: list[str]) -> frozenset[D]:
        # An iterative walk: follow the literal child in place and keep the
        # other branches (``*``, and ``#`` at each number of words it may
        # eat) on a flat stack of node, position pairs. A ``#`` leaf matches
        # at once, whatever remains. Only a node with two ``#`` above it can
        # be reached twice at one position, so only those are marked: that
        # keeps patterns with several ``#`` linear instead of exponential.
        end = len(words)
        hits: list[frozenset[D]] = []
        stack: list[Any] = []
        seen: set[tuple[_Node[D], int]] | None = None
        node = self._root
        i = 0
        while True:
            if node.multi:
                if seen is None:
                    seen = set()
                mark = (node, i)
                if mark in seen:
                    if not stack:
                        break
                    i = stack.pop()
                    node = stack.pop()
                    continue
                seen.add(mark)
            hash_node = node.hash
            if hash_node is not None:
                if hash_node.leaf:
                    hits.append(hash_node.frozen)
                else:
                    for j in range(i, end + 1):
                        stack.append(hash_node)
                        stack.append(j)
            if i == end:
                if node.dests:
                    hits.append(node.frozen)
            else:
                star = node.star
                if star is not None:
                    stack.append(star)
                    stack.append(i + 1)
                exact = node.children.get(words[i])
                if exact is not None:
                    node = exact
                    i += 1
                    continue
            if not stack:
                break
            i = stack.pop()
            node = stack.pop()
        if not hits:
            return _EMPTY
        if len(hits) == 1:
            return hits[0]
        return _EMPTY.union(*hits)

    def bindings(self) -> Iterator[tuple[str, frozenset[D]]]:
        """Yield each pattern with the destinations bound to it."""
        for pattern, dests in self._bindings.items():
            yield pattern, frozenset(dests)

    def __len__(self) -> int:
        return sum(len(d) for d in self._bindings.values())
