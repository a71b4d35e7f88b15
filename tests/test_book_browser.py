"""The book as a reader sees it: built from the smoke profile, opened in headless Chromium with the network off.

Slow tests. They build the book the way tests/test_notebooks.py does (``blvnb reproduce --profile smoke`` on
a copy of the repository, whose ``origin`` is a GitHub URL, so that the pages carry the repository and issue
buttons and the launch links a published book has), and drive Debian's ``chromium`` with Playwright
(``chromium.launch(executable_path=...)``: Playwright downloads no browser of its own), every network
request sent to a proxy that does not exist and every host name unresolvable.

* On the index, one BLV chapter, one DARS chapter and the status page: tables and images are there, MathJax
  typeset the formulas, nothing logged a JavaScript error, nothing asked the network for anything (and no
  file the page loads is missing), clicking an interactive figure's slider changes what is drawn; the
  chapter's header has the repository, issue and download (.ipynb) buttons; its verdict links to the
  claim's row of the status page, and following the link lands there.
* Every internal link of every page of the built book resolves: each ``href`` and ``src`` that is not a
  URL names a file of the build, and its ``#fragment`` an id in that file. External links (GitHub, Binder,
  Colab, the papers) are counted and skipped: Sphinx's ``linkcheck`` needs the network, which is off here.

Screenshots go to ``_build/screenshots/``. Without chromium (or Playwright) the tests skip and say why;
``.ci/run`` installs chromium as root.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"
#: the origin of the test's copy: the buttons and launch links point there (never followed: offline)
ORIGIN = "https://github.com/blvnb-test/blvnb"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _skip(msg: str):
    print(f"SKIP test_book_browser: {msg}")
    pytest.skip(msg)


class Page:
    """A Playwright page with what it logged: JavaScript errors, the requests it made, files it failed to load."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"exception: {exc}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console.error: {m.text} {m.location.get('url', '')}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("requestfailed", lambda r: self.errors.append(f"failed to load {r.url}: {r.failure}"))

    def open(self, url: str) -> None:
        self.errors.clear()
        self.requests.clear()
        self.page.goto(url, wait_until="load")
        # MathJax typesets asynchronously: wait for it when the page loaded it
        self.page.evaluate("async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise) "
                           "await MathJax.startup.promise; }")
        self.page.wait_for_timeout(300)  # what the page's scripts log once loaded

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def wait_stable(self, expression: str, timeout: float = 10.0):
        """The value of ``expression`` once two readings 0.1 s apart agree (a scroll or a layout that has
        settled); an AssertionError naming it if it never does."""
        last = self.js(expression)
        for _ in range(int(timeout / 0.1)):
            self.page.wait_for_timeout(100)
            now = self.js(expression)
            if now == last:
                return now
            last = now
        raise AssertionError(f"never settled in {timeout} s: {expression[:120]}")

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    if chromium is None:
        _skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip("Playwright is not installed (pip install -e .[dev])")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files",
            "--disable-background-networking", "--disable-component-update",
            # the network is off: every request goes to a proxy on a closed port, every name fails to resolve
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        yield Page(page)
        b.close()
    finally:
        pw.stop()


@pytest.fixture(scope="module")
def book(tmp_path_factory, browser):
    """The book built from the smoke profile's outputs, as tests/test_notebooks.py builds it."""
    work = tmp_path_factory.mktemp("book-browser")
    # bench/results: the committed benchmark JSON the pages show (blvnb.pages), as in tests/test_notebooks.py
    for name in ("_config.yml", "_toc.yml", "book", "notebooks", "blvnb", "bench/results"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("generated", "__pycache__", "reproduction.md"))
        else:
            shutil.copy(src, work / name)
    # a checkout whose origin is on GitHub: blvnb reproduce gives the pages their repository buttons
    for args in (["init", "-q"], ["remote", "add", "origin", ORIGIN + ".git"]):
        subprocess.run(["git", "-C", str(work), *args], check=True, capture_output=True)
    env = dict(os.environ, BLVNB_CACHE=os.environ.get("BLVNB_CACHE", str(work / "cache")),
               BLVNB_RESULTS=str(work / "results"))
    env.pop("BLVNB_VERDICTS", None)
    proc = subprocess.run([sys.executable, "-m", "blvnb", "reproduce", "--profile", "smoke"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work / "_build" / "html"


#: Console errors of the theme stack itself, not of the book (each checked to be harmless):
#: sphinx-thebe 0.3.1 adds its one-line config script twice under Jupyter Book 1.0.4, so the second
#: ``const THEBE_JS_URL`` throws (thebe is not used: no launch button enables it); pydata-sphinx-theme logs
#: an invalid (empty) colour mode on a browser's very first visit, before it stores "auto".
UPSTREAM = ("Identifier 'THEBE_JS_URL' has already been declared", "Got invalid theme mode: . Resetting to auto.")


def _errors(page: Page) -> list[str]:
    return [e for e in page.errors if not any(u in e for u in UPSTREAM)]


def _network(page: Page) -> list[str]:
    return [u for u in page.requests if not u.startswith(("file:", "data:", "blob:", "about:"))]


def _page_facts(page: Page) -> dict:
    return page.js("""() => ({
        tables: document.querySelectorAll('article table, main table').length,
        images: Array.from(document.images).filter(i => !i.closest('.navbar-brand, .logo')).length,
        broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
        math: document.querySelectorAll('mjx-container').length,
        rawMath: /\\$\\$|\\\\\\(|\\\\\\[/.test(document.querySelector('main, article')?.innerText || ''),
        plots: document.querySelectorAll('.js-plotly-plot').length,
        drawn: document.querySelectorAll('.js-plotly-plot .main-svg').length,
        title: document.title,
    })""")


def _plot_state_js(index: int) -> str:
    return f"""(() => {{ const gd = document.querySelectorAll('.js-plotly-plot')[{index}];
        return JSON.stringify([gd.layout.sliders && gd.layout.sliders[0].active, gd.layout.title && gd.layout.title.text,
                               gd.data.map(t => t.visible)]); }})()"""


def _rect_js(selector_js: str) -> str:
    """A JS expression: the viewport rectangle of the element ``selector_js`` evaluates to (null if none)."""
    return f"""(() => {{ const e = {selector_js}; if (!e) return null; const r = e.getBoundingClientRect();
        return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()"""


def _scroll_to(page: Page, selector_js: str, block: str = "start") -> None:
    """Scroll the element into view and wait until the page has stopped moving (smooth scrolling)."""
    page.js(f"{selector_js}?.scrollIntoView({{block: '{block}'}})")
    page.wait_stable(_rect_js(selector_js))


def _move_slider(page: Page, index: int, before: str) -> None:
    """Click the slider rail near its right end with a real mouse click, and wait until the figure's state
    differs from ``before`` (at most 10 s: then the caller sees it unchanged)."""
    rail = f"document.querySelectorAll('.js-plotly-plot')[{index}].querySelector('.slider-rail-rect')"
    _scroll_to(page, f"document.querySelectorAll('.js-plotly-plot')[{index}]", block="center")
    rect = page.wait_stable(_rect_js(rail))
    page.page.mouse.click(rect["x"] + rect["w"] - 3, rect["y"] + rect["h"] / 2)
    try:
        page.page.wait_for_function(f"{_plot_state_js(index)} !== {json.dumps(before)}", timeout=10_000)
    except Exception:  # playwright's TimeoutError: the caller finds the state unchanged and says so
        pass


@pytest.mark.slow
def test_book_in_headless_chromium_offline(browser, book):
    page = browser
    SHOTS.mkdir(parents=True, exist_ok=True)
    html = book
    pages = {
        # index.html only redirects (meta refresh) to the root page; read the root page itself, so that the
        # facts are never taken from the redirect half-way (a race that once read the title and no body)
        "index": (html / "book" / "intro.html", dict(tables=True)),
        "blv_method": (html / "book" / "generated" / "blv_method.html", dict(images=True, math=True, plot=True)),
        "dars_method": (html / "book" / "generated" / "dars_method.html",
                        dict(tables=True, images=True, math=True, plot=True)),
        "reproduction": (html / "book" / "reproduction.html", dict(tables=True)),
    }
    problems = []
    if "book/intro.html" not in (html / "index.html").read_text():
        problems.append("index.html does not lead to book/intro.html")
    for name, (path, want) in pages.items():
        assert path.is_file(), path
        page.open(path.as_uri())
        facts = _page_facts(page)
        if want.get("tables") and not facts["tables"]:
            problems.append(f"{name}: no table")
        if want.get("images") and not facts["images"]:
            problems.append(f"{name}: no image")
        if facts["broken"]:
            problems.append(f"{name}: broken images {facts['broken']}")
        if want.get("math") and (not facts["math"] or facts["rawMath"]):
            problems.append(f"{name}: MathJax did not typeset ({facts['math']} formulas, raw TeX left: {facts['rawMath']})")
        if want.get("plot"):
            if not facts["plots"] or facts["drawn"] < facts["plots"]:
                problems.append(f"{name}: interactive figure not drawn ({facts})")
            else:
                before = page.js(_plot_state_js(0))
                _move_slider(page, 0, before)
                if page.js(_plot_state_js(0)) == before:
                    problems.append(f"{name}: moving the slider changed nothing")
        page.page.wait_for_timeout(500)
        page.screenshot(SHOTS / f"{name}.png")
        errors, requests = _errors(page), _network(page)
        if errors:
            problems.append(f"{name}: JavaScript errors {errors}")
        if requests:
            problems.append(f"{name}: asked the network for {requests}")
        print(f"{name}: {facts}")
    # the status page lists every claim and links the chapters' verdicts
    from blvnb import claims

    records = json.loads((html.parents[1] / "book" / "generated" / "reproduction.json").read_text())
    assert len(records) == len(claims.CLAIMS) and {r["paper"] for r in records} == {"blv", "dars"}
    toy = next(r for r in records if r["claim"] == "blv-fig1-toy")
    assert toy["profile"] == "smoke" and toy["verdict"] != "not run" and toy["seeds"] == [0, 1, 2], toy

    page.open(pages["reproduction"][0].as_uri())
    text = page.js("document.querySelector('main').innerText")
    missing = [c.id for c in claims.CLAIMS if c.id not in text]
    if missing:
        problems.append(f"status page lacks {missing[:5]}")
    page.open(pages["blv_method"][0].as_uri())
    if not page.js("!!document.getElementById('verdict-blv-fig1-toy')"):
        problems.append("blv_method: no anchor for the toy's verdict")
    if not page.js("!!document.getElementById('verdict-blv-fig1-toy')?.closest('.cell_output, .output')?.querySelector('table')"):
        problems.append("blv_method: the toy's verdict shows no evidence table")
    # the header of a published chapter: the repository and issue buttons, the executed notebook to download
    header = page.js("""() => Array.from(document.querySelectorAll('.article-header-buttons a, .header-article-items a'))
                        .map(a => a.href)""")
    for what, found in (("repository button", lambda h: h.rstrip("/") == ORIGIN),
                        ("issues button", lambda h: h.startswith(ORIGIN + "/issues/new?")),
                        ("download (.ipynb) button", lambda h: h.startswith("file:") and
                         h.endswith("/_sources/book/generated/blv_method.ipynb"))):
        if not any(found(h) for h in header):
            problems.append(f"blv_method: no {what} among the header's links {header}")
    _scroll_to(page, "document.getElementById('verdict-blv-fig1-toy')")
    page.screenshot(SHOTS / "blv_method_verdict.png")
    box = "Array.from(document.querySelectorAll('.admonition')).find(a => a.innerText.includes('Run this chapter'))"
    if not page.js(f"!!{box}"):
        problems.append("blv_method: no 'Run this chapter' box")
    else:
        page.js(f"(() => {{ const b = {box}; b.querySelector('button, .toggle-button, .admonition-title')?.click(); "
                "b.scrollIntoView({block: 'start'}); window.scrollBy(0, -80); })()")
        page.wait_stable(_rect_js(box))  # the box opened (its height) and the page stopped scrolling
        if "colab.research.google.com/github/" + ORIGIN.split("github.com/")[1] not in page.js(f"{box}.innerHTML"):
            problems.append("blv_method: the run box has no launch links for the repository")
        page.screenshot(SHOTS / "blv_method_run_box.png")
    # the verdict's link to the status page, followed as a reader would: it lands on the claim's row
    link = "document.querySelector('#verdict-blv-fig1-toy')?.closest('.cell_output, .output')?.querySelector('a[href*=\"reproduction.html#status-\"]')"
    if not page.js(f"!!{link}"):
        problems.append("blv_method: the toy's verdict does not link to the status page")
    else:
        _scroll_to(page, link, block="center")
        href = page.js(f"{link}.getAttribute('href')")
        page.page.locator(f'a[href="{href}"]').first.click()
        page.page.wait_for_load_state("load")
        landed = page.js("() => [location.pathname.split('/').pop(), location.hash, "
                         "!!document.getElementById(location.hash.slice(1))?.closest('tr')?.innerText.includes('blv-fig1-toy')]")
        if landed != ["reproduction.html", "#status-blv-fig1-toy", True]:
            problems.append(f"the toy verdict's link to the status page landed on {landed}")
    page.open(pages["reproduction"][0].as_uri())
    _scroll_to(page, "document.getElementById('blv-figure-1')")
    page.screenshot(SHOTS / "reproduction_rows.png")
    assert not problems, "\n".join(problems)


class _Links(HTMLParser):
    """The ids of a page, and each ``href`` / ``src`` of its elements."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None and not (tag == "link" and a.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(a[key])


def _parse(path: Path, cache: dict) -> _Links:
    if path not in cache:
        p = _Links()
        p.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = p
    return cache[path]


@pytest.mark.slow
def test_every_internal_link_resolves(book):
    """Each link of each page that is not a URL names a file of the build, and its fragment an id there.
    External links are only counted: checking them needs the network (``sphinx -b linkcheck``), off here."""
    html = book
    cache: dict = {}
    broken, external, checked = [], set(), 0
    # the pages Sphinx wrote; _static/ also holds the theme's Jinja macro files (*.html), which are no pages
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.relative_to(html).parts)
    assert len(pages) > 10, pages
    for page in pages:
        for link in _parse(page, cache).links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                if parts.scheme not in ("data", "javascript", "mailto"):
                    external.add(link)
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(html)}: {link}"
            if not (target.is_file() and target.is_relative_to(html.resolve())):
                broken.append(f"{where} (no file {target})")
                continue
            checked += 1
            if parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in _parse(target, cache).ids:
                    broken.append(f"{where} (no id {parts.fragment!r} in {target.relative_to(html.resolve())})")
    print(f"{checked} internal links of {len(pages)} pages resolve; {len(external)} distinct external links "
          "skipped (offline: no linkcheck), e.g. " + ", ".join(sorted(external)[:6]))
    assert checked > 100 and not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])
    # the verdicts' links to the status page are among them, and each lands on a claim's row
    status = [ln for p in pages for ln in _parse(p, cache).links if "reproduction.html#status-" in ln]
    assert status, "no chapter links its verdicts to the status page"
    rows = re.findall(r'<span id="(status-[^"]+)"></span>', (html / "book" / "reproduction.html").read_text())
    assert {ln.split("#")[1] for ln in status} <= set(rows)
