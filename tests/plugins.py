"""Modules installed for one test: a Python file and its ``zdse.modules`` entry point
in a directory that the processes of the test get on their PYTHONPATH."""

from __future__ import annotations

from pathlib import Path

#: A module whose constructor does what its options say: ``sleep`` seconds,
#: then ``raise`` the named exception (SystemExit, KeyboardInterrupt,
#: BaseException), ``exit`` the process with a code, or ``print`` text on
#: stdout. With none of these it is a plain service that answers nothing.
MISBEHAVING = '''
import builtins
import os
import time

from zdse.node.service import Service


class Module(Service):
    def __init__(self, name, options):
        super().__init__(name, options)
        if "print" in options:
            print(options["print"], flush=True)
        if "sleep" in options:
            time.sleep(float(options["sleep"]))
        if "raise" in options:
            raise getattr(builtins, options["raise"])(options.get("why", "from the constructor"))
        if "exit" in options:
            os._exit(int(options["exit"]))
'''


def install_module(site: Path, name: str, source: str = MISBEHAVING) -> dict[str, str]:
    """Install module ``name`` (a class called Module in ``source``) under ``site``.

    Returns:
        the environment that makes a process see it.
    """
    site.mkdir(parents=True, exist_ok=True)
    package = f"zdse_test_{name}"
    (site / f"{package}.py").write_text(source)
    dist = site / f"{package}-0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[zdse.modules]\n{name} = {package}:Module\n")
    return {"PYTHONPATH": str(site)}
