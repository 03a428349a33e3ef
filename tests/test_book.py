"""`webmm-lab book`: the site builds from the stored outputs, and every page opens in a real
browser (Debian's chromium driven by Playwright) with no JavaScript error, no broken internal
link and no missing image. Without chromium the browser test is skipped, unless
WEBMM_REQUIRE_BROWSER=1 (as in CI, whose .ci/run installs chromium)."""
import functools
import http.server
import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from webmm_lab.tools.book import build_book
    out = tmp_path_factory.mktemp("book")
    t0 = time.perf_counter()
    index = build_book(ROOT, out)
    print(f"site built in {time.perf_counter() - t0:.0f} s")
    return index.parent


@pytest.mark.slow
def test_the_site_has_every_notebook_and_student_lab_and_no_solution(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    books = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    labs = sorted(p.stem for p in (ROOT / "labs").glob("lab[0-9][0-9]_*.ipynb"))
    assert len(books) == 9 and len(labs) == 9
    assert {f"notebooks/{b}.html" for b in books} | {f"labs/{l}.html" for l in labs} <= pages
    assert "index.html" in pages and "search.html" in pages
    assert not any("solution" in p for p in pages)
    text = (site / "labs" / f"{labs[3]}.html").read_text()
    assert "NotImplementedError" in text and "### BEGIN SOLUTION" not in text     # the student version
    nb03 = (site / "notebooks" / "03_image_gpt.html").read_text()
    assert "static result for the starting values" in nb03       # what a widget cell shows, kernel-less
    assert "한국어 요약" in nb03 and "Noto Sans CJK KR" in (site / "_static" / "course.css").read_text()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.mark.slow
def test_every_page_opens_in_a_real_browser(site, server):
    executable = _chromium()
    if executable is None:
        if os.environ.get("WEBMM_REQUIRE_BROWSER"):
            pytest.fail("WEBMM_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium here: apt-get install chromium to run the browser test")
    from playwright.sync_api import sync_playwright

    pages = ["index.html"] + sorted(p.relative_to(site).as_posix() for d in ("notebooks", "labs")
                                    for p in (site / d).glob("*.html"))
    problems, checked_links = [], {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url')})")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        # a request the next navigation cancels (a favicon still loading) is not a broken
        # resource; a missing one answers 404, which the response listener reports
        page.on("requestfailed", lambda r: None if "ERR_ABORTED" in (r.failure or "")
                else errors.append(f"failed request {r.url} ({r.failure})"))
        page.on("response", lambda r: errors.append(f"status {r.status} for {r.url}") if r.status >= 400 else None)
        for name in pages:
            errors.clear()
            response = page.goto(server + name, wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{name}: status {response and response.status}")
                continue
            broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                                   ".map(i => i.src)")
            problems += [f"{name}: image does not load: {src[:80]}" for src in broken]
            problems += [f"{name}: {e[:160]}" for e in errors]
            hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
            for href in hrefs:
                url = urldefrag(href)[0]
                if urlparse(url).netloc != urlparse(server).netloc or url in checked_links:
                    continue
                checked_links[url] = page.request.get(url).status
                if checked_links[url] != 200:
                    problems.append(f"{name}: broken link {url} ({checked_links[url]})")
            if name.startswith("notebooks/"):
                if not any("colab.research.google.com" in h for h in hrefs):
                    problems.append(f"{name}: no Colab link")
                if not any(h.endswith(".ipynb") for h in hrefs):
                    problems.append(f"{name}: no download link")
        font = page.evaluate("getComputedStyle(document.body).fontFamily")
        browser.close()
    assert "Noto Sans CJK KR" in font
    assert len(checked_links) > 20
    assert not problems, "\n".join(problems[:30])
