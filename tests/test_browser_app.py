"""Real-browser test of the dashboard: `creditlens app` on localhost, headless Chromium via Playwright.

Starts the app on a free port with fixture runs, clicks to the Token credit page in the sidebar and
checks that coloured token spans are rendered; screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import appdata  # noqa: E402

from creditlens.commands.app import free_port  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make sysdeps)")


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def served_app(tmp_path):
    root = appdata.make_runs_dir(tmp_path / "runs")
    appdata.make_scored_dir(root / "scored")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    process = subprocess.Popen([sys.executable, "-m", "creditlens.cli", "app", str(root), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://localhost:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert port_is_free(port), f"a server still listens on port {port} after `creditlens app` stopped"


def port_is_free(port: int, timeout: float = 5.0) -> bool:
    """True once nothing listens on ``port`` (an orphaned streamlit server would keep it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("localhost", port)) != 0:
                return True
        time.sleep(0.2)
    return False


def test_token_page_renders_coloured_spans_in_chromium(served_app):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(served_app, wait_until="domcontentloaded")
            page.get_by_text("3 run(s) under").wait_for(timeout=30_000)
            page.wait_for_timeout(1000)  # let the learning curves draw before the screenshot
            page.screenshot(path=str(ARTIFACTS / "app_runs.png"), full_page=True)
            page.locator('[data-testid="stSidebarNav"] a', has_text="Token credit").click()
            spans = page.locator("span.cl-token")
            spans.first.wait_for(timeout=30_000)
            assert re.search(r"Token[_ ]credit", page.url), page.url
            assert spans.count() == appdata.exact_model().length
            colours = [spans.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(spans.count())]
            assert all(c.startswith("rgb") for c in colours)
            assert any(c not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)") for c in colours), colours
            title = spans.first.get_attribute("title")
            assert "sd_reward = " in title and "teacher_logprob = " in title
            assert page.locator(".cl-legend").count() == 1
            page.screenshot(path=str(ARTIFACTS / "app_token_credit.png"), full_page=True)
            page.get_by_role("combobox", name="Side by side with").click()
            page.get_by_role("option", name="specific", exact=True).click()
            page.locator(".cl-legend").nth(1).wait_for(timeout=30_000)
            assert page.locator("span.cl-token").count() == 2 * appdata.exact_model().length
            for i in range(2):  # each legend's title gets its own line, as wide as its column allows
                title = page.locator(".cl-legend").nth(i).locator("div").first.bounding_box()
                legend = page.locator(".cl-legend").nth(i).bounding_box()
                assert title["width"] >= 0.9 * legend["width"] and title["height"] < 60, (title, legend)
            page.screenshot(path=str(ARTIFACTS / "app_token_credit_side_by_side.png"), full_page=True)
            for name, ready in (("Decomposition", "Generic share of SD credit"), ("pMI check", "Mean |gap|")):
                page.locator('[data-testid="stSidebarNav"] a', has_text=name).click()
                page.get_by_text(ready).first.wait_for(timeout=30_000)
                page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)  # last element of both
                page.wait_for_timeout(1000)  # let the charts draw before the screenshot
                assert page.locator('[data-testid="stException"]').count() == 0
                page.screenshot(path=str(ARTIFACTS / f"app_{name.split()[0].lower()}.png"), full_page=True)
        finally:
            browser.close()
