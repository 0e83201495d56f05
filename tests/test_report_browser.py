"""``layerwise report``'s page in a real browser: Playwright driving the system's headless Chromium (Debian's
``chromium`` package; ``make test`` installs it where it can). The page, built from folders the real commands wrote
(conftest's ``report_runs``), must load with no console or page error and no request but the file itself; every
image must decode, to the width its PNG header gives; and a click on a table's header must sort that table's rows by
the column, ascending and then descending, as Python's ``sorted`` orders the values read before the click."""

from __future__ import annotations

import base64
import itertools
import math
import shutil
import struct
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BLANK = "–"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if CHROMIUM is None:
    pytest.skip("no system Chromium (apt-get install chromium; `make test` does it where it may)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser_page(report_runs):
    """The report opened in Chromium, with every console error, page error and request that is not the file kept."""
    runs, path = report_runs
    url = path.resolve().as_uri()
    seen = {"console": [], "page": [], "requests": []}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["page"].append(str(e)))

        def route(r):
            if r.request.url == url:
                r.continue_()
            else:
                seen["requests"].append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("request", lambda rq: seen["requests"].append(rq.url)
                if rq.url.startswith(("http:", "https:")) else None)
        page.goto(url, wait_until="load")
        yield runs, page, seen
        browser.close()


def test_page_loads_without_errors_or_requests(browser_page):
    _, page, seen = browser_page
    page.wait_for_load_state("networkidle")
    assert seen == {"console": [], "page": [], "requests": []}
    assert page.title().startswith("layerwise report")


def _png_width(png: Path | bytes) -> int:
    """Width in pixels from the PNG's IHDR chunk (bytes 16..20, big-endian)."""
    data = png.read_bytes() if isinstance(png, Path) else png
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


def test_every_image_decodes(browser_page):
    runs, page, _ = browser_page
    decoded = page.evaluate("""() => Promise.all(Array.from(document.images).map(async img => {
        await img.decode();
        return [img.dataset.file || null, img.dataset.overlay || null, img.naturalWidth, img.naturalHeight,
                img.getAttribute("src")];
    }))""")
    pngs = sorted(str(f) for folder in runs.values() for f in folder.glob("*.png"))
    assert sorted(f for f, _, _, _, _ in decoded if f is not None) == pngs
    for file, overlay, width, height, src in decoded:
        assert width > 0 and height > 0
        if file is not None:
            assert width == _png_width(Path(file)), file
        else:  # a headline figure the report drew: the width its own PNG header gives
            assert width == _png_width(base64.b64decode(src.split(",", 1)[1])), overlay
    overlays = [o for f, o, _, _, _ in decoded if f is None]
    assert overlays == ["analyze", "compare", "train", "exit", "connect", "lpft", "gen-eval"]


def test_headline_figures_load_and_are_shown_before_each_kinds_runs(browser_page):
    """Each overlay is rendered (not hidden in a closed <details>), wider than a single run's column, and sits
    above its section's first run; the configuration of each run is collapsed until its summary is clicked."""
    _, page, _ = browser_page
    boxes = page.evaluate("""() => Array.from(document.querySelectorAll("section.group")).map(s => {
        const img = s.querySelector("img[data-overlay]"), run = s.querySelector(".run-name");
        const details = s.querySelector("details.configuration");
        return [img.complete && img.naturalWidth > 0, img.getBoundingClientRect().height,
                img.getBoundingClientRect().bottom <= run.getBoundingClientRect().top,
                details ? details.open : null];
    })""")
    assert len(boxes) == 7
    for complete, height, above, details_open in boxes:
        assert complete and height > 100 and above
        assert details_open is False
    summary = page.locator("section.group details.configuration > summary").first
    table = page.locator("section.group details.configuration table.config").first
    assert not table.is_visible()
    summary.click()
    assert table.is_visible()


READ_COLUMN = """([t, c]) => Array.from(document.querySelectorAll("table.sortable")[t].tBodies[0].rows)
    .map(r => r.cells[c].textContent.trim())"""


def _numeric(texts: list[str]) -> list[float | None]:
    return [None if t == BLANK else float(t) for t in texts]


def _sorted(values: list[float | None], reverse: bool) -> list[float | None]:
    """Python's order of the numbers, blanks last in either direction."""
    return sorted((v for v in values if v is not None), reverse=reverse) + [None] * values.count(None)


def _numeric_columns(page) -> list[tuple[int, int, str]]:
    """(table index, column index, caption) per table: its numeric column with the most distinct values (three at
    least), the first column left out (it is the layer, already in order)."""
    tables = page.evaluate("""() => Array.from(document.querySelectorAll("table.sortable")).map(t =>
        Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent.trim())))""")
    captions = page.evaluate("""() => Array.from(document.querySelectorAll("table.sortable"))
        .map(t => t.caption ? t.caption.textContent : "")""")
    found = []
    for t, rows in enumerate(tables):
        best = (2, None)
        for c in range(1, len(rows[0]) if rows else 0):
            try:
                distinct = len({v for v in _numeric([row[c] for row in rows]) if v is not None})
            except ValueError:
                continue
            best = max(best, (distinct, c), key=lambda x: x[0])
        if best[1] is not None:
            found.append((t, best[1], captions[t]))
    return found


def test_clicking_a_header_sorts_its_table(browser_page):
    _, page, seen = browser_page
    columns = _numeric_columns(page)
    captions = {caption for _, _, caption in columns}
    assert {"per layer", "cos_to_last, every run", "mlp-residual: threshold sweep"} <= captions
    checked = 0
    for t, c, caption in columns:
        before = _numeric(page.evaluate(READ_COLUMN, [t, c]))
        header = page.locator("table.sortable").nth(t).locator("thead th").nth(c)
        header.click()
        ascending = _numeric(page.evaluate(READ_COLUMN, [t, c]))
        header.click()
        descending = _numeric(page.evaluate(READ_COLUMN, [t, c]))
        assert ascending == _sorted(before, reverse=False), (caption, c)
        assert descending == _sorted(before, reverse=True), (caption, c)
        assert header.get_attribute("aria-sort") == "descending"
        checked += 1
    assert checked >= 8
    assert seen["console"] == [] and seen["page"] == []


def test_sorting_moves_whole_rows(browser_page):
    """Rows move as a whole: after sorting the combined table by one run, each layer keeps its own values."""
    _, page, _ = browser_page
    t = page.evaluate("""() => Array.from(document.querySelectorAll("table.sortable"))
        .findIndex(t => t.caption && t.caption.textContent === "cos_to_last, every run")""")

    def rows() -> list[list[str]]:
        return page.evaluate("""(t) => Array.from(document.querySelectorAll("table.sortable")[t].tBodies[0].rows)
            .map(r => Array.from(r.cells).map(c => c.textContent.trim()))""", t)

    before = {row[0]: row for row in rows()}
    header = page.locator("table.sortable").nth(t).locator("thead th").nth(2)
    header.click()
    after = rows()
    assert {row[0]: row for row in after} == before
    values = [float(row[2]) for row in after]
    if header.get_attribute("aria-sort") == "descending":  # it was sorted ascending by this column before
        values.reverse()
    assert all(a <= b or math.isclose(a, b) for a, b in itertools.pairwise(values))
