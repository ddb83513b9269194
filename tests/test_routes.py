"""The route table matches AMQP topic patterns exactly as RabbitMQ does.

Pure tests: a table of edge cases (checked against a real broker by
tests/test_routes_rabbitmq.py), table bookkeeping, and hypothesis properties
against two independent models: a brute force over ``pattern_matches`` and a
regular-expression oracle written here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.routecases import CASES, KEY_WORDS, PATTERN_WORDS
from zdse.wire import routes
from zdse.wire.routes import RouteTable, pattern_matches, split_words

patterns = st.lists(st.sampled_from(PATTERN_WORDS), max_size=5).map(".".join)
keys = st.lists(st.sampled_from(KEY_WORDS), max_size=6).map(".".join)
dests = st.integers(min_value=0, max_value=3)


def oracle_matches(pattern: str, key: str) -> bool:
    """Independent model: each word becomes "." + word, each pattern word a regex."""

    def words(address: str) -> list[str]:
        return [] if address == "" else address.split(".")

    regex = "".join(
        r"(?:\.[^.]*)*" if w == "#" else r"\.[^.]*" if w == "*" else re.escape("." + w)
        for w in words(pattern)
    )
    return re.fullmatch(regex, "".join("." + w for w in words(key))) is not None


def trie_nodes(table: RouteTable[Any]) -> int:
    """Count the trie's nodes below the root (pruning is only visible inside)."""
    def below(node: Any) -> list[Any]:
        return [*node.children.values(), *(n for n in (node.star, node.hash) if n is not None)]

    stack = below(table._root)
    count = 0
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(below(node))
    return count


# -- the table of cases ------------------------------------------------------


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_pattern_matches_cases(pattern: str, key: str, expected: bool) -> None:
    """pattern_matches gives RabbitMQ's answer on each edge case."""
    assert pattern_matches(pattern, key) is expected


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_lookup_cases(pattern: str, key: str, expected: bool) -> None:
    """A table with one binding finds it exactly for the keys its pattern matches."""
    table: RouteTable[str] = RouteTable()
    table.add(pattern, "d")
    assert table.lookup(key) == (frozenset({"d"}) if expected else frozenset())


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_oracle_cases(pattern: str, key: str, expected: bool) -> None:
    """The regex oracle used by the properties below agrees with the edge cases too."""
    assert oracle_matches(pattern, key) is expected


def test_lookup_all_cases_in_one_table() -> None:
    """With every case's pattern bound at once, each key still finds the right ones."""
    table: RouteTable[str] = RouteTable()
    for pattern, _, _ in CASES:
        table.add(pattern, pattern)
    for pattern, key, expected in CASES:
        assert (pattern in table.lookup(key)) is expected, (pattern, key)


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("", ()),
        ("a", ("a",)),
        (".", ("", "")),
        ("a.", ("a", "")),
        (".a", ("", "a")),
        ("a..b", ("a", "", "b")),
        ("a.b.c", ("a", "b", "c")),
    ],
)
def test_split_words(address: str, words: tuple[str, ...]) -> None:
    """split_words keeps empty words and maps only "" to zero words."""
    assert split_words(address) == words


def test_many_hashes_stay_linear() -> None:
    """Patterns with many "#" against long keys answer without exponential blow-up."""
    pattern = ".".join(["#"] * 30 + ["x"])
    key_no = ".".join(["a"] * 40)
    key_yes = key_no + ".x"
    assert not pattern_matches(pattern, key_no)
    assert pattern_matches(pattern, key_yes)
    table: RouteTable[str] = RouteTable()
    table.add(pattern, "d")
    table.add(".".join(["#", "*"] * 15), "e")
    assert table.lookup(key_no) == {"e"}
    assert table.lookup(key_yes) == {"d", "e"}


# -- bookkeeping -------------------------------------------------------------


def test_add_reports_new_bindings_only() -> None:
    """add returns True for a new (pattern, dest) and False for a repeat."""
    table: RouteTable[str] = RouteTable()
    assert table.add("a.#", "x")
    assert not table.add("a.#", "x")
    assert table.add("a.#", "y")
    assert table.add("a.*", "x")
    assert len(table) == 3
    assert dict(table.bindings()) == {"a.#": {"x", "y"}, "a.*": {"x"}}


def test_remove_reports_existing_bindings_only() -> None:
    """remove returns True once for a bound pair, False for unknown patterns or dests."""
    table: RouteTable[str] = RouteTable()
    table.add("a.b", "x")
    assert not table.remove("a.b", "y")
    assert not table.remove("a.c", "x")
    assert not table.remove("a", "x")  # a prefix of a bound pattern is not bound
    assert table.remove("a.b", "x")
    assert not table.remove("a.b", "x")
    assert len(table) == 0
    assert list(table.bindings()) == []


def test_remove_keeps_other_destinations() -> None:
    """Removing one dest of a shared pattern keeps the pattern for the others."""
    table: RouteTable[str] = RouteTable()
    table.add("a.#", "x")
    table.add("a.#", "y")
    table.remove("a.#", "x")
    assert table.lookup("a.b") == {"y"}


def test_remove_prunes_empty_branches() -> None:
    """remove deletes trie nodes left with neither dests nor children, and only those."""
    table: RouteTable[str] = RouteTable()
    table.add("a.*.c", "x")
    table.add("a.*", "y")
    table.add("a.#.d", "z")
    assert trie_nodes(table) == 5  # a, a.*, a.*.c, a.#, a.#.d
    table.remove("a.*.c", "x")
    assert trie_nodes(table) == 4
    assert table.lookup("a.b") == {"y"}
    table.remove("a.*", "y")
    assert trie_nodes(table) == 3
    table.remove("a.#.d", "z")
    assert trie_nodes(table) == 0


def test_remove_interior_pattern_keeps_longer_ones() -> None:
    """Removing a pattern that is a prefix of another keeps the longer pattern's path."""
    table: RouteTable[str] = RouteTable()
    table.add("a.*", "x")
    table.add("a.*.b", "y")
    table.remove("a.*", "x")
    assert table.lookup("a.q") == frozenset()
    assert table.lookup("a.q.b") == {"y"}
    assert trie_nodes(table) == 3


def test_literal_patterns_stay_out_of_the_trie() -> None:
    """Patterns without a wildcard match by equality alone and leave no trie node behind."""
    table: RouteTable[str] = RouteTable()
    for pattern, dest in (("a.b", "x"), ("a", "y"), ("a.*", "z")):
        table.add(pattern, dest)
    assert trie_nodes(table) == 2  # a, a.*
    assert table.lookup("a.b") == {"x", "z"}
    assert table.lookup("a") == {"y"}
    assert table.lookup("a.b.c") == frozenset()
    table.remove("a.b", "x")
    assert table.lookup("a.b") == {"z"}
    table.remove("a.*", "z")
    assert trie_nodes(table) == 0
    assert table.lookup("a") == {"y"}


def test_remove_dest_unbinds_everywhere_and_prunes() -> None:
    """remove_dest returns the dest's patterns, unbinds them all and prunes the trie."""
    table: RouteTable[str] = RouteTable()
    for pattern in ("a.#", "*.b", "c"):
        table.add(pattern, "x")
    table.add("*.b", "y")
    assert sorted(table.remove_dest("x")) == ["*.b", "a.#", "c"]
    assert table.lookup("a.b") == {"y"}
    assert table.lookup("c") == frozenset()
    assert table.remove_dest("x") == []
    assert trie_nodes(table) == 2
    assert table.remove_dest("y") == ["*.b"]
    assert trie_nodes(table) == 0
    assert len(table) == 0


def test_empty_pattern_binds_at_root() -> None:
    """The empty pattern binds at the root: it matches only the empty key and prunes to nothing."""
    table: RouteTable[str] = RouteTable()
    table.add("", "x")
    assert table.lookup("") == {"x"}
    assert table.lookup(".") == frozenset()
    assert table.remove("", "x")
    assert table.lookup("") == frozenset()
    assert trie_nodes(table) == 0


def test_cache_invalidated_by_add() -> None:
    """A key looked up before an add sees the new binding afterwards."""
    table: RouteTable[str] = RouteTable()
    table.add("a.b", "x")
    assert table.lookup("a.b") == {"x"}
    assert table.lookup("q") == frozenset()
    table.add("#", "y")
    assert table.lookup("a.b") == {"x", "y"}
    assert table.lookup("q") == {"y"}


def test_cache_invalidated_by_remove() -> None:
    """A key looked up before a remove no longer sees the removed binding."""
    table: RouteTable[str] = RouteTable()
    table.add("a.*", "x")
    table.add("#", "y")
    assert table.lookup("a.b") == {"x", "y"}
    table.remove("a.*", "x")
    assert table.lookup("a.b") == {"y"}


def test_cache_invalidated_by_remove_dest() -> None:
    """A key looked up before remove_dest no longer sees that dest."""
    table: RouteTable[str] = RouteTable()
    table.add("a.*", "x")
    table.add("#.b", "x")
    table.add("#", "y")
    assert table.lookup("a.b") == {"x", "y"}
    table.remove_dest("x")
    assert table.lookup("a.b") == {"y"}


def test_cache_not_invalidated_by_no_op() -> None:
    """Adding an existing binding or removing a missing one changes no answer."""
    table: RouteTable[str] = RouteTable()
    table.add("a", "x")
    before = table.lookup("a")
    assert not table.add("a", "x")
    assert not table.remove("b", "x")
    assert table.lookup("a") == before == {"x"}


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past CACHE_SIZE and PROBATION_SIZE keys old entries go; answers stay right."""
    monkeypatch.setattr(routes, "CACHE_SIZE", 4)
    monkeypatch.setattr(routes, "PROBATION_SIZE", 3)
    table: RouteTable[str] = RouteTable()
    table.add("k.*", "x")
    for round_ in range(3):
        for i in range(10):
            assert table.lookup(f"k.{i}") == {"x"}, (round_, i)
            assert len(table._cache) <= 4
            assert len(table._old) <= 4
            assert len(table._new) <= 3
    assert table.lookup("other") == frozenset()


def test_keys_seen_once_stay_out_of_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key enters the cache when seen again while on probation, and keys seen once never do."""
    monkeypatch.setattr(routes, "PROBATION_SIZE", 3)
    table: RouteTable[str] = RouteTable()
    table.add("k.*", "x")
    assert table.lookup("k.hot") == {"x"}
    assert "k.hot" not in table._cache
    assert table.lookup("k.hot") == {"x"}
    assert "k.hot" in table._cache
    for i in range(20):
        assert table.lookup(f"k.{i}") == {"x"}
    assert list(table._cache) == ["k.hot"]


def test_working_set_survives_a_stream_of_new_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key looked up again within every CACHE_SIZE new keys stays cached across generations."""
    monkeypatch.setattr(routes, "CACHE_SIZE", 4)
    monkeypatch.setattr(routes, "PROBATION_SIZE", 2)
    table: RouteTable[str] = RouteTable()
    table.add("k.*", "x")
    assert table.lookup("k.hot") == {"x"}
    for i in range(20):
        assert table.lookup("k.hot") == {"x"}
        assert table.lookup(f"k.{i}") == {"x"}
        assert table.lookup(f"k.{i}") == {"x"}  # seen twice: cached, filling generations
        assert "k.hot" in table._cache or "k.hot" in table._old, i


# -- properties ----------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(patterns, keys)
def test_pattern_matches_agrees_with_oracle(pattern: str, key: str) -> None:
    """pattern_matches equals the independent regex oracle on random patterns and keys."""
    assert pattern_matches(pattern, key) is oracle_matches(pattern, key)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(patterns, dests), max_size=12), st.lists(keys, max_size=12))
def test_lookup_equals_brute_force(bindings: list[tuple[str, int]], probe: list[str]) -> None:
    """lookup equals a brute force over pattern_matches (and the oracle) for random tables."""
    table: RouteTable[int] = RouteTable()
    for pattern, dest in bindings:
        table.add(pattern, dest)
    for key in [*probe, ""]:
        brute = {d for p, d in bindings if pattern_matches(p, key)}
        assert table.lookup(key) == brute, key
        assert brute == {d for p, d in bindings if oracle_matches(p, key)}, key
        assert table.lookup(key) == brute, f"cached answer for {key!r} differs"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), patterns, dests),
        st.tuples(st.just("remove"), patterns, dests),
        st.tuples(st.just("remove_dest"), dests),
        st.tuples(st.just("lookup"), keys),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_lookup_tracks_every_change(steps: list[tuple[object, ...]]) -> None:
    """Interleaved add/remove/remove_dest/lookup always agree with a set-of-pairs model."""
    table: RouteTable[int] = RouteTable()
    model: set[tuple[str, int]] = set()
    for step in steps:
        match step:
            case ("add", str(pattern), int(dest)):
                assert table.add(pattern, dest) is ((pattern, dest) not in model)
                model.add((pattern, dest))
            case ("remove", str(pattern), int(dest)):
                assert table.remove(pattern, dest) is ((pattern, dest) in model)
                model.discard((pattern, dest))
            case ("remove_dest", int(dest)):
                gone = {p for p, d in model if d == dest}
                assert sorted(table.remove_dest(dest)) == sorted(gone)
                model -= {(p, dest) for p in gone}
            case ("lookup", str(key)):
                assert table.lookup(key) == {d for p, d in model if oracle_matches(p, key)}
        assert len(table) == len(model)
    for pattern, dest in sorted(model):
        table.remove(pattern, dest)
    assert trie_nodes(table) == 0
