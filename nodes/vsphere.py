"""vCenter inventory on the bus: the ``vsphere`` module of ``zdse-node``.

The service polls one vCenter (or ESX host) through pyVmomi and publishes the
tables of OpenStack Congress's vCenter driver, one dataindex per table:

========================  ====================================================
dataindex                 columns
========================  ====================================================
``hosts``                 name, uuid
``host.DNS_IPs``          host uuid, ip
``host.PNICs``            host_uuid, device, mac, ipAddress, subnetMask
``host.VNICs``            host_uuid, device, mac, portgroup, ipAddress,
                          subnetMask
``vms``                   name, uuid, host_uuid, pathName, status,
                          powerState, CpuDemand, CpuUsage, memorySizeMB,
                          MemoryUsage, committedStorage, uncommittedStorage,
                          annotation
========================  ====================================================

Rows are lists of scalars (str, int or None: a property vCenter leaves unset
is None), sorted. Each poll is one PropertyCollector ``RetrievePropertiesEx``
over a container view of every HostSystem and VirtualMachine (plus one
``ContinueRetrievePropertiesEx`` per further page, when vCenter pages the
answer): the number of round trips does not grow with the number of VMs.

Options (``zdse-node --module vsphere --set KEY=VALUE``):

``url``
    ``https://HOST/sdk`` or ``http://HOST:PORT/sdk``; may carry the
    credentials (``https://USER:PASSWORD@HOST/sdk``, percent-encoded).
``user``, ``password``, ``password_file``
    the credentials, when not in the URL; the password is given exactly once
    (URL, ``password`` or ``password_file``, whose trailing newline is
    dropped). The password is never logged nor published: logs and errors
    show the URL without it.
``poll_interval``
    seconds between polls (default 30).
``insecure``
    ``true`` to accept a self-signed certificate (default ``false``).
``timeout``
    seconds to wait for one answer of vCenter (default 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit
from xml.parsers.expat import ExpatError

import structlog
from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapStubAdapter

from zdse.errors import ConfigError, ZdseError
from zdse.modules.options import boolean, positive_float, refuse_unknown
from zdse.node.service import PollingService
from zdse.wire.limits import MIN_POLL_INTERVAL

__all__ = [
    "COLUMNS",
    "CountingStub",
    "InventoryReader",
    "VCenterConfig",
    "VCenterConnection",
    "VCenterError",
    "VCenterLoginError",
    "VCenterUnreachable",
    "VSphereService",
    "read_inventory",
    "redact_url",
    "tables_from_objects",
]

log = structlog.get_logger()

Scalar = str | int | float | bool | None
Row = list[Scalar]
Tables = dict[str, list[Row]]

HOSTS = "hosts"
HOST_DNS = "host.DNS_IPs"
HOST_PNICS = "host.PNICs"
HOST_VNICS = "host.VNICs"
VMS = "vms"

#: Column names of every table, in row order.
COLUMNS: dict[str, tuple[str, ...]] = {
    HOSTS: ("name", "uuid"),
    HOST_DNS: ("host_uuid", "ip"),
    HOST_PNICS: ("host_uuid", "device", "mac", "ipAddress", "subnetMask"),
    HOST_VNICS: ("host_uuid", "device", "mac", "portgroup", "ipAddress", "subnetMask"),
    VMS: (
        "name",
        "uuid",
        "host_uuid",
        "pathName",
        "status",
        "powerState",
        "CpuDemand",
        "CpuUsage",
        "memorySizeMB",
        "MemoryUsage",
        "committedStorage",
        "uncommittedStorage",
        "annotation",
    ),
}

# The properties read, as Congress's driver reads them. quickStats and storage
# are read whole, as Congress does: some vCenters (the simulator among them)
# leave a zero counter unset inside the object yet answer 0 for its leaf path,
# and the table must not depend on how one asks.
HOST_PROPERTIES = (
    "name",
    "hardware.systemInfo.uuid",
    "config.network.dnsConfig.address",
    "config.network.pnic",
    "config.network.vnic",
)
VM_PROPERTIES = (
    "name",
    "config.uuid",
    "runtime.host",
    "summary.config.vmPathName",
    "summary.overallStatus",
    "runtime.powerState",
    "summary.config.memorySizeMB",
    "summary.quickStats",
    "summary.storage",
    "config.annotation",
)

# The API version spoken: vSphere 5.5, pyVmomi's own default for Connect().
# Every later vCenter still accepts it, and every property above exists in it.
API_VERSION = "vim.version.version9"
DEFAULT_POLL_INTERVAL = 30.0
# A vCenter that accepts the connection but never answers must not hold a
# poll (and the thread running it) forever.
DEFAULT_TIMEOUT = 60.0
OPTIONS = frozenset(
    {"url", "user", "password", "password_file", "poll_interval", "insecure", "timeout"}
)


class VCenterError(ZdseError):
    """vCenter did not answer as it should.

    Attributes:
        url: the vCenter's URL, without password.
        reason: what went wrong, in words.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"vCenter {url}: {reason}")
        self.url = url
        self.reason = reason


class VCenterUnreachable(VCenterError):
    """No connection to vCenter: refused, timed out, TLS or HTTP failure."""


class VCenterLoginError(VCenterError):
    """vCenter refused the user name and password."""


def redact_url(url: str) -> str:
    """Return ``url`` with the password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "(unparsable URL)"


@dataclass(frozen=True, slots=True)
class VCenterConfig:
    """How to reach one vCenter, from the module's options.

    Attributes:
        url: the SDK URL, without credentials.
        user: the user name to log in with.
        password: the password; kept out of ``repr``.
        insecure: accept any TLS certificate.
        poll_interval: seconds between polls.
        timeout: seconds to wait for one answer.
    """

    url: str
    user: str
    password: str = field(repr=False)
    insecure: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> VCenterConfig:
        """Build the configuration from ``--set KEY=VALUE`` options.

        Raises:
            ConfigError: a missing, malformed or ambiguous option.
        """
        refuse_unknown("vsphere", options, OPTIONS)
        raw_url = options.get("url")
        if not raw_url:
            raise ConfigError("vsphere: the url option is required (https://HOST/sdk)")
        parts = _split_url(raw_url)
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path or "/sdk", "", ""))

        users = [u for u in (options.get("user"), _unquoted(parts.username)) if u]
        if not users:
            raise ConfigError(f"vsphere {url}: no user name (set user=, or put it in the url)")
        if len(users) > 1:
            raise ConfigError(f"vsphere {url}: the user name is given twice (url and user=)")

        passwords = []
        if "password" in options:
            passwords.append(options["password"])
        if "password_file" in options:
            passwords.append(_read_password_file(options["password_file"], url))
        if parts.password is not None:
            passwords.append(unquote(parts.password))
        if len(passwords) != 1:
            raise ConfigError(
                f"vsphere {url}: give the password exactly once "
                f"(in the url, password= or password_file=), not {len(passwords)} times"
            )

        return cls(
            url=url,
            user=users[0],
            password=passwords[0],
            insecure=boolean(options, "insecure", False),
            poll_interval=positive_float(options, "poll_interval", DEFAULT_POLL_INTERVAL,
                                         MIN_POLL_INTERVAL),
            timeout=positive_float(options, "timeout", DEFAULT_TIMEOUT),
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https URL (None for http)."""
        if not self.url.startswith("https:"):
            return None
        context = ssl.create_default_context()
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def _split_url(raw: str) -> SplitResult:
    shown = redact_url(raw)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(f"vsphere: bad url {shown}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"vsphere: the url must be http:// or https://, not {shown}")
    if not parts.hostname:
        raise ConfigError(f"vsphere: the url has no host: {shown}")
    return parts


def _unquoted(value: str | None) -> str | None:
    return unquote(value) if value else None


def _read_password_file(path: str, url: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"vsphere {url}: cannot read password_file {path}: {exc.strerror}"
        ) from None
    return text.rstrip("\r\n")




def _fault(exc: vmodl.MethodFault) -> str:
    name = type(exc).__name__  # e.g. vim.fault.InvalidLogin
    # pyVmomi's stubs leave out msg, which every fault carries at run time.
    msg = exc.msg  # type: ignore[attr-defined]
    return f"{name}: {msg}" if msg else name


@contextlib.contextmanager
def _vcenter_errors(url: str, doing: str) -> Iterator[None]:
    """Map pyVmomi, socket and HTTP errors onto :class:`VCenterError`."""
    try:
        yield
    except vim.fault.InvalidLogin as exc:
        raise VCenterLoginError(url, f"login refused while {doing}: {_fault(exc)}") from exc
    except vim.fault.NotAuthenticated as exc:
        raise VCenterError(url, f"session lost while {doing}: {_fault(exc)}") from exc
    except vmodl.MethodFault as exc:
        raise VCenterError(url, f"{_fault(exc)} while {doing}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise VCenterUnreachable(
            url,
            f"TLS certificate not trusted while {doing} ({exc.verify_message}); "
            "set insecure=true for a self-signed certificate",
        ) from exc
    except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError) as exc:
        # Typically a pooled keep-alive connection that vCenter closed (it
        # restarted or went away); the next attempt opens a new one.
        raise VCenterUnreachable(
            url, f"connection lost while {doing} ({type(exc).__name__}: {exc})"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise VCenterUnreachable(url, f"unreachable while {doing}: {reason}") from exc
    except http.client.HTTPException as exc:
        reason = str(exc) or type(exc).__name__
        raise VCenterUnreachable(url, f"HTTP failure while {doing}: {reason}") from exc
    except ExpatError as exc:
        raise VCenterError(url, f"the answer is not SOAP while {doing}: {exc}") from exc


class CountingStub(SoapStubAdapter):
    """pyVmomi's SOAP stub, counting round trips: one per SOAP request.

    Property reads on managed objects (``vm.name``) are SOAP requests too, and
    are counted as well.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.round_trips = 0

    def InvokeMethod(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        self.round_trips += 1
        return super().InvokeMethod(mo, info, args, outerStub)


def _filter_spec(view: vim.view.ContainerView) -> vmodl.query.PropertyCollector.FilterSpec:
    pc = vmodl.query.PropertyCollector
    through_view = pc.TraversalSpec(
        name="view", type=vim.view.ContainerView, path="view", skip=False
    )
    return pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[through_view])],
        propSet=[
            pc.PropertySpec(type=vim.HostSystem, pathSet=list(HOST_PROPERTIES)),
            pc.PropertySpec(type=vim.VirtualMachine, pathSet=list(VM_PROPERTIES)),
        ],
    )


class InventoryReader:
    """Reads the five tables with one ``RetrievePropertiesEx`` per read.

    The container view over every HostSystem and VirtualMachine is made once
    (one round trip) and kept until :meth:`close`, so a read costs one round
    trip, plus one per further page when vCenter pages its answer.

    Args:
        content: the ServiceInstance's content of a logged-in session.
    """

    def __init__(self, content: vim.ServiceInstanceContent) -> None:
        self._collector = content.propertyCollector
        # The stubs mark every property optional; a vCenter always has this one.
        self._view = content.viewManager.CreateContainerView(  # type: ignore[union-attr]
            content.rootFolder, [vim.HostSystem, vim.VirtualMachine], True
        )
        self._spec = _filter_spec(self._view)

    def read(self) -> Tables:
        """Return the tables as vCenter has them now."""
        return tables_from_objects(self.retrieve())

    def retrieve(self) -> list[vmodl.query.PropertyCollector.ObjectContent]:
        """Return the raw ObjectContents of every host and VM."""
        options = vmodl.query.PropertyCollector.RetrieveOptions()
        result = self._collector.RetrievePropertiesEx([self._spec], options)
        objects: list[vmodl.query.PropertyCollector.ObjectContent] = []
        while result is not None:  # None: nothing matched
            objects.extend(result.objects)
            if not result.token:
                break
            result = self._collector.ContinueRetrievePropertiesEx(result.token)
        return objects

    def close(self) -> None:
        """Destroy the container view on vCenter."""
        self._view.DestroyView()


def read_inventory(si: vim.ServiceInstance) -> Tables:
    """Read the five tables through a connected ServiceInstance.

    A fixed four round trips: RetrieveServiceContent, CreateContainerView,
    RetrievePropertiesEx (plus any further pages) and DestroyView. A service
    that polls keeps a :class:`InventoryReader` instead, at one round trip a
    read.

    Raises:
        Whatever pyVmomi raises: socket errors, HTTP errors, vmodl faults.
    """
    reader = InventoryReader(si.RetrieveContent())
    try:
        return reader.read()
    finally:
        reader.close()


def _scalar(value: Any) -> Scalar:
    # pyVmomi hands back str subclasses for enums and an int subclass for
    # longs; the bus carries plain values.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _path(obj: Any, *names: str) -> Scalar:
    """Follow attribute ``names`` from ``obj``; None as soon as one is unset."""
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return _scalar(obj)


def _row_key(row: Row) -> list[tuple[bool, str, Any]]:
    # None and mixed types sort without TypeError: None last, then by type name.
    return [(v is None, type(v).__name__, 0 if v is None else v) for v in row]


def tables_from_objects(objects: Sequence[Any]) -> Tables:
    """Turn RetrievePropertiesEx ObjectContents into the five sorted tables."""
    hosts: dict[str, dict[str, Any]] = {}
    vms: list[dict[str, Any]] = []
    for content in objects:
        props = {p.name: p.val for p in content.propSet or ()}
        if isinstance(content.obj, vim.HostSystem):
            hosts[content.obj._moId] = props
        elif isinstance(content.obj, vim.VirtualMachine):
            vms.append(props)

    tables: Tables = {name: [] for name in COLUMNS}
    uuid_of_host: dict[str, Scalar] = {}
    for moid, props in hosts.items():
        uuid = _scalar(props.get("hardware.systemInfo.uuid"))
        uuid_of_host[moid] = uuid
        tables[HOSTS].append([_scalar(props.get("name")), uuid])
        for ip in props.get("config.network.dnsConfig.address") or ():
            tables[HOST_DNS].append([uuid, _scalar(ip)])
        for pnic in props.get("config.network.pnic") or ():
            tables[HOST_PNICS].append(
                [
                    uuid,
                    _path(pnic, "device"),
                    _path(pnic, "mac"),
                    _path(pnic, "spec", "ip", "ipAddress"),
                    _path(pnic, "spec", "ip", "subnetMask"),
                ]
            )
        for vnic in props.get("config.network.vnic") or ():
            tables[HOST_VNICS].append(
                [
                    uuid,
                    _path(vnic, "device"),
                    _path(vnic, "spec", "mac"),
                    _path(vnic, "portgroup"),
                    _path(vnic, "spec", "ip", "ipAddress"),
                    _path(vnic, "spec", "ip", "subnetMask"),
                ]
            )

    for props in vms:
        host = props.get("runtime.host")
        stats = props.get("summary.quickStats")
        storage = props.get("summary.storage")
        tables[VMS].append(
            [
                _scalar(props.get("name")),
                _scalar(props.get("config.uuid")),
                # runtime.host is a reference; the table carries the host's uuid.
                uuid_of_host.get(host._moId) if host is not None else None,
                _scalar(props.get("summary.config.vmPathName")),
                _scalar(props.get("summary.overallStatus")),
                _scalar(props.get("runtime.powerState")),
                _path(stats, "overallCpuDemand"),
                _path(stats, "overallCpuUsage"),
                _scalar(props.get("summary.config.memorySizeMB")),
                _path(stats, "guestMemoryUsage"),
                _path(storage, "committed"),
                _path(storage, "uncommitted"),
                _scalar(props.get("config.annotation")),
            ]
        )

    for rows in tables.values():
        rows.sort(key=_row_key)
    return tables


class VCenterConnection:
    """A logged-in session with one vCenter, and its inventory reader.

    Use :meth:`open`; :meth:`close` logs out and closes every socket.
    """

    def __init__(self, config: VCenterConfig, stub: CountingStub, si: vim.ServiceInstance) -> None:
        self.config = config
        self._stub = stub
        self._si = si
        self._content: vim.ServiceInstanceContent | None = None
        self._reader: InventoryReader | None = None
        self._logged_in = False

    @classmethod
    def open(cls, config: VCenterConfig) -> VCenterConnection:
        """Connect, log in and make the container view: three round trips.

        Raises:
            VCenterUnreachable: no connection (refused, timeout, TLS, HTTP).
            VCenterLoginError: wrong user name or password.
            VCenterError: any other fault vCenter answered.
        """
        stub = CountingStub(
            url=config.url,
            version=API_VERSION,
            sslContext=config.ssl_context(),
            httpConnectionTimeout=config.timeout,
        )
        conn = cls(config, stub, vim.ServiceInstance("ServiceInstance", stub))
        try:
            conn._start()
        except BaseException:
            conn.close()
            raise
        return conn

    def _start(self) -> None:
        url = self.config.url
        with _vcenter_errors(url, "connecting"):
            self._content = self._si.RetrieveContent()
        with _vcenter_errors(url, f"logging in as {self.config.user!r}"):
            # The stubs mark the manager optional and the locale required;
            # a vCenter has the one, and the wire leaves the other out.
            self._content.sessionManager.Login(  # type: ignore[union-attr, call-arg]
                self.config.user, self.config.password)
        self._logged_in = True
        with _vcenter_errors(url, "creating the container view"):
            self._reader = InventoryReader(self._content)

    @property
    def service_instance(self) -> vim.ServiceInstance:
        """The pyVmomi ServiceInstance of this session."""
        return self._si

    @property
    def round_trips(self) -> int:
        """SOAP requests sent so far on this connection."""
        return int(self._stub.round_trips)

    def read(self) -> Tables:
        """Read the five tables: one round trip (plus one per further page).

        Raises:
            VCenterError: as :meth:`open`; the connection is then best closed.
        """
        if self._reader is None:
            raise VCenterError(self.config.url, "the connection is closed")
        with _vcenter_errors(self.config.url, "reading the inventory"):
            return self._reader.read()

    def close(self) -> None:
        """Destroy the view, log out and close the sockets; never raises."""
        reader, self._reader = self._reader, None
        logged_in, self._logged_in = self._logged_in, False
        try:
            if reader is not None:
                with _vcenter_errors(self.config.url, "destroying the view"):
                    reader.close()
            if logged_in and self._content is not None:
                with _vcenter_errors(self.config.url, "logging out"):
                    # The stubs mark the manager optional; a vCenter has it.
                    self._content.sessionManager.Logout()  # type: ignore[union-attr]
        except VCenterError as exc:
            # The vCenter may be gone: that is often why we close.
            log.debug("vsphere.close_failed", url=self.config.url, error=exc.reason)
        finally:
            self._stub.DropConnections()

    def __enter__(self) -> VCenterConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VSphereService(PollingService):
    """Module ``vsphere``: publish one vCenter's inventory tables.

    Every ``poll_interval`` seconds, between :meth:`start` and :meth:`stop`,
    the service reads the five tables (one round trip on an open session) and
    publishes each; the bus sends subscribers only what changed, and nothing
    at all when nothing did.

    When vCenter is unreachable or refuses the login, the poll fails with a
    :class:`VCenterError` that is logged (``poll.failed``, URL without
    password, reason) and retried with exponential backoff (1 s, 2 s, 4 s, ...
    capped at ``max(poll_interval, 60 s)``); the service stays up and on the
    bus. Meanwhile subscribers keep the last tables published (a new
    subscriber gets them as its snapshot) and receive nothing. The first good
    poll after the outage logs in again and publishes: subscribers get one
    delta per table with what changed during the outage, and nothing for the
    tables that did not change.

    Args:
        name: the service's unique name, e.g. ``vSphere.Boston``.
        options: see the module's docstring.

    Raises:
        ConfigError: a missing, malformed or ambiguous option.
    """

    poll_interval = DEFAULT_POLL_INTERVAL
    columns = COLUMNS

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        super().__init__(name, options)
        self.config = VCenterConfig.from_options(options)
        # The base class keeps the options; keep the password out of them.
        if "url" in self.options:
            self.options["url"] = redact_url(self.options["url"])
        if "password" in self.options:
            self.options["password"] = "***"
        self.round_trips_last_poll = 0
        self._connection: VCenterConnection | None = None
        # Held by the worker thread that talks to vCenter, so that stop() can
        # wait for a poll that was cancelled mid-way before it logs out.
        self._lock = threading.Lock()

    async def poll(self) -> None:
        """Read the tables in a worker thread, then publish each of them.

        Each good poll logs one ``vsphere.polled`` event (debug level): its
        duration in ``seconds`` (of which ``read_seconds`` reading vCenter),
        the ``round_trips`` of the read, the ``hosts`` and ``vms`` counts, and
        ``changed``: the tables that changed, with their new sequence numbers
        (empty when nothing changed, and so nothing was sent).
        """
        started = time.perf_counter()
        tables = await asyncio.to_thread(self._read)
        read = time.perf_counter()
        before = self._sequences()
        for dataindex, rows in tables.items():
            self.publish(dataindex, rows)
        after = self._sequences()
        self.log.debug(
            "vsphere.polled",
            seconds=round(time.perf_counter() - started, 6),
            read_seconds=round(read - started, 6),
            round_trips=self.round_trips_last_poll,
            hosts=len(tables[HOSTS]),
            vms=len(tables[VMS]),
            changed={name: seq for name, seq in after.items() if before.get(name) != seq},
        )

    def _sequences(self) -> dict[str, int]:
        """The sequence number of each table published (it grows when the table changes)."""
        return {name: pub["seq"] for name, pub in self.bus.pubdata().items() if name in COLUMNS}

    async def stop(self) -> None:
        """Stop polling, then log out of vCenter."""
        await super().stop()
        await asyncio.to_thread(self._disconnect)

    def _read(self) -> Tables:
        with self._lock:
            if self._connection is None:
                self._connection = VCenterConnection.open(self.config)
                self.log.info(
                    "vsphere.connected",
                    url=self.config.url,
                    user=self.config.user,
                    round_trips=self._connection.round_trips,
                )
            conn = self._connection
            before = conn.round_trips
            try:
                tables = conn.read()
            except VCenterError:
                # Whatever broke, the next poll starts with a fresh session.
                self._connection = None
                conn.close()
                raise
            self.round_trips_last_poll = conn.round_trips - before
            return tables

    def _disconnect(self) -> None:
        with self._lock:
            conn, self._connection = self._connection, None
            if conn is not None:
                conn.close()
                self.log.info("vsphere.disconnected", url=self.config.url)
