"""zdse-web over plain HTTP against a real cage and a real file node: pages, API, bad input."""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path

from tests.harness import Cluster
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
