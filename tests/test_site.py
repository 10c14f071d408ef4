"""The website as a reader meets it: the built site served on 127.0.0.1 and opened in a real headless
Chromium (Debian's `chromium`), with every other host unreachable, so that the site must work offline.

Every page: HTTP 200, no JavaScript error, no failed request, nothing fetched from another host.
Chapter pages: equations typeset by MathJax, every figure loaded, the launch menu with the Colab link
of the right notebook, the download button. Pages whose executed notebook saved widget states: the
widgets are live controls showing their saved values (and a small book with an IntSlider checks the
same in any case). Search finds "backpropagation". Screenshots of the landing page and of chapter 01
go to `_build/screenshots/`. Without the browser, the same build is checked for internal links that
do not resolve, the course map against the table of contents, and the chapter frame (objectives,
summary, exercise).

Chromium is driven through its DevTools protocol over a pipe (`--remote-debugging-pipe`), with the
standard library only: no driver and no browser download. Where no Chromium is installed the browser
tests are skipped with a message (`apt-get install chromium`; `.ci/run` installs it, and under CI=true
a missing Chromium, or a site built without its offline assets, fails instead); set CHROMIUM to use
another binary. The book is built once per session (the `site` fixture in conftest.py);
`COURSE_SITE_BUILD=_build pytest tests/test_site.py` checks an existing `make book` build instead.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

from conftest import ROOT
from utils import book

pytestmark = pytest.mark.slow

TOC_FILES = book.toc_files(book.load_toc())
CHAPTERS = [f for f in TOC_FILES if f.startswith("chapters/")]
EXERCISES = [f for f in TOC_FILES if f.startswith("exercises/")]
EXECUTED = [f for f in TOC_FILES if f.startswith(("chapters/", "solutions/"))]
PAGES = ["index", *TOC_FILES, "search", "genindex"]
REPO = "dlcv-course/dlcv-course"
SCREENSHOTS = ROOT / "_build" / "screenshots"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PAGE_TIMEOUT = 60.0


# --- A minimal client of Chromium's DevTools protocol -------------------------------------------


def find_chromium() -> str | None:
    """The Chromium to drive: $CHROMIUM, else the first of chromium, chromium-browser, google-chrome."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


class DevToolsError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium spoken to over ``--remote-debugging-pipe`` (JSON messages ended by NUL)."""

    FLAGS = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-default-browser-check",
        "--mute-audio",
        "--hide-scrollbars",
        "--password-store=basic",
        "--use-mock-keychain",
        "--disable-dev-shm-usage",
        "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
        # Only this machine answers: a page that needs the network fails its checks.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1280,900",
        "--remote-debugging-pipe",
    ]

    def __init__(self, executable: str, profile: Path, log: Path):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_fds():  # the child reads commands on fd 3 and writes replies on fd 4
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [executable, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=wire_fds,
            pass_fds=(3, 4),
            close_fds=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.version = self.send("Browser.getVersion", timeout=30)["product"]

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply is None:
                raise DevToolsError(f"{method}: no reply within {timeout} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (event := self._read(deadline)) is not None:
            if "method" in event:
                self.events.append(event)

    def _read(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                return None
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    return None
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (DevToolsError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            os.close(fd)
        self._log.close()


class Tab:
    """One page of the browser, with what happened while it loaded: errors, failed requests, URLs."""

    def __init__(self, browser: Chromium):
        self.browser = browser
        self.target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": self.target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params: dict | None = None, timeout: float = 30):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def events(self, *methods: str) -> list[dict]:
        return [
            e["params"]
            for e in self.browser.events
            if e.get("sessionId") == self.session and (not methods or e["method"] in methods)
        ]

    def goto(self, url: str, timeout: float = PAGE_TIMEOUT, quiet: float = 0.5) -> None:
        """Open ``url`` and wait for the load event and then for the network to be quiet."""
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not self.events("Page.loadEventFired"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading in {timeout} s")
            self.browser.pump(0.1)
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self.pending():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return
            self.browser.pump(0.1)
        raise TimeoutError(f"{url}: requests still pending after {timeout} s: {self.pending()}")

    def pending(self) -> list[str]:
        """The requests of the current document that have not finished (those of a page left are dropped)."""
        sent = self.events("Network.requestWillBeSent")
        documents = [e["loaderId"] for e in sent if e.get("type") == "Document"]
        started = {
            e["requestId"]: e["request"]["url"]
            for e in sent
            if not documents or e.get("loaderId") == documents[-1]
        }
        for e in self.events("Network.loadingFinished", "Network.loadingFailed"):
            started.pop(e["requestId"], None)
        return sorted(started.values())

    def evaluate(self, expression: str, timeout: float = 30):
        result = self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "timeout": timeout * 1000,
            },
            timeout=timeout + 5,
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                assert value, f"timed out after {timeout} s waiting for {what or expression}"
                return value
            self.browser.pump(0.2)

    def requested_urls(self) -> list[str]:
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def document_status(self) -> int | None:
        for e in self.events("Network.responseReceived"):
            if e.get("type") == "Document":
                return e["response"]["status"]
        return None

    def problems(self) -> list[str]:
        """JavaScript errors, console errors and failed requests, one line each."""
        found = []
        for e in self.events("Runtime.exceptionThrown"):
            d = e["exceptionDetails"]
            found.append(
                f"JavaScript error: {d.get('exception', {}).get('description') or d.get('text')}"
                f" ({d.get('url', '')}:{d.get('lineNumber', '')})"
            )
        for e in self.events("Runtime.consoleAPICalled"):
            if e["type"] in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in e["args"])
                found.append(f"console.{e['type']}: {text}")
        for e in self.events("Log.entryAdded"):
            if e["entry"]["level"] == "error":
                found.append(f"browser log: {e['entry']['text']} {e['entry'].get('url', '')}")
        urls = {e["requestId"]: e["request"]["url"] for e in self.events("Network.requestWillBeSent")}
        for e in self.events("Network.loadingFailed"):
            found.append(f"failed request: {urls.get(e['requestId'], '?')} ({e['errorText']})")
        for e in self.events("Network.responseReceived"):
            if e["response"]["status"] >= 400:
                found.append(f"HTTP {e['response']['status']}: {e['response']['url']}")
        return found

    def screenshot(self, path: Path, width: int = 1280, max_height: int = 6000) -> Path:
        """The page from the top, as tall as its content (at most ``max_height`` pixels), as PNG."""
        height = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        try:
            self.browser.pump(0.5)  # let the page lay itself out again
            shot = self.send("Page.captureScreenshot", {"format": "png"}, timeout=60)
        finally:
            self.send("Emulation.clearDeviceMetricsOverride")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.browser.send("Target.closeTarget", {"targetId": self.target})
        except DevToolsError:
            pass
        self.browser.events = [e for e in self.browser.events if e.get("sessionId") != self.session]


# --- Fixtures: the site on 127.0.0.1, one browser for the session ---------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(directory: Path) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) from a thread; return the server and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


@pytest.fixture(scope="session")
def offline(site) -> Path:
    """The built site, which must serve MathJax and the widget renderer itself (see site/course_site.py)."""
    if not (site / "html" / "_vendor" / "versions.json").exists():
        message = (
            "the site was built without its offline assets (npm missing or `npm ci` failed: see the "
            "build output), so its pages load MathJax and the widget renderer from the CDN"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return site


@pytest.fixture(scope="session")
def served(offline):
    server, url = serve(offline / "html")
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    executable = find_chromium()
    if executable is None:
        message = (
            "no Chromium found, so the browser tests cannot run: install it (Debian: "
            "`apt-get install chromium`; .ci/run does) or set CHROMIUM=/path/to/chromium"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(executable, tmp / "profile", tmp / "chromium.log")
    yield chromium
    chromium.close()


@pytest.fixture
def tab(browser):
    page = Tab(browser)
    yield page
    page.close()


def open_page(tab: Tab, url: str) -> None:
    """Open a page and fail on its errors, failed requests and requests to other hosts."""
    tab.goto(url)
    if url.endswith("/index.html"):  # the root page redirects to the landing page
        tab.wait_for(
            "location.pathname.endsWith('/book/intro.html') && document.readyState === 'complete'",
            what="the redirect to the landing page",
        )
        tab.browser.pump(0.5)
    assert tab.document_status() == 200, f"{url}: HTTP {tab.document_status()}"
    problems = tab.problems()
    assert not problems, f"{url}:\n" + "\n".join(problems)
    foreign = [
        u
        for u in tab.requested_urls()
        if urlsplit(u).scheme in ("http", "https", "ws", "wss") and urlsplit(u).hostname != "127.0.0.1"
    ]
    assert not foreign, f"{url} needs the network: {foreign}"


# --- The build, without a browser --------------------------------------------------------------


class _Links(HTMLParser):
    """The ids of a page and the local URLs it links to or loads."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            value = attrs.get(key)
            if value and tag in ("a", "link", "img", "script", "iframe", "source", "video", "audio", "embed"):
                self.urls.append(value)


@functools.cache
def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_the_site_serves_its_own_javascript(offline):
    """MathJax, require.js and the widget manager come from _vendor/, at the versions pinned in site/."""
    html = offline / "html"
    pins = json.loads((ROOT / "site" / "package.json").read_text())
    versions = json.loads((html / "_vendor" / "versions.json").read_text())
    for name, asset in pins["siteAssets"].items():
        assert versions[name] == pins["dependencies"][asset["package"]]
        assert (html / "_vendor" / name / asset["entry"]).is_file()
    chapter = (html / f"{CHAPTERS[0]}.html").read_text()
    assert re.search(r'<script[^>]+src="[^"]*_vendor/mathjax/es5/tex-mml-chtml\.js[?"]', chapter)
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        remote = re.findall(r'<script[^>]+src="((?:https?:)?//[^"]+)"', text)
        assert not remote, f"{page.relative_to(html)} loads scripts from the network: {remote}"
        assert text.count("const THEBE_JS_URL") <= 1, f"{page.relative_to(html)} declares THEBE_JS_URL twice"


def test_every_internal_link_resolves(site):
    """Every local href and src of every page names a file of the site, and its #anchor exists there."""
    html = site / "html"
    broken = []
    pages = sorted(
        p for p in html.rglob("*.html") if p.relative_to(html).parts[0] not in ("_static", "_vendor")
    )
    assert len(pages) >= len(TOC_FILES)
    for page in pages:
        for url in _parse(page).urls:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//") or url in ("#", ""):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(html)} -> {url}"
            if not target.is_relative_to(html.resolve()) or not target.exists():
                broken.append(f"{where}: no such file")
            elif (
                parts.fragment
                and target.suffix == ".html"
                and unquote(parts.fragment) not in _parse(target).ids
            ):
                broken.append(f"{where}: no anchor #{parts.fragment}")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:50])


def course_map() -> list[dict]:
    """The rows of the course map on the landing page: chapter and exercise files (no suffix), title."""
    text = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    block = re.search(r"^(:{3,}|`{3,})\{course-map\}\s*\n(.*?)^\1\s*$", text, re.S | re.M)
    assert block, "book/intro.md has no {course-map} block"
    rows = []
    for line in block.group(2).splitlines():
        chapter = re.search(r"\[([^\]]+)\]\(\.\./(chapters/[\w-]+)\.ipynb\)", line)
        if chapter:
            exercise = re.search(r"\]\(\.\./(exercises/[\w-]+)\.ipynb\)", line)
            rows.append(
                {
                    "title": chapter.group(1),
                    "chapter": chapter.group(2),
                    "exercise": exercise.group(1) if exercise else None,
                }
            )
    return rows


def _committed_notebooks() -> set[str]:
    """The chapter notebooks under version control (every one on disk outside a git checkout)."""
    out = subprocess.run(["git", "ls-files", "chapters/*.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 0:
        return set(out.stdout.split())
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "chapters").glob("*.ipynb")}


def test_course_map_lists_every_chapter_and_exercise_of_the_toc():
    rows = course_map()
    mapped = {r["chapter"] for r in rows}
    for row in rows:
        assert row["exercise"] == row["chapter"].replace("chapters/", "exercises/"), (
            f"course map: {row['chapter']} must link its own exercise, not {row['exercise']}"
        )
    missing = [c for c in CHAPTERS if c not in mapped]
    assert not missing, f"chapters in _toc.yml but not in the course map of book/intro.md: {missing}"
    missing = [e for e in EXERCISES if e.replace("exercises/", "chapters/") not in mapped]
    assert not missing, f"exercises in _toc.yml but not in the course map of book/intro.md: {missing}"


def test_course_map_names_only_chapters_of_the_toc():
    """A mapped chapter that is committed but not in _toc.yml is a mistake; one not written yet is shown
    as "in preparation" (no link) until it is added."""
    not_in_toc = [r["chapter"] for r in course_map() if r["chapter"] not in CHAPTERS]
    committed = _committed_notebooks()
    written = [c for c in not_in_toc if f"{c}.ipynb" in committed]
    assert not written, f"in the course map and committed in chapters/, but not in _toc.yml: {written}"
    if not_in_toc:
        pytest.skip(f"not in _toc.yml yet, shown as in preparation: {', '.join(not_in_toc)}")


def test_landing_page_links_every_chapter_of_the_build(site):
    landing = (site / "html" / "book" / "intro.html").read_text(encoding="utf-8")
    block = re.search(r'<div class="course-map[^"]*">(.*?)</table>', landing, re.S)
    assert block, "the landing page shows no course map"
    for row in course_map():
        linked = f'href="../{row["chapter"]}.html"' in block.group(1)
        assert linked == (row["chapter"] in CHAPTERS), row
        if row["exercise"] in EXERCISES:
            assert f'href="../{row["exercise"]}.html"' in block.group(1)
    for part in ("Part I", "Part II"):
        assert part in block.group(1)
    for topic in ("Prerequisites", "Three ways to use", "grading", "Run it locally", "GPU runtime"):
        assert topic.lower() in landing.lower(), f"the landing page says nothing about {topic!r}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_starts_with_objectives_and_ends_with_summary_and_exercise(chapter):
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    opening = "\n".join(c.source for c in nb.cells[:first_code] if c.cell_type == "markdown")
    assert re.search(r"learning objectives", opening, re.I), (
        f"{chapter}: no learning objectives before the first code cell"
    )
    summary = next((i for i, s in enumerate(markdown) if re.search(r"^#+\s*Summary", s, re.M | re.I)), None)
    assert summary is not None, f"{chapter}: no Summary section"
    exercise = chapter.replace("chapters/", "exercises/")
    closing = "\n".join(markdown[summary:])
    assert f"../{exercise}.ipynb" in closing, f"{chapter}: the closing cells do not link ../{exercise}.ipynb"


def test_favicon(site):
    html = site / "html"
    assert (html / "favicon.ico").read_bytes()[:4] == b"\x00\x00\x01\x00"
    landing = (html / "book" / "intro.html").read_text(encoding="utf-8")
    icon = re.search(r'<link[^>]+rel="icon"[^>]+href="([^"]+)"', landing) or re.search(
        r'<link[^>]+href="([^"]+)"[^>]+rel="icon"', landing
    )
    assert icon, "no favicon link"
    assert (html / "book" / icon.group(1)).resolve().is_file()


def test_make_pdf_says_what_is_missing_without_tex(tmp_path, monkeypatch, capsys):
    """`make pdf` on a machine without TeX: exit code 2 and the Debian packages to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert book.main(["pdf", "--no-execute", "--path-output", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert "pdflatex" in message and " ".join(book.TEX_PACKAGES) in message
    assert not (tmp_path / "_build").exists()


# --- In the browser ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors_or_network(tab, served, page):
    open_page(tab, served + f"{page}.html")
    icon = tab.evaluate(
        "(async () => { const l = document.querySelector('link[rel=icon]');"
        " return l ? (await fetch(l.href)).status : null })()"
    )
    assert icon == 200, f"{page}: favicon answers {icon}"


MATH_CHECK = """(async () => {
  if (!window.MathJax || !MathJax.startup) return {error: 'MathJax is not loaded'};
  await MathJax.startup.promise;
  const math = [...document.querySelectorAll('.math')];
  const raw = math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60));
  const text = document.querySelector('main') ? document.querySelector('main').cloneNode(true) : null;
  if (text) text.querySelectorAll('pre, code, script, style, mjx-container, textarea')
    .forEach(e => e.remove());
  const body = text ? text.textContent : '';
  return {count: math.length, typeset: document.querySelectorAll('mjx-container').length, raw,
          errors: document.querySelectorAll('mjx-merror').length,
          delimiters: (body.match(/\\\\\\(|\\\\\\[/g) || []).length};
})()"""

FIGURE_CHECK = """(async () => {
  const images = [...document.querySelectorAll('main img')];
  images.forEach(i => { i.loading = 'eager'; });
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  return images.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
})()"""


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_in_the_browser(tab, served, chapter):
    open_page(tab, served + f"{chapter}.html")
    math = tab.evaluate(MATH_CHECK)
    assert "error" not in math, math
    assert math["count"] > 0 and math["typeset"] >= math["count"], f"{chapter}: math not typeset: {math}"
    assert not math["raw"] and not math["delimiters"] and not math["errors"], (
        f"{chapter}: raw TeX left: {math}"
    )

    figures = tab.evaluate(FIGURE_CHECK)
    assert len(figures) >= 3, f"{chapter}: expected figures, found {figures}"
    assert all(f["ok"] for f in figures), (
        f"{chapter}: figures not loaded: {[f for f in figures if not f['ok']]}"
    )

    colab = f"https://colab.research.google.com/github/{REPO}/blob/main/{chapter}.ipynb"
    launch = tab.evaluate(f"""(() => {{
      const a = document.querySelector('.dropdown-launch-buttons a[href="{colab}"]');
      const menu = document.querySelector('.dropdown-launch-buttons');
      return {{menu: !!menu && menu.getBoundingClientRect().width > 0, colab: !!a,
               label: a ? a.textContent.trim() : null}};
    }})()""")
    assert launch["menu"], f"{chapter}: no visible launch menu"
    assert launch["colab"] and "colab" in launch["label"].lower(), (
        f"{chapter}: no Colab link to {colab}: {launch}"
    )

    download = tab.evaluate(f"""(async () => {{
      const a = document.querySelector('a[href$="_sources/{chapter}.ipynb"]');
      if (!a) return null;
      const r = await fetch(a.href);
      return {{status: r.status, cells: (await r.json()).cells.length}};
    }})()""")
    assert download and download["status"] == 200 and download["cells"] > 0, (
        f"{chapter}: download button: {download}"
    )
    assert not tab.problems(), tab.problems()


def saved_widgets(notebook: Path) -> tuple[dict, list[str]]:
    """The saved widget state of an executed notebook and the model ids of its displayed widgets."""
    nb = nbformat.read(notebook, as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    views = [
        o["data"][WIDGET_VIEW]["model_id"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if WIDGET_VIEW in o.get("data", {})
    ]
    return state, [v for v in views if v in state]


def expected_widget_texts(state: dict, views: list[str]) -> list[str]:
    """What the displayed controls must show: slider readouts, selected options, text values."""
    shown, todo = set(), list(views)
    while todo:  # every model reachable from a displayed one (children, layouts, ...)
        model = todo.pop()
        if model in shown or model not in state:
            continue
        shown.add(model)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[model]["state"]))
    texts = []
    for model in shown:
        s = state[model]["state"]
        name = s.get("_model_name", "")
        if name in ("IntSliderModel", "FloatSliderModel", "FloatLogSliderModel") and s.get("readout", True):
            value = s["value"]
            if name == "IntSliderModel":
                texts.append(str(value))
            elif name == "FloatSliderModel":
                texts.append(format(value, s.get("readout_format", ".2f").lstrip(",")))
        elif (
            name
            in (
                "DropdownModel",
                "SelectionSliderModel",
                "ToggleButtonsModel",
                "RadioButtonsModel",
                "SelectModel",
            )
            and s.get("index") is not None
        ):
            texts.append(str(s["_options_labels"][s["index"]]))
        elif name in ("TextModel", "IntTextModel", "FloatTextModel", "BoundedIntTextModel", "LabelModel"):
            texts.append(str(s["value"]))
    return [t for t in texts if t]


def _same_value(expected: str, shown: str) -> bool:
    """The same text, or the same number however written ("2.0" and "2")."""
    if " ".join(expected.split()) == shown:
        return True
    try:
        a, b = float(expected), float(shown)
    except ValueError:
        return False
    return abs(a - b) <= 1e-9 * max(1.0, abs(a))


WIDGET_TEXTS = """(() => {
  const texts = [];
  const add = e => texts.push(e.textContent.trim());
  document.querySelectorAll('.widget-readout, .widget-label, .widget-label-basic').forEach(add);
  document.querySelectorAll('.jupyter-widgets input').forEach(e => texts.push(String(e.value).trim()));
  document.querySelectorAll('.jupyter-widgets select').forEach(s => [...s.selectedOptions].forEach(add));
  document.querySelectorAll('.jupyter-widgets button.mod-active, .jupyter-widgets input:checked + *')
    .forEach(add);
  document.querySelectorAll('.widget-radio-box input:checked')
    .forEach(e => texts.push(e.parentElement.textContent.trim()));
  return texts;
})()"""


def check_widgets(tab: Tab, url: str, notebook: Path) -> dict:
    """Open ``url`` and check that its saved widgets are live controls showing their saved values."""
    state, views = saved_widgets(notebook)
    open_page(tab, url)
    tab.wait_for(
        f"""(() => {{
      const areas = [...document.querySelectorAll('.widget-subarea')];
      return areas.length >= {len(views)} && areas.every(a => a.querySelector('.jupyter-widgets'));
    }})()""",
        timeout=30,
        what=f"{len(views)} widgets to render on {url}",
    )
    rendered = tab.evaluate("document.querySelectorAll('.widget-subarea .jupyter-widgets').length")
    shown = [" ".join(t.split()) for t in tab.evaluate(WIDGET_TEXTS)]  # non-breaking spaces too
    expected = expected_widget_texts(state, views)
    missing = [t for t in expected if not any(_same_value(t, s) for s in shown)]
    assert not missing, f"{url}: saved values not shown: {missing} (the page shows {shown[:40]})"
    body = tab.evaluate("document.body.innerText")
    assert "Error displaying widget" not in body and "Error rendering" not in body
    assert not tab.problems(), tab.problems()
    return {"views": len(views), "rendered": rendered, "values": expected}


@pytest.mark.parametrize("page", EXECUTED)
def test_saved_widgets_are_live_controls(tab, served, site, page):
    notebook = site / "jupyter_execute" / f"{page}.ipynb"
    state, views = saved_widgets(notebook)
    if not views:
        pytest.skip(f"{page} displays no widget")
    check_widgets(tab, served + f"{page}.html", notebook)


WIDGET_NOTEBOOK = [
    ("markdown", "# Widgets\n\nA saved slider, and math on the same page: $\\sigma(x) = 1 / (1 + e^{-x})$."),
    (
        "code",
        "import ipywidgets as widgets\n\nslider = widgets.IntSlider(value=7, min=0, max=10, "
        "description='k')\nslider",
    ),
    ("code", "widgets.Dropdown(options=['relu', 'tanh', 'sigmoid'], value='tanh', description='activation')"),
]


def test_widgets_of_a_small_book_show_their_saved_values(tab, tmp_path_factory, offline):
    """A one-notebook book, built executed like the course: its IntSlider is a live control showing 7."""
    src = tmp_path_factory.mktemp("widget_book")
    (src / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", src / "_config.yml")
    shutil.copy(ROOT / "book" / "references.bib", src / "book" / "references.bib")
    (src / "book" / "intro.md").write_text("# A small book\n\nOne page with widgets.\n")
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: widgets\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(s) if kind == "markdown" else nbformat.v4.new_code_cell(s)
        for kind, s in WIDGET_NOTEBOOK
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src / "widgets.ipynb")
    assert book.build(path_output=src, root=src, profile="smoke") == 0
    built = src / "_build"
    assert (built / "html" / "_vendor" / "versions.json").exists()
    state, views = saved_widgets(built / "jupyter_execute" / "widgets.ipynb")
    assert len(views) == 2, "the executed notebook saved no widget state"
    server, url = serve(built / "html")
    try:
        found = check_widgets(tab, url + "widgets.html", built / "jupyter_execute" / "widgets.ipynb")
        assert {"7", "tanh"} <= set(found["values"])
        assert tab.evaluate("document.querySelectorAll('.widget-slider').length") == 1
        assert tab.evaluate(MATH_CHECK)["typeset"] >= 1
    finally:
        server.shutdown()
        server.server_close()


def test_search_finds_backpropagation(tab, served):
    open_page(tab, served + "search.html?q=backpropagation")
    results = tab.wait_for(
        """(() => {
      const links = [...document.querySelectorAll('#search-results li a')].map(a => a.getAttribute('href'));
      return links.length ? links : null;
    })()""",
        timeout=20,
        what="search results",
    )
    assert any("chapters/01_backprop" in link for link in results), results
    assert not tab.problems(), tab.problems()


def test_screenshots_of_the_landing_page_and_a_chapter(tab, served):
    """For people to look at: written to _build/screenshots/."""
    shots = []
    for page, name in (("book/intro", "landing"), (CHAPTERS[0], Path(CHAPTERS[0]).name)):
        open_page(tab, served + f"{page}.html")
        if page.startswith("chapters/"):
            tab.evaluate("MathJax.startup.promise")
        shots.append(tab.screenshot(SCREENSHOTS / f"{name}.png"))
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        print(f"screenshot: {shot}")
