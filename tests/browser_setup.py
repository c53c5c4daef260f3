"""Headless Chromium for the page tests: the Debian packages chromium + chromium-driver, installed
once per session when missing and possible (root with apt-get). Without them the tests skip with
the command that installs them, except under CI=true, where a missing browser fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")

_state: dict = {}


def _present() -> bool:
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


def _unavailable(reason: str) -> None:
    message = f"headless Chromium unavailable: {reason}; install it with `sudo {INSTALL}`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: the browser tests must run)")
    pytest.skip(message)


def ensure_chromium() -> tuple[str, str]:
    """(chromium, chromedriver) paths, installing the packages first if missing and possible."""
    if "error" in _state:
        _unavailable(_state["error"])
    if not _present():
        if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
            _state["error"] = "chromium / chromium-driver not installed and not root with apt-get"
            _unavailable(_state["error"])
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        p = subprocess.run(["sh", "-c", INSTALL], capture_output=True, text=True, env=env, timeout=1800)
        if p.returncode != 0 or not _present():
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            _state["error"] = f"installing the packages failed ({tail[0]})"
            _unavailable(_state["error"])
    return CHROMIUM, CHROMEDRIVER


def start_chrome(user_data_dir: Path):
    """A selenium WebDriver on headless Chromium with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    return webdriver.Chrome(service=Service(driver), options=options)
