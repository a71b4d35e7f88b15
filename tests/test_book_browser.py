"""The book as a reader sees it: built from the smoke profile, opened in headless Chromium with the network off.

One slow test. It builds the book the way tests/test_notebooks.py does (``blvnb reproduce --profile smoke`` on
a copy of the repository), starts Debian's ``chromium`` with every network request sent to a proxy that does
not exist and every host name unresolvable, and drives it over the Chrome DevTools Protocol (a websocket on
the loopback interface, ``websocket-client``). On the index, one BLV chapter, one DARS chapter and the status
page it checks that tables and images are there, that MathJax typeset the formulas, that nothing logged a
JavaScript error and nothing asked the network for anything, and that clicking an interactive figure's slider
changes what is drawn. Screenshots go to ``_build/screenshots/``.

Without chromium (or websocket-client) the test skips and says why; ``.ci/run`` installs chromium as root.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "_build" / "screenshots"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events collected."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, expression: str, await_promise: bool = False):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.js(expression):
                return True
            time.sleep(0.25)
        return False

    def wait_stable(self, expression: str, timeout: float = 10.0):
        """The value of ``expression`` once two readings 0.1 s apart agree (a scroll or a layout that has
        settled); an AssertionError naming it if it never does."""
        end = time.monotonic() + timeout
        last = self.js(expression)
        while time.monotonic() < end:
            time.sleep(0.1)
            now = self.js(expression)
            if now == last:
                return now
            last = now
        raise AssertionError(f"never settled in {timeout} s: {expression[:120]}")

    def drain(self, seconds: float = 0.3) -> None:
        """Collect the events still arriving, until none came for ``seconds``."""
        self.ws.settimeout(seconds)
        try:
            while True:
                self.events.append(json.loads(self.ws.recv()))
        except Exception:
            pass
        finally:
            self.ws.settimeout(60)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    if chromium is None:
        msg = "chromium is not installed (Debian: apt-get install chromium; .ci/run installs it as root)"
        print(f"SKIP test_book_browser: {msg}")
        pytest.skip(msg)
    try:
        import websocket  # noqa: F401
    except ImportError:
        msg = "websocket-client is not installed (pip install -e .[dev])"
        print(f"SKIP test_book_browser: {msg}")
        pytest.skip(msg)
    profile_dir = tempfile.mkdtemp(prefix="blvnb-chromium-")
    args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", "--allow-file-access-from-files",
            # the network is off: every request goes to a proxy on a closed port, every name fails to resolve
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile_dir}",
            "--window-size=1280,900", "about:blank"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile_dir) / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().split()) and time.monotonic() < end:
            time.sleep(0.2)
        assert port_file.is_file(), f"chromium wrote no {port_file} in 60 s"
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t["type"] == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.send(f"{domain}.enable")
        dt.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        yield dt
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
        shutil.rmtree(profile_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def book(tmp_path_factory, browser):
    """The book built from the smoke profile's outputs, as tests/test_notebooks.py builds it."""
    work = tmp_path_factory.mktemp("book-browser")
    for name in ("_config.yml", "_toc.yml", "book", "notebooks", "blvnb"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("generated", "__pycache__", "reproduction.md"))
        else:
            shutil.copy(src, work / name)
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


def _errors(events: list[dict]) -> list[str]:
    return [e for e in _all_errors(events) if not any(u in e for u in UPSTREAM)]


def _all_errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
    return out


def _network(events: list[dict]) -> list[str]:
    urls = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return [u for u in urls if not u.startswith(("file:", "data:", "blob:", "about:"))]


def _open(dt: DevTools, url: str) -> None:
    dt.events.clear()
    dt.send("Page.navigate", url=url)
    assert dt.wait_for("document.readyState === 'complete'"), url
    # MathJax typesets asynchronously: wait for it when the page loaded it
    dt.wait_for("!window.MathJax || !MathJax.startup || !MathJax.startup.promise || "
                "(MathJax.startup.promise.then(() => window.__mj = 1), window.__mj === 1)", timeout=30)
    dt.drain()


def _page_facts(dt: DevTools) -> dict:
    return dt.js("""({
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


def _plot_state(dt: DevTools, index: int) -> str:
    return dt.js(_plot_state_js(index))


def _rect_js(selector_js: str) -> str:
    """A JS expression: the viewport rectangle of the element ``selector_js`` evaluates to (null if none)."""
    return f"""(() => {{ const e = {selector_js}; if (!e) return null; const r = e.getBoundingClientRect();
        return {{x: r.x, y: r.y, w: r.width, h: r.height}}; }})()"""


def _scroll_to(dt: DevTools, selector_js: str, block: str = "start") -> None:
    """Scroll the element into view and wait until the page has stopped moving (smooth scrolling)."""
    dt.js(f"{selector_js}?.scrollIntoView({{block: '{block}'}})")
    dt.wait_stable(_rect_js(selector_js))


def _move_slider(dt: DevTools, index: int, before: str) -> None:
    """Click the slider rail near its right end with a real (CDP) mouse event, and wait until the figure's
    state differs from ``before`` (at most 10 s: then the caller sees it unchanged)."""
    rail = f"document.querySelectorAll('.js-plotly-plot')[{index}].querySelector('.slider-rail-rect')"
    _scroll_to(dt, f"document.querySelectorAll('.js-plotly-plot')[{index}]", block="center")
    rect = dt.wait_stable(_rect_js(rail))
    x, y = rect["x"] + rect["w"] - 3, rect["y"] + rect["h"] / 2
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        dt.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    dt.wait_for(f"{_plot_state_js(index)} !== {json.dumps(before)}", timeout=10)


@pytest.mark.slow
def test_book_in_headless_chromium_offline(browser, book):
    dt = browser
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
        _open(dt, path.as_uri())
        facts = _page_facts(dt)
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
                before = _plot_state(dt, 0)
                _move_slider(dt, 0, before)
                after = _plot_state(dt, 0)
                if before == after:
                    problems.append(f"{name}: moving the slider changed nothing")
        dt.drain(0.5)
        dt.screenshot(SHOTS / f"{name}.png")
        errors, requests = _errors(dt.events), _network(dt.events)
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

    _open(dt, pages["reproduction"][0].as_uri())
    text = dt.js("document.querySelector('main').innerText")
    missing = [c.id for c in claims.CLAIMS if c.id not in text]
    if missing:
        problems.append(f"status page lacks {missing[:5]}")
    _open(dt, pages["blv_method"][0].as_uri())
    if not dt.js("!!document.getElementById('verdict-blv-fig1-toy')"):
        problems.append("blv_method: no anchor for the toy's verdict")
    if not dt.js("!!document.getElementById('verdict-blv-fig1-toy')?.closest('.cell_output, .output')?.querySelector('table')"):
        problems.append("blv_method: the toy's verdict shows no evidence table")
    _scroll_to(dt, "document.getElementById('verdict-blv-fig1-toy')")
    dt.screenshot(SHOTS / "blv_method_verdict.png")
    box = "Array.from(document.querySelectorAll('.admonition')).find(a => a.innerText.includes('Run this chapter'))"
    if not dt.js(f"!!{box}"):
        problems.append("blv_method: no 'Run this chapter' box")
    else:
        dt.js(f"(() => {{ const b = {box}; b.querySelector('button, .toggle-button, .admonition-title')?.click(); "
              "b.scrollIntoView({block: 'start'}); window.scrollBy(0, -80); })()")
        dt.wait_stable(_rect_js(box))  # the box opened (its height) and the page stopped scrolling
        dt.screenshot(SHOTS / "blv_method_run_box.png")
    _open(dt, pages["reproduction"][0].as_uri())
    _scroll_to(dt, "document.getElementById('blv-figure-1')")
    dt.screenshot(SHOTS / "reproduction_rows.png")
    assert not problems, "\n".join(problems)
