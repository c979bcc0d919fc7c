"""Driving Debian's chromium with Playwright (its own browser download does not work here)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Screenshots of every browser test; git-ignored. The docs' copies are refreshed from here.
ARTIFACTS = ROOT / "tests" / "artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_WAIT_MS = 20_000


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Launch Debian's chromium headless; fail (never skip) when it or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Debian's chromium is missing at {CHROMIUM}: `make test` installs it "
            "(apt-get install -y chromium); Playwright's own browser download does not work here"
        )
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `make test` installs requirements-dev.txt")
    expect.set_options(timeout=BROWSER_WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def refresh_docs_screenshot(artifact: Path, docs_copy: Path) -> None:
    """Copy a screenshot into docs/ when asked (UPDATE_DOCS_SCREENSHOT=1) or when missing."""
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1" or not docs_copy.exists():
        docs_copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifact, docs_copy)
