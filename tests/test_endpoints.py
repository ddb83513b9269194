"""Endpoint lists: several cages in --router / --pub / ZDSE_ROUTER / ZDSE_PUB (issue 14)."""

from __future__ import annotations

import argparse

import pytest

from tests.support import run_tool
from zdse.errors import ConfigError
from zdse.wire.endpoints import DEFAULT_PUB, DEFAULT_ROUTER, Endpoints, check_endpoint

A = ("tcp://127.0.0.1:5570", "tcp://127.0.0.1:5571")
B = ("tcp://127.0.0.1:6570", "tcp://127.0.0.1:6571")


def _args(router: str, pub: str) -> argparse.Namespace:
    return argparse.Namespace(router=router, pub=pub)


def test_one_cage_is_one_cage_as_before() -> None:
    """A single pair gives itself as its only cage: nothing changes for one cage."""
    one = Endpoints()
    assert one.cages == (one,)
    assert (one.router, one.pub) == (DEFAULT_ROUTER, DEFAULT_PUB)
    assert Endpoints.from_args(_args(*A), connect=True) == Endpoints(*A)


def test_lists_pair_by_position() -> None:
    """Comma lists give one single-cage Endpoints per cage, in order; of() builds them back."""
    both = Endpoints(f"{A[0]},{B[0]}", f"{A[1]}, {B[1]}")
    assert both.cages == (Endpoints(*A), Endpoints(*B))
    assert Endpoints.of([A, Endpoints(*B)]).cages == both.cages
    assert Endpoints.from_args(_args(both.router, both.pub), connect=True).cages == both.cages


@pytest.mark.parametrize(
    ("router", "pub", "error"),
    [
        (f"{A[0]},{B[0]}", A[1], "--router lists 2 cages but --pub lists 1 cage"),
        (A[0], f"{A[1]},{B[1]},tcp://127.0.0.1:7571", "--router lists 1 cage but --pub lists 3"),
        (f"{A[0]},", f"{A[1]},{B[1]}", "holds an empty entry"),
        (f"{A[0]},{A[0]}", f"{A[1]},{B[1]}", "twice"),
    ],
)
def test_a_bad_list_is_one_clear_error(router: str, pub: str, error: str) -> None:
    """Lists of unequal length, an empty entry, an entry twice: a ConfigError saying so."""
    with pytest.raises(ConfigError, match=error):
        Endpoints(router, pub)


def test_each_listed_endpoint_is_checked_naming_its_place() -> None:
    """A wildcard in the second cage of a client's list is refused, naming cage 2."""
    with pytest.raises(ConfigError, match=r"--router \(cage 2 of .*wildcard"):
        Endpoints.from_args(_args(f"{A[0]},tcp://*:1", f"{A[1]},{B[1]}"), connect=True)


def test_a_cage_binds_one_pair_and_refuses_a_list() -> None:
    """What a cage binds (connect=False) is one ROUTER and one PUB: a list is refused."""
    with pytest.raises(ConfigError, match="one zdse-proxy per cage"):
        Endpoints.from_args(_args(f"{A[0]},{B[0]}", f"{A[1]},{B[1]}"))


def test_of_nothing_is_refused() -> None:
    """No cage at all is a ConfigError, not an empty endpoint."""
    with pytest.raises(ConfigError, match="no cage listed"):
        Endpoints.of([])


@pytest.mark.parametrize(
    ("argv", "env", "error"),
    [
        (["zdse-proxy", "--router", f"{A[0]},{B[0]}", "--pub", f"{A[1]},{B[1]}"], {},
         "one zdse-proxy per cage"),
        (["zdse-proxy"], {"ZDSE_ROUTER": f"{A[0]},{B[0]}", "ZDSE_PUB": f"{A[1]},{B[1]}"},
         "one zdse-proxy per cage"),
        (["zdse-ctl", "--router", f"{A[0]},{B[0]}", "services"], {},
         "--router lists 2 cages but --pub lists 1 cage"),
        (["zdse-node", "--module", "file", "--set", "path=t.json"],
         {"ZDSE_ROUTER": f"{A[0]},{B[0]}", "ZDSE_PUB": f"{A[1]},,{B[1]}"}, "empty entry"),
        (["zdse-ctl", "--router", f"{A[0]},{B[0]}", "--pub", f"{A[1]},{B[1]}", "stop", "x"], {},
         "acts on one cage's supervisor"),
    ],
)
def test_the_tools_refuse_a_bad_list_in_one_line(
    argv: list[str], env: dict[str, str], error: str
) -> None:
    """zdse-proxy refuses any list; clients refuse unpaired lists: exit 2, one line."""
    result = run_tool(argv, **env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert error in result.stderr, result.stderr


def test_an_endpoint_of_bytes_that_are_not_utf8_is_one_clear_error() -> None:
    """Non-UTF-8 bytes (argv or the environment) are refused in one line, not at connect."""
    with pytest.raises(ConfigError, match="not UTF-8"):
        check_endpoint("tcp://\udcff:1", "--router", connect=True)
    with pytest.raises(ConfigError, match="not UTF-8"):
        check_endpoint("ipc:///tmp/\udcff", "--pub")
