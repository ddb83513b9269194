"""The vsphere module's inventory reading, against govmomi's vCenter simulator.

The reference every read is checked against is written here independently:
pyVmomi used the naive way, one managed object and one property at a time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim
from zdse_nodes.vsphere import (
    COLUMNS,
    VCenterConfig,
    VCenterConnection,
    VCenterLoginError,
    VCenterUnreachable,
    read_inventory,
    redact_url,
)

from tests.support import free_port, require
from tests.vcsim import BINARY, VCenterSimulator
from tests.vsphere_naive import TASK_TIMEOUT, all_of, find_vm, naive_session, naive_tables
from zdse.errors import ConfigError

StartSim = Callable[..., VCenterSimulator]
def config_for(sim: VCenterSimulator, **options: str) -> VCenterConfig:
    return VCenterConfig.from_options({"url": sim.url, "insecure": "true", **options})


def as_sets(tables: dict[str, list[list[Any]]]) -> dict[str, set[tuple[Any, ...]]]:
    return {name: {tuple(row) for row in rows} for name, rows in tables.items()}


# --- configuration: no simulator needed -------------------------------------


def test_credentials_in_url_are_decoded_and_kept_out_of_the_url() -> None:
    """user:password in the URL are percent-decoded; the stored URL has none."""
    config = VCenterConfig.from_options({"url": "https://ad%40min:p%3Ass@vc.example/sdk"})
    assert (config.url, config.user, config.password) == (
        "https://vc.example/sdk",
        "ad@min",
        "p:ss",
    )
    assert "p:ss" not in repr(config)


def test_password_file_and_defaults(tmp_path: Path) -> None:
    """password_file loses its trailing newline; the path defaults to /sdk; 30 s polls."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = VCenterConfig.from_options(
        {"url": "http://127.0.0.1:8989", "user": "u", "password_file": str(secret)}
    )
    assert (config.url, config.password) == ("http://127.0.0.1:8989/sdk", "s3cret")
    assert (config.poll_interval, config.insecure) == (30.0, False)
    assert config.ssl_context() is None


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({}, "url option is required"),
        ({"url": "ftp://h/sdk", "user": "u", "password": "p"}, "http:// or https://"),
        ({"url": "https://h/sdk", "password": "p"}, "no user name"),
        ({"url": "https://u:p@h/sdk", "password": "p"}, "exactly once"),
        ({"url": "https://u@h/sdk"}, "exactly once"),
        ({"url": "https://u:p@h/sdk", "poll_interval": "0"}, "above zero"),
        ({"url": "https://u:p@h/sdk", "insecure": "maybe"}, "true or false"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, str], complaint: str) -> None:
    """Missing, malformed or ambiguous options raise ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=complaint) as caught:
        VCenterConfig.from_options(options)
    assert ":p@" not in str(caught.value)


def test_redact_url_hides_only_the_password() -> None:
    """The user name stays visible, the password becomes ***."""
    assert redact_url("https://u:pw@h:1/sdk") == "https://u:***@h:1/sdk"
    assert redact_url("https://h/sdk") == "https://h/sdk"


# --- against the simulator --------------------------------------------------


@pytest.mark.vcsim
def test_tables_equal_a_naive_pyvmomi_read(vcsim: StartSim) -> None:
    """The one-call read gives exactly what reading object by object gives."""
    sim = vcsim(hosts=3, vms=7)
    with VCenterConnection.open(config_for(sim)) as conn:
        tables = conn.read()
    with naive_session(sim) as si:
        expected = naive_tables(si)
    assert as_sets(tables) == expected
    assert len(tables["hosts"]) == 3
    assert len(tables["vms"]) == 7
    for name, rows in tables.items():
        assert all(len(row) == len(COLUMNS[name]) for row in rows), name


@pytest.mark.vcsim
def test_read_inventory_on_any_service_instance(vcsim: StartSim) -> None:
    """read_inventory works on a ServiceInstance opened elsewhere, in the same row order."""
    sim = vcsim(hosts=2, vms=4)
    with naive_session(sim) as si:
        tables = read_inventory(si)
        expected = naive_tables(si)
    with VCenterConnection.open(config_for(sim)) as conn:
        assert conn.read() == tables  # lists, order included: rows are sorted
    assert as_sets(tables) == expected


@pytest.mark.vcsim
def test_power_off_changes_only_that_vms_row(vcsim: StartSim) -> None:
    """Powering one VM off through the API changes its row and nothing else."""
    sim = vcsim(hosts=2, vms=4)
    with VCenterConnection.open(config_for(sim)) as conn, naive_session(sim) as si:
        before = as_sets(conn.read())
        WaitForTask(find_vm(si, "DC0_H1_VM0").PowerOffVM_Task(), maxWaitTime=TASK_TIMEOUT)
        after = as_sets(conn.read())

    for name in COLUMNS:
        if name != "vms":
            assert after[name] == before[name], name
    gone, new = before["vms"] - after["vms"], after["vms"] - before["vms"]
    assert len(gone) == len(new) == 1
    (old_row,), (new_row,) = gone, new
    power = COLUMNS["vms"].index("powerState")
    assert (old_row[0], old_row[power], new_row[power]) == ("DC0_H1_VM0", "poweredOn", "poweredOff")
    assert old_row[:power] == new_row[:power]


@pytest.mark.vcsim
def test_create_and_destroy_a_vm_adds_and_removes_a_row(vcsim: StartSim) -> None:
    """A VM created through the API is a new row; destroyed, the row is gone."""
    sim = vcsim(hosts=2, vms=2)
    with VCenterConnection.open(config_for(sim)) as conn, naive_session(sim) as si:
        before = as_sets(conn.read())
        host = next(h for h in all_of(si, vim.HostSystem) if h.name == "DC0_H0")
        datacenter = si.RetrieveContent().rootFolder.childEntity[0]
        spec = vim.vm.ConfigSpec(
            name="added-vm",
            guestId="otherGuest",
            memoryMB=512,
            numCPUs=1,
            files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
        )
        task = datacenter.vmFolder.CreateVM_Task(
            config=spec, pool=host.parent.resourcePool, host=host
        )
        WaitForTask(task, maxWaitTime=TASK_TIMEOUT)
        with_vm = as_sets(conn.read())
        WaitForTask(task.info.result.Destroy_Task(), maxWaitTime=TASK_TIMEOUT)
        after = as_sets(conn.read())

    added = with_vm["vms"] - before["vms"]
    assert before["vms"] <= with_vm["vms"]
    assert [row[0] for row in added] == ["added-vm"]
    host_uuid = next(uuid for name, uuid in before["hosts"] if name == "DC0_H0")
    assert next(iter(added))[COLUMNS["vms"].index("host_uuid")] == host_uuid
    assert after == before


@pytest.mark.vcsim
def test_wrong_password_is_a_clear_login_error(vcsim: StartSim) -> None:
    """A wrong password raises VCenterLoginError naming the URL, not the password."""
    sim = vcsim()
    config = VCenterConfig.from_options(
        {"url": sim.bare_url, "user": sim.username, "password": "wrong-pw", "insecure": "1"}
    )
    with pytest.raises(VCenterLoginError) as caught:
        VCenterConnection.open(config)
    message = str(caught.value)
    assert sim.bare_url in message
    assert "InvalidLogin" in message
    assert "wrong-pw" not in message


@pytest.mark.vcsim
def test_self_signed_certificate_needs_insecure(vcsim: StartSim) -> None:
    """Without insecure=true the simulator's certificate is refused, with a hint."""
    sim = vcsim()
    with pytest.raises(VCenterUnreachable, match="insecure=true"):
        VCenterConnection.open(VCenterConfig.from_options({"url": sim.url}))


def test_unreachable_vcenter_is_a_clear_error() -> None:
    """Nothing listening: VCenterUnreachable naming the URL and the refusal."""
    url = f"https://127.0.0.1:{free_port()}/sdk"
    config = VCenterConfig.from_options({"url": url, "user": "u", "password": "pw-xyz"})
    with pytest.raises(VCenterUnreachable) as caught:
        VCenterConnection.open(config)
    message = str(caught.value)
    assert url in message
    assert "refused" in message.lower()
    assert "pw-xyz" not in message


@pytest.mark.vcsim
def test_round_trips_per_read_do_not_grow_with_the_inventory(vcsim: StartSim) -> None:
    """A read costs the same number of SOAP round trips for 4 VMs and for 40."""
    costs = []
    for hosts, vms in ((2, 4), (4, 40)):
        sim = vcsim(hosts=hosts, vms=vms)
        with VCenterConnection.open(config_for(sim)) as conn:
            opened = conn.round_trips
            tables = conn.read()
            per_read = conn.round_trips - opened
        with naive_session(sim) as si:
            calls = 0

            def count(request: Any) -> Any:
                nonlocal calls
                calls += 1
                return request

            # pyVmomi runs every request modifier once per SOAP request.
            with si._stub.requestModifier(count):
                read_inventory(si)
        assert len(tables["vms"]) == vms
        costs.append((opened, per_read, calls))
    assert costs[0] == costs[1]
    assert costs[0][0] == 3  # RetrieveServiceContent, Login, CreateContainerView
    assert costs[0][1] == 1  # the simulator answers in one page
    assert costs[0][2] == 4  # content, view, retrieve, destroy view


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["-churn=-1s"], "-churn must be 0 (off) or at least 10ms, not -1s"),
        (["-churn=1ms"], "-churn must be 0 (off) or at least 10ms, not 1ms"),
        (["-churn=2s", "-vms=0"], "-churn needs at least one VM (-vms)"),
    ],
)
def test_simulator_refuses_a_bad_churn_in_one_line(flags: list[str], error: str) -> None:
    """vcsim-zdse -churn out of range: exit 1 and one line that says why, before serving."""
    require("the vCenter simulator build/vcsim-zdse (make sim)", BINARY.is_file())
    result = subprocess.run([str(BINARY), *flags], capture_output=True, text=True,
                            timeout=TASK_TIMEOUT, check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"vcsim-zdse: {error}\n"
