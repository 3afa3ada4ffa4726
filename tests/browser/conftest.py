"""Browser tests: the real app (the app factory, demo data, WeChat's API at the loopback
double) served by uvicorn on a loopback port, and Debian's Chromium driven by Playwright.

Playwright's own browser download is never used: the browser is /usr/bin/chromium
(package `chromium`; `make test` and `.ci/run` install it). Without it every browser test
fails with one line saying how to install it, unless BROWSER_TESTS=skip is set.

Fixtures: `live_server` (its `url`, `app`, `settings`, the `double` and what it `sent`),
`browser` (one Chromium per test module), `page` (a desktop page) and `phone` (375 x 812,
touch). `@pytest.mark.settings(...)` overrides the server's settings as elsewhere.
"""
from __future__ import annotations

import os
import tempfile
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INSTALL = (f"no browser for the browser tests ({CHROMIUM}): apt-get install chromium "
           "(or set BROWSER_TESTS=skip to skip them)")
PHONE = {"width": 375, "height": 812}
# The README's screenshots are rewritten only when asked (SCREENSHOTS=update); otherwise a
# run takes them into a scratch folder, so `make test` leaves the checkout as it was.
SCREENSHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots"
               if os.environ.get("SCREENSHOTS") == "update"
               else Path(tempfile.gettempdir()) / "vipbot-screenshots")


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


def _no_browser(why: str = "") -> None:
    if os.environ.get("BROWSER_TESTS", "").strip().lower() == "skip":
        pytest.skip("BROWSER_TESTS=skip")
    pytest.fail(INSTALL + (f" [{why}]" if why else ""), pytrace=False)


@pytest.fixture(scope="module")
def browser():
    """Chromium, headless, one per test module (Playwright's sync API: the tests are plain
    functions, and no asyncio loop outlives its module)."""
    if not os.access(CHROMIUM, os.X_OK):
        _no_browser()
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _no_browser("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as driver:
        try:
            chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            _no_browser(str(exc).strip().splitlines()[0])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A desktop-sized page (1280 x 900), in Chinese, in Shanghai time."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN",
                                  timezone_id="Asia/Shanghai")
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser):
    """A phone-sized page: 375 x 812, touch, as on an iPhone X."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                  device_scale_factor=2, locale="zh-CN",
                                  timezone_id="Asia/Shanghai")
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@dataclass
class LiveServer:
    url: str
    app: object
    settings: object
    double: object  # the WeChat API double's FastAPI app (its .state.sent)

    @property
    def sent(self) -> list:
        return self.double.state.sent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(settings, wechat_api, sent):
    """The production app with the demo's data, served on a loopback port in a thread;
    its outbox dispatcher runs in the server (polling often) and sends to the double."""
    from bot.app import create_app, server_options
    from bot.demo import load_demo

    s = settings.model_copy(update={"outbox_poll_seconds": 0.2})
    load_demo(s)
    app = create_app(s)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           **{**server_options(s), "log_level": "warning"}))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the live server did not start", pytrace=False)
        time.sleep(0.02)
    yield LiveServer(f"http://127.0.0.1:{port}", app, s, wechat_api)
    server.should_exit = True
    thread.join(10)


def no_horizontal_scroll(page) -> bool:
    """Nothing on the page is wider than the viewport (no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth "
                         "&& document.body.scrollWidth <= window.innerWidth")


def screenshot(page, name: str) -> Path:
    """Take a screenshot of the page (NAME.png in SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


@pytest.fixture
def ui():
    """What the browser tests share: `ui.no_horizontal_scroll(page)`, `ui.screenshot(page,
    name)`, `ui.PHONE`."""
    from types import SimpleNamespace

    return SimpleNamespace(no_horizontal_scroll=no_horizontal_scroll, screenshot=screenshot,
                           PHONE=PHONE)
