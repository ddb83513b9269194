"""Scrapes of a real zdse-proxy --metrics by many real HTTP clients at once: each is
answered from the loop's last sample, none waits behind another."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

from tests.harness import Cluster
from tests.support import Processes, free_port
from zdse.cage.core import CageCore
from zdse.cage.metrics import Exchange, Readings, take_readings

#: Scrapes sent at once, and the time each must be answered in (issue 12).
CONCURRENT = 200
WITHIN = 1.0


def test_two_hundred_concurrent_scrapes_are_all_answered_within_a_second(
    procs: Processes, tmp_path: Path,
) -> None:
    """200 HTTP clients scrape at the same moment: every one gets the cage's metrics
    (loop responsive) within 1 s."""
    port = free_port()
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage("--metrics", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as first:  # the server is up
        assert b"zdse_loop_responsive 1.0" in first.read()

    start = threading.Barrier(CONCURRENT)
    took: list[float] = []
    failed: list[str] = []

    def scrape() -> None:
        start.wait()
        began = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except OSError as exc:
            failed.append(repr(exc))
            return
        took.append(time.monotonic() - began)
        if b"zdse_loop_responsive 1.0" not in body:
            failed.append("loop not responsive")

    threads = [threading.Thread(target=scrape) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failed == []
    assert len(took) == CONCURRENT
    assert max(took) < WITHIN, sorted(took)[-5:]


def test_a_scrape_takes_the_last_sample_and_never_waits_for_the_loop() -> None:
    """get() answers at once with the last tick's sample; a sample older than the
    timeout (the loop is stuck) is no answer."""
    now = [100.0]
    core = CageCore("epoch")
    taken: list[Readings] = []

    def make(at: float) -> Readings:
        taken.append(take_readings(core, None, at))
        return taken[-1]

    exchange = Exchange(make, timeout=2.0, clock=lambda: now[0])
    assert exchange.get() is None  # no tick yet
    exchange.tick(100.0)
    now[0] = 101.5
    assert exchange.get() is taken[0]
    assert exchange.get() is taken[0]
    assert len(taken) == 1  # scrapes take no sample of their own
    now[0] = 102.5
    assert exchange.get() is None
    exchange.tick(102.5)
    assert exchange.get() is taken[1]
