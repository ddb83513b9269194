"""Run a real RabbitMQ broker for the test suite, private to one test session.

The broker is isolated from any system RabbitMQ: its own node name, its own
epmd on a free port, its own Erlang cookie (``HOME``), data, logs, config and
(empty) plugin list in a temporary directory, and every listener on 127.0.0.1
only. Nothing is read from ``/etc/rabbitmq`` or written to ``/var/lib``.

Readiness is a handshake: :meth:`RabbitMQ.start` returns once the AMQP port
answers ``AMQP 0-9-1`` with a ``Connection.Start`` frame, with a deadline, and
fails at once (showing the broker's log) if the broker exits meanwhile.

:meth:`RabbitMQ.stop` and :meth:`RabbitMQ.start` stop and start the same node
on the same port with the same data, so a test can take the broker away and
bring it back; :meth:`RabbitMQ.kill` crashes it instead. :meth:`RabbitMQ.close`
always leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from tests.support import free_port

__all__ = ["RabbitMQ", "RabbitMQError", "find_scripts"]

#: Where Debian keeps RabbitMQ's own start scripts. ``/usr/sbin/rabbitmq-server``
#: is a wrapper that, run as root, ``su``'s to the rabbitmq user with the
#: system's environment and data directory: exactly what we must not use.
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")

HOST = "127.0.0.1"
USER = "guest"  # RabbitMQ lets guest in from loopback only, which is all we use.
PASSWORD = "guest"

# A cold boot takes 5-10 s on a 2-core machine (most of it loading every module
# to find feature flags and boot steps); leave room for a loaded CI machine.
START_TIMEOUT = 90.0
# A clean stop (SIGTERM) takes about a second; past this the node is killed.
STOP_TIMEOUT = 30.0
# One rabbitmqctl call boots a small Erlang VM: about 0.6 s.
CTL_TIMEOUT = 60.0
# epmd listens within milliseconds of being started.
EPMD_TIMEOUT = 10.0

# Between two connection attempts while the broker boots. Not a sleep: the
# wait returns at once if the broker exits, which fails the start straight away.
_POLL = 0.05

# AMQP 0-9-1 protocol header and the Connection.Start method the broker
# answers it with (frame type 1 = method, class 10 = connection, method 10).
_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1
_CONNECTION_START = (10, 10)

# The erl flag that keeps Erlang distribution (the broker's and rabbitmqctl's)
# on loopback; by default it listens on every interface.
_LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"


class RabbitMQError(RuntimeError):
    """The broker did not start, did not stop, or refused a rabbitmqctl command."""


def find_scripts() -> Path | None:
    """Return the directory of RabbitMQ's own scripts (rabbitmq-server, rabbitmqctl).

    Distribution wrappers that switch user (Debian's ``/usr/sbin`` ones) are
    skipped: the real scripts sit next to ``rabbitmq-env``.

    Returns:
        The directory, or None when RabbitMQ is not installed.
    """
    candidates = [DEBIAN_SCRIPTS / "rabbitmq-server"]
    found = shutil.which("rabbitmq-server")
    if found is not None:
        candidates.append(Path(found))
    for candidate in candidates:
        real = candidate.resolve()
        sbin = real.parent
        if (
            real.is_file()
            and (sbin / "rabbitmq-env").is_file()
            and (sbin / "rabbitmqctl").is_file()
        ):
            return sbin
    return None


class RabbitMQ:
    """One RabbitMQ node on free loopback ports, in its own temporary directory.

    Use it as a context manager, or call :meth:`close` (which also stops it)::

        with RabbitMQ(find_scripts()) as broker:
            broker.start()
            url = broker.url()

    Args:
        scripts: RabbitMQ's script directory, from :func:`find_scripts`.
        workdir: where the node keeps everything; a fresh temporary directory
            (removed by :meth:`close`) when None.
        slim: boot with only the Erlang applications the broker core needs
            on its code path instead of every bundled plugin (see
            :func:`_slim_home`); it cuts seconds off each boot.
    """

    def __init__(self, scripts: Path, workdir: Path | None = None, *, slim: bool = True) -> None:
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RabbitMQError("epmd (Erlang's port mapper) is not installed")
        self._epmd_binary = epmd
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="zdse-rabbitmq-"))
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        # Short names resolve "localhost" from /etc/hosts: no DNS involved.
        self.node = f"zdse-{self.port}@localhost"
        #: Seconds the last :meth:`start` took, from spawning to the handshake.
        self.startup_seconds = 0.0
        self._scripts = scripts
        self._plugins_dir: Path | None = None
        self._slim = slim
        self._epmd: subprocess.Popen[bytes] | None = None
        self._broker: subprocess.Popen[bytes] | None = None
        self._starts = 0
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    # -- public API ---------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the broker process is alive (it may still be booting)."""
        return self._broker is not None and self._broker.poll() is None

    @property
    def log_path(self) -> Path:
        """The broker's main log file."""
        return self.workdir / "log" / f"{self.node}.log"

    def url(self, vhost: str = "/") -> str:
        """Return an AMQP URL with credentials for ``vhost``, e.g. amqp://guest:guest@127.0.0.1:P/%2F."""
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{self.port}/{quote(vhost, safe='')}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node (same name, port and data every time) and wait until it serves AMQP.

        Does nothing if it is already running.

        Raises:
            RabbitMQError: it exited, or did not answer an AMQP handshake before the deadline.
        """
        if self.running:
            return
        self._start_epmd()
        self._starts += 1
        began = time.monotonic()
        with (self.workdir / f"broker-{self._starts}.out").open("wb") as out:
            self._broker = subprocess.Popen(
                [str(self._scripts / "rabbitmq-server")],
                env=self._env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one process group: the script and beam.smp
            )
        try:
            self._wait_amqp(self._broker, began + timeout)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node cleanly (SIGTERM), killing it past ``timeout``; keep its data.

        Does nothing if it is not running.
        """
        proc, self._broker = self._broker, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                # The start script traps TERM and stops the node the way
                # ``rabbitmqctl stop`` does, then exits.
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)
        finally:
            _kill_group(proc)

    def kill(self) -> None:
        """Crash the node (SIGKILL, no clean shutdown); :meth:`start` recovers its data."""
        proc, self._broker = self._broker, None
        if proc is None:
            return
        # beam.smp first: the start script, its parent, then reaps it and exits,
        # instead of leaving a zombie to whatever adopts orphans.
        beam = self._beam_pid()
        if beam is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(beam, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        _kill_group(proc)

    def close(self) -> None:
        """Stop the node and its epmd, and remove the working directory if we made it.

        A node whose data is about to be deleted is killed rather than stopped
        cleanly: it saves a second and leaves nothing behind either way.
        """
        try:
            if self._own_workdir:
                self.kill()
            else:
                self.stop()
        finally:
            epmd, self._epmd = self._epmd, None
            if epmd is not None:
                _kill_group(epmd)
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """Run ``rabbitmqctl -n NODE ARGS...`` against this node and return its output.

        Raises:
            RabbitMQError: the command failed or timed out.
        """
        env = self._env()
        # Each call listens on its own free port for the node to call back.
        ctl_port = str(free_port())
        env["RABBITMQ_CTL_DIST_PORT_MIN"] = ctl_port
        env["RABBITMQ_CTL_DIST_PORT_MAX"] = ctl_port
        argv = [str(self._scripts / "rabbitmqctl"), "-q", "-n", self.node, *args]
        try:
            done = subprocess.run(
                argv,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RabbitMQError(
                f"rabbitmqctl {' '.join(args)} timed out after {timeout} s"
            ) from exc
        output = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            raise RabbitMQError(
                f"rabbitmqctl {' '.join(args)} exited with {done.returncode}: "
                f"{output}{done.stderr.decode(errors='replace')}".strip()
            )
        return output

    def add_vhost(self, name: str) -> str:
        """Create virtual host ``name``, give the guest user all rights on it, return its URL."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, USER, ".*", ".*", ".*")
        return self.url(name)

    def __enter__(self) -> RabbitMQ:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RabbitMQ {self.node} on {HOST}:{self.port} {state}>"

    # -- internals ----------------------------------------------------------

    def _prepare(self) -> None:
        if self._slim:
            slim_scripts = _slim_home(self._scripts, self.workdir / "rabbitmq-home")
            if slim_scripts is not None:
                self._scripts = slim_scripts
                self._plugins_dir = slim_scripts.parent / "plugins"
        for sub in ("home", "mnesia", "log", "conf.d"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq-env.conf").write_text(
            "# empty: settings come from the environment\n"
        )
        (self.workdir / "rabbitmq.conf").write_text(
            "# zdse test broker: loopback only, nothing read from /etc/rabbitmq.\n"
            f"listeners.tcp.1 = {HOST}:{self.port}\n"
            "log.console = false\n"
        )

    def _env(self) -> dict[str, str]:
        # Start from a clean slate: a RABBITMQ_* or ERL_* variable of the
        # developer's shell must not leak into the test broker.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        w = self.workdir
        env.update(
            HOME=str(w / "home"),  # the Erlang cookie lives there
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(w / "mnesia"),
            RABBITMQ_LOG_BASE=str(w / "log"),
            RABBITMQ_PID_FILE=str(w / "rabbitmq.pid"),
            RABBITMQ_CONF_ENV_FILE=str(w / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(w / "rabbitmq.conf"),
            RABBITMQ_CONFIG_FILES=str(w / "conf.d" / "*.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(w / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(w / "enabled_plugins"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(w / "plugins-expand"),
            RABBITMQ_MOTD_FILE=str(w / "motd"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=_LOOPBACK_DIST,
            RABBITMQ_CTL_ERL_ARGS=_LOOPBACK_DIST,
        )
        if self._plugins_dir is not None:
            env["RABBITMQ_PLUGINS_DIR"] = str(self._plugins_dir)
        return env

    def _start_epmd(self) -> None:
        """Start our own epmd on loopback, so no system epmd is used, started or leaked."""
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd = subprocess.Popen(
            [self._epmd_binary, "-port", str(self.epmd_port), "-address", HOST],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + EPMD_TIMEOUT
        while True:
            try:
                with socket.create_connection((HOST, self.epmd_port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RabbitMQError(f"epmd did not listen on {HOST}:{self.epmd_port}")
            _wait_exit(self._epmd, _POLL, "epmd")

    def _wait_amqp(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Return once the broker answers an AMQP handshake; fail if it exits or is late."""
        while True:
            try:
                if _amqp_handshake(HOST, self.port):
                    return
            except OSError:
                pass  # not listening yet, or it dropped us while booting
            if time.monotonic() > deadline:
                raise RabbitMQError(
                    f"RabbitMQ {self.node} did not answer on {HOST}:{self.port} "
                    f"before the deadline; log:\n{self._log_tail()}"
                )
            try:
                _wait_exit(proc, _POLL, "RabbitMQ")
            except RabbitMQError as exc:
                raise RabbitMQError(f"{exc}; log:\n{self._log_tail()}") from None

    def _beam_pid(self) -> int | None:
        """The Erlang VM's pid from the node's pid file, if that process is ours."""
        try:
            pid = int((self.workdir / "rabbitmq.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # The pid file outlives a killed node: check the pid was not reused.
        return pid if os.fsencode(str(self.workdir / "home")) in cmdline else None

    def _log_tail(self, limit: int = 3000) -> str:
        parts = []
        for path in (self.workdir / f"broker-{self._starts}.out", self.log_path):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {path.name}\n{text[-limit:]}")
        return "\n".join(parts) or "(no log)"


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    """Wait up to ``timeout`` for ``proc`` to exit; raise if it did."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return
    raise RabbitMQError(f"{what} exited with status {code} while starting")


def _amqp_handshake(host: str, port: int, timeout: float = 5.0) -> bool:
    """Send the AMQP 0-9-1 header; True if the peer answers with Connection.Start."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(_PROTOCOL_HEADER)
        header = _recv_exactly(sock, 7)
        if header is None:
            return False
        frame_type, _channel, size = struct.unpack(">BHI", header)
        if frame_type != _FRAME_METHOD or size < 4:
            return False
        method = _recv_exactly(sock, 4)
        return method is not None and struct.unpack(">HH", method) == _CONNECTION_START


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of ``proc``'s process group and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT)


def _slim_home(scripts: Path, dest: Path) -> Path | None:
    """Make a RabbitMQ home that holds only the applications the broker core needs.

    At boot the broker loads every module of every application it can see to
    collect feature flags and boot steps; the packaged home bundles ~70
    applications (all plugins), most of which a plugin-less node never uses.
    ``dest`` gets symlinks to the scripts, the escripts, and the dependency
    closure of the ``rabbit`` application only.

    Returns:
        The new scripts directory, or None if the install is not laid out as
        expected (then the packaged home is used as it is).
    """
    home = scripts.parent
    plugins = home / "plugins"
    if not (plugins.is_dir() and (home / "escript").is_dir()):
        return None
    apps: dict[str, tuple[Path, list[str]]] = {}
    for appdir in plugins.iterdir():
        name = appdir.name.rsplit("-", 1)[0]
        app_file = appdir / "ebin" / f"{name}.app"
        if app_file.is_file():
            apps[name] = (appdir, _app_dependencies(app_file.read_text(errors="replace")))
    needed: dict[str, Path] = {}
    todo = ["rabbit", "rabbitmq_prelaunch"]
    while todo:
        name = todo.pop()
        if name in needed or name not in apps:
            continue  # already taken, or an OTP application (not in plugins/)
        appdir, deps = apps[name]
        needed[name] = appdir
        todo.extend(deps)
    if "rabbit" not in needed:
        return None
    (dest / "plugins").mkdir(parents=True, exist_ok=True)
    for appdir in needed.values():
        (dest / "plugins" / appdir.name).symlink_to(appdir)
    (dest / "escript").symlink_to(home / "escript")
    # A symlinked directory, not symlinked files: the scripts find their home
    # as "$(dirname $0)/..", which must be ``dest``.
    (dest / "sbin").symlink_to(scripts)
    return dest / "sbin"


def _app_dependencies(app_text: str) -> list[str]:
    """The ``applications`` and ``included_applications`` of an Erlang ``.app`` file."""
    deps: list[str] = []
    for key in ("applications", "included_applications"):
        match = re.search(r"\{\s*" + key + r"\s*,\s*\[([^\]]*)\]", app_text)
        if match:
            deps.extend(word.strip() for word in match.group(1).split(",") if word.strip())
    return deps
