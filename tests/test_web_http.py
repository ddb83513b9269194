"""zdse-web over plain HTTP against real cages and real file nodes: pages, API, bad input,
several cages."""

from __future__ import annotations

import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness import WAIT, Cages, Cluster
from tests.supervised import file_service, wait_all, write_config
from tests.support import BIN, Processes
from tests.webproc import fetch, fetch_json, start_web


def test_pages_api_and_bad_input(procs: Processes, tmp_path: Path) -> None:
    """Known pages answer 200, unknown service/dataindex 404, malformed forms a clear 400."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    cluster.file_node("files.boston", {"vms": [["a", 1]], "hosts": {"h": 1}})
    _, url = start_web(cluster)

    status, overview = fetch_json(f"{url}/api/overview")
    assert status == 200
    assert overview["reachable"]
    assert not overview["control"]
    assert "files.boston" in [s["name"] for s in overview["services"]]
    assert fetch(f"{url}/")[0] == 200
    assert fetch(f"{url}/service/files.boston")[0] == 200
    assert fetch(f"{url}/service/files.boston/vms")[0] == 200
    assert fetch_json(f"{url}/api/services/files.boston/vms") == (200, [["a", 1]])

    status, kind, body = fetch(f"{url}/service/nobody")
    assert (status, kind) == (404, "text/html")
    assert "no service is called" in body
    status, kind, body = fetch(f"{url}/service/files.boston/nothing")
    assert (status, kind) == (404, "text/html")
    assert "publishes no dataindex" in body
    assert fetch_json(f"{url}/api/services/nobody")[0] == 404

    form = urllib.parse.urlencode({"key": "files.boston", "dataindex": "vms",
                                   "args": "{not json"}).encode()
    status, _, body = fetch(f"{url}/request", form)
    assert status == 400
    assert "args is not JSON" in body
    form = urllib.parse.urlencode({"key": "files.boston", "dataindex": "vms"}).encode()
    status, _, body = fetch(f"{url}/request", form)
    assert status == 200
    assert "request-answer" in body
    assert "&quot;a&quot;" in body
    status, answer = fetch_json(f"{url}/api/request", {"key": "nobody", "dataindex": "x"})
    assert (status, answer["error"]) == (404, "noroute")
    status, answer = fetch_json(f"{url}/api/request", {"key": "", "dataindex": "x"})
    assert (status, answer["error"]) == (400, "bad_request")


def test_read_only_by_default_and_control_with_the_flag(procs: Processes,
                                                       tmp_path: Path) -> None:
    """Without --control the control API and the cage's stop are refused; with it they work."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    _, url = start_web(cluster)
    status, answer = fetch_json(f"{url}/api/services/x/stop", {})
    assert (status, answer["error"]) == (403, "read_only")
    status, answer = fetch_json(f"{url}/api/request",
                                {"key": "cage", "dataindex": "stop", "args": {"name": "x"}})
    assert status == 400
    assert "read-only" in answer["message"]

    _, url = start_web(cluster, "--control")
    status, answer = fetch_json(f"{url}/api/services/x/stop", {})
    # The cage supervises nothing here: its own error comes back, not a refusal.
    assert status == 502
    assert answer["error"] != "read_only"
    status, _, _ = fetch(f"{url}/api/services/x/stop", b"{}",
                         {"Content-Type": "application/json", "Origin": "http://elsewhere"})
    assert status == 403


def test_bad_flags_are_one_line_errors() -> None:
    """A malformed --listen or --router ends zdse-web with exit 2 and one line, no traceback."""
    for argv in (["--listen", "nowhere"], ["--router", "udp://x"]):
        done = subprocess.run([str(BIN / "zdse-web"), *argv], capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert "zdse-web" in done.stderr


def _cage_rows(url: str) -> dict[str, dict[str, Any]]:
    """The overview now (every cage asked), its cage rows by ROUTER, and the overview."""
    status, overview = fetch_json(f"{url}/api/overview")
    assert status == 200
    return {row["router"]: row for row in overview["cages"]} | {"": overview}


def _cages_of(overview: dict[str, Any]) -> dict[str, list[str]]:
    return {s["name"]: s["cages"] for s in overview["services"] if s.get("state") != "gone"}


def test_two_cages_each_shown_one_killed_then_back(procs: Processes, tmp_path: Path) -> None:
    """With two cages the overview has a row per cage and each service names the cages that
    know it; kill -9 one: it is unreachable, the other's view and the pages remain; restart
    it: it is back, with a new epoch, and knows the services again."""
    cages = Cages(procs, tmp_path, count=2)
    cages.start_all()
    a, b = cages.only(0), cages.only(1)
    (tmp_path / "boston.json").write_text('{"vms": [["a", 1]]}')
    boston = cages.start_node("file", "files.boston", wait=False,
                              path=tmp_path / "boston.json")
    cages.wait_registered(boston)
    (tmp_path / "solo.json").write_text('{"t": [1]}')
    solo = cages.spawn("files.solo", [str(BIN / "zdse-node"), "--module", "file", "--name",
                                      "files.solo", "--router", a.router, "--pub", a.pub,
                                      "--set", f"path={tmp_path / 'solo.json'}"])
    solo.wait_event("node.started")
    web, url = start_web(cages, connected=False)
    cages.wait_registered(web, "web.connected")

    rows = _cage_rows(url)
    assert [rows[r]["reachable"] for r in (a.router, b.router)] == [True, True]
    assert rows[a.router]["epoch"] == cages.started[0]["epoch"]
    assert rows[b.router]["epoch"] == cages.started[1]["epoch"]
    assert rows[a.router]["nodes"] == 3  # boston, solo, the web itself
    assert rows[b.router]["nodes"] == 2
    known = _cages_of(rows[""])
    assert known["files.boston"] == [a.router, b.router]
    assert known["files.solo"] == [a.router]
    assert fetch(f"{url}/")[2].count("<th>Cages</th>") == 2

    with urllib.request.urlopen(f"{url}/api/events/overview", timeout=WAIT):
        # An open front page: zdse-web polls every cage by itself meanwhile.
        old_epoch = rows[a.router]["epoch"]
        cages.kill_cage(0)
        web.wait_event("web.cage_unreachable", cage=a.router)
        rows = _cage_rows(url)
        assert not rows[a.router]["reachable"]
        assert rows[a.router]["error"]
        assert rows[a.router]["epoch"] == old_epoch
        assert rows[b.router]["reachable"]
        assert rows[""]["reachable"]
        known = _cages_of(rows[""])
        assert known["files.boston"] == [b.router]
        assert "files.solo" not in known  # only the dead cage knew it: listed as gone
        # The rest of the page works through the other cage.
        assert fetch_json(f"{url}/api/services/files.boston/vms") == (200, [["a", 1]])

        cages.start_cage(index=0)
        boston.wait_event("node.registered", cage=a.router)
        web.wait_event("web.cage_back", cage=a.router)
        rows = _cage_rows(url)
        assert rows[a.router]["reachable"]
        assert rows[a.router]["epoch"] == cages.started[0]["epoch"] != old_epoch
        assert _cages_of(rows[""])["files.boston"] == [a.router, b.router]


def test_control_goes_to_the_cage_that_supervises_the_service(procs: Processes,
                                                              tmp_path: Path) -> None:
    """With two cages, stop from the web reaches the supervisor of the cage that runs the
    service (the second one listed), whichever cage carries zdse-web's other requests."""
    cages = Cages(procs, tmp_path, count=2)
    cages.start_cage(index=0)
    config = tmp_path / "zdse.toml"
    write_config(config, {"files.sup": file_service(tmp_path, "files.sup", {"t": [1]})})
    supervisor = cages.start_cage("--config", str(config), index=1)
    wait_all(supervisor, "service.running", {"files.sup"})
    web, url = start_web(cages, "--control", connected=False)
    cages.wait_registered(web, "web.connected")
    # No page open, nothing asked yet: the stop finds its cage by itself.
    status, answer = fetch_json(f"{url}/api/services/files.sup/stop", {})
    assert status == 200, answer
    supervisor.wait_event("service.stopped", service="files.sup")
    (row,) = [s for s in _cage_rows(url)[""]["services"] if s["name"] == "files.sup"]
    assert (row["state"], row["supervised"], row["cages"]) == (
        "stopped", True, [cages.only(1).router])
