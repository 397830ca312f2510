"""The sweep report's HTML in a real headless browser: it loads, renders a screenshot and logs no console error.

Skipped where no browser is installed: it looks for playwright (with an installed browser) and then for chromium /
google-chrome / firefox binaries on PATH. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
from sweep_factory import CellPlan, make_sweep

from robustprune.reporting import sweep_report as sr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
FIREFOX = ("firefox", "firefox-esr")
INSTALL = (
    "no headless browser: install chromium or google-chrome or firefox on PATH, "
    "or `pip install playwright && playwright install chromium`"
)
PLAN = (
    CellPlan("dense", 0.0, 0),
    CellPlan("magnitude", 0.5, 0, parent=("dense", 0.0)),
    CellPlan("magnitude", 0.9, 0, parent=("dense", 0.0)),
)
# What a console error looks like in chromium's stderr log (--enable-logging=stderr) and firefox's console dump.
CONSOLE_ERRORS = ("ERROR:CONSOLE", "Uncaught", "Failed to load resource", "JavaScript error", "console.error")


def _playwright_browser() -> str | None:
    """The playwright browser that launches here, or None (playwright absent, or no browser of it installed)."""
    if importlib.util.find_spec("playwright") is None:
        return None
    from playwright.sync_api import Error, sync_playwright

    try:
        with sync_playwright() as p:
            for name in ("chromium", "firefox"):
                try:
                    getattr(p, name).launch().close()
                    return name
                except Error:
                    continue
    except Error:
        return None
    return None


def _binary(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


PLAYWRIGHT = _playwright_browser()
CHROME = _binary(CHROMIUM)
GECKO = _binary(FIREFOX)

pytestmark = pytest.mark.skipif(not (PLAYWRIGHT or CHROME or GECKO), reason=INSTALL)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root, PLAN)
    return Path(sr.build_sweep_report(root)["html"])


def _with_playwright(html: Path, shot: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = getattr(p, PLAYWRIGHT).launch()
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(html.as_uri(), wait_until="load")
        # every figure decoded (a broken data: URI leaves naturalWidth at 0)
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        if broken:
            errors.append(f"{broken} image(s) did not decode")
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return errors


def _with_chromium(html: Path, shot: Path, tmp: Path) -> list[str]:
    cmd = [
        CHROME,
        "--headless",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--window-size=1280,4000",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        html.as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in (out.stdout + out.stderr).splitlines() if any(e in line for e in CONSOLE_ERRORS)]


def _with_firefox(html: Path, shot: Path, tmp: Path) -> list[str]:
    profile = tmp / "profile"
    profile.mkdir()
    # Echo the page's console (and script errors) to stdout, where they can be scanned.
    (profile / "user.js").write_text(
        'user_pref("devtools.console.stdout.content", true);\nuser_pref("browser.dom.window.dump.enabled", true);\n'
    )
    cmd = [GECKO, "--headless", "--no-remote", "--profile", str(profile), "--window-size", "1280,4000"]
    out = subprocess.run(
        [*cmd, "--screenshot", str(shot), html.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in (out.stdout + out.stderr).splitlines() if any(e in line for e in CONSOLE_ERRORS)]


def test_the_report_renders_in_a_headless_browser_without_console_errors(report, tmp_path):
    shot = tmp_path / "report.png"
    if PLAYWRIGHT:
        errors = _with_playwright(report, shot)
    elif CHROME:
        errors = _with_chromium(report, shot, tmp_path)
    else:
        errors = _with_firefox(report, shot, tmp_path)
    assert errors == [], errors
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, "the screenshot should show the rendered page"
