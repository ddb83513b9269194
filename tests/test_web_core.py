"""zdse-web's pure parts: the stream feed, the overview (one cage, several), the request form,
JSON encoding."""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import pytest

from zdse.node.session import SessionState
from zdse.node.silence import Seen, unreachable
from zdse.node.subscriptions import Update
from zdse.web.encode import to_json
from zdse.web.feed import Feed
from zdse.web.forms import MAX_TIMEOUT, FormError, parse_request
from zdse.web.overview import GONE_KEPT, Overview
from zdse.web.pages import front


def update(kind: str, seq: int, data: Any, view: Any, publisher: str = "p",
           dataindex: str = "t") -> Update:
    return Update("sid", publisher, dataindex, kind, seq, data, view)


def events(feed: Feed) -> list[dict[str, Any]]:
    return [json.loads(text) for text in feed.drain()]


def test_snapshot_then_deltas_are_sent_in_order() -> None:
    """A snapshot is sent with its view, then each delta as it came."""
    feed = Feed()
    feed.take(update("snapshot", 1, [[1]], [[1]]))
    assert [e["t"] for e in events(feed)] == ["snapshot"]
    feed.take(update("delta", 2, ["rows", [[2]], []], [[1], [2]]))
    feed.take(update("delta", 3, ["rows", [], [[1]]], [[2]]))
    sent = events(feed)
    assert [(e["t"], e["seq"], e["delta"]) for e in sent] == [
        ("delta", 2, ["rows", [[2]], []]), ("delta", 3, ["rows", [], [[1]]])]
    assert not feed


def test_deltas_past_the_budget_become_one_snapshot_of_the_newest_view() -> None:
    """A reader that falls behind costs at most the budget: its deltas give way to a snapshot."""
    feed = Feed(budget=500)
    feed.take(update("snapshot", 1, [], []))
    feed.drain()
    view: list[Any] = []
    for seq in range(2, 100):
        view = [*view, [seq]]
        feed.take(update("delta", seq, ["rows", [[seq]], []], view))
        assert feed.queued_bytes <= 500
    sent = events(feed)
    assert [e["t"] for e in sent] == ["snapshot"]
    assert sent[0]["seq"] == 99
    assert sent[0]["data"] == view
    assert feed.coalesced >= 1


def test_other_tables_keep_their_deltas_when_one_is_coalesced() -> None:
    """Coalescing one busy table leaves another table's queued deltas alone."""
    feed = Feed(budget=300)
    feed.take(update("delta", 2, ["keys", {"a": 1}, []], {"a": 1}, dataindex="quiet"))
    for seq in range(2, 40):
        feed.take(update("delta", seq, ["rows", [["x" * 20]], []], [], dataindex="busy"))
    kinds = {(e["t"], e["d"]) for e in events(feed)}
    assert kinds == {("snapshot", "busy"), ("delta", "quiet")}


def test_a_delta_form_the_page_does_not_know_is_sent_as_a_snapshot() -> None:
    """An unknown delta form reaches the page as the view, never as a delta it cannot apply."""
    feed = Feed()
    feed.take(update("delta", 5, ["chunked", 1, 2], [[1]]))
    assert events(feed) == [{"t": "snapshot", "p": "p", "d": "t", "seq": 5, "data": [[1]]}]


def test_lost_and_noroute_are_passed_on() -> None:
    """A publisher that left, and a key with no route, reach the page."""
    feed = Feed()
    feed.take(update("snapshot", 1, [[1]], [[1]]))
    feed.take(update("lost", 1, None, None))
    feed.take(Update("sid", "", "t", "noroute", 0, "k.#", None))
    assert [e["t"] for e in events(feed)] == ["lost", "noroute"]


def test_overview_keeps_gone_services_until_they_return() -> None:
    """A service missing from the cage's answer is listed as gone, then running again."""
    o = Overview()
    assert not o.reachable
    o.seen([{"name": "a", "pid": 1}, {"name": "b", "pid": 2}], [], {})
    o.seen([{"name": "a", "pid": 1}], [], {})
    assert [(s["name"], s.get("state"), s["pid"]) for s in o.state()["services"]] == [
        ("a", None, 1), ("b", "gone", None)]
    assert o.knows("b")
    o.seen([{"name": "a"}, {"name": "b", "pid": 3}], [], {})
    assert "b" not in o.gone


def test_overview_forgets_the_oldest_gone_services_past_the_bound() -> None:
    """Churning names cannot grow the page without bound."""
    o = Overview()
    for i in range(GONE_KEPT + 10):
        o.seen([{"name": f"s{i}"}], [], {})
    assert len(o.gone) == GONE_KEPT


def test_overview_unreachable_keeps_the_last_data() -> None:
    """While the cage is away the page keeps what it had, flagged unreachable."""
    o = Overview()
    o.seen([{"name": "a"}], [["a", ["a"]]], {"nodes": 1})
    o.unreachable("no answer")
    state = o.state()
    assert (state["reachable"], state["error"], len(state["services"])) == (False, "no answer", 1)


def test_overview_skips_what_is_not_a_service() -> None:
    """Entries that are not service records are skipped, not raised on."""
    o = Overview()
    o.seen([1, {"name": 2}, {"name": "ok"}], "junk", [])
    assert [s["name"] for s in o.state()["services"]] == ["ok"]


A, B = "tcp://127.0.0.1:5570", "tcp://127.0.0.1:6570"


def two_cages() -> Overview:
    """Two cages: both know a; only A knows b; their routes differ."""
    o = Overview([A, B])
    o.seen([{"name": "a", "pid": 1}, {"name": "b", "pid": 2}],
           [["a", ["a"]], ["x.#", ["a", "b"]]], {"epoch": "e1", "uptime": 5.0, "nodes": 2,
                                                 "routed": 7}, cage=0)
    o.seen([{"name": "a", "pid": 1}], [["a", ["a"]], ["x.#", ["a"]]],
           {"epoch": "e2", "uptime": 3.0, "nodes": 1, "routed": 4}, cage=1)
    return o


def test_each_service_and_route_names_the_cages_that_know_it() -> None:
    """A service registered at one of two cages says so; routes merge their names."""
    state = two_cages().state()
    assert [(s["name"], s["cages"]) for s in state["services"]] == [("a", [A, B]), ("b", [A])]
    assert state["routes"] == [["a", ["a"], [A, B]], ["x.#", ["a", "b"], [A, B]]]
    assert [(c["router"], c["reachable"], c["epoch"], c["nodes"], c["counters"])
            for c in state["cages"]] == [(A, True, "e1", 2, {"routed": 7}),
                                        (B, True, "e2", 1, {"routed": 4})]


def test_a_cage_that_stops_answering_is_flagged_and_the_other_view_remains() -> None:
    """One cage down: its row says why (epoch kept, no uptime); the page shows the other's view,
    a service only it knew is gone; back, it counts again."""
    o = two_cages()
    o.unreachable("the connection closed", cage=0)
    state = o.state()
    assert state["reachable"]
    assert state["error"] == ""
    down, up = state["cages"]
    assert (down["reachable"], down["error"], down["epoch"], down["uptime"], down["nodes"],
            down["counters"]) == (False, "the connection closed", "e1", None, None, {})
    assert (up["reachable"], up["uptime"]) == (True, 3.0)
    assert [(s["name"], s.get("state"), s["cages"]) for s in state["services"]] == [
        ("a", None, [B]), ("b", "gone", [])]
    assert state["routes"] == [["a", ["a"], [B]], ["x.#", ["a"], [B]]]
    assert state["stats"]["epoch"] == "e2"
    o.seen([{"name": "b"}], [], {"epoch": "e3"}, cage=0)
    assert [(s["name"], s["cages"]) for s in o.state()["services"]] == [("a", [B]), ("b", [A])]


def test_with_no_cage_answering_the_last_data_stays_and_the_error_names_each() -> None:
    """Every cage down: unreachable, the last lists kept, each cage's error in the message."""
    o = two_cages()
    o.unreachable("gone", cage=0)
    o.unreachable("silent", cage=1)
    state = o.state()
    assert not state["reachable"]
    assert state["error"] == f"{A}: gone; {B}: silent"
    assert [(s["name"], s.get("state")) for s in state["services"]] == [("a", None),
                                                                       ("b", "gone")]


def test_the_cage_that_supervises_a_service_gives_its_row() -> None:
    """A service supervised by B and registered at both: B's row (pid, state), B is its
    supervisor."""
    o = Overview([A, B])
    o.seen([{"name": "s", "state": "running", "supervised": False}], [], {}, cage=0)
    o.seen([{"name": "s", "state": "running", "supervised": True, "pid": 9}], [], {}, cage=1)
    (row,) = o.state()["services"]
    assert (row["pid"], row["supervised"], row["cages"]) == (9, True, [A, B])
    assert o.supervisor_of("s") == 1
    assert o.supervisor_of("nobody") is None


def test_malformed_routes_are_skipped() -> None:
    """A route entry that is not [pattern, names] is skipped, not raised on."""
    o = Overview()
    o.seen([], [["ok", ["a"]], "junk", [1, []], ["p"]], {})
    assert o.state()["routes"] == [["ok", ["a"], [""]]]


def test_the_front_page_has_a_cages_panel_only_with_several_cages() -> None:
    """One cage: the page as before; two: the panel, a Cages column, a counters column each."""
    one = front(False, [A])
    assert "id=cages" not in one
    assert "<th>Cages</th>" not in one
    two = front(False, [A, B])
    assert "id=cages" in two
    assert two.count("<th>Cages</th>") == 2
    assert "<th>127.0.0.1:6570</th>" in two


@pytest.mark.parametrize(("state", "closed", "seen", "says"), [
    (SessionState.REGISTERED, False, Seen.HANDSHAKE_OK, ""),
    (SessionState.REGISTERED, True, Seen.HANDSHAKE_OK, "connection to tcp://c:1 closed"),
    (SessionState.LOST, False, Seen.HANDSHAKE_OK, "no word from the cage at tcp://c:1 for 3s"),
    (SessionState.REFUSED, False, Seen.HANDSHAKE_OK, "refused this client"),
    (SessionState.JOINING, False, Seen.HANDSHAKE_OK, "PUB has not answered"),
    (SessionState.CONNECTING, False, None, "nothing accepted a connection"),
])
def test_why_a_cage_cannot_be_asked(state: SessionState, closed: bool, seen: Seen | None,
                                    says: str) -> None:
    """Each state of a node's session with a cage gives its reason ('' when it can be asked)."""
    why = unreachable(state, closed, seen, "tcp://c:1", False, 3.0)
    assert (says in why) if says else why == ""


@pytest.mark.parametrize(("fields", "error"), [
    ({}, "key is missing"),
    ({"key": "a"}, "dataindex is missing"),
    ({"key": "a", "dataindex": "d", "args": "{nope"}, "args is not JSON"),
    ({"key": "a", "dataindex": "d", "timeout": "soon"}, "is not a number"),
    ({"key": "a", "dataindex": "d", "timeout": "0"}, "above 0"),
    ({"key": "a", "dataindex": "d", "timeout": str(MAX_TIMEOUT + 1)}, "at most"),
    ({"key": "a", "dataindex": "d", "timeout": "nan"}, "above 0"),
    ({"key": "a\x00", "dataindex": "d"}, "NUL"),
    ({"key": ["a"], "dataindex": "d"}, "must be text"),
    ({"key": "cage", "dataindex": "stop", "args": '{"name": "x"}'}, "read-only"),
])
def test_malformed_forms_say_which_field(fields: dict[str, Any], error: str) -> None:
    """Each malformed field gets a message naming it."""
    with pytest.raises(FormError, match=error):
        parse_request(fields, control=False)


def test_a_good_form_parses() -> None:
    """Key, dataindex, JSON args, timeout and 'all' come through; control allows the cage's stop."""
    form = parse_request({"key": " cage ", "dataindex": "stop", "args": '{"name": "x"}',
                          "timeout": "2.5", "all": "1"}, control=True)
    assert (form.key, form.dataindex, form.args, form.timeout, form.gather) == (
        "cage", "stop", {"name": "x"}, 2.5, True)
    assert parse_request({"key": "a", "dataindex": "d"}, control=False).args is None


def test_to_json_shows_what_json_cannot_hold() -> None:
    """Bytes, NaN and odd map keys become text; the result parses."""
    text = to_json({"b": b"\xffx", "f": math.nan, "n": [math.inf], (1, 2): 1, 3: None})
    assert json.loads(text) == {"b": "\ufffdx", "f": "nan", "n": ["inf"], "(1, 2)": 1,
                                "3": None}


def test_declared_columns_are_answered_in_pubdata() -> None:
    """A Service's columns reach its Bus and show in pubdata for the tables it publishes."""
    from zdse.node.bus import Bus
    from zdse.node.service import Service

    class Declares(Service):
        columns: ClassVar[dict[str, tuple[str, ...]]] = {
            "vms": ("name", "uuid"), "unpublished": ("x",)}

    bus = Bus("columns.test")
    Declares("columns.test", {}).attach(bus)
    bus.core.publish("vms", [["a", "1"]])
    bus.core.publish("plain", [[1]])
    pubdata = bus.pubdata()
    assert pubdata["vms"]["columns"] == ["name", "uuid"]
    assert "columns" not in pubdata["plain"]
    assert "unpublished" not in pubdata
