"""Headless Chromium for the project's report tests: serve a directory, render a page, read its DOM.

Chromium is Debian's package (/usr/bin/chromium, installed by `./dev setup`); the Allure command line
comes from npm (`allure-commandline`, pinned in package.json, installed by `./dev setup` with `npm ci`).
A page is rendered with `--dump-dom` under a virtual-time budget (scripts run, fetches complete, timers
fire without real waiting), and the serialized DOM is parsed with the standard library into `Element`s.

Missing tools fail the browser checks with the install hint; `GPU_CONFORMANCE_SKIP_BROWSER=1` skips them
instead (for machines that cannot install a browser; CI never sets it).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gpu_conformance.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ENV = "GPU_CONFORMANCE_CHROMIUM"  # a chromium binary other than /usr/bin/chromium or chromium on PATH
SKIP_ENV = "GPU_CONFORMANCE_SKIP_BROWSER"
INSTALL_HINT = ("run ./dev setup: it installs allure-commandline with `npm ci` (package.json) and, as root or with "
                "sudo, Debian's chromium (apt-get install chromium); or set GPU_CONFORMANCE_SKIP_BROWSER=1 to skip "
                "the browser checks on purpose")
# Without the background-networking flags Chromium keeps retrying refused connections to Google's
# services and never finishes a --dump-dom on a machine without internet access.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
# Virtual time for a page's scripts: Allure's single-page app fetches a dozen JSON files before it renders.
RENDER_BUDGET_MS = 15_000
# Real time one Chromium process may take (a cold start on a loaded 2-core CI machine is a few seconds).
CHROMIUM_TIMEOUT_S = 120
# How long a page may take to show what a test waits for (re-rendered with a longer budget until then).
PAGE_TIMEOUT_S = 180
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                   "track", "wbr"})


def chromium() -> Path | None:
    """The Chromium binary: $GPU_CONFORMANCE_CHROMIUM, else /usr/bin/chromium, else chromium on PATH."""
    override = os.environ.get(CHROMIUM_ENV)
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def allure_cli() -> Path | None:
    """The project's pinned Allure command line (node_modules/.bin/allure), when npm installed it and Java is there."""
    allure = ROOT / "node_modules" / ".bin" / "allure"
    return allure if os.access(allure, os.X_OK) and shutil.which("java") else None


@dataclass(frozen=True)
class Tools:
    """The browser checks' external tools."""

    chromium: Path
    allure: Path


def require_tools() -> Tools:
    """The tools, or fail the check naming what is missing and how to install it (skip only on request)."""
    missing = []
    browser = chromium()
    if browser is None:
        where = os.environ.get(CHROMIUM_ENV) or "/usr/bin/chromium (or chromium on PATH)"
        missing.append(f"Chromium ({where} not found or not executable)")
    allure = allure_cli()
    if allure is None:
        parts = [] if (ROOT / "node_modules" / ".bin" / "allure").exists() else ["node_modules/.bin/allure"]
        parts += [] if shutil.which("java") else ["java (allure needs a Java runtime)"]
        missing.append("the Allure command line (" + ", ".join(parts) + " missing)")
    if not missing:
        assert browser is not None and allure is not None
        return Tools(browser, allure)
    text = f"browser checks need {' and '.join(missing)}: {INSTALL_HINT}"
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: {text}")
    pytest.fail(text, pytrace=False)


def dump_dom(browser: Path, url: str, *, budget_ms: int = RENDER_BUDGET_MS) -> str:
    """The DOM of `url` after its scripts ran for `budget_ms` of virtual time, serialized by Chromium."""
    with tempfile.TemporaryDirectory(prefix="gc-chromium-") as profile:
        cmd = [str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               "--dump-dom", url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom {url} exited {proc.returncode}; stderr tail:\n{proc.stderr[-2000:]}")
    return proc.stdout


def render(browser: Path, url: str, ready: Callable[[Element], bool], *, what: str) -> Element:
    """The rendered page once `ready(page)` holds; each attempt renders afresh with a longer virtual-time budget."""
    budgets = iter(RENDER_BUDGET_MS * 2**i for i in range(32))
    page = wait_for(lambda: parse(dump_dom(browser, url, budget_ms=next(budgets))), ready, what=what,
                    timeout=PAGE_TIMEOUT_S, describe=lambda p: p.text()[:1500], tolerate=(RuntimeError,))
    return page


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a kernel-picked port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=f"serve {directory}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Element:
    """One element of a parsed DOM."""

    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(self.attrs.get("class", "").split())

    def text(self) -> str:
        """The element's text, whitespace collapsed (script and style contents left out)."""
        parts: list[str] = []

        def walk(el: Element) -> None:
            for child in el.children:
                if isinstance(child, str):
                    parts.append(child)
                elif child.tag not in ("script", "style", "template"):
                    walk(child)
                    if child.tag in ("div", "p", "td", "th", "tr", "li", "h1", "h2", "h3", "br", "pre"):
                        parts.append(" ")

        walk(self)
        return squash("".join(parts))

    def iter(self) -> Iterator[Element]:
        """This element and every element below it, in document order (template contents excluded)."""
        yield self
        for child in self.children:
            if isinstance(child, Element) and child.tag != "template":
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        """Elements below (and including) this one with that tag, class and attribute values."""
        return [el for el in self.iter()
                if (tag is None or el.tag == tag) and (cls is None or cls in el.classes)
                and all(el.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Element | None:
        found = self.find_all(tag, cls, **attrs)
        return found[0] if found else None


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    """A serialized DOM as an Element tree."""
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def squash(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped (how a page shows text)."""
    return re.sub(r"\s+", " ", text).strip()
