"""Print the Markdown results table of a benchmarks/run-all output folder.

    .venv/bin/python benchmarks/table.py benchmarks/results/latest
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(folder: Path, scenario: str) -> dict[str, Any] | None:
    """One scenario's report, or None if it was not run."""
    path = folder / f"{scenario}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(value: float | None, unit: str = "") -> str:
    """A number for the table."""
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}"


def main(folder: Path) -> None:
    """Print the table."""
    rows = [
        "| scenario | metric | zdse | NATS | floor | raw pyzmq | ratio (> 1: zdse ahead) "
        "| raw pyzmq vs NATS | goal | met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    goal_of = {}
    for scenario, metric, unit in (
        ("unicast", "msgs_per_s", " msg/s"),
        ("fanout", "deliveries_per_s", " /s"),
        ("reqrep", "p50_us", " us"),
        ("reqrep", "p99_us", " us"),
        ("reqrep", "rps", " req/s"),
        # The same run with every process on one CPU (taskset): no wake-up
        # crosses CPUs. A diagnostic, not the goal's measurement.
        ("reqrep-one-cpu", "p50_us", " us"),
        ("reqrep-one-cpu", "p99_us", " us"),
    ):
        report = load(folder, scenario)
        if report is None:
            continue
        if scenario == "reqrep-one-cpu":
            report["goals"] = []
        for goal in report["goals"]:
            goal_of[(scenario, goal["goal"])] = goal
        goal = next((g for (s, _), g in goal_of.items() if s == scenario
                     and _metric_of(g["goal"]) == metric), None)
        ratio = (report["ratio"] or {}).get(metric)
        rows.append(
            f"| {scenario} | {metric} | {fmt(report['zdse'][metric], unit)} "
            f"| {fmt((report['nats'] or {}).get(metric), unit)} "
            f"| {fmt((report['floor'] or {}).get(metric), unit)} "
            f"| {fmt((report.get('raw') or {}).get(metric), unit)} | {fmt(ratio, 'x')} "
            f"| {fmt((report.get('raw_vs_nats') or {}).get(metric), 'x')} "
            f"| {goal['goal'] if goal else ''} "
            f"| {('yes' if goal['met'] else 'NO') if goal else ''} |"
        )
    routes = load(folder, "routes")
    if routes is not None:
        for table in routes["zdse"]["tables"]:
            rows.append(
                f"| routes | {table['patterns']:,.0f} patterns | "
                f"{fmt(table['repeated_per_s'])} repeated/s, "
                f"{fmt(table['first_seen_per_s'])} first-seen/s | - | - | - | - | - | | |"
            )
        goal = routes["goals"][0]
        rows.append(f"| routes | repeated 100,000 vs 100 | {fmt(goal['ratio'], 'x')} | - | - "
                    f"| - | - | - | {goal['goal'].split(': ', 1)[1]} | "
                    f"{'yes' if goal['met'] else 'NO'} |")
    print("\n".join(rows))


def _metric_of(goal: str) -> str:
    if "p50" in goal:
        return "p50_us"
    if "p99" in goal:
        return "p99_us"
    if "fanout" in goal:
        return "deliveries_per_s"
    return "msgs_per_s"


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest"))
