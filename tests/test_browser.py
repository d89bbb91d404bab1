"""The real app end to end: `streamlit run ui/app.py` on 127.0.0.1 with the bundled models, driven in headless Chromium.

One question on the Chat page (the streamed answer and its sources), then one on the
Compare page (four cells), then the Knowledge base page. On a second, fresh server: a bookmarked
/compare as its first request (inside the app's navigation), then one blind vote in the Arena.
Screenshots land in the test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from chatbot.core.config import Settings
from chatbot.rag.store import Store
from ingest.pipeline import ingest_paths

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
KB_PAGES = ("plans-and-billing/refunds-policy.md", "plans-and-billing/plans-and-pricing.md", "faq.md")
QUESTION = "How long does a refund for an unused label take?"
ANSWER_SECONDS = 120  # 160 new tokens at ~10 tokens/s on two busy cores, with room to spare


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


def wait_until_idle(page, seconds: float = 60) -> None:
    """Until the script run the last click started has finished (Streamlit shows "Running..." meanwhile)."""
    running = page.locator("[data-testid^='stStatusWidgetRunning']")
    page.wait_for_timeout(300)  # the run a click starts may not have been announced yet
    running.wait_for(state="detached", timeout=seconds * 1000)


def type_into(page, field, text: str) -> None:
    """Fill `field` once the page is idle; a run still finishing would redraw the form and drop the text."""
    for _ in range(3):
        wait_until_idle(page)
        field.fill(text)
        page.wait_for_timeout(300)
        if field.input_value() == text:
            return
    raise AssertionError(f"the field kept dropping what was typed into it: {field.input_value()!r}")


@contextmanager
def chromium(tmp_path: Path) -> Iterator[Any]:
    """Debian's Chromium, headless, on a fresh profile in `tmp_path`; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A persistent context is how Playwright takes a fresh --user-data-dir of our choosing.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def app_url(tmp_path, bundled_cache):
    settings = Settings(qdrant_path=tmp_path / "qdrant", cache_dir=bundled_cache[0].cache_dir)
    for page in KB_PAGES:
        (tmp_path / "kb" / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "data" / "kb" / page, tmp_path / "kb" / page)
    store = Store.open(settings)
    try:
        ingest_paths([tmp_path / "kb"], settings, store=store)  # the real embedding model
    finally:
        store.close()  # the app's process must be able to lock the folder

    port = free_port()
    env = {**os.environ, "RAG_QDRANT_PATH": str(settings.qdrant_path), "RAG_CACHE_DIR": str(settings.cache_dir)}
    # `timeout` makes the server stop by itself even if this test process dies; it outlasts the
    # test's own waits (120 + 120 + 30 + 480 s), so a slow run fails on a wait, not on a dead server.
    command = ["timeout", "900", sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    command += ["--server.fileWatcherType", "none"]  # nothing to reload; spare the two cores
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server)
        yield url
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
        print(f"streamlit server output (exit {server.returncode}):\n{output[-4000:]}")  # shown when the test fails


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)")
def test_chat_and_compare_in_a_real_browser(app_url, tmp_path):
    from playwright.sync_api import expect

    with chromium(tmp_path) as browser:
        page = browser.new_page()
        page.goto(app_url)
        chat_input = page.get_by_test_id("stChatInputTextArea")
        chat_input.wait_for(timeout=120_000)  # the first visit loads the models
        chat_input.fill(QUESTION)
        chat_input.press("Enter")
        answer = page.get_by_test_id("stChatMessage").nth(1)
        label = answer.get_by_text("retrieval on (hybrid, top 4)")
        label.wait_for(timeout=ANSWER_SECONDS * 1000)
        sources = answer.get_by_test_id("stExpander").filter(has_text="[1]")
        expect(sources.first).to_contain_text("Refund")
        assert answer.get_by_test_id("stMarkdownContainer").first.inner_text().strip()
        assert page.get_by_test_id("stException").count() == 0
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

        page.get_by_role("link", name="Compare").click()
        question = page.get_by_label("Question")
        question.wait_for(timeout=30_000)
        type_into(page, question, QUESTION)
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
        download = page.get_by_text("Download Markdown")
        try:
            download.wait_for(timeout=4 * ANSWER_SECONDS * 1000)  # shown once every cell is done
        except Exception:
            page.screenshot(path=str(tmp_path / "compare-timeout.png"), full_page=True)
            print(f"Compare never finished; the page as it was: {tmp_path / 'compare-timeout.png'}")
            print(page.locator("body").inner_text()[-3000:])
            raise
        cells = page.locator("[class*='st-key-cell-']")
        assert cells.count() == 4
        expect(cells.nth(1)).to_contain_text("Sources (4)")  # retrieval on: its sources
        assert page.get_by_test_id("stException").count() == 0
        page.set_viewport_size({"width": 1400, "height": 1600})  # the app scrolls inside: show all cells
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

        page.get_by_role("link", name="Knowledge base").click()
        documents = page.get_by_test_id("stMetric").filter(has_text="Documents")
        expect(documents).to_contain_text(str(len(KB_PAGES)))
        page.screenshot(path=str(tmp_path / "knowledge_base.png"), full_page=True)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)")
def test_a_bookmarked_page_opens_in_the_app_and_the_arena_votes_blind(app_url, tmp_path):
    from playwright.sync_api import expect

    with chromium(tmp_path) as browser:
        page = browser.new_page()
        page.goto(f"{app_url}/compare")  # the server's first request: a bookmark
        page.get_by_label("Question").wait_for(timeout=120_000)  # the first visit loads the models
        # Streamlit's own page list would name the files ("app", "compare", "knowledge base").
        links = [text.strip() for text in page.get_by_test_id("stSidebarNavLink").all_inner_texts()]
        shown = " | ".join(links)
        for title in ("Chat", "Compare", "Arena", "Knowledge base", "Evaluate"):
            assert title in shown, shown
        assert "app" not in links and "knowledge base" not in shown, shown

        page.get_by_role("link", name="Arena").click()
        question = page.get_by_label("Question", exact=True)
        question.wait_for(timeout=30_000)
        type_into(page, question, QUESTION)
        page.get_by_role("button", name="Answer", exact=True).click()
        better = page.get_by_role("button", name="A is better")
        better.wait_for(timeout=2 * ANSWER_SECONDS * 1000)  # shown once both answers are in
        sides = page.locator("[class*='st-key-arena-side-']")
        assert sides.count() == 2
        assert "retrieval" not in sides.nth(0).inner_text() + sides.nth(1).inner_text()  # blind
        better.click()
        expect(page.get_by_text("Vote stored: A is better.")).to_be_visible(timeout=30_000)
        expect(sides.nth(0)).to_contain_text("A · retrieval")  # named only now
        expect(page.get_by_test_id("stDataFrame")).to_be_visible()
        assert page.get_by_test_id("stException").count() == 0
        page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)
