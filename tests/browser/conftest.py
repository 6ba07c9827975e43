"""Browser fixtures: one Chromium for the session, the app served on a free loopback port per test."""
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SHOTS = Path("/tmp/jobflow-shots")


pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (installed by scripts/install-browser)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed; run scripts/install-browser")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def live_app(make_app):
    """The app from the factory, served by werkzeug on 127.0.0.1 in a thread; ``base_url`` says where."""
    app = make_app(ADMIN_REFRESH_MS=600)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    app.base_url = f"http://127.0.0.1:{server.server_port}"
    with app.app_context():
        yield app
    server.shutdown()
    thread.join(5)


@pytest.fixture
def page(browser, live_app):
    """A fresh browser context (no cookies) on the served app."""
    context = browser.new_context(base_url=live_app.base_url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def shot():
    """Save a full-page screenshot under /tmp/jobflow-shots/ (outside the repository)."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name):
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    return take
