"""The shared parsers of modules' --set options: values, defaults, and named errors."""

from __future__ import annotations

import pytest

from zdse.errors import ConfigError
from zdse.modules import options


@pytest.mark.parametrize(
    ("parse", "text", "want"),
    [
        (options.positive_float, "2.5", 2.5),
        (options.positive_int, "7", 7),
        (options.boolean, "Yes", True),
        (options.boolean, "off", False),
    ],
)
def test_good_values_parse(parse: object, text: str, want: object) -> None:
    """Each parser reads a good value."""
    assert parse({"k": text}, "k", None) == want  # type: ignore[operator]


def test_absent_options_give_the_default() -> None:
    """A missing option is its default, not an error."""
    assert options.positive_float({}, "k", 3.0) == 3.0
    assert options.positive_int({}, "k", 4) == 4
    assert options.boolean({}, "k", True) is True


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (options.positive_float, "ten", "not a number"),
        (options.positive_float, "0", "above zero"),
        (options.positive_float, "inf", "finite"),
        (options.positive_float, "nan", "above zero"),
        (options.positive_int, "1.5", "not a whole number"),
        (options.positive_int, "0", "at least 1"),
        (options.boolean, "maybe", "say true or false"),
    ],
)
def test_bad_values_name_the_option_and_the_value(parse: object, text: str, message: str) -> None:
    """Errors say which option, which value, and what is wrong."""
    with pytest.raises(ConfigError, match=message) as info:
        parse({"k": text}, "k", None)  # type: ignore[operator]
    assert f"--set k={text!r}" in str(info.value)


def test_an_environment_number_names_the_variable() -> None:
    """positive_float_env: the default when unset, the number when good, else an error
    naming the variable and its value."""
    assert options.positive_float_env("ZDSE_X", 10.0, {}) == 10.0
    assert options.positive_float_env("ZDSE_X", 10.0, {"ZDSE_X": "0.5"}) == 0.5
    for text, why in (("abc", "not a number"), ("0", "above zero"), ("inf", "finite")):
        with pytest.raises(ConfigError, match=why) as info:
            options.positive_float_env("ZDSE_X", 10.0, {"ZDSE_X": text})
        assert str(info.value).startswith(f"ZDSE_X={text!r}: ")


def test_unknown_keys_are_refused_naming_the_module_the_keys_and_the_known() -> None:
    """refuse_unknown: keys only (never a value), sorted; prefixed keys pass."""
    options.refuse_unknown("m", {"a": "1", "key.x": "2"}, {"a", "b"}, prefixes=("key.",))
    with pytest.raises(ConfigError) as info:
        options.refuse_unknown("m", {"zz": "secret", "a": "1", "c": "x"}, {"b", "a"},
                               prefixes=("key.",))
    assert str(info.value) == "module m has no options 'c', 'zz' (known: a, b, key.*)"


def test_each_module_refuses_an_unknown_option() -> None:
    """file, vsphere and amqp all refuse a mistyped key, naming the module and the key."""
    from zdse_nodes.amqp_config import from_options
    from zdse_nodes.file import FileService
    from zdse_nodes.vsphere import VCenterConfig

    with pytest.raises(ConfigError, match=r"^module file has no option 'poll_intervall' "
                                          r"\(known: path, poll_interval\)$"):
        FileService("f", {"path": "f.json", "poll_intervall": "5"})
    with pytest.raises(ConfigError, match=r"^module vsphere has no option 'pasword' \(known: "
                                          r"insecure, password, password_file, poll_interval, "
                                          r"timeout, url, user\)$") as info:
        VCenterConfig.from_options({"url": "https://u@h/sdk", "pasword": "hunter2"})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^module amqp has no option 'exchange' \(known: .*"
                                          r"url, url_file, window, window_bytes, key\.\*\)$"):
        from_options("o", {"url": "amqp://u:p@h/", "exchange": "nova"})


def test_missing_required_options_name_the_module_and_the_ways_to_give_them() -> None:
    """The file module says 'file' (not its class); amqp names url_file too."""
    from zdse_nodes.amqp_config import from_options
    from zdse_nodes.file import FileService

    with pytest.raises(ConfigError, match=r"^module file needs --set path=FILE"):
        FileService("f", {"poll_interval": "5"})
    with pytest.raises(ConfigError, match=r"needs --set url=.* or --set url_file=FILE"):
        from_options("o", {})
