"""Reading a real zdse-proxy's Prometheus endpoint in tests."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import WAIT


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Read a Prometheus endpoint: (sample name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_until(url: str, pred: Callable[[Sample], bool], timeout: float = WAIT) -> Sample:
    """Scrape until ``pred`` holds: a scrape shows the loop's last tick (a quarter
    heartbeat ago), so what just happened shows at a tick to come."""
    deadline = time.monotonic() + timeout
    while True:
        sample = scrape(url)
        if pred(sample) or time.monotonic() > deadline:
            return sample
