"""The built book as a student's browser shows it: every page of the TOC in headless Chromium.

A broken figure, unrendered math or a dead link is a broken lesson, and only a browser
sees it. This module builds the book once per session (or reuses ``_build/html`` when it
is newer than every source file), serves it on 127.0.0.1, opens every page of
``_toc.yml`` (plus ``search.html`` and ``genindex.html``) in Debian's Chromium, driven by
Playwright, and checks on each page:

* no JavaScript error in the console, no failed request to the book's own server;
* every local ``<img>`` loaded (``naturalWidth > 0``);
* math rendered: every ``.math`` element holds a MathJax ``mjx-container`` without a
  TeX error, and a page whose source has math shows some;
* every internal link resolves to a built file and, for ``#anchor``, to an element
  with that id on the target page;
* notebook pages carry the Colab launch button for the repository and branch of
  ``_config.yml``;
* the page's heading, ``<title>`` and sidebar entry match the first heading of its
  source (the TOC gives no titles of its own).

The search page must find each term of :data:`SEARCH_TERMS` whose chapter is in the
TOC. External links are never fetched (the machine is offline): they are listed in
``_build/external_links.txt`` and checked for form (https, a valid host name). A
full-page screenshot of every page lands in ``_build/screenshots/``.

Offline MathJax: the book loads MathJax 3 from jsDelivr (``sphinx.config.mathjax_path``
in ``_config.yml``), which students online keep using. The browser here routes every
request for ``cdn.jsdelivr.net/npm/mathjax@3/...`` to a local copy of the ``mathjax``
npm package, which ``.ci/run`` installs into ``.cache/mathjax`` (git-ignored)::

    npm install --no-save --prefix .cache/mathjax mathjax@3

``TEACHKIT_MATHJAX_DIR`` points at another copy (the folder holding ``es5/``). Every
other request to a host other than 127.0.0.1 is blocked.

The module is skipped only where ``/usr/bin/chromium`` is missing (Debian:
``apt-get install chromium``).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import mimetypes
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
EXTERNAL_LINKS = BUILD / "external_links.txt"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
MATHJAX_DIR = Path(
    os.environ.get("TEACHKIT_MATHJAX_DIR", ROOT / ".cache" / "mathjax" / "node_modules" / "mathjax")
)
# The CDN address the book loads MathJax from, and the folder of the package it maps to.
MATHJAX_CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/mathjax@(\d+)[^/]*/(.*)")

# Search term -> the TOC file (a glob) whose chapter must be among the results. A term
# is required as soon as a file matching its glob is in the TOC.
SEARCH_TERMS = {
    "DINO": "book/dino_overview",
    "centering": "notebooks/*dino*",  # the DINO step-by-step chapter
    "mask decoder": "notebooks/*sam*",  # the SAM chapter
}

BUILD_TIMEOUT_S = 600
PAGE_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: the browser test needs Debian's chromium "
    "(apt-get install chromium); .ci/run installs it",
)


# ---- the TOC and the sources -------------------------------------------------------


def _toc_files(node: object) -> list[str]:
    """Every ``file:`` of the TOC, root first, in reading order."""
    if isinstance(node, dict):
        files = [node["root"]] if "root" in node else []
        files += [node["file"]] if "file" in node else []
        for key, value in node.items():
            if key not in ("root", "file"):
                files += _toc_files(value)
        return files
    if isinstance(node, list):
        return [f for item in node for f in _toc_files(item)]
    return []


def _source(docname: str) -> Path:
    for ext in (".md", ".ipynb"):
        if (ROOT / f"{docname}{ext}").exists():
            return ROOT / f"{docname}{ext}"
    raise FileNotFoundError(f"{docname} is in _toc.yml but has no .md or .ipynb file")


TOC_FILES = _toc_files(TOC)
ROOT_DOC = TOC["root"]
PAGES = [*TOC_FILES, "search", "genindex"]  # the last two when built (checked in the test)
ACTIVE_SEARCH_TERMS = {
    term: pattern
    for term, pattern in SEARCH_TERMS.items()
    if any(fnmatch.fnmatch(f, pattern) for f in TOC_FILES)
}


def _markdown_texts(path: Path) -> list[str]:
    """The markdown of a page: the file itself, or a notebook's markdown cells."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    text = path.read_text()
    front = re.match(r"---\n.*?\n---\n", text, re.S)  # YAML front matter
    return [text[front.end() :] if front else text]


_FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)


def first_heading(path: Path) -> str:
    """The first level-1 heading of a page's source, as plain text (the TOC's title)."""
    for text in _markdown_texts(path):
        for line in _FENCE.sub("", text).splitlines():
            if line.startswith("# "):
                title = line[2:].strip()
                title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # [text](url)
                title = re.sub(r"\{[\w:-]+\}`([^`]*)`", r"\1", title)  # {role}`text`
                return re.sub(r"[`*]", "", title).strip()
    raise AssertionError(f"{path.relative_to(ROOT)} has no level-1 heading")


def source_has_math(path: Path) -> bool:
    """Whether the page's markdown has ``$...$``, ``$$...$$`` or a ``{math}`` directive/role."""
    for text in _markdown_texts(path):
        if re.search(r"^(```|~~~)\{math\}|\{math\}`", text, re.M):
            return True
        prose = re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))  # code is not math
        # MyST's dollarmath: no space inside the $s, and no digit right after the closing one
        if re.search(r"\$\$|(?<![\\$])\$[^$\s][^$\n]*(?<![\\\s])\$(?!\d)", prose):
            return True
    return False


_HIDDEN_OUTPUT_TAGS = {"remove-cell", "remove_cell", "remove-output", "remove_output"}


def notebook_figures(path: Path) -> int:
    """How many image outputs a notebook's shown cells hold (what its page must show)."""
    if path.suffix != ".ipynb":
        return 0
    count = 0
    for cell in json.loads(path.read_text())["cells"]:
        if _HIDDEN_OUTPUT_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            count += any(k.startswith("image/") for k in data)
    return count


def _html_path(docname: str) -> Path:
    return HTML / f"{docname}.html"


# ---- building and serving the book --------------------------------------------------


def _book_sources() -> list[Path]:
    """Every file whose change changes the built book."""
    files = [ROOT / "_config.yml", ROOT / "_toc.yml", ROOT / "references.bib"]
    files += [p for p in (ROOT / "book").rglob("*") if p.is_file()]
    files += list((ROOT / "notebooks").glob("*.ipynb"))
    files += list((ROOT / "_ext").glob("*.py"))  # the book's own Sphinx extensions
    files += [ROOT / f"{d}{ext}" for d in TOC_FILES for ext in (".md", ".ipynb")]
    return [p for p in files if p.exists()]


def _build_is_fresh() -> bool:
    """``_build/html`` exists, is complete, and was written after every source changed.

    ``searchindex.js`` is written at the end of every build, so its time is the build's.
    """
    stamp = HTML / "searchindex.js"
    if not stamp.exists() or not all(_html_path(d).exists() for d in TOC_FILES):
        return False
    built = stamp.stat().st_mtime
    return all(p.stat().st_mtime < built for p in _book_sources())


@pytest.fixture(scope="session")
def book_html() -> Path:
    """``_build/html``, built now unless it is newer than every source."""
    if not _build_is_fresh():
        exe = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [exe, "build", "--keep-going", str(ROOT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if proc.returncode != 0 or not (HTML / "searchindex.js").exists():
            pytest.fail(f"jupyter-book build failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return HTML


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(book_html: Path) -> Iterator[str]:
    """The book on http://127.0.0.1:<ephemeral port>; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---- the browser ----------------------------------------------------------------------


@dataclass
class Network:
    """What the router saw: MathJax files asked for that the local copy lacks."""

    mathjax_missing: list[str] = field(default_factory=list)


def _is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost")


# Module scope: the browser and the server close before pytest goes on to the notebooks,
# whose kernels must not share the process with Playwright's event loop.
@pytest.fixture(scope="module")
def book_browser(tmp_path_factory: pytest.TempPathFactory, server: str):
    """A headless Chromium context with a fresh profile; yields ``(context, network)``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs playwright: pip install -r requirements.txt")
    network = Network()

    def route(route) -> None:
        url = route.request.url
        if _is_loopback(url) or url.startswith("data:"):
            route.continue_()
            return
        cdn = MATHJAX_CDN.fullmatch(url.split("?")[0])
        if cdn:
            local = MATHJAX_DIR / cdn.group(2)
            if local.is_file():
                mime = mimetypes.guess_type(local.name)[0] or "application/octet-stream"
                if local.suffix == ".js":
                    mime = "application/javascript"
                route.fulfill(status=200, body=local.read_bytes(), content_type=mime)
                return
            network.mathjax_missing.append(url)
        route.abort()  # offline: every other host is blocked

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        context.route("**/*", route)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield context, network
        finally:
            context.close()


# ---- static reading of built pages ----------------------------------------------------


class _Anchors(HTMLParser):
    """Collects the ids (and ``<a name>``) of a page and every URL it references."""

    URL_ATTRS = {"a": "href", "img": "src", "script": "src", "link": "href", "iframe": "src"}

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        value = a.get(self.URL_ATTRS.get(tag, ""))
        if value:
            self.urls.append(value)


@functools.cache
def _parse(path: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text(errors="replace"))
    return parser


_HOST = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.I)


def external_link_problem(url: str) -> str | None:
    """Why an external URL is malformed, or None: https and a valid host name."""
    if re.search(r"\s", url):
        return "contains whitespace"
    parts = urlsplit(url)
    if parts.scheme == "mailto":
        address = re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", parts.path, re.I)
        return None if address else "bad address"
    if parts.scheme != "https":
        return f"not https ({parts.scheme or 'no scheme'})"
    if not _HOST.fullmatch(parts.hostname or ""):
        return f"not a valid host name: {parts.hostname!r}"
    return None


def _is_external(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https", "mailto", "ftp") and not _is_loopback(url)


def _built_pages() -> list[Path]:
    pages = [_html_path(d) for d in PAGES]
    return [p for p in pages if p.exists()]


# ---- visiting a page ------------------------------------------------------------------


_PAGE_STATE = r"""() => {
  const text = (el) => {
    if (!el) return null;
    const copy = el.cloneNode(true);
    copy.querySelectorAll('.headerlink').forEach((a) => a.remove());
    return copy.textContent.replace(/\s+/g, ' ').trim();
  };
  const here = location.href.split('#')[0];
  const nav = [...document.querySelectorAll('nav.bd-docs-nav a.reference.internal')]
    .find((a) => a.href.split('#')[0] === here);
  return {
    title: document.title,
    h1: text(document.querySelector('article h1')),
    nav: text(nav),
    images: [...document.images].map((i) => ({src: i.currentSrc || i.src, width: i.naturalWidth})),
    links: [...document.querySelectorAll('a[href]')].map((a) => [a.getAttribute('href'), a.href]),
    math: document.querySelectorAll('.math').length,
    unrendered: [...document.querySelectorAll('.math')]
      .filter((m) => !m.querySelector('mjx-container')).map((m) => m.textContent.slice(0, 80)),
    // TeX errors: <merror> (a parse error) and the red \name that MathJax's noundefined
    // extension shows for an unknown macro, read from MathJax's own MathML of each formula.
    texErrors: (window.MathJax && MathJax.startup && MathJax.startup.document
      ? Array.from(MathJax.startup.document.math, (item) => MathJax.startup.toMML(item.root))
      : []).flatMap((mml) => [
        ...[...mml.matchAll(/<merror[^>]*data-mjx-error="([^"]*)"/g)].map((m) => m[1]),
        ...[...mml.matchAll(/<mtext mathcolor="red">(\\[^<]*)<\/mtext>/g)]
          .map((m) => `undefined macro ${m[1]}`),
      ]),
    figures: document.querySelectorAll('.cell_output img').length,
    colab: [...document.querySelectorAll('.dropdown-launch-buttons a')]
      .map((a) => a.href).filter((h) => h.startsWith('https://colab.research.google.com/')),
  };
}"""

_WAIT_MATHJAX = """async () => {
  if (!document.querySelector('.math')) return 'no math';
  const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
  for (let i = 0; i < 200 && !ready(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!ready()) return 'MathJax did not load';
  await MathJax.startup.promise;
  return 'typeset';
}"""


@dataclass
class PageVisit:
    url: str
    state: dict
    mathjax: str
    errors: list[str]


def _visit(context, url: str, screenshot: Path | None) -> PageVisit:
    page = context.new_page()
    errors: list[str] = []

    def on_console(msg) -> None:
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        if where and not _is_loopback(where) and "Failed to load resource" in msg.text:
            return  # a request we blocked on purpose (offline); listed, not an error
        errors.append(f"console: {msg.text} ({where})")

    def on_response(response) -> None:
        if response.status >= 400 and _is_loopback(response.url):
            errors.append(f"HTTP {response.status}: {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("response", on_response)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function("() => [...document.images].every((i) => i.complete)")
        mathjax = page.evaluate(_WAIT_MATHJAX)
        page.wait_for_timeout(100)  # let late console messages arrive
        state = page.evaluate(_PAGE_STATE)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return PageVisit(url=url, state=state, mathjax=mathjax, errors=errors)


def _screenshot_path(docname: str) -> Path:
    return SCREENSHOTS / f"{docname.replace('/', '__')}.png"


def _link_problem(href: str, resolved: str, server: str, html: Path) -> str | None:
    """Why an internal link is dead, or None."""
    if not resolved.startswith(server + "/"):
        return None
    parts = urlsplit(resolved)
    target = html / unquote(parts.path).lstrip("/")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{href!r}: no file {target.relative_to(html)}"
    anchor = unquote(parts.fragment)
    if anchor and target.suffix == ".html" and anchor not in _parse(target).ids:
        return f"{href!r}: no element with id {anchor!r} in {target.relative_to(html)}"
    return None


# ---- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("docname", PAGES)
def test_page_renders_in_a_browser(
    docname: str, book_html: Path, server: str, book_browser
) -> None:
    """One page of the book, as a student sees it: errors, images, math, links, Colab, title."""
    context, network = book_browser
    path = _html_path(docname)
    if docname in ("search", "genindex") and not path.exists():
        pytest.skip(f"{docname}.html is not part of this build")
    assert path.exists(), f"{docname} is in _toc.yml but {path.relative_to(ROOT)} was not built"
    visit = _visit(context, f"{server}/{docname}.html", _screenshot_path(docname))
    s = visit.state
    problems = list(visit.errors)

    for img in s["images"]:
        if _is_loopback(img["src"]) and img["width"] == 0:
            problems.append(f"image did not load: {img['src']}")

    if s["math"]:
        if visit.mathjax != "typeset":
            hint = ""
            if network.mathjax_missing:
                hint = (
                    f" (no offline MathJax at {MATHJAX_DIR}: run "
                    "`npm install --no-save --prefix .cache/mathjax mathjax@3`)"
                )
            problems.append(f"{s['math']} math elements but {visit.mathjax}{hint}")
        else:
            problems += [f"math not rendered: {m!r}" for m in s["unrendered"]]
            problems += [f"TeX error: {e}" for e in s["texErrors"]]

    for href, resolved in s["links"]:
        problem = _link_problem(href, resolved, server, book_html)
        if problem:
            problems.append(f"dead link {problem}")
        elif _is_external(resolved) and external_link_problem(resolved):
            problems.append(f"bad external link {resolved}: {external_link_problem(resolved)}")

    if docname in TOC_FILES:
        src = _source(docname)
        heading = first_heading(src)
        book_title = CONFIG["title"]
        if s["h1"] != heading:
            problems.append(f"heading {s['h1']!r} != the source's first heading {heading!r}")
        if s["title"] != f"{heading} \u2014 {book_title}":
            problems.append(f"<title> {s['title']!r} != '{heading} \u2014 {book_title}'")
        if docname != ROOT_DOC and s["nav"] != heading:
            problems.append(f"sidebar entry {s['nav']!r} != {heading!r}")
        if source_has_math(src) and not s["math"]:
            problems.append("the source has math but the page shows none")
        if s["figures"] < notebook_figures(src):
            problems.append(
                f"{notebook_figures(src)} figures in the notebook, {s['figures']} on the page"
            )
        if src.suffix == ".ipynb":
            repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
            branch = CONFIG["repository"]["branch"]
            want = (
                f"https://colab.research.google.com/github/{repo}/blob/{branch}/"
                f"notebooks/{src.name}"
            )
            if want not in s["colab"]:
                problems.append(f"Colab launch button {s['colab']} != [{want!r}]")

    assert not problems, f"{docname}.html:\n  " + "\n  ".join(problems)


def test_index_redirects_to_the_root_page(book_html: Path, server: str, book_browser) -> None:
    context, _ = book_browser
    page = context.new_page()
    try:
        page.goto(f"{server}/index.html")
        page.wait_for_url(f"**/{ROOT_DOC}.html")
    finally:
        page.close()


@pytest.mark.parametrize("term", list(ACTIVE_SEARCH_TERMS))
def test_search_finds(term: str, book_html: Path, server: str, book_browser) -> None:
    """The search page finds the term, and lists its chapter among the results."""
    context, _ = book_browser
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{server}/search.html?q={term.replace(' ', '+')}")
        summary = page.wait_for_function(
            """() => {
              const s = document.querySelector('#search-results .search-summary');
              return s && /found|did not match/.test(s.textContent) && s.textContent;
            }"""
        ).json_value()
        results = page.eval_on_selector_all(
            "#search-results ul.search li a", "as => as.map((a) => a.href)"
        )
        shot = _screenshot_path(f"search_{term.replace(' ', '_')}")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
    finally:
        page.close()
    assert not errors, errors
    assert results, f"search for {term!r}: {summary}"
    found = {unquote(urlsplit(r).path).lstrip("/").removesuffix(".html") for r in results}
    wanted = ACTIVE_SEARCH_TERMS[term]
    assert any(fnmatch.fnmatch(f, wanted) for f in found), (
        f"search for {term!r} does not list a page matching {wanted!r}: {sorted(found)}"
    )


def test_external_links_are_listed_and_well_formed(book_html: Path) -> None:
    """Every external URL of the built pages, in ``_build/external_links.txt``; all https."""
    where: dict[str, set[str]] = {}
    for path in _built_pages():
        for url in _parse(path).urls:
            if _is_external(url):
                where.setdefault(url, set()).add(str(path.relative_to(book_html)))
    lines = [
        "# External URLs of the built book (not fetched: the test machine is offline).",
        "# URL <tab> pages that reference it",
    ]
    lines += [f"{url}\t{' '.join(sorted(pages))}" for url, pages in sorted(where.items())]
    EXTERNAL_LINKS.write_text("\n".join(lines) + "\n")
    bad = {url: external_link_problem(url) for url in where if external_link_problem(url)}
    assert not bad, "malformed external links:\n" + "\n".join(
        f"  {url}: {why} (in {', '.join(sorted(where[url]))})" for url, why in bad.items()
    )
