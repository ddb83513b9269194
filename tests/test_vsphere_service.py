"""The vsphere module on a real bus: a real cage, the vCenter simulator, real subscribers."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from structlog.testing import capture_logs
from zdse_nodes.vsphere import COLUMNS, VCenterLoginError, VCenterUnreachable, VSphereService

from tests.harness import WAIT, Cluster, Updates, run, same_views
from tests.vcsim import VCenterSimulator
from tests.vsphere_naive import TASK_TIMEOUT, find_vm, naive_session, naive_tables
from zdse.node.bus import Bus, Update

StartSim = Callable[..., VCenterSimulator]
POWER = COLUMNS["vms"].index("powerState")
# Long enough never to fire during a test: polls are triggered by the tests.
NEVER = "3600"



class ObservedService(VSphereService):
    """VSphereService that reports each poll's outcome, for tests to await."""

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        super().__init__(name, options)
        self.outcomes: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async def poll(self) -> None:
        try:
            await super().poll()
        except Exception as exc:
            self.outcomes.put_nowait(exc)
            raise
        self.outcomes.put_nowait(None)

    async def outcome(self, timeout: float = WAIT) -> BaseException | None:
        return await asyncio.wait_for(self.outcomes.get(), timeout)


class SeqUpdates(Updates):
    """Updates that also remember the last sequence number seen per publisher."""

    def __init__(self) -> None:
        super().__init__()
        self.last_seq: dict[str, int] = {}

    def __call__(self, update: Update) -> None:
        if update.kind in ("snapshot", "delta"):
            self.last_seq[update.publisher] = update.seq
        super().__call__(update)


def vms_of(sim: VCenterSimulator) -> list[list[Any]]:
    """The vms table of a simulator, read the naive way."""
    with naive_session(sim) as si:
        return sorted(list(row) for row in naive_tables(si)["vms"])


def power_off(sim: VCenterSimulator, vm_name: str) -> None:
    with naive_session(sim) as si:
        WaitForTask(find_vm(si, vm_name).PowerOffVM_Task(), maxWaitTime=TASK_TIMEOUT)


def options(sim: VCenterSimulator, **extra: str) -> dict[str, str]:
    return {"url": sim.url, "insecure": "true", "poll_interval": NEVER, **extra}


@asynccontextmanager
async def running(service: VSphereService, bus: Bus) -> AsyncIterator[None]:
    """Attach and start the service; stop it (and log out) even when the test fails."""
    service.attach(bus)
    await service.start()
    try:
        yield
    finally:
        await service.stop()


@asynccontextmanager
async def serving(cluster: Cluster, service: ObservedService, sim: VCenterSimulator,
                  updates: Updates) -> AsyncIterator[list[list[Any]]]:
    """``service`` running on a bus of its own name, its first poll a success, and
    ``updates`` subscribed to its vms table until they show the simulator's; yields those."""
    async with (
        cluster.bus(service.name) as node,
        cluster.bus() as client,
        running(service, node),
    ):
        assert await service.outcome() is None
        client.subscribe(service.name, "vms", updates)
        vms = await asyncio.to_thread(vms_of, sim)
        await updates.until_views({service.name: vms})
        yield vms


@pytest.mark.vcsim
def test_two_vcenters_on_node_list_keep_one_view_each(
    cluster: Cluster, vcsim: StartSim, tmp_path: Path
) -> None:
    """zdse-node --module vsphere twice: one subscription, one view per vCenter, then a delta."""
    boston = vcsim(hosts=2, vms=4, password="s3cret-boston")
    chicago = vcsim(hosts=3, vms=5, password="s3cret-chicago")
    secret = tmp_path / "chicago.password"
    secret.write_text("s3cret-chicago\n")
    nodes = [
        cluster.start_node(
            "vsphere",
            "vSphere.Boston",
            ["vSphere.node.list"],
            url=boston.url,
            insecure="true",
            poll_interval="0.2",
        ),
        cluster.start_node(
            "vsphere",
            "vSphere.Chicago",
            ["vSphere.node.list"],
            url=chicago.bare_url,
            user=chicago.username,
            password_file=secret,
            insecure="true",
            poll_interval="0.2",
        ),
    ]
    want = {"vSphere.Boston": vms_of(boston), "vSphere.Chicago": vms_of(chicago)}

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("vSphere.node.list", "vms", updates)
            await updates.until_views(want)

            await asyncio.to_thread(power_off, boston, "DC0_H1_VM0")
            delta = await updates.until(lambda u: u.kind == "delta")
            assert delta.publisher == "vSphere.Boston"
            kind, added, removed = delta.data
            assert kind == "rows"
            assert [(r[0], r[POWER]) for r in removed] == [("DC0_H1_VM0", "poweredOn")]
            assert [(r[0], r[POWER]) for r in added] == [("DC0_H1_VM0", "poweredOff")]
            want["vSphere.Boston"] = await asyncio.to_thread(vms_of, boston)
            await updates.until_views(want)

    run(scenario())
    for node in nodes:
        assert "s3cret" not in node.log()


def creation_order(hosts: int, vms: int) -> list[str]:
    """The simulator's VM names in the order it made them, which is its churn order."""
    return [f"DC0_H{i % hosts}_VM{i // hosts}" for i in range(vms)]


@pytest.mark.vcsim
def test_churning_simulator_moves_the_vms_table(
    cluster: Cluster, vcsim: StartSim, tmp_path: Path
) -> None:
    """vcsim -churn: successive polls through a real cage see VMs' power toggled in turn."""
    sim = vcsim(hosts=2, vms=6, churn=0.5)
    cycle = creation_order(2, 6)
    cluster.start_node("vsphere", "vSphere.demo", ["vSphere.node.list"],
                       url=sim.url, insecure="true", poll_interval="0.1")

    async def scenario() -> None:
        async with cluster.bus() as bus:
            updates = Updates()
            bus.subscribe("vSphere.node.list", "vms", updates)
            # A snapshot, or the first publish after an "unpublished" answer.
            await updates.until(lambda u: u.kind in ("snapshot", "delta")
                                and len(u.view or ()) == 6)
            toggled: list[str] = []
            while len(toggled) < 3:
                delta = await updates.until(lambda u: u.kind == "delta")
                kind, added, removed = delta.data
                assert kind == "rows"
                before = {r[0]: r for r in removed}
                after = {r[0]: r for r in added}
                assert sorted(before) == sorted(after)
                for name in sorted(before, key=cycle.index):
                    old, new = before[name], after[name]
                    assert {old[POWER], new[POWER]} == {"poweredOn", "poweredOff"}
                    assert old[:POWER] + old[POWER + 1:] == new[:POWER] + new[POWER + 1:]
                    toggled.append(name)
            # One VM after the other, in the order they were made, round and round
            # (a poll delayed by load may see two steps at once, never a skip).
            start = cycle.index(toggled[0])
            assert toggled == [cycle[(start + i) % 6] for i in range(len(toggled))]

    run(scenario())
    # No churn step failed (the simulator reports each failure on stderr).
    assert (tmp_path / "vcsim-1.stderr").read_text() == ""


@pytest.mark.vcsim
def test_unchanged_inventory_publishes_nothing(cluster: Cluster, vcsim: StartSim) -> None:
    """Polls that find nothing new send nothing: the next delta follows the snapshot's seq."""
    sim = vcsim(hosts=2, vms=4)
    service = ObservedService("vSphere.Boston", options(sim))

    async def scenario() -> None:
        updates = SeqUpdates()
        async with serving(cluster, service, sim, updates):
            seq = updates.last_seq["vSphere.Boston"]

            for _ in range(3):
                service.poll_now()
                assert await service.outcome() is None
                assert service.round_trips_last_poll == 1
            await asyncio.to_thread(power_off, sim, "DC0_H0_VM1")
            service.poll_now()
            assert await service.outcome() is None

            delta = await updates.until(lambda u: u.kind == "delta")
            assert delta.seq == seq + 1
            assert [row[0] for row in delta.data[1]] == ["DC0_H0_VM1"]

    run(scenario())


@pytest.mark.vcsim
def test_outage_is_logged_retried_and_recovered(cluster: Cluster, vcsim: StartSim) -> None:
    """vCenter gone: a clear error, the service stays up, retries, and recovers by itself."""
    sim = vcsim(hosts=2, vms=4, password="s3cret-outage")
    service = ObservedService("vSphere.Boston", options(sim))

    async def scenario() -> None:
        updates = Updates()
        async with serving(cluster, service, sim, updates) as original:

            await asyncio.to_thread(power_off, sim, "DC0_H0_VM0")
            service.poll_now()
            assert await service.outcome() is None
            powered_off = await asyncio.to_thread(vms_of, sim)
            await updates.until_views({"vSphere.Boston": powered_off})

            await asyncio.to_thread(sim.stop)
            service.poll_now()
            error = await service.outcome()
            assert isinstance(error, VCenterUnreachable)
            assert (service.running, service.failures) == (True, 1)
            # Meanwhile subscribers keep the last tables published.
            assert same_views(updates.views, {"vSphere.Boston": powered_off})

            # Back on the same port with a fresh inventory (every VM powered
            # on): the retry after the backoff reconnects without help.
            await asyncio.to_thread(sim.start)
            assert await service.outcome() is None
            assert service.failures == 0
            await updates.until_views({"vSphere.Boston": original})

    with capture_logs() as logs:
        run(scenario())
    failed = [e for e in logs if e["event"] == "poll.failed"]
    assert failed, logs
    assert sim.bare_url in failed[0]["error"]
    # Refused, or the pooled keep-alive connection found closed: both say so.
    assert re.search("connection refused|connection lost", failed[0]["error"])
    assert failed[0]["retry_in"] > 0
    assert any(e["event"] == "poll.recovered" for e in logs)
    assert "s3cret" not in repr(logs)


@pytest.mark.vcsim
def test_wrong_password_keeps_the_service_up(vcsim: StartSim) -> None:
    """A refused login is logged as such and retried; the service keeps running."""
    sim = vcsim()
    service = ObservedService(
        "vSphere.Boston",
        {
            "url": sim.bare_url,
            "user": sim.username,
            "password": "wrong-s3cret",
            "insecure": "true",
            "poll_interval": NEVER,
        },
    )

    async def scenario() -> None:
        await service.start()
        try:
            error = await service.outcome()
            assert isinstance(error, VCenterLoginError)
            assert service.running
        finally:
            await service.stop()

    with capture_logs() as logs:
        run(scenario())
    failed = [e for e in logs if e["event"] == "poll.failed"]
    assert "InvalidLogin" in failed[0]["error"]
    assert "wrong-s3cret" not in repr(logs)
    assert service.options["password"] == "***"
