"""CURVE encryption and authorization, with real processes and real key files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, run
from tests.support import BIN, Processes
from zdse.cage.authz import Authorized
from zdse.cage.handshakes import MAX_TRACKED, HandshakeLog
from zdse.errors import BusClosed, ConfigError, RegistrationError
from zdse.node.bus import Bus
from zdse.node.silence import Seen, after, explain
from zdse.wire.codec import Register
from zdse.wire.curve import CurveClient, load_public


@pytest.fixture
def keys(tmp_path: Path, procs: Processes) -> dict[str, Path]:
    """Key pairs for the cage, an allowed node, a client and a stranger, via zdse-ctl keygen."""
    out = {}
    probe = Cluster(procs, tmp_path)
    for name in ("cage", "node", "client", "stranger"):
        result = probe.ctl("keygen", str(tmp_path / "keys" / name))
        assert result.returncode == 0, result.stderr
        assert "public key:" in result.stdout
        out[name] = tmp_path / "keys" / f"{name}.key"
        out[f"{name}_secret"] = tmp_path / "keys" / f"{name}.key_secret"
    return out


@pytest.fixture
def secure(procs: Processes, tmp_path: Path, keys: dict[str, Path]) -> Cluster:
    """A cage that requires CURVE and knows the node's and the client's keys."""
    node_key = load_public(str(keys["node"])).decode()
    client_key = load_public(str(keys["client"])).decode()
    authorized = tmp_path / "authorized.toml"
    authorized.write_text(
        f'["{node_key}"]\nnames = ["secure.*"]\naddresses = ["secure.all", "secure.#"]\n\n'
        f'["{client_key}"]\nnames = ["ctl.*", "client"]\n'
    )
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage("--curve-secret", str(keys["cage_secret"]),
                       "--authorized", str(authorized))
    cluster.env["ZDSE_CAGE_KEY"] = str(keys["cage"])
    return cluster


def client_bus(cluster: Cluster, keys: dict[str, Path], who: str, name: str) -> Bus:
    """A Bus with the key pair ``who``."""
    curve = CurveClient.from_files(str(keys[f"{who}_secret"]), str(keys["cage"]))
    return Bus(name, endpoints=cluster.endpoints, curve=curve, connect_timeout=10)


def test_an_authorized_key_registers_its_names_and_traffic_flows(
    secure: Cluster, keys: dict[str, Path], tmp_path: Path
) -> None:
    """A node with a known key registers an allowed name; an allowed client reads from it."""
    secure.env["ZDSE_CURVE_KEY"] = str(keys["node_secret"])
    secure.file_node("secure.one", {"t": [[1]]}, ["secure.all"])

    async def scenario() -> None:
        async with client_bus(secure, keys, "client", "client") as bus:
            assert await bus.request("secure.all", "t") == [[1]]

    run(scenario())
    secure.env["ZDSE_CURVE_KEY"] = str(keys["client_secret"])
    result = secure.ctl("req", "secure.one", "t")
    assert result.returncode == 0, result.stderr


def test_a_known_key_cannot_register_a_name_it_is_not_allowed(
    secure: Cluster, keys: dict[str, Path]
) -> None:
    """A registration outside the key's grant is refused with a clear, final error."""
    secure.env["ZDSE_CURVE_KEY"] = str(keys["node_secret"])
    node = secure.start_node("file", "other.name", wait=False, path="/dev/null")
    assert node.popen.wait(timeout=20) == 1
    node.wait_event("exited")
    assert any("may not register the name 'other.name'" in line for line in node.lines)

    async def scenario() -> None:
        bus = client_bus(secure, keys, "node", "secure.two")
        bus.core.session.register = Register("secure.two", ["everything.#"], {})
        with pytest.raises(RegistrationError, match=r"may not listen on 'everything\.#'"):
            await bus.open()

    run(scenario())


def test_an_unknown_key_cannot_connect(secure: Cluster, keys: dict[str, Path]) -> None:
    """A stranger's handshake fails; the client says the cage refused its key."""
    async def scenario() -> None:
        with pytest.raises(RegistrationError, match="refused this node's CURVE key"):
            await client_bus(secure, keys, "stranger", "client").open()

    run(scenario())
    secure.env["ZDSE_CURVE_KEY"] = str(keys["stranger_secret"])
    result = secure.ctl("services")
    assert result.returncode == 7
    assert "CURVE key" in result.stderr


def test_a_plain_client_gets_nothing_from_a_curve_cage(secure: Cluster) -> None:
    """Without keys, a client cannot even complete the handshake, and says that this is why
    (it used to ask whether zdse-proxy was running)."""
    secure.env.pop("ZDSE_CAGE_KEY")
    result = secure.ctl("--connect-timeout", "1", "services")
    assert result.returncode == 6
    # Which side notices the mismatch first varies: "requires CURVE" either way.
    assert result.stderr.startswith("zdse-ctl: no answer from the cage within 1.0s: ")
    assert "requires CURVE" in result.stderr
    assert "--curve-key and --cage-key, or ZDSE_CURVE_KEY and ZDSE_CAGE_KEY" in result.stderr
    assert result.stderr.count("\n") == 1


def test_the_wrong_cage_key_is_named_as_the_likely_cause(
    secure: Cluster, keys: dict[str, Path]
) -> None:
    """A client with a known key but another cage's public key: the cage drops the
    handshake, and the client says the cage key is likely wrong (it used to ask whether
    zdse-proxy was running)."""
    secure.env["ZDSE_CURVE_KEY"] = str(keys["client_secret"])
    secure.env["ZDSE_CAGE_KEY"] = str(keys["stranger"])
    result = secure.ctl("--connect-timeout", "1", "services")
    assert result.returncode == 6
    assert "the CURVE handshake with the cage at" in result.stderr
    assert "likely not this cage's public key" in result.stderr
    assert "is zdse-proxy running there?" not in result.stderr


def test_a_node_waiting_on_a_curve_cage_says_why(secure: Cluster) -> None:
    """A node without keys used to wait forever in silence: node.waiting says the cage
    requires CURVE (the node keeps trying: the cage may change)."""
    secure.env.pop("ZDSE_CAGE_KEY")
    node = secure.start_node("file", "secure.plain", wait=False, path="/dev/null")
    waiting = node.wait_event("node.waiting")
    assert "requires CURVE" in waiting["why"]
    assert node.popen.poll() is None


def test_a_curve_client_of_a_plain_cage_is_told_so(procs: Processes, tmp_path: Path,
                                                    keys: dict[str, Path]) -> None:
    """Keys given, but the cage does not use CURVE: said plainly (it was called a refused
    key, exit 7)."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    cluster.env["ZDSE_CURVE_KEY"] = str(keys["client_secret"])
    cluster.env["ZDSE_CAGE_KEY"] = str(keys["cage"])
    result = cluster.ctl("--connect-timeout", "1", "services")
    assert result.returncode == 6, result.stderr
    assert "does not use CURVE" in result.stderr


def test_nothing_listening_is_told_apart_from_a_failed_handshake(
    procs: Processes, tmp_path: Path
) -> None:
    """No cage at all: the client still asks whether zdse-proxy runs there."""
    cluster = Cluster(procs, tmp_path)
    result = cluster.ctl("--connect-timeout", "0.5", "services")
    assert result.returncode == 6
    assert result.stderr.endswith(
        f"nothing accepted a connection at {cluster.endpoints.router} "
        "(is zdse-proxy running there?)\n")


@pytest.mark.parametrize(
    ("seen", "curve", "words"),
    [
        (None, True, "nothing accepted a connection"),
        (Seen.CONNECTED, True, "a CURVE mistake (the wrong --cage-key) is the likely cause"),
        (Seen.CONNECTED, False, "has not answered yet"),
        (Seen.HANDSHAKE_OK, True, "has not answered yet"),
        (Seen.MECHANISM_MISMATCH, False, "requires CURVE"),
        (Seen.MECHANISM_MISMATCH, True, "does not use CURVE"),
        (Seen.HANDSHAKE_FAILED, True, "likely not this cage's public key"),
        (Seen.HANDSHAKE_FAILED, False, "the cage likely requires CURVE"),
        (Seen.REFUSED, True, "refused this node's CURVE key"),
    ],
)
def test_each_thing_the_connection_saw_has_its_explanation(
    seen: Seen | None, curve: bool, words: str
) -> None:
    """The table of explanations, each naming the endpoint."""
    why = explain(seen, "tcp://127.0.0.1:1", curve)
    assert words in why
    assert "tcp://127.0.0.1:1" in why


def test_the_cage_warns_when_bound_beyond_loopback_without_curve(
    procs: Processes, tmp_path: Path
) -> None:
    """Binding a non-loopback address without CURVE logs cage.unencrypted."""
    cluster = Cluster(procs, tmp_path)
    port = cluster.endpoints.router.rsplit(":", 1)[1]
    pub = cluster.endpoints.pub.rsplit(":", 1)[1]
    # 0.0.0.0 is not loopback; nothing is sent to it, the cage only binds.
    proc = cluster.spawn("cage", [str(BIN / "zdse-proxy"), "--router", f"tcp://0.0.0.0:{port}",
                                  "--pub", f"tcp://0.0.0.0:{pub}"])
    event = proc.wait_event("cage.unencrypted")
    assert "without CURVE" in event["why"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["short"]\nnames = ["a"]\n', "40-character Z85"),
        ('["' + "k" * 40 + '"]\nnames = "a"\n', "must be a list of strings"),
        ('["' + "k" * 40 + '"]\nname = ["a"]\n', "unknown fields"),
        ("[[[", "not valid TOML"),
    ],
)
def test_bad_authorized_files_are_config_errors(text: str, message: str) -> None:
    """Each mistake in the authorized file is named."""
    with pytest.raises(ConfigError, match=message):
        Authorized.parse(text)


def test_grants_cover_names_by_pattern_and_wildcard_addresses_only_verbatim() -> None:
    """Names match patterns; a wildcard address must be granted as written."""
    key = "k" * 40
    auth = Authorized.parse(f'["{key}"]\nnames = ["vSphere.*"]\naddresses = ["vSphere.#"]\n')
    assert auth.check(key, Register("vSphere.Boston", ["vSphere.node.list"], {})) is None
    assert auth.check(key, Register("vSphere.Boston", ["vSphere.#"], {})) is None
    assert auth.check(key, Register("vSphere.Boston", ["vSphere.*"], {})) is not None
    assert auth.check(key, Register("nova", [], {})) is not None
    assert auth.check("x" * 40, Register("vSphere.Boston", [], {})) is not None


@pytest.mark.parametrize(
    ("events", "kept"),
    [
        ([Seen.CONNECTED, Seen.MECHANISM_MISMATCH, Seen.CONNECTED, Seen.HANDSHAKE_FAILED],
         Seen.MECHANISM_MISMATCH),
        ([Seen.CONNECTED, Seen.HANDSHAKE_FAILED, Seen.CONNECTED], Seen.HANDSHAKE_FAILED),
        ([Seen.MECHANISM_MISMATCH, Seen.HANDSHAKE_OK, Seen.CONNECTED], Seen.CONNECTED),
        ([Seen.HANDSHAKE_FAILED, Seen.REFUSED, Seen.HANDSHAKE_FAILED], Seen.REFUSED),
    ],
)
def test_a_vaguer_failure_does_not_hide_a_plainer_one(events: list[Seen], kept: Seen) -> None:
    """Retried handshakes fail now as a mismatch, now as a dropped connection: the plainest
    failure since the last success is what the client reports."""
    seen: Seen | None = None
    for event in events:
        seen = after(seen, event)
    assert seen is kept


def handshake_failures(cluster: Cluster) -> list[dict[str, Any]]:
    """The cage.handshake_failed lines the cage logged so far."""
    assert cluster.cage is not None
    return [json.loads(line) for line in cluster.cage.lines if '"cage.handshake_failed"' in line]


def test_the_cage_logs_failed_handshakes_with_the_peer_and_the_likely_mistake(
    secure: Cluster, keys: dict[str, Path],
) -> None:
    """A client without a key, and one with another cage's public key: the cage logs
    cage.handshake_failed naming the peer's address and the mistake, a line per peer and
    mistake however often the client retries."""
    assert secure.cage is not None
    secure.env.pop("ZDSE_CAGE_KEY")
    assert secure.ctl("--connect-timeout", "2", "services").returncode == 6
    # Whichever side notices the mismatch first drops the connection, so some
    # attempts read only "no detail": wait for the one that names the mistake.
    # Whichever side notices the mismatch first drops the connection, so a line
    # may read "no detail", and name peer "unknown" when the connection ended
    # before the cage read its address; lines are rate-limited per host and reason.
    plain = secure.cage.wait_event("cage.handshake_failed")
    assert plain["why"] in ("it does not use CURVE (no client key given?)", "no detail")
    assert plain["socket"] in ("router", "pub")

    async def wrong_key() -> None:
        curve = CurveClient.from_files(str(keys["client_secret"]), str(keys["stranger"]))
        bus = Bus("client", endpoints=secure.endpoints, curve=curve, connect_timeout=2)
        with pytest.raises(BusClosed):
            await bus.open()

    run(wrong_key())
    wrong = secure.cage.wait_event("cage.handshake_failed",
                                   why="it holds another cage public key than this cage's")
    assert wrong["peer"] == "unknown" or wrong["peer"].startswith("127.0.0.1:")
    # Each client retried about ten times a second for two seconds, on two sockets.
    lines = [(f["peer_host"], f["why"], f["socket"]) for f in handshake_failures(secure)]
    assert len(lines) == len(set(lines)), lines


def test_the_cage_warns_when_its_authorized_file_names_no_key(
    procs: Processes, tmp_path: Path, keys: dict[str, Path],
) -> None:
    """An empty authorized file starts a cage nobody can join: it says so at start."""
    authorized = tmp_path / "authorized.toml"
    authorized.write_text("# nobody yet\n")
    cluster = Cluster(procs, tmp_path)
    proc = cluster.spawn("cage", [str(BIN / "zdse-proxy"), "--curve-secret",
                                  str(keys["cage_secret"]), "--authorized", str(authorized)])
    warning = proc.wait_event("cage.nobody_authorized")
    assert "no node or client can join" in warning["why"]
    proc.wait_event("cage.started")


@pytest.mark.parametrize("flag", ["--config", "--authorized"])
def test_a_file_that_is_not_utf8_is_a_one_line_error(
    procs: Processes, tmp_path: Path, keys: dict[str, Path], flag: str,
) -> None:
    """zdse-proxy --config or --authorized naming a file that is not UTF-8: exit 2 and one
    line naming the file, no traceback."""
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'# caf\xe9\n')
    argv = [str(BIN / "zdse-proxy"), flag, str(bad)]
    if flag == "--authorized":
        argv += ["--curve-secret", str(keys["cage_secret"])]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    what = "config" if flag == "--config" else "--authorized"
    assert result.stderr == (f"zdse-proxy: cannot read {what} {bad}: not UTF-8 text "
                             "(byte 0xe9 at offset 5)\n")


def test_handshake_lines_are_rate_limited_per_peer_host_and_reason_and_bounded() -> None:
    """The first failure of a (host, reason) is logged, then one a LOG_INTERVAL with the
    count suppressed between; the tables it keeps stay under MAX_TRACKED."""
    book = HandshakeLog(interval=10.0)
    book.accepted(7, "10.0.0.1:4000")
    book.failed("why")
    assert book.disconnected(7, 100.0) == {"peer": "10.0.0.1:4000", "peer_host": "10.0.0.1",
                                           "why": "why", "suppressed": 0}
    for port in range(3):
        book.accepted(7, f"10.0.0.1:{port}")
        book.failed("why")
        assert book.disconnected(7, 101.0) is None
    book.accepted(8, "10.0.0.2:1")
    book.failed("why")
    assert book.disconnected(8, 101.0) is not None  # another host
    book.accepted(9, None)
    assert book.disconnected(9, 102.0) is None  # no failure: a normal goodbye
    book.accepted(7, "10.0.0.1:9")
    book.failed("why")
    assert book.disconnected(7, 111.0) == {"peer": "10.0.0.1:9", "peer_host": "10.0.0.1",
                                           "why": "why", "suppressed": 3}
    for n in range(3 * MAX_TRACKED):
        book.accepted(n, f"10.1.{n // 256}.{n % 256}:1")
        book.failed("flood")
        book.disconnected(n, 200.0)
        book.accepted(100_000 + n, None)  # never disconnected
    assert book.tracked() <= 2 * MAX_TRACKED
