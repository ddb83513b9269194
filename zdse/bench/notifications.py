"""``zdse-bench notifications [OPTIONS]``: the amqp bridge's benchmark.

It runs ``benchmarks/notifications.py`` of the source checkout this package
is installed from (``make install`` installs it editable): the benchmark
starts its RabbitMQ and oslo.messaging's Notifier with the test suite's own
launchers (``tests/rabbitmq.py``, ``tests/oslo_notifier.py``), which an
installed wheel does not carry. OPTIONS are the script's (``--help``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["SCRIPT", "main"]

#: The benchmark, next to this package in a source checkout.
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "notifications.py"


def main(argv: list[str]) -> int:
    """Run the benchmark with ``argv``; return its exit status (2 without a checkout)."""
    if not SCRIPT.is_file():
        print("zdse-bench notifications: needs a source checkout of zdse "
              f"(no {SCRIPT.name} next to the package); see benchmarks/README.md",
              file=sys.stderr)
        return 2
    try:
        return subprocess.call([sys.executable, str(SCRIPT), *argv])
    except KeyboardInterrupt:
        return 130
