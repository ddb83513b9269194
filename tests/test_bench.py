"""zdse-bench runs each scenario to the end: a smoke test of the bench, never of speed."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.support import BIN, require
from zdse.bench.cli import render
from zdse.bench.scenarios import nats_server_path

#: Tiny counts: this checks that the bench works, not how fast anything is.
SMALL = ["--msgs", "200", "--rounds", "1", "--timeout", "60"]


def bench(*args: str) -> dict[str, Any]:
    """Run zdse-bench with --json and return its report."""
    result = subprocess.run(
        [str(BIN / "zdse-bench"), *args, "--json"], capture_output=True, text=True,
        timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert {"scenario", "zdse", "nats", "ratio"} <= report.keys()
    return report


def need_nats() -> None:
    """Skip (fail under CI) without nats-server."""
    require("nats-server (Debian package nats-server)", nats_server_path() is not None)


def test_unicast_delivers_every_message_through_cage_and_floor() -> None:
    """unicast: the receiver gets all messages through the cage and the bare forwarder."""
    report = bench("unicast", *SMALL)
    assert report["scenario"] == "unicast"
    assert report["nats"] is None
    assert report["ratio"] is None
    for target in ("zdse", "floor"):
        assert [r["received"] for r in report[target]["rounds"]] == [200]
        assert report[target]["msgs_per_s"] > 0
    assert report["vs_floor"]["msgs_per_s"] > 0


def test_fanout_reaches_every_subscriber() -> None:
    """fanout: each subscriber process gets every delta; deliveries = msgs x subs."""
    report = bench("fanout", *SMALL, "--subs", "2", "--no-floor")
    rounds = report["zdse"]["rounds"]
    assert [r["deliveries"] for r in rounds] == [400]
    assert report["zdse"]["deliveries_per_s"] > 0


def test_reqrep_times_every_request() -> None:
    """reqrep: all requests answered through the cage, the floor and raw pyzmq; p50 <= p99."""
    report = bench("reqrep", *SMALL)
    for target in ("zdse", "floor", "raw"):
        assert report[target]["requests"] == 200
        assert 0 < report[target]["p50_us"] <= report[target]["p99_us"]
    assert report["vs_raw"]["p50_us"] > 0


def test_cages_runs_the_scenario_through_two_cages_too() -> None:
    """--cages 2: every subscriber gets each delta once through two cages, and the report
    gives the ratio of two cages to one."""
    report = bench("fanout", *SMALL, "--subs", "2", "--no-floor", "--cages", "2")
    assert [r["deliveries"] for r in report["cages"]["rounds"]] == [400]
    assert [r["deliveries"] for r in report["zdse"]["rounds"]] == [400]
    assert report["cages_vs_one"]["deliveries_per_s"] > 0
    assert report["settings"]["cages"] == 2


def test_routes_measures_every_table_size() -> None:
    """routes: look-up rates at 100, 10,000 and 100,000 patterns, and the goal's ratio."""
    report = bench("routes", "--msgs", "1000", "--rounds", "1")
    tables = report["zdse"]["tables"]
    assert [t["patterns"] for t in tables] == [100, 10_000, 100_000]
    assert all(t["repeated_per_s"] > 0 and t["first_seen_per_s"] > 0 for t in tables)
    assert report["zdse"]["repeated_largest_vs_smallest"] > 0
    assert [g["goal"].split(":")[0] for g in report["goals"]] == ["routes"]


@pytest.mark.nats
@pytest.mark.parametrize("scenario", ["unicast", "fanout", "reqrep"])
def test_vs_nats_runs_the_same_scenario_and_gives_ratios(scenario: str) -> None:
    """--vs nats: nats-server gets the same workload; the report carries both and ratios."""
    need_nats()
    # reqrep keeps its floor: the raw transport is set against NATS too.
    floor = [] if scenario == "reqrep" else ["--no-floor"]
    report = bench(scenario, *SMALL, "--subs", "2", *floor, "--vs", "nats")
    assert report["nats"] is not None
    if scenario == "unicast":
        assert [r["received"] for r in report["nats"]["rounds"]] == [200]
    elif scenario == "fanout":
        assert [r["deliveries"] for r in report["nats"]["rounds"]] == [400]
    else:
        assert report["nats"]["requests"] == 200
        assert report["raw_vs_nats"]["p50_us"] > 0
        raw_p50 = report["raw_vs_nats"]["p50_us"]
        assert report["goals"][0]["raw_ratio"] == raw_p50
        assert f"(raw pyzmq alone: {raw_p50:.2f})" in render(report, {})
    assert report["ratio"]
    assert all(v > 0 for v in report["ratio"].values())
    assert report["goals"]
    assert all(isinstance(g["met"], bool) for g in report["goals"])


@pytest.mark.parametrize(("flags", "error"), [
    (["--msgs", "0"], "argument --msgs: '0': must be at least 1"),
    (["--rounds", "many"], "argument --rounds: 'many': not a whole number"),
    (["--timeout", "-1"], "argument --timeout: '-1': must be a finite number above zero"),
])
def test_bad_flags_are_refused(flags: list[str], error: str) -> None:
    """A count below one, or a timeout at or below zero, is refused with exit code 2,
    before anything starts."""
    result = subprocess.run([str(BIN / "zdse-bench"), "unicast", *flags],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert error in result.stderr


def test_a_bad_loop_choice_is_refused_in_one_line() -> None:
    """ZDSE_BENCH_LOOP names asyncio or uvloop; anything else is exit 2, one line, before
    any process starts."""
    env = {**os.environ, "ZDSE_BENCH_LOOP": "tokio"}
    result = subprocess.run([str(BIN / "zdse-bench"), "routes", "--msgs", "10"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr == ("zdse-bench: ZDSE_BENCH_LOOP='tokio': expected 'asyncio' or "
                             "'uvloop'\n")


def test_notifications_runs_the_checkout_script_and_its_checks() -> None:
    """`zdse-bench notifications` hands its options to the bridge's benchmark script."""
    done = subprocess.run([str(BIN / "zdse-bench"), "notifications", "--sizes", "5,1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "--sizes: give table sizes in ascending order" in done.stderr


def test_table_reports_the_diff_ratio_times_pauses_and_memory() -> None:
    """table: diff against pack, publish-to-view times, pauses and RSS, for a small table."""
    result = subprocess.run(
        [str(BIN / "zdse-bench"), "table", "--rows", "5000", "--rounds", "1", "--json"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 5000
    assert report["pack_s"] > 0
    assert report["ratio"] == report["diff_s"] / report["pack_s"]
    for key in ("snapshot_s", "delta_s", "publisher_pause_s", "subscriber_pause_s"):
        assert report[key] >= 0, key
    for key in ("publisher_rss_mb", "subscriber_rss_mb", "cage_rss_mb"):
        assert report[key] > 10, key
    assert report["goals"][0]["goal"].startswith("diff <= 2x")
