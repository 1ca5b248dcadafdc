"""
Clickjacking, in headless Chromium against a real twistd: a page of a
foreign site cannot frame the console page; the dashboard named by
C{--frame-ancestors} can.

Each framing site is a small HTTP server on loopback (its own origin: its
own port) whose one page holds the console page in an iframe; the console
page comes from the real proxy, with its real headers, and the browser
decides.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.twistd import Twistd

from .conftest import serve_txvnc

pytestmark = pytest.mark.e2e


class FramingSite:
    """
    A loopback site whose every page frames C{console_url} (set once the
    proxy's port is known).
    """

    def __init__(self) -> None:
        site = self

        class Page(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    '<!doctype html><title>framing</title><iframe id="console" '
                    f'src="{site.console_url}"></iframe>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.console_url = "about:blank"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, FramingSite]]:
    """The operator's dashboard and a foreign site."""
    made = {"dashboard": FramingSite(), "foreign": FramingSite()}
    yield made
    for site in made.values():
        site.close()


@pytest.fixture(scope="module")
def txvnc_framed(
    tmp_path_factory: pytest.TempPathFactory, sites: dict[str, FramingSite]
) -> Iterator[Twistd]:
    """A twistd whose console page the dashboard may frame."""
    yield from serve_txvnc(
        tmp_path_factory, "--frame-ancestors", sites["dashboard"].origin
    )


def framed(page: Any, site: FramingSite, server: Twistd) -> tuple[str, str]:
    """
    Load C{site}'s page framing C{server}'s console page; the URL and title
    of the document the browser shows in that frame once it has loaded.
    """
    site.console_url = f"http://127.0.0.1:{server.proxy_port}/vnc_auto.html"
    page.goto(site.origin + "/")
    frame = page.wait_for_selector("#console").content_frame()
    assert frame is not None
    frame.wait_for_load_state("load")
    return frame.url, frame.evaluate("document.title")


def test_a_foreign_site_cannot_frame_the_console(
    txvnc_framed: Twistd, sites: dict[str, FramingSite], page: Any
):
    """A site not named by --frame-ancestors gets the browser's blocked frame, not the console page."""
    url, title = framed(page, sites["foreign"], txvnc_framed)
    assert url.startswith("chrome-error:") and title != "Console"


def test_the_named_dashboard_can_frame_the_console(
    txvnc_framed: Twistd, sites: dict[str, FramingSite], page: Any
):
    """The origin named by --frame-ancestors shows the console page in its iframe."""
    url, title = framed(page, sites["dashboard"], txvnc_framed)
    assert url.endswith("/vnc_auto.html") and title == "Console"


def test_by_default_no_site_can_frame_the_console(
    txvnc: Twistd, sites: dict[str, FramingSite], page: Any
):
    """Without --frame-ancestors even the dashboard cannot frame the console page."""
    url, title = framed(page, sites["dashboard"], txvnc)
    assert url.startswith("chrome-error:") and title != "Console"
