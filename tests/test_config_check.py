"""Checking modules away from the cage's loop: a constructor that raises SystemExit,
exits the process or sleeps refuses its config (at start or on a reload), and routing
never waits for it. Real zdse-proxy, zdse-ctl and nodes; test modules installed on
their PYTHONPATH (tests.plugins)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import Cluster, Updates, run
from tests.plugins import install_module
from tests.supervised import file_service, services, supervised_cage, write_config
from tests.support import BIN, Processes
from zdse.modules.check import ModuleCheck, Verdict
from zdse.supervisor.core import ServiceSpec
from zdse.wire.limits import CONFIG_CHECK_TIMEOUT


def spec(name: str, **options: str) -> ServiceSpec:
    """A service of the test module ``odd`` with ``options``."""
    return ServiceSpec(name, "odd", (), tuple(options.items()))


@pytest.fixture
def odd_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Module ``odd`` (tests.plugins.MISBEHAVING) seen by this process's children."""
    env = install_module(tmp_path / "site", "odd")
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    return env


@pytest.mark.parametrize("exception", ["SystemExit", "KeyboardInterrupt", "BaseException"])
def test_a_constructor_raising_any_base_exception_is_a_refusal(
    odd_module: dict[str, str], exception: str,
) -> None:
    """A BaseException from a constructor is that service's refusal, with its type."""
    verdict = ModuleCheck([spec("fine.one"), spec("bad.one", **{"raise": exception}),
                           spec("never.reached")]).wait()
    assert verdict.service == "bad.one"
    assert verdict.error is not None
    assert f"refused its options: {exception}: from the constructor" in verdict.error


def test_a_constructor_that_ends_the_process_or_prints_is_told_apart(
    odd_module: dict[str, str],
) -> None:
    """os._exit in a constructor names the service being built; prints on stdout do not
    garble the answer; a clean run passes."""
    ended = ModuleCheck([spec("noisy", print='{"ok": true}'), spec("quitter", exit="3")]).wait()
    assert ended == Verdict("quitter", "the check process exited with code 3 while building it")
    assert ModuleCheck([spec("noisy", print='{"refused": "x"}'), spec("plain")]).wait() == Verdict()


def test_a_check_past_its_deadline_is_killed_and_names_the_slow_service(
    odd_module: dict[str, str],
) -> None:
    """A constructor that sleeps past the budget: the check ends at its deadline, naming it."""
    check = ModuleCheck([spec("quick"), spec("slow", sleep="60")], timeout=1.5)
    verdict = check.wait()
    assert verdict.service == "slow"
    assert verdict.error is not None
    assert "did not finish within 1.5 s" in verdict.error
    assert check.popen.returncode == -signal.SIGKILL


def test_the_cage_starts_not_with_a_module_that_raises_system_exit(
    procs: Processes, tmp_path: Path, odd_module: dict[str, str],
) -> None:
    """zdse-proxy exits 2 naming the service, not with the module's exit code."""
    cluster = Cluster(procs, tmp_path)
    cluster.env.update(odd_module)
    config = tmp_path / "zdse.toml"
    write_config(config, {"bad.one": {"module": "odd", "options": {"raise": "SystemExit",
                                                                     "why": "7"}}})
    popen = procs.popen([str(BIN / "zdse-proxy"), "--config", str(config)], env=cluster.env,
                        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                        stdin=subprocess.DEVNULL)
    _, err = popen.communicate(timeout=CONFIG_CHECK_TIMEOUT + 20)
    assert popen.returncode == 2
    assert err.decode().strip() == (
        f'zdse-proxy: {config}: [services."bad.one"]: module \'odd\' refused its options: '
        "SystemExit: 7")


def test_a_reload_adding_a_module_that_raises_is_refused_and_the_cage_runs_on(
    procs: Processes, tmp_path: Path, odd_module: dict[str, str],
) -> None:
    """reload-config and SIGHUP with a service whose constructor raises SystemExit or
    KeyboardInterrupt: refused (exit 5, config.reload_failed naming it), nothing changes."""
    a = file_service(tmp_path, "a", {"t": [[1]]})
    cluster = Cluster(procs, tmp_path)
    cluster.env.update(odd_module)
    config = tmp_path / "zdse.toml"
    write_config(config, {"svc.a": a})
    cage = cluster.start_cage("--config", str(config))
    cage.wait_event("service.running", service="svc.a")
    pid_a = services(cluster)["svc.a"]["pid"]

    write_config(config, {"svc.a": a, "bad.one": {"module": "odd",
                                                  "options": {"raise": "SystemExit"}}})
    refused = cluster.ctl("reload-config")
    assert refused.returncode == 5, refused.stderr
    assert "[services.\"bad.one\"]: module 'odd' refused its options: SystemExit" \
        in refused.stderr
    assert cage.wait_event("config.reload_failed")["service"] == "bad.one"
    rows = services(cluster)
    assert "bad.one" not in rows
    assert (rows["svc.a"]["pid"], rows["svc.a"]["state"]) == (pid_a, "running")

    write_config(config, {"svc.a": a, "bad.one": {"module": "odd",
                                                  "options": {"raise": "KeyboardInterrupt"}}})
    cage.kill(signal.SIGHUP)
    failed = cage.wait_event("config.reload_failed")
    assert failed["service"] == "bad.one"
    assert "KeyboardInterrupt" in failed["error"]
    rows = services(cluster)
    assert "bad.one" not in rows
    assert rows["svc.a"]["pid"] == pid_a


def test_a_slow_constructor_during_a_reload_does_not_pause_routing(
    procs: Processes, tmp_path: Path, odd_module: dict[str, str],
) -> None:
    """While a reload checks a constructor that sleeps 3 s, requests through the cage keep
    being answered within a second, no node loses its cage, and reload-config reports the
    reload it applied."""
    cluster, cage, config = supervised_cage(procs, tmp_path, {
        "files.a": file_service(tmp_path, "a", {"t": [[1]]}),
    })
    cluster.env.update(odd_module)
    node, _ = cluster.file_node("files.b", {"t": [[2]]})
    write_config(config, {"files.a": file_service(tmp_path, "a", {"t": [[1]]}),
                          "slow.one": {"module": "odd", "options": {"sleep": "3"}}})

    async def scenario() -> tuple[subprocess.CompletedProcess[str], int, float]:
        async with cluster.bus() as bus:
            # "running" means registered; each file's table comes with its first poll.
            updates = Updates()
            bus.subscribe("files.a", "t", updates)
            bus.subscribe("files.b", "t", updates)
            await updates.until_views({"files.a": [[1]], "files.b": [[2]]})
            reload = asyncio.create_task(asyncio.to_thread(cluster.ctl, "reload-config"))
            answered, slowest = 0, 0.0
            while not reload.done():
                asked = time.monotonic()
                # A routing pause longer than a second fails the request.
                assert await bus.request("files.b", "t", timeout=1.0) == [[2]]
                assert await bus.request("files.a", "t", timeout=1.0) == [[1]]
                slowest = max(slowest, time.monotonic() - asked)
                answered += 1
                await asyncio.sleep(0.05)
            return await reload, answered, slowest

    result, answered, slowest = run(scenario())
    assert result.returncode == 0, result.stderr
    assert "added: slow.one" in result.stdout
    assert answered >= 10  # the check took seconds, and requests went on meanwhile
    cage.wait_event("service.running", service="slow.one")
    lost = [line for line in node.lines + cage.lines if '"cage.lost"' in line]
    assert lost == [], (lost, slowest)


def test_a_reload_whose_check_outlasts_the_budget_is_refused_in_time(
    procs: Processes, tmp_path: Path, odd_module: dict[str, str],
) -> None:
    """A constructor that never returns: reload-config answers 'refused' (exit 5, naming
    the service and the budget) once the budget is spent, not a timeout; routing goes on."""
    cluster, cage, config = supervised_cage(procs, tmp_path, {
        "files.a": file_service(tmp_path, "a", {"t": [[1]]}),
    })
    cluster.env.update(odd_module)
    write_config(config, {"files.a": file_service(tmp_path, "a", {"t": [[1]]}),
                          "stuck.one": {"module": "odd", "options": {"sleep": "3600"}}})

    async def scenario() -> subprocess.CompletedProcess[str]:
        async with cluster.bus() as bus:
            # "running" means registered; the file's table comes with its first poll.
            updates = Updates()
            bus.subscribe("files.a", "t", updates)
            await updates.until_views({"files.a": [[1]]})
            reload = asyncio.create_task(asyncio.to_thread(cluster.ctl, "reload-config",
                                                           timeout=CONFIG_CHECK_TIMEOUT + 15))
            while not reload.done():
                assert await bus.request("files.a", "t", timeout=1.0) == [[1]]
                await asyncio.sleep(0.1)
            return await reload

    result = run(scenario())
    assert result.returncode == 5, result.stderr
    assert (f'[services."stuck.one"]: the check did not finish within '
            f"{CONFIG_CHECK_TIMEOUT:g} s") in result.stderr
    assert cage.wait_event("config.reload_failed")["service"] == "stuck.one"
    assert "stuck.one" not in services(cluster)
