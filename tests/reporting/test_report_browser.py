"""The sweep report's HTML in a real headless browser: it loads, renders a screenshot and logs no console error.

Skipped where no browser is installed: it looks for playwright (with a browser of its own, or driving the chromium
found on PATH) and then for chromium / google-chrome / firefox binaries on PATH. Nothing is downloaded. The report
holds no script, so any console message at all counts as an error; a page that does log one is checked to fail.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sweep_factory
from matplotlib import image as mpimg
from sweep_factory import CellPlan, make_sweep

from robustprune.reporting import sweep_report as sr
from robustprune.scoring import score

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
# A console message in chromium's stderr log (--enable-logging=stderr: "INFO:CONSOLE" whatever its level; the report
# runs no script, so any is wrong) and an error in firefox's console dump.
CONSOLE_ERRORS = (":CONSOLE", "Uncaught", "Failed to load resource", "JavaScript error", "console.error")
BAD_PAGE = '<!DOCTYPE html><html><body><p>x</p><script>console.error("boom"); notDefined();</script></body></html>'


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


def _launch(p):
    """Playwright's own browser, or the chromium on PATH driven by playwright (no browser download needed)."""
    if PLAYWRIGHT:
        return getattr(p, PLAYWRIGHT).launch()
    return p.chromium.launch(executable_path=CHROME)


def _binary(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


PLAYWRIGHT = _playwright_browser()
CHROME = _binary(CHROMIUM)
GECKO = _binary(FIREFOX)
DRIVEN = PLAYWRIGHT is not None or (CHROME is not None and importlib.util.find_spec("playwright") is not None)

pytestmark = pytest.mark.skipif(not (PLAYWRIGHT or CHROME or GECKO), reason=INSTALL)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A sweep report with every section, the eps curve's figures included."""
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep_factory, "score", functools.partial(score, eps_grid=[0.0, 0.1, 0.2], efficiency=False))
        make_sweep(root, PLAN)
    return Path(sr.build_sweep_report(root)["html"])


def _console_errors(html: Path, shot: Path, tmp: Path) -> list[str]:
    if DRIVEN:
        return _with_playwright(html, shot)
    if CHROME:
        return _with_chromium(html, shot, tmp)
    return _with_firefox(html, shot, tmp)


def _with_playwright(html: Path, shot: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p)
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
    errors = _console_errors(report, shot, tmp_path)
    assert errors == [], errors
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, "the screenshot should show the rendered page"
    # every embedded figure is a PNG that decodes (the command-line browsers do not report a broken image)
    html = report.read_text()
    figures = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(figures) >= 6 and 'id="eps-curve"' in html
    for encoded in figures:
        pixels = mpimg.imread(io.BytesIO(base64.b64decode(encoded)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100


def test_the_browser_check_catches_a_page_that_logs_errors(tmp_path):
    """The check above is not vacuous: a page with a console error and a script error fails it."""
    page = tmp_path / "bad.html"
    page.write_text(BAD_PAGE)
    errors = _console_errors(page, tmp_path / "bad.png", tmp_path)
    assert errors and any("boom" in e for e in errors) and any("notDefined" in e for e in errors)


def test_the_score_report_renders_too(trained_mlp, digits_test, tmp_path):
    from robustprune.results.io import save_result

    result = score(trained_mlp, digits_test, "quick", eps=0.1, n=40, efficiency=False, eps_grid=[0.0, 0.1, 0.2])
    html = Path(save_result(result, tmp_path / "score")["html"])
    assert 'id="eps-curve"' in html.read_text()
    shot = tmp_path / "score.png"
    assert _console_errors(html, shot, tmp_path) == []
    assert shot.read_bytes().startswith(PNG_MAGIC)
