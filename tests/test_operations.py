"""Operations over real processes: a cage that supervises its nodes from a config
file, zdse-ctl start/stop/reload, config reloads, Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, Updates, run
from tests.prometheus import scrape_until
from tests.supervised import file_service, services, supervised_cage, wait_all, write_config
from tests.support import ROOT, Processes, free_port, require
from tests.vcsim import BINARY as VCSIM
from zdse.wire.curve import load_public


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    """Wait for process ``pid`` (not our child) to end, on a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        assert readable, f"process {pid} still runs after {timeout}s"
    finally:
        os.close(fd)


def test_supervised_nodes_register_a_killed_one_is_restarted_and_all_stop_with_the_cage(
    procs: Processes, tmp_path: Path,
) -> None:
    """Both configured services run; kill -9 of one gets it restarted (restarts=1); SIGTERM
    stops the cage and its nodes."""
    cluster, cage, _ = supervised_cage(procs, tmp_path, {
        "files.boston": file_service(tmp_path, "boston", {"vms": [["a"]]}, "files.all"),
        "files.chicago": file_service(tmp_path, "chicago", {"vms": [["b"]]}, "files.all"),
    })
    before = services(cluster)
    for name in ("files.boston", "files.chicago"):
        row = before[name]
        assert (row["state"], row["supervised"], row["restarts"]) == ("running", True, 0)
        assert row["addresses"] == ["files.all"]
        assert row["pid"] > 0

    os.kill(before["files.boston"]["pid"], signal.SIGKILL)
    crashed = cage.wait_event("service.crashed", service="files.boston")
    assert crashed["error"].startswith("killed by SIGKILL")
    cage.wait_event("service.restarted", service="files.boston", restarts=1)
    cage.wait_event("service.running", service="files.boston")
    after = services(cluster)
    assert after["files.boston"]["restarts"] == 1
    assert after["files.boston"]["state"] == "running"
    assert after["files.boston"]["pid"] != before["files.boston"]["pid"]
    assert after["files.chicago"]["pid"] == before["files.chicago"]["pid"]
    assert after["files.chicago"]["restarts"] == 0

    cage.kill(signal.SIGTERM)
    assert cage.popen.returncode == 0
    wait_all(cage, "service.stopped", {"files.boston", "files.chicago"})
    for name in ("files.boston", "files.chicago"):
        wait_gone(after[name]["pid"])


def test_nodes_end_with_the_cage_even_on_kill_9(procs: Processes, tmp_path: Path) -> None:
    """A cage killed outright takes its nodes with it: none is left to hold a name."""
    cluster, cage, _ = supervised_cage(procs, tmp_path, {
        "orphan.test": file_service(tmp_path, "orphan", {"t": [[1]]}),
    })
    pid = services(cluster)["orphan.test"]["pid"]
    cage.kill(signal.SIGKILL)
    wait_gone(pid)


def test_ctl_stop_start_and_reload_a_service(procs: Processes, tmp_path: Path) -> None:
    """stop ends the node (subscribers lose it), start brings it back, reload gives a new
    process and subscribers a fresh snapshot."""
    cluster, cage, _ = supervised_cage(procs, tmp_path, {
        "files.x": file_service(tmp_path, "x", {"vms": [["vm1", "on"]]}),
    })

    async def ctl(*args: str) -> dict[str, Any]:
        result = await asyncio.to_thread(cluster.ctl, *args, "--json")
        assert result.returncode == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    async def event(name: str, **match: Any) -> dict[str, Any]:
        return await asyncio.to_thread(cage.wait_event, name, **match)

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("files.x", "vms", updates)
            # "running" means registered: the first poll may still be on its way,
            # and a snapshot of a table not yet published is empty.
            await updates.until_views({"files.x": [["vm1", "on"]]})
            pid = (await ctl("start", "files.x"))["pid"]  # running already: nothing changes
            assert pid > 0

            stopped = await ctl("stop", "files.x")
            assert stopped["state"] == "stopping"
            await event("service.stopped", service="files.x")
            await updates.until(lambda u: u.kind == "lost" and u.publisher == "files.x")
            row = {r["name"]: r for r in await asyncio.to_thread(
                lambda: list(services(cluster).values()))}["files.x"]
            assert (row["state"], row["pid"]) == ("stopped", 0)

            started = await ctl("start", "files.x")
            assert started["state"] == "starting"
            await event("service.running", service="files.x")
            # A snapshot, or "unpublished" if it announced itself before its first poll.
            await updates.until(lambda u: u.kind in ("snapshot", "unpublished"))
            await updates.until_views({"files.x": [["vm1", "on"]]})

            reloaded = await ctl("reload", "files.x")
            assert reloaded["state"] == "stopping"
            new = await event("service.started", service="files.x", reason="reload")
            assert new["pid"] not in (pid, started["pid"])
            # The new process is a new epoch: the subscriber starts over from a snapshot
            # (of nothing, "unpublished", if it comes before the new process's first poll).
            fresh = await updates.until(lambda u: u.kind in ("snapshot", "unpublished"))
            assert fresh.publisher == "files.x"
            await updates.until_views({"files.x": [["vm1", "on"]]})

    run(scenario())
    unknown = cluster.ctl("stop", "nobody")
    assert unknown.returncode == 5
    assert "no supervised service named 'nobody'" in unknown.stderr


def test_sighup_and_reload_config_start_added_and_stop_removed_services(
    procs: Processes, tmp_path: Path,
) -> None:
    """After the config changes, SIGHUP (or zdse-ctl reload-config) starts what was added and
    stops what was removed; the unchanged service keeps its process."""
    a = file_service(tmp_path, "a", {"t": [[1]]})
    b = file_service(tmp_path, "b", {"t": [[2]]})
    c = file_service(tmp_path, "c", {"t": [[3]]})
    cluster, cage, config = supervised_cage(procs, tmp_path, {"svc.a": a, "svc.b": b})
    pid_a = services(cluster)["svc.a"]["pid"]

    write_config(config, {"svc.a": a, "svc.c": c})
    cage.kill(signal.SIGHUP)
    reloaded = cage.wait_event("config.reloaded")
    assert (reloaded["added"], reloaded["removed"], reloaded["unchanged"]) == (
        ["svc.c"], ["svc.b"], ["svc.a"])
    cage.wait_event("service.running", service="svc.c")
    rows = services(cluster)
    assert "svc.b" not in rows
    assert rows["svc.a"]["pid"] == pid_a
    assert rows["svc.c"]["state"] == "running"

    write_config(config, {"svc.a": a})
    result = cluster.ctl("reload-config", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"added": [], "removed": ["svc.c"], "changed": [],
                                         "unchanged": ["svc.a"]}
    cage.wait_event("service.removed", service="svc.c")
    assert services(cluster)["svc.a"]["pid"] == pid_a

    config.write_text('[services."svc.a"]\nmodul = "file"\n')
    broken = cluster.ctl("reload-config")
    assert broken.returncode == 5
    assert "has no module" in broken.stderr
    assert services(cluster)["svc.a"]["pid"] == pid_a  # a bad file changes nothing

    # An option its module refuses: the reload is refused, not the service restarted into it.
    write_config(config, {"svc.a": {**a, "options": {**a["options"], "colour": "red"}},
                          "svc.c": c})
    refused = cluster.ctl("reload-config")
    assert refused.returncode == 5
    assert "[services.\"svc.a\"]: module file has no option 'colour'" in refused.stderr
    rows = services(cluster)
    assert (rows["svc.a"]["pid"], rows["svc.a"]["state"]) == (pid_a, "running")
    assert "svc.c" not in rows  # nothing of that file was taken


def test_a_module_that_crashes_at_once_ends_failed_with_its_error(
    procs: Processes, tmp_path: Path,
) -> None:
    """A node that exits at start is restarted max_restarts times, then FAILED with its error."""
    cluster = Cluster(procs, tmp_path)
    config = tmp_path / "zdse.toml"
    # Its options pass the cage's check; the cage refuses its name, held by another node.
    spec = {**file_service(tmp_path, "broken", {"t": [[1]]}), "autostart": False}
    write_config(config, {"broken": spec})
    cage = cluster.start_cage("--config", str(config))
    cluster.file_node("broken", {"t": [[1]]})
    assert cluster.ctl("start", "broken").returncode == 0
    failed = cage.wait_event("service.failed", service="broken")
    assert "name 'broken' is held by a live node" in failed["error"]
    row = services(cluster)["broken"]
    assert (row["state"], row["pid"], row["restarts"]) == ("failed", 0, 2)
    assert row["last_error"].startswith("exited with code 1: ")
    assert "name 'broken' is held by a live node" in row["last_error"]
    table = cluster.ctl("services")
    assert "failed" in table.stdout
    assert "LAST ERROR" in table.stdout


def test_metrics_endpoint_counts_traffic(procs: Processes, tmp_path: Path) -> None:
    """Scraping --metrics shows nodes, routes and service states, and counters move with
    traffic."""
    port = free_port()
    cluster, _, _ = supervised_cage(procs, tmp_path, {
        "files.m": file_service(tmp_path, "m", {"t": [[1]]}),
    }, "--metrics", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    running = ("zdse_service_state", (("service", "files.m"), ("state", "running")))
    before = scrape_until(url, lambda s: s.get(running) == 1)
    assert before[("zdse_loop_responsive", ())] == 1
    assert before[("zdse_nodes", ())] == 1
    assert before[("zdse_routes", ())] == 2  # its name and allservices
    assert before[running] == 1
    assert before[("zdse_service_restarts_total", (("service", "files.m"),))] == 0

    def routed(sample: dict[tuple[str, tuple[tuple[str, str], ...]], float], kind: str) -> float:
        return sample[("zdse_messages_routed_total", (("kind", kind),))]

    async def traffic() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("files.m", "t", updates)
            # "running" means registered: the file's tables come a moment later.
            await updates.until_views({"files.m": [[1]]})
            for _ in range(5):
                assert await bus.request("files.m", "t") == [[1]]
            with pytest.raises(Exception, match="nobody"):
                await bus.request("nobody", "t")
            during = await asyncio.to_thread(
                scrape_until, url, lambda s: s[("zdse_subscriptions", ())] >= 1)
            assert during[("zdse_nodes", ())] == 2
            assert during[("zdse_subscriptions", ())] >= 1

    run(traffic())
    noroute = ("zdse_noroute_answers_total", (("kind", "request"),))
    # A scrape answers from the loop's last sample: wait for one taken after all the traffic.
    after = scrape_until(url, lambda s: routed(s, "reply") >= routed(before, "reply") + 5
                         and s[noroute] >= before[noroute] + 1)
    assert routed(after, "request") >= routed(before, "request") + 5
    assert routed(after, "reply") >= routed(before, "reply") + 5
    assert routed(after, "snapshot") >= routed(before, "snapshot") + 1
    assert after[noroute] == before[noroute] + 1
    assert after[("zdse_loop_batch_size_count", ())] > before[("zdse_loop_batch_size_count", ())]
    assert after[("zdse_bad_frames_total", ())] == 0
    assert after[("zdse_node_events_total", (("event", "registered"),))] >= 2


def test_make_run_demo_supervises_file_and_vsphere_services(
    procs: Processes, tmp_path: Path,
) -> None:
    """scripts/run-demo (make run) starts the cage from examples/zdse.toml: the two file
    services and a vsphere service on the simulator all run and answer; vms moves."""
    require("the vCenter simulator build/vcsim-zdse (make sim)", VCSIM.is_file())
    cluster = Cluster(procs, tmp_path)
    port = free_port()
    env = dict(cluster.env, ZDSE_DEMO_DIR=str(tmp_path / "demo"))
    demo = procs.start("run-demo", [str(ROOT / "scripts" / "run-demo"), "--metrics",
                                    f"127.0.0.1:{port}"], env=env)
    wait_all(demo, "service.running", {"files.boston", "files.chicago", "vSphere.demo"},
             timeout=60)
    rows = services(cluster)
    assert all(rows[n]["state"] == "running"
               for n in ("files.boston", "files.chicago", "vSphere.demo"))
    boston = cluster.ctl("req", "files.boston", "hosts")
    assert boston.returncode == 0, boston.stderr

    async def vsphere_hosts() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("vSphere.node.list", "hosts", updates)
            await updates.until(lambda u: u.publisher == "vSphere.demo" and len(u.view or []) == 2,
                                timeout=60)
            # The simulator churns: the vms table moves on its own (issue 17).
            vms = Updates()
            bus.subscribe("vSphere.node.list", "vms", vms)
            await vms.until(lambda u: len(u.view or []) == 6, timeout=60)
            delta = await vms.until(lambda u: u.kind == "delta", timeout=60)
            assert delta.data[0] == "rows"

    run(vsphere_hosts(), timeout=150)
    metrics = scrape_until(f"http://127.0.0.1:{port}/metrics",
                           lambda s: s.get(("zdse_nodes", ()), 0) >= 3)
    assert metrics[("zdse_nodes", ())] >= 3


def test_supervised_nodes_use_their_curve_key_from_the_config(
    procs: Processes, tmp_path: Path,
) -> None:
    """With CURVE set in the config, each node connects with its curve_key and registers."""
    cluster = Cluster(procs, tmp_path)
    for who in ("cage", "node"):
        result = cluster.ctl("keygen", str(tmp_path / "keys" / who))
        assert result.returncode == 0, result.stderr
    node_key = load_public(str(tmp_path / "keys" / "node.key")).decode()
    authorized = tmp_path / "authorized.toml"
    authorized.write_text(f'["{node_key}"]\nnames = ["secure.*", "ctl.*"]\n')
    service = file_service(tmp_path, "secure", {"t": [[1]]})
    service["curve_key"] = str(tmp_path / "keys" / "node.key_secret")
    config = tmp_path / "zdse.toml"
    write_config(config, {"secure.one": service},
                 curve_secret=str(tmp_path / "keys" / "cage.key_secret"),
                 authorized=str(authorized))
    cage = cluster.start_cage("--config", str(config))
    cage.wait_event("service.running", service="secure.one")
    cluster.env.update(ZDSE_CURVE_KEY=str(tmp_path / "keys" / "node.key_secret"),
                       ZDSE_CAGE_KEY=str(tmp_path / "keys" / "cage.key"))
    assert services(cluster)["secure.one"]["state"] == "running"


def test_the_docs_name_every_log_event() -> None:
    """docs/operations.md (docs/amqp.md for the amqp module) names each event the
    code logs by a literal name, and each reason a node leaves the cage for."""
    docs = "".join((ROOT / "docs" / name).read_text() for name in ("operations.md", "amqp.md"))
    logged = re.compile(r'\.(?:debug|info|warning|error|exception)\(\s*"([a-z_]+\.[a-z_]+)"'
                        r'|events\.append\(\(\s*"([a-z_]+\.[a-z_]+)"'
                        r'|\b_?[lL]og\(\s*"([a-z_]+\.[a-z_]+)"')
    left = re.compile(r'_remove\([^,]+, "([a-z-]+)"')
    events: set[str] = set()
    for source in [*(ROOT / "zdse").rglob("*.py"), *(ROOT / "nodes").glob("*.py")]:
        text = source.read_text()
        events.update(a or b or c for a, b, c in logged.findall(text))
        events.update(left.findall(text))
    assert {"node.left", "send.dropped", "re-registered"} <= events  # the patterns work
    assert sorted(e for e in events if f"`{e}`" not in docs) == []
