"""The incremental table API: put/delete keys, add/remove rows, replace, mixed with publish()."""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import Cluster, Updates, run
from zdse.errors import MessageTooLarge
from zdse.node.core import NodeCore
from zdse.node.delta import apply, freeze, patch, same
from zdse.node.subscriptions import Update
from zdse.node.table import KeyTable, RowTable, packed_size
from zdse.testing import FakeNet
from zdse.wire.limits import MAX_ENTRY_BYTES, MAX_MESSAGE_BYTES

# --- the tables ------------------------------------------------------------------


def test_a_row_table_is_a_multiset_and_removes_only_rows_it_holds() -> None:
    """Removing a row takes one equal copy held before the change; absent rows are left out."""
    table = RowTable([[1], [1], [2]])
    plan = table.plan(add=[[3]], remove=[[1], [9], [3]])
    assert (plan.add, plan.remove) == ([[3]], [[1]])
    assert same(table.rows(), [[1], [1], [2]]), "a plan changes nothing"
    table.commit(plan)
    assert same(table.rows(), [[1], [2], [3]])
    assert len(table) == 3


def test_a_row_table_compacts_the_oldest_copies_and_keeps_the_order() -> None:
    """Marked rows leave at compaction: the oldest copy of each, the rest in insertion order."""
    table = RowTable([])
    for i in range(200):
        table.commit(table.plan(add=[{"n": i}], remove=[{"n": i - 10}] if i >= 10 else []))
    assert table.rows() == [{"n": i} for i in range(190, 200)]
    table.commit(table.plan(add=[{"n": 195}]))
    table.commit(table.plan(remove=[{"n": 195}]))
    assert table.rows() == [{"n": i} for i in [*range(190, 195), *range(196, 200), 195]]


def test_a_row_table_removes_an_equal_row_whose_map_lists_its_keys_in_another_order() -> None:
    """Rows are matched as data: the same map built in another key order is the same row."""
    table = RowTable([{"a": 1, "b": [1, {"x": 1, "y": 2}]}, {"a": 2}])
    plan = table.plan(remove=[{"b": [1, {"y": 2, "x": 1}], "a": 1}, {"a": 3}])
    assert plan.remove == [{"b": [1, {"y": 2, "x": 1}], "a": 1}]
    table.commit(plan)
    assert table.rows() == [{"a": 2}]
    # Once looked up as data, the table keeps that index up to date.
    table.commit(table.plan(add=[{"c": 1, "d": 2}]))
    table.commit(table.plan(remove=[{"d": 2, "c": 1}]))
    assert table.rows() == [{"a": 2}]
    assert table.bytes == packed_size({"a": 2})


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.booleans()), max_size=60))
def test_a_row_table_is_the_multiset_of_its_rows_as_data_whatever_their_key_order(
    script: list[tuple[bool, int, bool]],
) -> None:
    """Adds and removes of rows built in either key order keep the multiset a Counter keeps."""
    table, model = RowTable([]), Counter[tuple[int, int]]()
    for adding, n, flipped in script:
        row = {"n": n, "m": -n} if not flipped else {"m": -n, "n": n}
        if adding:
            table.commit(table.plan(add=[row]))
            model[(n, -n)] += 1
        else:
            table.commit(table.plan(remove=[row]))
            if model[(n, -n)]:
                model[(n, -n)] -= 1
        assert Counter((r["n"], r["m"]) for r in table.rows()) == +model
        assert len(table) == sum(model.values())


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=80))
def test_row_and_key_tables_track_their_packed_size(script: list[tuple[bool, int]]) -> None:
    """``bytes`` is the packed size of the content, whatever the changes."""
    rows, keys = RowTable([[0]]), KeyTable({"a": [0]})
    for adding, n in script:
        rows.commit(rows.plan(add=[[n]]) if adding else rows.plan(remove=[[n]]))
        keys.commit(keys.plan({f"k{n}": [n] * n}) if adding else keys.plan({}, [f"k{n}"]))
    assert rows.bytes == sum(packed_size(r) for r in rows.rows())
    assert keys.bytes == sum(packed_size(k) + packed_size(v) for k, v in keys.data.items())


def test_a_key_plan_leaves_out_what_does_not_change_and_refuses_ambiguity() -> None:
    """Equal puts and absent deletes are no change; a key both put and deleted is refused."""
    table = KeyTable({"a": 1, "b": [1, 2], "d": 4})
    plan = table.plan({"a": 1, "b": [1, 3], "c": None}, ["zz", "d", "d"])
    assert (plan.put, plan.delete) == ({"b": [1, 3], "c": None}, ["d"])
    with pytest.raises(ValueError, match="both put and deleted"):
        table.plan({"a": 2}, ["a"])
    with pytest.raises(ValueError, match="cannot be a table's key"):
        table.plan({}, [["unhashable"]])


@given(
    st.lists(st.lists(st.integers(0, 4), max_size=2), max_size=8),
    st.lists(st.lists(st.integers(0, 4), max_size=2), max_size=4),
    st.lists(st.lists(st.integers(0, 4), max_size=2), max_size=8),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=6),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=4),
    st.lists(st.text(max_size=2), max_size=4),
)
def test_patch_in_place_gives_what_apply_gives(
    rows: list[Any], added: list[Any], removed: list[Any],
    data: dict[str, int], changed: dict[str, int], gone: list[str],
) -> None:
    """Patching a view in place gives the multiset (or map) a plain model gives; apply agrees."""
    wire_rows = ["rows", added, removed]
    left = Counter(freeze(r) for r in rows) - Counter(freeze(r) for r in removed)
    model = left + Counter(freeze(r) for r in added)
    patched = patch(copy.deepcopy(rows), wire_rows)
    assert Counter(freeze(r) for r in patched) == model
    assert same(apply(rows, wire_rows), patched)
    wire_keys = ["keys", changed, gone]
    want = {k: v for k, v in data.items() if k not in gone} | changed
    assert patch(dict(data), wire_keys) == want
    assert apply(data, wire_keys) == want


# --- through a network of pure cores ---------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3),
                                                 max_size=3),
                  st.lists(st.sampled_from("abcdef"), max_size=2)),
        st.tuples(st.just("rows"), st.lists(st.integers(0, 4).map(lambda n: [n]), max_size=3),
                  st.lists(st.integers(0, 4).map(lambda n: [n]), max_size=3)),
        st.tuples(st.just("publish_keys"), st.dictionaries(st.sampled_from("abcdef"),
                                                           st.integers(0, 3), max_size=4),
                  st.just([])),
        st.tuples(st.just("publish_rows"), st.lists(st.integers(0, 4).map(lambda n: [n]),
                                                    max_size=4), st.just([])),
        st.tuples(st.just("replace"), st.integers(0, 2), st.just([])),
        st.tuples(st.just("join"), st.just(None), st.just([])),
    ),
    max_size=30,
)


def apply_op(pub: NodeCore, op: tuple[str, Any, Any]) -> None:
    """Make one change of the mix on the publisher's three tables."""
    what, a, b = op
    if what == "put":
        pub.change_keys("k", {key: v for key, v in a.items() if key not in b}, b)
    elif what == "rows":
        pub.change_rows("r", a, b)
    elif what == "publish_keys":
        pub.publish("k", a)
    elif what == "publish_rows":
        pub.publish("r", a)
    elif what == "replace":
        pub.replace("s", a)


def check_views(net: FakeNet, pub: NodeCore, subs: list[tuple[NodeCore, dict[str, str]]]) -> None:
    """Every subscriber's view of each table equals the publisher's data."""
    for sub, sids in subs:
        for dataindex, sid in sids.items():
            want = pub.publications.data(dataindex)
            got = sub.subscriptions.view(sid).get("pub")
            assert same(got, want), f"{dataindex}: view {got!r}, data {want!r}"
            net.events(sub)


@settings(max_examples=60, deadline=None)
@given(OPS, st.integers(0, 2**32 - 1))
def test_views_equal_the_data_after_each_step_of_a_mix_of_changes(
    ops: list[tuple[str, Any, Any]], seed: int
) -> None:
    """Puts, deletes, adds, removes, replaces and whole publishes on the same tables: views follow.

    A second subscriber joins mid-way (a snapshot of a table changed in
    place), and a seeded lossy network loses some deltas: those views
    converge after a refresh.
    """
    rng = random.Random(seed)
    lossy = [False]
    net = FakeNet(drop=lambda frames: lossy[0] and rng.random() < 0.3)
    pub = net.add("pub")
    pub.publish("k", {"a": 0})
    subs: list[tuple[NodeCore, dict[str, str]]] = []

    def join(name: str) -> None:
        sub = net.add(name)
        subs.append((sub, {di: sub.subscribe("pub", di, net.clock.now) for di in "krs"}))
        net.run()

    join("sub0")
    for step, op in enumerate(ops):
        if op[0] == "join":
            join(f"sub{step + 1}")
            continue
        lossy[0] = step % 7 == 3
        apply_op(pub, op)
        net.run()
        if lossy[0]:
            lossy[0] = False
            net.advance(net.refresh + 2)  # a re-announce, a Current, then a resync
        check_views(net, pub, subs)


def test_a_module_object_published_whole_is_never_changed_by_later_changes() -> None:
    """The stored table is copied at the first change after publish(); the module's value stays."""
    net = FakeNet()
    pub = net.add("pub")
    table = {"a": 1}
    rows = [[1], [2]]
    pub.publish("k", table)
    pub.publish("r", rows)
    pub.change_keys("k", {"b": 2}, ["a"])
    pub.change_rows("r", [[3]], [[1]])
    assert table == {"a": 1}
    assert rows == [[1], [2]]
    assert pub.publications.data("k") == {"b": 2}
    assert same(pub.publications.data("r"), [[2], [3]])


def test_the_first_change_of_a_new_table_replaces_the_snapshot_of_nothing() -> None:
    """A subscriber that came first is told the table is unpublished; the first change
    reaches it whole."""
    net = FakeNet()
    pub = net.add("pub")
    sub = net.add("sub")
    sid = sub.subscribe("pub", "k", net.clock.now)
    net.run()
    pub.change_keys("k", {"a": 1})
    net.run()
    first = [u for u in net.events(sub) if isinstance(u, Update)]
    assert [(u.kind, u.data) for u in first] == [
        ("unpublished", None), ("delta", ["replace", {"a": 1}])]
    pub.change_keys("k", {"b": 2})
    net.run()
    assert [u.data for u in net.events(sub) if isinstance(u, Update)] == [["keys", {"b": 2}, []]]
    assert sub.subscriptions.view(sid) == {"pub": {"a": 1, "b": 2}}
    # The view changes in place; the replace delta a callback was given does not.
    assert first[1].data == ["replace", {"a": 1}]


def test_nothing_is_sent_for_a_change_that_changes_nothing() -> None:
    """An equal put, an absent delete or remove, an equal replace: no delta, no new seq."""
    net = FakeNet()
    pub = net.add("pub")
    sub = net.add("sub")
    pub.change_keys("k", {"a": 1})
    pub.change_rows("r", [[1]])
    pub.replace("s", 5)
    for di in "krs":
        sub.subscribe("pub", di, net.clock.now)
    net.run()
    seqs = {di: pub.publications.pubdata()[di]["seq"] for di in "krs"}
    pub.change_keys("k", {"a": 1}, ["zz"])
    pub.change_rows("r", [], [[9]])
    pub.replace("s", 5)
    assert pub.outbox == []
    assert {di: pub.publications.pubdata()[di]["seq"] for di in "krs"} == seqs


def test_a_refused_change_leaves_the_table_and_its_seq_as_they_were() -> None:
    """A wrong shape, an ambiguous key, an entry too big for a part: refused, nothing stored."""
    net = FakeNet()
    pub = net.add("pub")
    pub.publish("r", [[1]])
    pub.change_keys("k", {"a": 1})
    with pytest.raises(TypeError, match="not a dict table"):
        pub.change_keys("r", {"a": 1})
    with pytest.raises(TypeError, match="not a list table"):
        pub.change_rows("k", [[1]])
    with pytest.raises(ValueError, match="both put and deleted"):
        pub.change_keys("k", {"a": 2}, ["a"])
    # Two such values pass the message limit together: the table goes in parts.
    big = "x" * (MAX_MESSAGE_BYTES // 2)
    pub.change_keys("k", {"b": big})
    pub.change_keys("k", {"c": big})
    with pytest.raises(MessageTooLarge, match="entry"):
        pub.change_keys("k", {"d": "x" * MAX_ENTRY_BYTES})
    with pytest.raises(MessageTooLarge, match="entry"):
        pub.change_rows("r", [["x" * MAX_ENTRY_BYTES]])
    assert pub.publications.data("k") == {"a": 1, "b": big, "c": big}
    assert pub.publications.pubdata()["k"]["seq"] == 3
    assert same(pub.publications.data("r"), [[1]])


# --- with real processes ---------------------------------------------------------



def test_real_processes_keep_views_equal_to_the_data_under_a_mix_of_changes(
    cluster: Cluster,
) -> None:
    """Over a real cage: after each step of a seeded mix, views and `req` answers equal the data."""
    rng = random.Random(19)

    async def main() -> None:
        async with cluster.bus("pub") as pub, cluster.bus("early") as early, \
                cluster.bus("late") as late:
            pub.publish("k", {"a": 0})
            views = {di: Updates() for di in "krs"}
            for di, updates in views.items():
                early.subscribe("pub", di, updates)
            joined: dict[str, Updates] = {}
            for step in range(60):
                what = rng.choice(["put", "put", "rows", "rows", "publish_k", "publish_r",
                                   "replace"])
                if what == "put":
                    keys = rng.sample("abcdefgh", 3)
                    pub.change_keys("k", {keys[0]: rng.randint(0, 9)}, keys[1:2])
                elif what == "rows":
                    pub.change_rows("r", [[rng.randint(0, 5)]], [[rng.randint(0, 5)]])
                elif what == "publish_k":
                    pub.publish("k", {c: rng.randint(0, 3) for c in rng.sample("abcdefgh", 3)})
                elif what == "publish_r":
                    pub.publish("r", [[rng.randint(0, 5)] for _ in range(rng.randint(0, 4))])
                else:
                    pub.replace("s", rng.randint(0, 3))
                if step == 30:  # a late subscriber: a snapshot of tables changed in place
                    joined = {di: Updates() for di in "krs"}
                    for di, updates in joined.items():
                        late.subscribe("pub", di, updates)
                for di in "krs":
                    data = pub.core.publications.data(di)
                    if data is None:
                        continue
                    want = {"pub": copy.deepcopy(data)}
                    await views[di].until_views(want)
                    if di in joined:
                        await joined[di].until_views(want)
                    assert same(await early.request("pub", di), data)

    run(main())
