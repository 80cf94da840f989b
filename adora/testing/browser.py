"""A real headless browser for the web view's tests: Debian's chromium and its driver.

The packages (``chromium``, ``chromium-driver``) are installed with apt at test
time when missing, as the Slurm test cluster's are (root and apt-get needed);
:func:`unavailable_reason` says why not, for tests to skip with that reason::

    from adora.testing import browser
    driver = browser.start()            # selenium WebDriver, headless
    driver.get(url); driver.save_screenshot("page.png"); driver.quit()
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import typing as tp
from pathlib import Path

from .slurm_cluster import TestbedError, install_packages, which

if tp.TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["BINARIES", "PACKAGES", "ensure_installed", "start", "unavailable_reason"]

#: The Debian packages of the browser and its WebDriver.
PACKAGES: tuple[str, ...] = ("chromium", "chromium-driver")
BINARIES: tuple[str, ...] = ("chromium", "chromedriver")


def unavailable_reason() -> str | None:
    """Why the browser cannot run here, or None (installing it may still be needed)."""
    if os.environ.get("ADORA_NO_BROWSER"):
        return "headless chromium: disabled by ADORA_NO_BROWSER"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "headless chromium: selenium is not installed (pip install 'adora[test]')"
    if not sys.platform.startswith("linux"):
        return f"headless chromium: Debian's packages need Linux (this is {sys.platform})"
    missing = [b for b in BINARIES if which(b) is None]
    if missing:
        if which("apt-get") is None:
            return (f"headless chromium: {', '.join(missing)} missing and no apt-get to "
                    "install them")
        if os.geteuid() != 0:
            return (f"headless chromium: {', '.join(missing)} missing, and installing them "
                    f"needs root (this is uid {os.geteuid()})")
    return None


def ensure_installed(*, log: Path | None = None) -> None:
    """Install chromium and chromium-driver with apt if they are missing."""
    if all(which(b) is not None for b in BINARIES):
        return
    install_packages(PACKAGES, log=log or Path(tempfile.gettempdir()) / "adora-browser-apt.log")
    missing = [b for b in BINARIES if which(b) is None]
    if missing:
        raise TestbedError(f"installed {' '.join(PACKAGES)} but {', '.join(missing)} "
                           "still cannot be found")


def start(*, width: int = 1400, height: int = 1000) -> WebDriver:
    """A headless chromium driven by selenium (installed first if needed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_installed()
    options = webdriver.ChromeOptions()
    options.binary_location = str(which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    # Root has no sandbox, and the chromedriver of the package is the one to use: never
    # let selenium look for (and download) another.
    service = Service(executable_path=str(which("chromedriver")))
    try:
        return webdriver.Chrome(options=options, service=service)
    except Exception as exc:  # selenium's errors carry chromium's own message
        raise TestbedError(f"headless chromium did not start: {exc}") from exc


def _main() -> None:
    # python -m adora.testing.browser install|screenshot URL PNG
    if len(sys.argv) >= 2 and sys.argv[1] == "install":
        reason = unavailable_reason()
        if reason:
            sys.exit(reason)
        ensure_installed()
        print("chromium:", shutil.which("chromium") or which("chromium"))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "screenshot":
        driver = start()
        try:
            driver.get(sys.argv[2])
            driver.save_screenshot(sys.argv[3])
        finally:
            driver.quit()
        return
    sys.exit("usage: python -m adora.testing.browser install | screenshot URL PNG")


if __name__ == "__main__":
    _main()
