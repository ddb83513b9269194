"""``zdse-bench SCENARIO [--vs nats] [--json]``: measure the bus against NATS in one run.

Scenarios: ``unicast`` (1 sender -> cage -> 1 receiver, messages per
second), ``fanout`` (1 publisher -> N subscriber processes, deliveries per
second), ``reqrep`` (sequential requests: p50, p99, requests per second),
``routes`` (route-table look-ups per second at 100, 10,000 and 100,000
patterns), ``table`` (a big table's diff, snapshot, delta and pauses:
:mod:`zdse.bench.tables`). Networked scenarios also run through ``floor``, a bare pyzmq
forwarder (reqrep also with ``raw`` blocking pyzmq clients through one), and
with ``--vs nats`` through a ``nats-server`` started for the run; the
targets take turns round after round (A B, B A, ...) and the report gives
medians and ratios oriented so that > 1 means zdse is ahead. ``--cages N``
also runs the scenario through N cages side by side (every worker lists
them all: docs/redundancy.md) and gives the cost of that against one cage.

``zdse-bench notifications`` runs the amqp bridge's benchmark instead
(:mod:`zdse.bench.notifications`; benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TextIO

from zdse.bench import notifications, worker
from zdse.bench import routes as route_bench
from zdse.bench.scenarios import (
    ROUNDS,
    BenchError,
    Options,
    Target,
    nats_server_path,
    start_target,
)
from zdse.bench.stats import median, ratio
from zdse.cli.args import positive_float, positive_int
from zdse.procs import ProcError, Processes

__all__ = ["GOALS", "main"]

SCENARIOS = ("unicast", "fanout", "reqrep", "routes", "table")

#: Default messages per round (requests for reqrep, look-ups for routes).
DEFAULT_MSGS = {"unicast": 200_000, "fanout": 50_000, "reqrep": 5_000, "routes": 200_000,
                "table": 0}

#: The goals of issue 4, as (scenario, metric of the ratio, threshold, words).
#: Ratios are oriented so that > 1 means zdse is ahead.
GOALS = (
    ("unicast", "msgs_per_s", 2.0, "unicast >= 2.0x NATS"),
    ("reqrep", "p50_us", 1 / 0.7, "reqrep p50 <= 0.7x NATS's"),
    ("reqrep", "p99_us", 1.0, "reqrep p99 <= NATS's"),
    ("fanout", "deliveries_per_s", 1.5, "fanout >= 1.5x NATS"),
)
#: Routes: repeated-key look-ups at 100,000 patterns within 1.3x of at 100.
ROUTES_GOAL = 1 / 1.3

#: Per scenario, the headline metrics and whether higher is better.
METRICS: dict[str, list[tuple[str, bool]]] = {
    "unicast": [("msgs_per_s", True)],
    "fanout": [("deliveries_per_s", True)],
    "reqrep": [("p50_us", False), ("p99_us", False), ("rps", True)],
}
UNITS = {"msgs_per_s": "msg/s", "deliveries_per_s": "deliveries/s", "p50_us": "us p50",
         "p99_us": "us p99", "rps": "req/s"}


class Progress:
    """One status line on a terminal, nothing otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.on = stream.isatty()

    def show(self, text: str) -> None:
        """Replace the status line."""
        if self.on:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()

    def done(self) -> None:
        """Clear the status line."""
        self.show("")


def build_parser() -> argparse.ArgumentParser:
    """The command line of zdse-bench."""
    parser = argparse.ArgumentParser(
        prog="zdse-bench", description="Measure zdse's hot paths, side by side with NATS.",
    )
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--vs", choices=("nats",), default=None,
                        help="also run the scenario against a nats-server started for the run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--msgs", type=positive_int, default=None,
                        help="messages per round (requests for reqrep, look-ups for routes); "
                        f"defaults {DEFAULT_MSGS}")
    parser.add_argument("--size", type=positive_int, default=100,
                        help="payload bytes (default 100)")
    parser.add_argument("--rounds", type=positive_int, default=5,
                        help="rounds per target (default 5)")
    parser.add_argument("--subs", type=positive_int, default=4,
                        help="fanout: subscriber processes (default 4)")
    parser.add_argument("--burst", type=positive_int, default=100,
                        help="senders yield to their event loop every BURST messages "
                        "(default 100)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the bare pyzmq forwarder (the transport's floor)")
    parser.add_argument("--rows", type=positive_int, default=100_000,
                        help="table: rows of the vms-shaped table (default 100,000)")
    parser.add_argument("--timeout", type=positive_float, default=60.0,
                        help="seconds any one round may take (default 60)")
    parser.add_argument("--cages", type=positive_int, default=1,
                        help="also run through N cages side by side, every worker listing "
                        "them all, to measure what redundancy costs against one cage "
                        "(default 1: one cage only)")
    return parser


def run_networked(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Run unicast, fanout or reqrep against every target, interleaved by round."""
    opts = Options(args.msgs, args.size, args.burst, args.subs, args.timeout)
    names = ["zdse"] + (["cages"] if args.cages > 1 else []) + (
        ["nats"] if args.vs == "nats" else [])
    if not args.no_floor:
        # reqrep also measures raw pyzmq through a bare forwarder: the
        # transport's own latency, below which no ZeroMQ bus can go.
        names += ["floor", "raw"] if args.scenario == "reqrep" else ["floor"]
    one_round = ROUNDS[args.scenario]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with Processes() as procs:
        try:
            targets: list[Target] = []
            for name in names:
                progress.show(f"{args.scenario}: starting {name}")
                targets.append(start_target(procs, name, args.cages))
            for r in range(args.rounds):
                order = targets if r % 2 == 0 else targets[::-1]
                for target in order:
                    progress.show(f"{args.scenario}: round {r + 1}/{args.rounds}, {target.name}")
                    got = one_round(procs, target, opts)
                    results[target.name].append(got)
                    progress.show(f"{args.scenario}: round {r + 1}/{args.rounds}, {target.name}: "
                                  + _brief(args.scenario, got))
        finally:
            progress.done()
    summary = {name: _summarise(rounds) for name, rounds in results.items()}
    zdse = summary["zdse"]
    report: dict[str, Any] = {
        "scenario": args.scenario,
        "zdse": zdse,
        "nats": summary.get("nats"),
        "floor": summary.get("floor"),
        "ratio": _ratios(args.scenario, zdse, summary["nats"]) if "nats" in summary else None,
        "vs_floor": _ratios(args.scenario, zdse, summary["floor"]) if "floor" in summary
        else None,
    }
    if "cages" in summary:
        # What redundancy costs: N cages against one, round by round (> 1:
        # the N cages are ahead).
        report["cages"] = summary["cages"]
        report["cages_vs_one"] = _ratios(args.scenario, summary["cages"], zdse)
    if "raw" in summary:
        report["raw"] = summary["raw"]
        report["vs_raw"] = _ratios(args.scenario, zdse, summary["raw"])
        if "nats" in summary:
            # The transport alone against NATS: where it misses a goal, no
            # bus on ZeroMQ through a router process reaches it on this machine.
            report["raw_vs_nats"] = _ratios(args.scenario, summary["raw"], summary["nats"])
    report["goals"] = [
        _goal(report, metric, threshold, words)
        for scenario, metric, threshold, words in GOALS
        if scenario == args.scenario and report["ratio"] is not None
    ]
    return report


def _goal(report: dict[str, Any], metric: str, threshold: float, words: str) -> dict[str, Any]:
    ratio = report["ratio"].get(metric)
    goal = {"goal": words, "ratio": ratio, "needs": threshold, "met": (ratio or 0) >= threshold}
    if report.get("raw_vs_nats"):
        goal["raw_ratio"] = report["raw_vs_nats"].get(metric)
    return goal


def _brief(scenario: str, got: dict[str, float]) -> str:
    return ", ".join(f"{got[m]:,.0f} {UNITS[m]}" for m, _ in METRICS[scenario])


def _summarise(rounds: list[dict[str, float]]) -> dict[str, Any]:
    keys = rounds[0].keys() if rounds else ()
    out: dict[str, Any] = {k: median([r[k] for r in rounds]) for k in keys}
    out["rounds"] = rounds
    return out


def _ratios(scenario: str, zdse: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Per metric, the median over rounds of zdse's result against ``other``'s.

    The targets run back to back within a round, so a round's two results
    share the machine's conditions: a paired comparison, which load from
    elsewhere moves far less than a ratio of the two medians would.
    """
    out: dict[str, Any] = {}
    for metric, higher_better in METRICS[scenario]:
        pairs = zip(zdse["rounds"], other["rounds"], strict=True)
        per_round = [
            ratio(z[metric], o[metric]) if higher_better else ratio(o[metric], z[metric])
            for z, o in pairs
        ]
        known = [r for r in per_round if r is not None]
        out[metric] = median(known) if known else None
    return out


def run_routes(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Look-ups per second at each table size (in this process)."""
    progress.show(f"routes: tables of {', '.join(f'{n:,}' for n in route_bench.SIZES)} patterns")
    tables = route_bench.measure(route_bench.SIZES, args.msgs, args.rounds)
    progress.done()
    held = route_bench.largest_vs_smallest(tables)
    return {
        "scenario": "routes",
        "zdse": {"tables": tables, "repeated_largest_vs_smallest": held},
        # nats-server's subject look-up runs inside the Go server and cannot
        # be timed from a client on its own; routes measures zdse's table.
        "nats": None,
        "floor": None,
        "ratio": None,
        "vs_floor": None,
        "goals": [{"goal": "routes: repeated-key look-ups at 100,000 patterns within 1.3x "
                           "of the rate at 100", "ratio": held, "needs": ROUTES_GOAL,
                   "met": (held or 0) >= ROUTES_GOAL}],
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import msgpack
    import zmq

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(map(str, msgpack.version)),
    }
    path = nats_server_path()
    if path is not None:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=10, check=False)
        info["nats_server"] = out.stdout.strip()
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        info["nats_py"] = importlib.metadata.version("nats-py")
    return info


def render(report: dict[str, Any], settings: dict[str, Any]) -> str:
    """The report as a readable table."""
    lines = [f"zdse-bench {report['scenario']}  "
             + "  ".join(f"{k}={v}" for k, v in settings.items())]
    if report["scenario"] == "routes":
        lines.append(f"{'patterns':>10} {'repeated/s':>14} {'first-seen/s':>14}")
        for t in report["zdse"]["tables"]:
            lines.append(f"{t['patterns']:>10,.0f} {t['repeated_per_s']:>14,.0f} "
                         f"{t['first_seen_per_s']:>14,.0f}")
    else:
        metrics = METRICS[report["scenario"]]
        lines.append(f"{'':8}" + "".join(f"{UNITS[m]:>16}" for m, _ in metrics))
        for name in ("zdse", "cages", "nats", "floor", "raw"):
            if report.get(name):
                lines.append(f"{name:8}" + "".join(f"{report[name][m]:>16,.0f}"
                                                    for m, _ in metrics))
        for label, key in (("cages/zdse", "cages_vs_one"), ("zdse/nats", "ratio"),
                           ("zdse/floor", "vs_floor"),
                           ("zdse/raw", "vs_raw"), ("raw/nats", "raw_vs_nats")):
            if report.get(key):
                lines.append(f"{label:10}" + "".join(
                    f"{report[key][m]:>14.2f}x" if report[key][m] else f"{'-':>15}"
                    for m, _ in metrics))
        lines.append("ratios > 1 mean zdse is ahead (for latencies: nats / zdse)")
    for goal in report["goals"]:
        value = "n/a" if goal["ratio"] is None else f"{goal['ratio']:.2f}"
        line = (f"goal {goal['goal']}: ratio {value}, needs >= {goal['needs']:.2f}: "
                + ("met" if goal["met"] else "NOT met"))
        if goal.get("raw_ratio") is not None:
            line += f" (raw pyzmq alone: {goal['raw_ratio']:.2f})"
        lines.append(line)
    return "\n".join(lines)


def _main_table(args: argparse.Namespace) -> int:
    """``zdse-bench table``: its own report (see zdse.bench.tables)."""
    from zdse.bench import tables

    try:
        report = tables.run_table(args.rows, min(args.rounds, 3), args.timeout)
    except (BenchError, ProcError) as exc:
        print(f"zdse-bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    report["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report["machine"] = machine()
    print(json.dumps(report) if args.json else tables.render(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one scenario and print its report."""
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["notifications"]:
        # The amqp bridge's benchmark: a script of the source checkout.
        return notifications.main(words[1:])
    args = build_parser().parse_args(argv)
    error = worker.loop_error()
    if error is not None:
        print(f"zdse-bench: {error}", file=sys.stderr)
        return 2
    if args.msgs is None:
        args.msgs = DEFAULT_MSGS[args.scenario]
    progress = Progress(sys.stderr)
    if args.scenario == "table":
        return _main_table(args)
    runner: Callable[[argparse.Namespace, Progress], dict[str, Any]] = (
        run_routes if args.scenario == "routes" else run_networked)
    try:
        report = runner(args, progress)
    except (BenchError, ProcError) as exc:
        print(f"zdse-bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    settings = {"msgs": args.msgs, "rounds": args.rounds}
    if args.scenario != "routes":
        settings.update(size=args.size, burst=args.burst)
    if args.scenario == "fanout":
        settings["subs"] = args.subs
    if args.cages > 1:
        settings["cages"] = args.cages
    report["settings"] = settings
    report["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report["machine"] = machine()
    if args.json:
        print(json.dumps(report))
    else:
        print(render(report, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
