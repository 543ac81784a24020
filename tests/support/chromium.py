"""Headless Chromium for tests that check what a browser renders (reports, the Locust LLM tab)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(args: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless Chromium with ``args``, a fresh profile under ``tmp`` and no background traffic;
    its output as text."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
