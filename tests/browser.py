"""Headless Chromium (Debian's chromium and chromium-driver) driven by selenium.

No browser is downloaded: the binaries are the Debian packages that
scripts/ensure-debs installs. Each browser gets a fresh profile directory.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

#: Debian's binaries.
CHROMIUM = ("chromium", "/usr/bin/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver")
#: What keeps a test browser quiet, sandbox-free (root, containers) and off the network.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--no-first-run", "--window-size=1400,1000",
)


def find(names: tuple[str, ...]) -> str | None:
    """The first of ``names`` found on PATH (or as a path)."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def available() -> bool:
    """Whether chromium, chromium-driver and selenium are all here."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return find(CHROMIUM) is not None and find(CHROMEDRIVER) is not None


def start(profile: Path | None = None) -> Any:
    """A new headless Chromium; the caller quits it (``driver.quit()``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = find(CHROMIUM) or CHROMIUM[0]
    for flag in FLAGS:
        options.add_argument(flag)
    profile = profile or Path(tempfile.mkdtemp(prefix="zdse-chromium-"))
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(executable_path=find(CHROMEDRIVER) or CHROMEDRIVER[0])
    return webdriver.Chrome(options=options, service=service)
