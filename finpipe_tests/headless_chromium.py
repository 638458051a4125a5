"""Headless Chromium for tests that look at pages as a person would (report, Dagster UI)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def chromium_command(profile: Path) -> list[str]:
    """The browser and flags for a headless, offline run with a fresh profile.

    A missing browser skips the test with the fix outside CI and fails it in CI.
    """
    found = next((b for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        message = "no Chromium: apt-get install chromium-headless-shell (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return [
        found,
        *([] if found == "chromium-headless-shell" else ["--headless"]),
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
