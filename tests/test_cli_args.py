"""The command lines of zdse-proxy, zdse-node and zdse-ctl: environment
variables checked as their flags are, and the flags every tool shares."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, write_json
from tests.support import BIN, Processes
from zdse.cli import ctl, node, proxy
from zdse.cli.args import env_default, positive_float


def run_tool(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run one of the installed commands to completion with ``env`` added."""
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=30, check=False,
                          stdin=subprocess.DEVNULL)


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
    """zdse-ctl --help ends with its exit codes, one line each, 0 to EXIT_REFUSED and 130."""
    result = run_tool(["zdse-ctl", "--help"])
    assert result.returncode == 0
    codes = result.stdout.partition("Exit codes:\n")[2]
    listed = [line.split()[0] for line in codes.splitlines() if line.startswith("  ")]
    assert listed == [str(code) for code in range(ctl.EXIT_REFUSED + 1)] + [
        str(ctl.EXIT_INTERRUPTED)]
    assert set(ctl.EXIT_CODES.values()) < set(range(ctl.EXIT_REFUSED + 1))


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
