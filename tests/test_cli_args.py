"""The command lines of zdse-proxy, zdse-node and zdse-ctl: environment
variables checked as their flags are, and the flags every tool shares."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, run, write_json
from tests.support import BIN, Processes, free_port, run_tool
from zdse.cli import ctl, node, proxy
from zdse.cli.args import env_default, positive_float
from zdse.errors import ConfigError
from zdse.node.bus import Bus
from zdse.node.service import Service
from zdse.wire.curve import generate, is_z85_key, load_public, load_secret
from zdse.wire.endpoints import check_endpoint


@pytest.mark.parametrize(
    ("argv", "variable", "value", "flag", "why"),
    [
        (["zdse-proxy"], "ZDSE_HEARTBEAT", "abc", "--heartbeat", "not a number"),
        (["zdse-proxy"], "ZDSE_HEARTBEAT", "0", "--heartbeat", "above zero"),
        (["zdse-proxy"], "ZDSE_HEARTBEAT", "nan", "--heartbeat", "above zero"),
        (["zdse-proxy"], "ZDSE_QUEUE_HWM", "0", "--queue-hwm", "at least 1"),
        (["zdse-proxy"], "ZDSE_QUEUE_HWM", "lots", "--queue-hwm", "not a whole number"),
        (["zdse-proxy"], "ZDSE_QUEUE_BYTES", "1000", "--queue-bytes", "at least 1048576"),
        (["zdse-proxy"], "ZDSE_QUEUE_BYTES", "64MiB", "--queue-bytes", "not a whole number"),
        (["zdse-ctl", "services"], "ZDSE_CONNECT_TIMEOUT", "x", "--connect-timeout",
         "not a number"),
        (["zdse-ctl", "stats"], "ZDSE_CONNECT_TIMEOUT", "-1", "--connect-timeout",
         "above zero"),
    ],
)
def test_a_bad_environment_value_is_a_usage_error_naming_it(
    argv: list[str], variable: str, value: str, flag: str, why: str
) -> None:
    """Exit 2 and one line naming the flag, the variable and the value: no traceback,
    and nothing started."""
    result = run_tool(argv, **{variable: value})
    assert result.returncode == 2, result.stderr
    assert f"argument {flag}: {variable}={value!r}: " in result.stderr
    assert why in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "variable"),
    [(["zdse-proxy", "--help"], "ZDSE_HEARTBEAT"),
     (["zdse-ctl", "--help"], "ZDSE_CONNECT_TIMEOUT")],
)
def test_help_works_whatever_the_environment(argv: list[str], variable: str) -> None:
    """--help does not read the values it shows, so a bad one does not stop it;
    and it names the variable."""
    result = run_tool(argv, **{variable: "abc"})
    assert result.returncode == 0, result.stderr
    assert f"env {variable}" in " ".join(result.stdout.split())


def test_the_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad variable does not matter when the flag is given; a good one is used."""
    monkeypatch.setenv("ZDSE_HEARTBEAT", "abc")
    assert proxy.build_parser().parse_args(["--heartbeat", "0.5"]).heartbeat == 0.5
    monkeypatch.setenv("ZDSE_HEARTBEAT", "2")
    assert proxy.build_parser().parse_args([]).heartbeat == 2.0
    monkeypatch.delenv("ZDSE_HEARTBEAT")
    assert proxy.build_parser().parse_args([]).heartbeat == 1.0
    monkeypatch.setenv("ZDSE_CONNECT_TIMEOUT", "0.25")
    assert ctl.build_parser().parse_args(["routes"]).connect_timeout == 0.25


def test_a_bad_flag_value_names_the_flag_and_the_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The flag's own value goes through the same check."""
    with pytest.raises(SystemExit) as info:
        proxy.build_parser().parse_args(["--heartbeat", "inf"])
    assert info.value.code == 2
    assert "argument --heartbeat: 'inf': must be a finite number above zero" in (
        capsys.readouterr().err)

    with pytest.raises(SystemExit):
        ctl.build_parser().parse_args(["sub", "k", "t", "--count", "-1"])
    assert "argument --count: '-1': must be at least 1" in capsys.readouterr().err
    assert ctl.build_parser().parse_args(["sub", "k", "t", "--count", "3"]).count == 3
    assert ctl.build_parser().parse_args(["sub", "k", "t"]).count is None


def test_env_default_is_the_variable_or_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default is a string (argparse converts it); its repr names the variable."""
    monkeypatch.delenv("ZDSE_TEST_X", raising=False)
    assert env_default("ZDSE_TEST_X", "5") == "5"
    assert env_default("ZDSE_TEST_X") is None
    monkeypatch.setenv("ZDSE_TEST_X", "7")
    value = env_default("ZDSE_TEST_X", "5")
    assert value == "7"
    assert repr(value) == "ZDSE_TEST_X='7'"
    assert positive_float(value or "") == 7.0
    monkeypatch.setenv("ZDSE_TEST_X", "0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"^ZDSE_TEST_X='0': must be a finite"):
        positive_float(env_default("ZDSE_TEST_X") or "")


def test_parsers_build() -> None:
    """Every tool's parser builds (its help strings format)."""
    for module in (proxy, node, ctl):
        module.build_parser().format_help()



def test_node_and_ctl_take_the_log_format(procs: Processes, tmp_path: Path) -> None:
    """zdse-node and zdse-ctl take --log-format and --log-level as zdse-proxy does."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    write_json(tmp_path / "t.json", {"t": [1]})
    node = cluster.spawn("node", [str(BIN / "zdse-node"), "--module", "file", "--name", "f",
                                  "--set", f"path={tmp_path / 't.json'}",
                                  "--log-format", "console"])
    while "node.started" not in (line := node.wait_event("text")["text"]):
        pass
    assert not line.startswith("{")  # a readable line, though stderr is a pipe

    for fmt in ("json", "console"):
        result = cluster.ctl("--log-level", "info", "--log-format", fmt, "routes")
        assert result.returncode == 0, result.stderr
        registered = [ln for ln in result.stderr.splitlines() if "node.registered" in ln]
        assert len(registered) == 1, result.stderr
        assert registered[0].startswith("{") == (fmt == "json")
    quiet = cluster.ctl("routes")  # default: warning, so nothing
    assert quiet.returncode == 0
    assert quiet.stderr == ""


def test_an_unknown_log_format_is_refused() -> None:
    """Only auto, json and console, for every tool."""
    for argv in (["zdse-node", "--module", "file", "--log-format", "xml"],
                 ["zdse-ctl", "--log-format", "xml", "routes"],
                 ["zdse-proxy", "--log-format", "xml"]):
        result = run_tool(argv)
        assert result.returncode == 2
        assert "argument --log-format: invalid choice: 'xml'" in result.stderr


def test_ctl_help_lists_every_exit_code() -> None:
    """zdse-ctl --help ends with its exit codes, one line each, 0 to EXIT_PARTIAL and 130."""
    result = run_tool(["zdse-ctl", "--help"])
    assert result.returncode == 0
    codes = result.stdout.partition("Exit codes:\n")[2]
    listed = [line.split()[0] for line in codes.splitlines() if line.startswith("  ")]
    assert listed == [str(code) for code in range(ctl.EXIT_PARTIAL + 1)] + [
        str(ctl.EXIT_INTERRUPTED)]
    assert set(ctl.EXIT_CODES.values()) < set(range(ctl.EXIT_PARTIAL + 1))


def test_zdse_node_waiting_for_its_cage_says_so_and_stops_on_sigterm(
    procs: Processes, tmp_path: Path
) -> None:
    """No cage on the endpoints: the node logs node.waiting (it keeps trying), and SIGTERM
    ends it at once, exit 0, where it used to be ignored until the cage answered."""
    cluster = Cluster(procs, tmp_path)  # its endpoints, no cage on them
    path = tmp_path / "t.json"
    write_json(path, {"t": [[1]]})
    node = cluster.spawn("node", [str(BIN / "zdse-node"), "--module", "file",
                                  "--set", f"path={path}"])
    waiting = node.wait_event("node.waiting")
    assert waiting["router"] == cluster.env["ZDSE_ROUTER"]
    node.popen.send_signal(signal.SIGTERM)
    assert node.popen.wait(timeout=10) == 0
    assert node.wait_event("node.stopped")["registered"] is False


def test_zdse_ctl_interrupted_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while zdse-ctl waits (for an unreachable cage, say): one line, the shell's 130."""
    def interrupted(coro: Any) -> Any:
        coro.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(ctl.asyncio, "run", interrupted)
    # main configures logging for the process: not this one's, whose stderr
    # is a capture closed after the test.
    monkeypatch.setattr(ctl, "configure", lambda *args, **kwargs: None)
    assert ctl.main(["services"]) == ctl.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == "zdse-ctl: interrupted\n"


def test_zdse_node_refuses_an_unknown_module_option() -> None:
    """A mistyped --set key stops zdse-node at once (exit 2) instead of vanishing."""
    result = run_tool(["zdse-node", "--module", "file", "--set", "path=t.json",
                       "--set", "poll_intervall=5"])
    assert result.returncode == 2
    assert result.stderr == ("zdse-node: module file has no option 'poll_intervall' "
                             "(known: path, poll_interval)\n")


def test_zdse_proxy_refuses_a_config_whose_service_its_module_refuses(tmp_path: Path) -> None:
    """The cage checks each service's options with its module before it starts anything."""
    config = tmp_path / "zdse.toml"
    config.write_text('[services."files.a"]\nmodule = "file"\n'
                      'options = { path = "a.json", poll_intervall = 5 }\n')
    result = run_tool(["zdse-proxy", "--config", str(config)])
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f'zdse-proxy: {config}: [services."files.a"]: module file has no '
                             "option 'poll_intervall' (known: path, poll_interval)\n")


@pytest.mark.parametrize("value", ["abc", "0", "nan"])
def test_a_bad_subscription_refresh_is_refused_naming_it(value: str) -> None:
    """ZDSE_SUB_REFRESH is read by every node: a bad value is exit 2 and one line, no traceback."""
    result = run_tool(["zdse-ctl", "services"], ZDSE_SUB_REFRESH=value)
    assert result.returncode == 2, result.stderr
    assert f"ZDSE_SUB_REFRESH={value!r}" in result.stderr
    assert "Traceback" not in result.stderr


#: An ipc path longer than a Unix socket address holds (107 bytes).
LONG_IPC = "ipc:///tmp/" + "a" * 300
FILE_NODE = ["zdse-node", "--module", "file", "--set", "path=t.json"]


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["zdse-ctl", "--router", LONG_IPC, "services"], {}, "--router"),
        (["zdse-ctl", "--router", "tcp://*:5570", "services"], {}, "--router 'tcp://*:5570'"),
        (["zdse-ctl", "--pub", "tcp://127.0.0.1:*", "sub", "k", "t"], {}, "--pub"),
        (["zdse-ctl", "routes"], {"ZDSE_ROUTER": "tcp://*:5570"},
         "--router ZDSE_ROUTER='tcp://*:5570'"),
        ([*FILE_NODE, "--router", LONG_IPC], {}, "--router"),
        ([*FILE_NODE, "--pub", "tcp://*:5571"], {}, "--pub 'tcp://*:5571'"),
        (FILE_NODE, {"ZDSE_PUB": LONG_IPC}, "--pub ZDSE_PUB="),
    ],
)
def test_an_endpoint_a_client_cannot_connect_to_is_a_usage_error(
    argv: list[str], env: dict[str, str], named: str
) -> None:
    """A wildcard or an over-long ipc path given to a client: exit 2, one line naming the
    flag (or the variable), where ZeroMQ's connect raised a traceback."""
    result = run_tool(argv, **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"{argv[0]}: {named}")
    assert "wildcard" in result.stderr or "at most 107" in result.stderr


def test_the_cage_still_binds_a_wildcard() -> None:
    """``*`` stays valid where the cage binds (zdse-proxy, the config file)."""
    assert check_endpoint("tcp://*:5570", "--router") == "tcp://*:5570"
    assert check_endpoint("ipc://*", "--router") == "ipc://*"
    with pytest.raises(ConfigError, match="wildcard"):
        check_endpoint("ipc://*", "--router", connect=True)
    with pytest.raises(ConfigError, match="at most 107"):
        check_endpoint(LONG_IPC, "--router")


def _key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    public, secret = generate(str(directory / name))
    return public, secret


def _cut(path: Path, field: str) -> Path:
    """A copy of key file ``path`` whose ``field`` holds 5 characters, not 40."""
    text = path.read_text()
    key = text.split(f'{field} = "')[1].split('"')[0]
    short = path.with_name(f"short-{field}-{path.name}")
    short.write_text(text.replace(key, key[:5]))
    return short


@pytest.mark.parametrize("field", ["secret-key", "public-key"])
@pytest.mark.parametrize("tool", ["zdse-ctl", "zdse-node", "zdse-proxy"])
def test_a_key_file_with_a_short_key_is_a_usage_error_naming_the_file(
    tool: str, field: str, tmp_path: Path
) -> None:
    """A cut key in a secret key file: exit 2 and the file named, where ZeroMQ raised EINVAL
    from deep in the socket set-up (proxy, ctl and node load keys through one function)."""
    _, secret = _key_pair(tmp_path, "me")
    cage, _ = _key_pair(tmp_path, "cage")
    bad = _cut(secret, field)
    authorized = tmp_path / "authorized.toml"
    authorized.write_text("")
    argv = {
        "zdse-ctl": ["zdse-ctl", "--curve-key", str(bad), "--cage-key", str(cage), "routes"],
        "zdse-node": [*FILE_NODE, "--curve-key", str(bad), "--cage-key", str(cage)],
        "zdse-proxy": ["zdse-proxy", "--curve-secret", str(bad), "--authorized", str(authorized),
                       "--router", f"tcp://127.0.0.1:{free_port()}",
                       "--pub", f"tcp://127.0.0.1:{free_port()}"],
    }[tool]
    result = run_tool(argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == (f"{tool}: {bad}: its {field} is not a 40-character Z85 key (5 characters); "
                    "write a new pair with zdse-ctl keygen")


def test_a_cage_key_file_with_a_short_public_key_is_refused(tmp_path: Path) -> None:
    """The cage's public key file (--cage-key) goes through the same check; a key is 40
    characters of ZeroMQ's Z85 alphabet."""
    cage, _ = _key_pair(tmp_path, "cage")
    with pytest.raises(ConfigError, match="its public-key is not a 40-character Z85 key"):
        load_public(str(_cut(cage, "public-key")))
    assert not is_z85_key(b"abc")
    assert not is_z85_key(b"~" * 40)  # not Z85 characters
    assert is_z85_key(b"0" * 40)


@pytest.fixture
def in_process_ctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run ctl.main in this process, in ``tmp_path``, without configuring its logging."""
    monkeypatch.setattr(ctl, "configure", lambda *args, **kwargs: None)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("", "needs a file name after the directory"),
        ("keys/", "needs a file name after the directory"),
        ("keys/.", "needs a file name after the directory"),
        ("keys/..", "needs a file name after the directory"),
        (".hidden", "would make hidden files"),
        ("tab\tname", "control character"),
        ("x" * 10_000, "the name is too long"),
        ("d" * 300 + "/name", "File name too long"),
        ("blocker/name", "a part of that path is a file, not a directory"),
        ("blocker/deeper/name", "a part of that path is a file, not a directory"),
    ],
)
def test_keygen_refuses_a_prefix_that_is_not_a_directory_and_a_plain_name(
    in_process_ctl: Path, capsys: pytest.CaptureFixture[str], prefix: str, why: str
) -> None:
    """Exit 2 and one short line, no traceback and no file written (`keygen ''` used to
    write hidden .key files; a long name or a file for a directory raised OSError)."""
    (in_process_ctl / "blocker").write_text("a file")
    assert ctl.main(["keygen", prefix]) == ctl.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("zdse-ctl: keygen"), err
    assert err.count("\n") == 1, err
    assert why in err
    assert len(err) < 300
    assert sorted(p.name for p in in_process_ctl.iterdir()) == ["blocker"]


def test_keygen_refuses_to_overwrite_a_pair_unless_forced(
    in_process_ctl: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second keygen on the same prefix keeps the first pair (a cage's secret key is not
    replaced by accident); --force replaces it."""
    assert ctl.main(["keygen", "keys/cage"]) == ctl.EXIT_OK
    public = in_process_ctl / "keys" / "cage.key"
    secret = in_process_ctl / "keys" / "cage.key_secret"
    first = (public.read_text(), secret.read_text())
    capsys.readouterr()

    assert ctl.main(["keygen", "keys/cage"]) == ctl.EXIT_USAGE
    assert capsys.readouterr().err == (
        "zdse-ctl: keygen: keys/cage.key and keys/cage.key_secret already exist(s); "
        "--force replaces the pair (a cage's secret key included)\n")
    assert (public.read_text(), secret.read_text()) == first

    public.unlink()  # half a pair left is still refused: its secret would go
    assert ctl.main(["keygen", "keys/cage"]) == ctl.EXIT_USAGE
    assert "keys/cage.key_secret already exist" in capsys.readouterr().err
    assert secret.read_text() == first[1]

    assert ctl.main(["keygen", "keys/cage", "--force"]) == ctl.EXIT_OK
    assert secret.read_text() != first[1]
    assert load_public(str(public)) == load_secret(str(secret))[0]
    assert secret.stat().st_mode & 0o777 == 0o600


class _Broken(Service):
    """A module whose constructor raises what the test put in ``error``."""

    error: BaseException = RuntimeError("boom")

    def __init__(self, name: str, options: Mapping[str, str]) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (RuntimeError("boom"), "RuntimeError: boom"),
        (KeyError("path"), "KeyError: 'path'"),
        (SystemExit(7), "SystemExit: 7"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
)
def test_zdse_node_names_the_module_whose_constructor_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    error: BaseException, shown: str,
) -> None:
    """Any exception from a module's __init__ (SystemExit and KeyboardInterrupt too) is
    exit 2 and one line naming the module, where it was a traceback or a silent exit 7."""
    monkeypatch.setattr(_Broken, "error", error)
    monkeypatch.setattr(node.modules, "load", lambda name: _Broken)
    monkeypatch.setattr(node, "configure", lambda *args, **kwargs: None)
    assert node.main(["--module", "broken", "--name", "b"]) == 2
    assert capsys.readouterr().err == f"zdse-node: module 'broken' refused its options: {shown}\n"


def _nested(depth: int) -> Any:
    data: Any = "leaf"
    for _ in range(depth):
        data = [data]
    return data


def _nested_json(depth: int) -> str:
    """:func:`_nested` as compact JSON, built without recursion (as are the checks: json.loads
    or == on such data would hit the test's own recursion limit)."""
    return "[" * depth + '"leaf"' + "]" * depth


@pytest.mark.parametrize("compact", [True, False])
def test_printing_deep_data_does_not_depend_on_the_callers_stack(compact: bool) -> None:
    """Data nested as deep as the codec carries prints the same from deep in a callback's
    stack as from the top, where it raised RecursionError (sub's callback) or not (req)."""
    data = {"data": _nested(1_024)}
    top = io.StringIO()
    ctl._print_json(data, top, compact)

    def deep(levels: int) -> str:
        if levels:
            return deep(levels - 1)
        out = io.StringIO()
        ctl._print_json(data, out, compact)
        return out.getvalue()

    assert deep(sys.getrecursionlimit() - 150) == top.getvalue()
    assert "".join(top.getvalue().split()) == '{"data":' + _nested_json(1_024) + "}"


def test_ctl_sub_and_req_print_data_nested_980_deep_alike(procs: Processes, tmp_path: Path) -> None:
    """zdse-ctl sub printed a traceback in its log (and nothing) for data that req printed."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    data = _nested(980)

    async def scenario() -> None:
        async with cluster.bus("deep.pub") as bus:
            bus.publish("t", data)
            req = await asyncio.to_thread(cluster.ctl, "req", "deep.pub", "t")
            sub = await asyncio.to_thread(cluster.ctl, "sub", "deep.pub", "t", "--count", "1",
                                          "--timeout", "10")
        assert req.returncode == 0, req.stderr
        assert sub.returncode == 0, sub.stderr
        assert sub.stderr == req.stderr == ""
        assert req.stdout == _nested_json(980) + "\n"
        assert sub.stdout.endswith(',"data":' + _nested_json(980) + "}\n")

    run(scenario())


def test_req_all_names_the_services_that_did_not_answer(procs: Processes, tmp_path: Path) -> None:
    """Partial answers: printed, the silent service named on stderr, exit 8 (was exit 0
    with no word about it)."""
    cluster = Cluster(procs, tmp_path)
    cluster.start_cage()
    cluster.file_node("talks", {"t": [1]}, ["shared"])
    released = asyncio.Event()

    async def never(sender: str, dataindex: str, args: Any) -> Any:
        await released.wait()

    async def scenario() -> None:
        async with Bus("silent", ["shared"], endpoints=cluster.endpoints,
                       on_request=never, connect_timeout=10) as bus:
            assert bus.registered
            result = await asyncio.to_thread(cluster.ctl, "req", "shared", "t", "--all",
                                             "--timeout", "1")
            released.set()
        assert result.returncode == ctl.EXIT_PARTIAL == 8, result.stderr
        assert json.loads(result.stdout) == {"talks": [1]}
        assert result.stderr == ("zdse-ctl: 1 of 2 services on 'shared' (silent) did not "
                                 "answer within 1.0s\n")

    run(scenario())
    whole = cluster.ctl("req", "talks", "t", "--all")
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout) == {"talks": [1]}
