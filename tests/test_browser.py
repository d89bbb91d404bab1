"""The real app: `streamlit run ui/app.py` as a server on 127.0.0.1, loaded in headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fakes import FakeEmbeddings, count_words

from chatbot.config import Settings
from chatbot.store import Store
from ingest.pipeline import run_ingest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited early: {server.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail("streamlit did not become healthy in time")


@pytest.fixture
def app_url(tmp_path):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "faq.md").write_text("# FAQ\n\nAnswers.\n")
    store = Store.open(Settings(qdrant_path=tmp_path / "qdrant"))
    run_ingest(
        [tmp_path / "kb"], store=store, load_embeddings=FakeEmbeddings, embed_model="fake", count_tokens=count_words
    )
    store.close()

    port = free_port()
    env = {**os.environ, "RAG_QDRANT_PATH": str(tmp_path / "qdrant")}
    # `timeout` makes the server stop by itself even if this test process dies.
    command = ["timeout", "300", sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)")
def test_the_real_app_renders_in_a_browser(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our choosing.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page()
            page.goto(app_url)
            page.get_by_text("Knowledge base", exact=True).wait_for(timeout=60_000)
            metrics = page.locator('[data-testid="stMetric"]')
            metrics.first.wait_for(timeout=30_000)
            assert metrics.count() == 3
            assert "Documents" in metrics.nth(0).inner_text() and "1" in metrics.nth(0).inner_text()
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        finally:
            browser.close()
