"""pyVmomi used the naive way, one managed object and one property at a time.

The reference the vsphere module's reads are checked against, written
independently of it; shared by its inventory and service tests.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim
from zdse_nodes.vsphere import COLUMNS

from tests.vcsim import VCenterSimulator

# Creating or powering a VM in the simulator takes milliseconds; this only
# bounds a hung task.
TASK_TIMEOUT = 30


@contextmanager
def naive_session(sim: VCenterSimulator) -> Iterator[vim.ServiceInstance]:
    """A pyVmomi session opened the usual way, with pyVim.connect."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    si = SmartConnect(
        host="127.0.0.1",
        port=sim.port,
        user=sim.username,
        pwd=sim.password,
        sslContext=context,
    )
    try:
        yield si
    finally:
        Disconnect(si)


def all_of(si: vim.ServiceInstance, kind: type) -> list[Any]:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.DestroyView()


def naive_tables(si: vim.ServiceInstance) -> dict[str, set[tuple[Any, ...]]]:
    """The five tables, read one object and one property at a time."""
    tables: dict[str, set[tuple[Any, ...]]] = {name: set() for name in COLUMNS}
    host_uuid: dict[str, str] = {}
    for host in all_of(si, vim.HostSystem):
        uuid = host.hardware.systemInfo.uuid
        host_uuid[host._moId] = uuid
        tables["hosts"].add((host.name, uuid))
        network = host.config.network
        for ip in network.dnsConfig.address or []:
            tables["host.DNS_IPs"].add((uuid, ip))
        for pnic in network.pnic:
            ip_config = pnic.spec.ip
            tables["host.PNICs"].add(
                (uuid, pnic.device, pnic.mac, ip_config.ipAddress, ip_config.subnetMask)
            )
        for vnic in network.vnic:
            ip_config = vnic.spec.ip
            tables["host.VNICs"].add(
                (
                    uuid,
                    vnic.device,
                    vnic.spec.mac,
                    vnic.portgroup,
                    ip_config.ipAddress,
                    ip_config.subnetMask,
                )
            )
    for vm in all_of(si, vim.VirtualMachine):
        summary = vm.summary
        tables["vms"].add(
            (
                vm.name,
                vm.config.uuid,
                host_uuid[vm.runtime.host._moId],
                summary.config.vmPathName,
                str(summary.overallStatus),
                str(vm.runtime.powerState),
                summary.quickStats.overallCpuDemand,
                summary.quickStats.overallCpuUsage,
                summary.config.memorySizeMB,
                summary.quickStats.guestMemoryUsage,
                summary.storage.committed,
                summary.storage.uncommitted,
                vm.config.annotation,
            )
        )
    return tables


def find_vm(si: vim.ServiceInstance, name: str) -> Any:
    matches = [vm for vm in all_of(si, vim.VirtualMachine) if vm.name == name]
    assert len(matches) == 1, f"{name}: {len(matches)} VMs"
    return matches[0]
