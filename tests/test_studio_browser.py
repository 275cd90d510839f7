"""The studio in a real browser: JupyterLab on loopback, headless Chromium driven by Playwright.

Runs notebooks/09_studio.ipynb (Run > Run All Cells), types a prompt into the studio, clicks Generate and
waits for the new video. This is the one test that proves the widgets render (jupyterlab_widgets) and that
the click handler round-trip works. Needs Debian's chromium (/usr/bin/chromium) and the playwright package;
Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .helpers import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "09_studio.ipynb"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 90
NOTEBOOK_RUN_S = 300
GENERATE_S = 120
CHROMIUM_INSTALL_S = 600  # .ci/run installs chromium in the background (about 50 s): a slow mirror is waited for


def _chromium():
    """The chromium executable, or None. When T2VLAB_CHROMIUM_WAIT names a file (.ci/run sets it while it
    installs chromium in the background), wait for that file first: the install has ended once it exists."""
    done = os.environ.get("T2VLAB_CHROMIUM_WAIT")
    deadline = time.monotonic() + CHROMIUM_INSTALL_S
    while done and not os.path.exists(done) and time.monotonic() < deadline:
        time.sleep(1)
    for candidate in (os.environ.get("T2VLAB_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def _wait_for_server(proc, url, log, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _user_settings(config_dir):
    """Fresh JupyterLab settings: render every cell (no virtual scrolling, so widgets further down exist in
    the page) and do not ask about fetching news (a closed network)."""
    settings = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"}}
    for name, values in settings.items():
        path = config_dir / "lab" / "user-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_studio_generates_a_video_in_jupyterlab(tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium executable (apt-get install chromium); .ci/run installs it (its log: "
                    ".ci-chromium.log)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "MPLBACKEND": "Agg"}
    _user_settings(tmp_path / "jupyter-config")
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    screenshot = tmp_path / "studio.png"
    try:
        _wait_for_server(proc, f"{base}/api/status?token={token}", log, SERVER_START_S)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 1000})
            try:
                page = browser.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", timeout=120_000)
                page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
                page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=120_000)

                # Run > Run All Cells
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                # the last cell prints this when every cell before it has run
                page.locator(".jp-OutputArea-output", has_text="all checks passed").first.wait_for(
                    timeout=NOTEBOOK_RUN_S * 1000)

                studio = page.locator(".t2vlab-studio").first
                studio.wait_for()  # the widget rendered: jupyterlab_widgets works
                # the three explorers show their figures (ipywidgets.Image) as loaded PNGs
                images = page.locator("img.widget-image")
                assert images.count() >= 3
                widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
                assert all(wd > 100 for wd in widths), widths
                explorer = images.last
                explorer.scroll_into_view_if_needed()
                explorer.screenshot(path=str(tmp_path / "attention-explorer.png"))
                prompt = f"a lighthouse in a storm {secrets.token_hex(3)}"
                studio.locator("textarea").first.fill(prompt)
                studio.locator("button", has_text="Generate").first.click()
                # the run has finished when its prompt is in the history; the video is then in the page
                studio.locator(".t2vlab-history", has_text=prompt).wait_for(state="attached",
                                                                            timeout=GENERATE_S * 1000)
                video = studio.locator("video")
                video.first.wait_for(timeout=10_000)
                assert video.count() == 1
                assert video.first.get_attribute("src").startswith("data:video/mp4;base64,")
                assert "Could not generate" not in studio.inner_text()
                studio.scroll_into_view_if_needed()
                page.wait_for_timeout(500)  # let the first frame paint
                studio.screenshot(path=str(screenshot))
            except Exception:
                if "page" in locals():
                    page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert screenshot.stat().st_size > 0
    if not os.environ.get("CI"):
        shutil.copy(screenshot, "/tmp/t2vlab-studio.png")
