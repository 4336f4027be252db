"""Headless Chromium for the web view tests (CI installs it; without it those tests skip with the reason)."""
from __future__ import annotations

import shutil
import subprocess
from typing import List

NO_BROWSER = "no Chromium here (Debian: apt-get install chromium); .ci/run installs it so CI runs this test"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome") or ""


def browser_command(profile: str) -> List[str]:
    return [chromium(), *FLAGS, f"--user-data-dir={profile}"]


def rendered_dom(url: str, profile: str, budget_ms: int = 3000) -> str:
    """The page's DOM after its scripts have run for ``budget_ms`` of virtual time."""
    return subprocess.run(browser_command(profile) + [f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=90).stdout
