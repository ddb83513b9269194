"""The cage's config file: what it accepts, the errors that name the key, and precedence."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

from zdse.cage.config import apply_defaults, given_flags, load, parse, parse_host_port
from zdse.cli.proxy import build_parser
from zdse.errors import ConfigError
from zdse.supervisor.core import RestartPolicy, ServiceSpec

FULL = """
[cage]
router = "tcp://127.0.0.1:6000"
pub = "tcp://127.0.0.1:6001"
heartbeat = 0.5
heartbeats_to_expire = 4
queue_hwm = 5000
queue_bytes = 8388608
metrics = "127.0.0.1:9570"

[log]
level = "debug"
format = "json"

[restart]
backoff = 0.5
max_restarts = 2

[services."files.boston"]
module = "file"
addresses = ["files.all"]
options = { path = "boston.json", poll_interval = 0.5, strict = true }

[services.lazy]
module = "file"
autostart = false
"""


def test_a_full_file_gives_settings_policy_and_services() -> None:
    """Every section is read; options become the strings --set would give."""
    config = parse(tomllib.loads(FULL), "zdse.toml", known_modules={"file"})
    assert config.settings == {
        "router": "tcp://127.0.0.1:6000", "pub": "tcp://127.0.0.1:6001", "heartbeat": 0.5,
        "heartbeats_to_expire": 4, "queue_hwm": 5000, "queue_bytes": 8388608,
        "metrics": "127.0.0.1:9570",
        "log_level": "debug",
        "log_format": "json",
    }
    assert config.policy == RestartPolicy(backoff=0.5, max_restarts=2)
    assert config.services == {
        "files.boston": ServiceSpec("files.boston", "file", ("files.all",),
                                    (("path", "boston.json"), ("poll_interval", "0.5"),
                                     ("strict", "true"))),
        "lazy": ServiceSpec("lazy", "file", autostart=False),
    }


@pytest.mark.parametrize(("text", "error"), [
    ('[cage]\nrouter = "nonsense"', r"zdse\.toml: cage\.router 'nonsense' is not an endpoint"),
    ("[cage]\nheartbeat = 0", r"zdse\.toml: cage\.heartbeat: expected a number above zero, got 0"),
    ("[cage]\nqueue_hwm = 0", r"cage\.queue_hwm: expected a whole number of at least 1, got 0"),
    ("[cage]\nqueue_bytes = 1000", r"cage\.queue_bytes: expected a whole number of at least "
                                   r"1048576, got 1000"),
    ("[cage]\nheartbeat = true", r"cage\.heartbeat: expected a number above zero, got True"),
    ('[cage]\nrouterr = "x"', r"cage\.routerr: unknown key \(known: router, pub,"),
    ('[cage]\nmetrics = "9570"', r"cage\.metrics '9570' is not HOST:PORT"),
    ('[log]\nlevel = "loud"', r"log\.level: expected one of debug, info, warning, error"),
    ("[restart]\nmax_restarts = 1.5", r"restart\.max_restarts: expected a whole number"),
    ('[services.x]\nmodule = "nope"', r"services\.x\.module: no module named 'nope'; "
                                      r"installed: file"),
    ("[services.x]\naddresses = []", r"\[services\.x\] has no module"),
    ('[services.files.boston]\nmodule = "file"',
     r"\[services\.files\] has no module; a name that holds dots must be quoted: "
     r'\[services\."files\.boston"\]'),
    ('[services.x]\nmodule = "file"\naddresses = "a"',
     r"services\.x\.addresses: expected a list of strings"),
    ('[services.x]\nmodule = "file"\naddresses = ["a.#b."]', None),
    ('[services."a.*"]\nmodule = "file"', r'\[services\."a\.\*"\]: .*wildcard'),
    ('[services.x]\nmodule = "file"\noptions = { path = [1] }',
     r"services\.x\.options\.path: expected a string, number or boolean, got a list"),
    ('[services.x]\nmodule = "file"\ncolour = "red"', r"services\.x\.colour: unknown key"),
    ('[service.x]\nmodule = "file"', r"service: unknown key \(known: cage, log, restart, "
                                     r"services\)"),
])
def test_errors_name_the_file_and_the_key(text: str, error: str | None) -> None:
    """A wrong value is a ConfigError that names the file and the key."""
    data = tomllib.loads(text)
    if error is None:
        parse(data, "zdse.toml", known_modules={"file"})
        return
    with pytest.raises(ConfigError, match=error):
        parse(data, "zdse.toml", known_modules={"file"})


def test_unreadable_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file or broken TOML is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=r"cannot read config .*missing\.toml"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cage\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load(bad)


def test_flags_beat_the_environment_beats_the_file() -> None:
    """A flag overrides the file; so does a flag's environment variable; the file fills the rest."""
    config = parse(tomllib.loads(FULL), "zdse.toml")
    parser = build_parser()
    argv = ["--router", "tcp://127.0.0.1:7000", "--config", "zdse.toml"]
    args = parser.parse_args(argv)
    given = given_flags(parser, argv, config.settings.keys())
    assert given == {"router"}
    apply_defaults(args, config, given, env={"ZDSE_PUB": "tcp://127.0.0.1:7001"})
    assert args.router == "tcp://127.0.0.1:7000"  # the flag
    assert args.pub != "tcp://127.0.0.1:6001"  # the environment's (parsed with the flag)
    assert args.heartbeat == 0.5  # the file
    assert args.heartbeats_to_expire == 4
    assert args.queue_hwm == 5000
    assert args.queue_bytes == 8388608
    assert args.log_level == "debug"
    assert args.metrics == "127.0.0.1:9570"


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9570", ("127.0.0.1", 9570)),
    (":9570", ("127.0.0.1", 9570)),
    ("[::1]:9570", ("::1", 9570)),
    ("localhost:1", ("localhost", 1)),
])
def test_host_port(text: str, want: tuple[str, int]) -> None:
    """--metrics takes HOST:PORT, [IPv6]:PORT, or :PORT for loopback."""
    assert parse_host_port(text, "--metrics") == want


@pytest.mark.parametrize("text", ["9570", "host:port", "example.com:80", "1.2.3.4:70000"])
def test_host_port_rejects(text: str) -> None:
    """A wrong --metrics value is a ConfigError naming the flag."""
    with pytest.raises(ConfigError, match="--metrics"):
        parse_host_port(text, "--metrics")


def test_options_may_name_environment_variables() -> None:
    """${NAME} in an option is the cage's environment variable; a missing one is an error."""
    text = '[services.x]\nmodule = "file"\noptions = { path = "${DIR}/x.json", cost = "$5" }'
    config = parse(tomllib.loads(text), "zdse.toml", env={"DIR": "/data"})
    assert config.services["x"].options == (("path", "/data/x.json"), ("cost", "$5"))
    with pytest.raises(ConfigError, match=r"services\.x\.options\.path: \$\{DIR\} is not set"):
        parse(tomllib.loads(text), "zdse.toml", env={})


def test_the_example_config_of_make_run_is_valid() -> None:
    """examples/zdse.toml loads with the installed modules and the demo's variables."""
    from tests.support import ROOT
    from zdse.modules import registry as modules

    config = load(ROOT / "examples" / "zdse.toml", modules.available(),
                  env={"ZDSE_DEMO_DIR": "/demo", "ZDSE_DEMO_VCENTER": "https://u:p@h/sdk"})
    assert set(config.services) == {"files.boston", "files.chicago", "vSphere.demo"}
    modules.check_services(config)  # every module takes its options
    assert dict(config.services["files.boston"].options) == {"path": "/demo/boston.json"}
    assert config.services["files.boston"].addresses == ("files.all",)


def test_each_service_is_checked_by_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a module's constructor refuses is a ConfigError naming the file and the service;
    only the services named are checked."""
    from zdse.modules import registry as modules
    from zdse.node.service import Service

    text = ('[services."files.a"]\nmodule = "file"\noptions = { path = "a.json", colour = 1 }\n'
            '[services.b]\nmodule = "file"\noptions = { path = "b.json" }\n')
    config = parse(tomllib.loads(text), "zdse.toml", modules.available())
    with pytest.raises(ConfigError, match=r'^zdse.toml: \[services."files.a"\]: module file '
                                          r"has no option 'colour'"):
        modules.check_services(config)
    modules.check_services(config, ["b"])

    class Picky(Service):
        def __init__(self, name: str, options: Mapping[str, str]) -> None:
            raise KeyError("speed")

    class Quitter(Service):
        def __init__(self, name: str, options: Mapping[str, str]) -> None:
            raise SystemExit(7)

    # A third-party module's own error, or even SystemExit, is a refusal.
    monkeypatch.setattr(modules, "load", lambda module: Picky)
    with pytest.raises(ConfigError, match=r"^module 'file' refused its options: "
                                          r"KeyError: 'speed'$"):
        modules.check("file", "b", {})
    monkeypatch.setattr(modules, "load", lambda module: Quitter)
    with pytest.raises(ConfigError, match=r"^module 'file' refused its options: SystemExit: 7$"):
        modules.check("file", "b", {})
