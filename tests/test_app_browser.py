"""End to end in a real headless Chromium: `python -m sarft_core app` on loopback, the default (aligned) embedded model.

Screenshots are saved as artifacts in $SARFT_SCREENSHOT_DIR (default: artifacts/screenshots/,
git-ignored); docs/screenshots/ holds the copies shown in the README
(`SARFT_SCREENSHOT_DIR=docs/screenshots pytest -m slow tests/test_app_browser.py` refreshes them).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium is not installed (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = dict(os.environ, SARFT_WORKSPACE=str(tmp_path / "ws"), PYTHONPATH=str(ROOT))
    env.pop("SARFT_MODEL", None)  # the embedded default model, as a fresh machine would run it
    log = open(tmp_path / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sarft_core", "app", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail("the app exited: " + (tmp_path / "app.log").read_text())
        time.sleep(0.3)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, 15)
    proc.wait(timeout=20)
    log.close()


@pytest.fixture
def shots():
    path = Path(os.environ.get("SARFT_SCREENSHOT_DIR") or ROOT / "artifacts" / "screenshots")
    if not path.is_absolute():
        path = ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_idle(page, timeout=120_000):
    """Wait until Streamlit has finished running the script."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                           " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
                           timeout=timeout)


def test_pick_role_score_and_open_a_flagged_sample(server, shots):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(server)
        expect(page.get_by_text("SaRFT Studio: safety audits for role-play fine-tuning")).to_be_visible()
        expect(page.get_by_text("embedded-aligned (default", exact=False)).to_be_visible()
        wait_idle(page)
        # the Overview reads the shipped measurement of the default model's flags, causal test included
        expect(page.get_by_text("Do its RDS flags carry signal?")).to_be_visible()
        causal = page.get_by_text("The causal test", exact=False).first
        causal.scroll_into_view_if_needed()
        expect(causal).to_be_visible()
        expect(page.get_by_text("SFT on top 30% − SFT on bottom 30%", exact=False).first).to_be_visible()

        # pick a demo role in the sidebar
        page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").filter(has_text="Role").click()
        page.get_by_role("option", name="Baron Vex Morrow").click()
        wait_idle(page)

        # scoring on a few samples, in-process with a live progress bar
        page.locator("[data-testid=stSidebarNav] a").filter(has_text="Scoring (RDS)").click()
        expect(page.get_by_role("heading", name="Score Baron Vex Morrow")).to_be_visible()
        samples = page.locator("input[aria-label='Samples to score']")
        samples.fill("10")
        samples.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Score", exact=True).click()
        expect(page.get_by_text("Flagged fraction")).to_be_visible(timeout=240_000)
        wait_idle(page)
        plots = page.locator(".js-plotly-plot")
        expect(plots.first).to_be_visible()
        assert plots.count() >= 2  # the RDS scatter and the margin histogram
        scatter = page.locator(".js-plotly-plot").first
        assert scatter.locator("text", has_text="y = x").count() >= 1  # its legend names the diagonal
        samples_metric = page.locator("[data-testid=stMetric]").filter(has_text="Samples").first
        assert "10" in samples_metric.inner_text()
        # Streamlit scrolls inside its own container, so a tall viewport shows the whole screen
        page.set_viewport_size({"width": 1400, "height": 2000})
        page.wait_for_timeout(800)
        page.screenshot(path=shots / "scoring.png")
        page.set_viewport_size({"width": 1400, "height": 1000})

        # the collapsed "measured on the default model" expander opens onto the same causal test
        measured = page.locator("[data-testid=stExpander]").filter(has_text="What was measured on the default model")
        expect(measured.get_by_text("The causal test", exact=True)).to_be_hidden()
        measured.get_by_text("What was measured on the default model").click()
        expect(measured.get_by_text("The causal test", exact=True)).to_be_visible()
        measured.get_by_text("What was measured on the default model").click()  # closed again, as the rest expects

        # open a flagged sample: show flagged ones only; the detail shows the most flagged first
        flagged_metric = page.locator("[data-testid=stMetric]").filter(has_text="Flagged (D_h)").inner_text()
        n_flagged = int(flagged_metric.split()[-1])
        if n_flagged == 0:
            pytest.skip("the embedded model flagged none of these samples (nothing to open)")
        # the table's "Show" radio (other, hidden "flagged" texts sit in collapsed expanders)
        show = page.locator("[data-testid=stRadio]").filter(has=page.get_by_text("Show", exact=True))
        show.get_by_text("flagged", exact=True).click()
        wait_idle(page)
        detail = page.get_by_role("heading", name="Sample detail")
        detail.scroll_into_view_if_needed()
        expect(page.locator("[data-testid=stMetric]").filter(has_text="s_unsafe − s_role").get_by_text("flagged")).to_be_visible()
        spans = page.locator("span[title]")
        expect(spans.first).to_be_visible()
        assert spans.count() > 3  # one shaded span per answer token
        detail.scroll_into_view_if_needed()
        detail.evaluate("el => el.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(800)
        page.screenshot(path=shots / "sample_detail.png")

        # back to the overview: the run just made is listed from the run store
        page.locator("[data-testid=stSidebarNav] a").filter(has_text="Overview").click()
        expect(page.get_by_role("heading", name="Recent runs")).to_be_visible()
        wait_idle(page)
        expect(page.locator("[data-testid=stDataFrame]").first).to_be_visible()
        page.wait_for_timeout(1500)  # the data grid draws on a canvas after it appears
        page.screenshot(path=shots / "overview.png")
        browser.close()
    for name in ("overview.png", "scoring.png", "sample_detail.png"):
        assert (shots / name).stat().st_size > 10_000
