"""Issue #28 item 8: the pages an analyst opens on a phone (390x844) fit its width, in a real headless Chromium.

Screenshots go to $SARFT_SCREENSHOT_DIR (default: artifacts/screenshots/, git-ignored) to look at.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, free_port, wait_idle

ROOT = Path(__file__).resolve().parents[1]
PHONE = {"width": 390, "height": 844}
SCROLL_TOLERANCE_PX = 4

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def server_with_runs(tmp_path, tiny_model_dir):
    """The app on loopback over a workspace holding two evaluated training runs (so Compare draws its charts)."""
    from tests.test_app_pages import write_train_run

    ws = tmp_path / "ws"
    write_train_run(ws, "r1-sft", "sft", 0.0, 0.5, 31.0, ["compliance", "refusal", "compliance"])
    time.sleep(0.02)
    write_train_run(ws, "r2-sarft", "sarft", 0.5, 0.9, 29.0, ["refusal", "refusal", "refusal"])
    port = free_port()
    env = dict(os.environ, SARFT_WORKSPACE=str(ws), PYTHONPATH=str(ROOT), SARFT_MODEL=str(tiny_model_dir))
    log = open(tmp_path / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sarft_core", "app", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    import socket

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


def overflow(page) -> dict:
    """How wide the page and Streamlit's scrolling main area are, against the viewport."""
    return page.evaluate("""() => {
        const main = document.querySelector('[data-testid=stMain]') || document.documentElement;
        // a chart or a row of columns can be clipped by its container without widening the page
        const parts = [...document.querySelectorAll('[data-testid=stMain] .main-svg, [data-testid=stHorizontalBlock]')];
        const right = Math.max(0, ...parts.map(el => el.getBoundingClientRect().right));
        return {doc: document.documentElement.scrollWidth, main: main.scrollWidth, parts: right, view: window.innerWidth};
    }""")


def test_overview_scoring_and_compare_fit_a_phone_width(server_with_runs):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("SARFT_SCREENSHOT_DIR") or ROOT / "artifacts" / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=PHONE)
        page.set_default_timeout(60_000)
        widths = {}
        for name, path, ready in (("overview", "", "Recent runs"), ("scoring", "scoring", "Score Baron Vex Morrow"),
                                  ("compare", "compare", "Where two runs disagree")):
            page.goto(f"{server_with_runs}/{path}")
            page.get_by_text(ready).first.wait_for()
            wait_idle(page)
            page.wait_for_timeout(1200)  # plotly and the data grid size themselves after they appear
            widths[name] = overflow(page)
            page.set_viewport_size({"width": PHONE["width"], "height": 3000})  # Streamlit scrolls inside its own container
            page.wait_for_timeout(800)
            page.screenshot(path=shots / f"phone-{name}.png")
            page.set_viewport_size(PHONE)
        browser.close()
    for name, w in widths.items():
        assert w["doc"] <= PHONE["width"] + SCROLL_TOLERANCE_PX, (name, w)
        assert w["main"] <= PHONE["width"] + SCROLL_TOLERANCE_PX, (name, w)
        assert w["parts"] <= PHONE["width"] + SCROLL_TOLERANCE_PX, (name, w)
