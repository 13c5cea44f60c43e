"""Specification of the app in a real browser: draw on the canvas, search, see results and both plots.

Headless Chromium (Debian's `chromium`) driven by Playwright; skipped where either is missing. The screenshot
is kept under test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_app import app_dir, app_gallery, app_url, needs_data, service, test_adapter  # noqa: F401 - fixtures

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOUSE = [(-0.25, 0.3), (-0.25, -0.05), (0.0, -0.3), (0.25, -0.05), (0.25, 0.3), (-0.25, 0.3)]  # canvas fractions
DOOR = [(-0.05, 0.3), (-0.05, 0.1), (0.05, 0.1), (0.05, 0.3)]

pytestmark = [pytest.mark.slow, needs_data,
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="chromium is not installed")]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, app_url):  # noqa: F811 - the fixture imported above
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(app_url)
    page.wait_for_selector("#sketch canvas", timeout=30_000)
    yield page
    page.close()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    page.locator("#sketch canvas").first.scroll_into_view_if_needed()
    box = page.locator("#sketch canvas").first.bounding_box()
    centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    size = min(box["width"], box["height"])
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(centre_x + x * size, centre_y + y * size)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(centre_x + x * size, centre_y + y * size, steps=1)
        page.mouse.up()


def test_drawing_on_the_canvas_and_searching_shows_results_and_both_plots(page):
    draw(page, [HOUSE, DOOR])  # the brush is the active tool as the page opens: no click before drawing
    page.locator("#search").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('results')", timeout=60_000)

    status = page.locator("#status").inner_text()
    assert "for sketch" in status and "⚠" not in status
    for gallery in ("#base-results", "#adapted-results"):
        page.wait_for_function(f"document.querySelectorAll('{gallery} img').length >= 12", timeout=30_000)
    assert page.locator("#base-results").inner_text().count(" · ") >= 12  # "label · score" captions
    page.wait_for_selector("#delta-plot .js-plotly-plot .barlayer .point", timeout=30_000)
    assert page.locator("#delta-plot .barlayer .point").count() >= 3 + 8  # 3 attention layers, 4 × 2 MLPs
    page.wait_for_selector("#umap-plot .js-plotly-plot .scatterlayer .point", timeout=30_000)
    assert page.locator("#umap-plot .scatterlayer .trace").count() >= 2 + 7  # query, adapted, 7 classes
    assert page.locator("#umap-plot .annotation").count() >= 1  # the arrow from base to adapted
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-sketch-search.png"), full_page=True)


def search_and_wait(page) -> str:
    """Click Search and wait for this search's own status line (not the last one's): its first line."""
    before = page.locator("#status").inner_text().splitlines()[0]
    page.locator("#search").click()
    page.wait_for_function("(before) => { const line = document.querySelector('#status').innerText.split('\\n')[0];"
                           " return line !== before && /results|⚠/.test(line); }", arg=before, timeout=60_000)
    return page.locator("#status").inner_text().splitlines()[0]


@pytest.fixture
def fresh_page(browser, app_url):  # noqa: F811 - the fixture imported above
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(app_url)
    page.wait_for_selector("#sketch canvas", timeout=30_000)
    yield page
    page.close()


def canvas_overlay(page) -> str:
    """What the canvas's progress overlay says ("" when it shows none)."""
    return page.locator("#sketch [data-testid=status-tracker]").first.inner_text().strip()


def test_clear_after_a_search_leaves_the_canvas_ready_for_the_next_sketch(fresh_page):
    page = fresh_page
    draw(page, [HOUSE, DOOR])
    assert "for sketch" in search_and_wait(page)
    page.get_by_role("button", name="Clear", exact=True).click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('Draw, upload or type')")
    page.wait_for_timeout(2000)
    assert canvas_overlay(page) == ""  # no "processing" over the canvas
    assert page.locator("#base-results img").count() == 0
    draw(page, [HOUSE])
    status = search_and_wait(page)
    assert "for sketch" in status and "⚠" not in status
    assert canvas_overlay(page) == ""


def test_clear_before_any_search_keeps_later_strokes(fresh_page):
    page = fresh_page
    page.get_by_role("button", name="Clear", exact=True).click()
    page.wait_for_timeout(1500)
    draw(page, [HOUSE, DOOR])
    assert "for sketch" in search_and_wait(page)


def test_the_canvas_trash_icon_leaves_the_brush_ready(fresh_page):
    page = fresh_page
    draw(page, [HOUSE])
    page.locator("#sketch button[aria-label='Clear canvas']").click()
    page.wait_for_timeout(1000)
    assert "highlight" in page.locator("#sketch button[aria-label='Brush']").get_attribute("class")
    draw(page, [HOUSE, DOOR])  # no click on the brush first
    assert "for sketch" in search_and_wait(page)


UMAP_FILL = """() => {
    const area = document.querySelector('#umap-plot .nsewdrag').getBoundingClientRect();
    const dots = [...document.querySelectorAll('#umap-plot .scatterlayer .point')].map(d => d.getBoundingClientRect());
    const w = Math.max(...dots.map(b => b.right)) - Math.min(...dots.map(b => b.left));
    const h = Math.max(...dots.map(b => b.bottom)) - Math.min(...dots.map(b => b.top));
    return Math.min(w / area.width, h / area.height);
}"""


def test_after_a_search_the_umap_view_still_fills_its_panel_and_a_guess_click_searches_again(fresh_page):
    page = fresh_page
    page.wait_for_selector("#umap-plot .scatterlayer .point", timeout=30_000)
    before = page.evaluate(UMAP_FILL)
    draw(page, [HOUSE, DOOR])
    assert "for sketch" in search_and_wait(page)
    page.wait_for_timeout(1500)
    after = page.evaluate(UMAP_FILL)
    assert after > 0.8 and after > before - 0.05, (before, after)  # not shrunk into a corner
    line = page.locator("#guess-line").inner_text()
    assert line.startswith("Reads as (a guess") and "%" in line
    button = page.locator("#guess-1")
    name = button.inner_text().strip().removeprefix("+ ").rsplit(" (", 1)[0]
    before = page.locator("#status").inner_text().splitlines()[0]
    button.click()
    page.wait_for_function("(before) => { const line = document.querySelector('#status').innerText.split('\\n')[0];"
                           " return line !== before && /results|⚠/.test(line); }", arg=before, timeout=60_000)
    assert "for sketch + text" in page.locator("#status").inner_text()
    assert page.get_by_label("text", exact=True).input_value() == name
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-guess-clicked.png"), full_page=True)


def test_a_non_image_upload_is_taken_off_at_once_with_why(fresh_page, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    fresh_page.locator("#upload input[type=file]").set_input_files(str(notes))
    fresh_page.wait_for_selector(".toast-body", timeout=30_000)
    assert "not a usable image" in fresh_page.locator(".toast-body").first.inner_text()
    fresh_page.wait_for_timeout(500)
    assert fresh_page.locator("#upload img").count() == 0  # no broken picture left in the upload box


def test_one_click_on_an_example_searches_with_it(page):
    page.locator("#examples img").nth(3).click()  # the first painting
    page.wait_for_function("document.querySelector('#status').innerText.includes('for image')", timeout=60_000)
    assert "⚠" not in page.locator("#status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-example-search.png"), full_page=True)


def test_selecting_a_result_searches_with_it(page):
    first = page.locator("#base-results img").first
    first.click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('for image')", timeout=60_000)
    page.wait_for_function("document.querySelector('#base-results').innerText.includes('· 1.00')",
                           timeout=30_000)  # the chosen photo finds itself first
    assert page.locator("#upload img").count() == 1  # and is shown as the query image


@pytest.fixture(scope="module")
def indexing_app(tmp_path_factory):
    """app.py on a fresh index root and a gallery of 2 500 small generated photos: the page is up while it indexes."""
    import os
    import subprocess
    import sys

    from conftest import make_gallery
    from test_app import free_port, wait_for_server

    base = tmp_path_factory.mktemp("indexing-app")
    make_gallery(base / "photos", 2500)  # over a minute of indexing even on an idle machine
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve().parent.parent / "app.py"), "--gallery",
               str(base / "photos"), "--index-root", str(base / "index"), "--port", str(port), "--no-umap"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        yield wait_for_server(process, port)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_sketch_while_the_gallery_is_indexed_says_indexing_then_gets_results(browser, indexing_app):
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(indexing_app)
    page.wait_for_selector("#sketch canvas", timeout=30_000)
    page.wait_for_function("document.querySelector('#indexing').innerText.includes('indexing')",
                           timeout=30_000)  # the progress line, refreshed by the page's timer
    assert "offered once the gallery is indexed" in page.locator("#rerank").inner_text()  # not "unavailable"
    draw(page, [HOUSE, DOOR])
    page.locator("#search").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('%')", timeout=60_000)
    status = page.locator("#status").inner_text()
    assert "indexing:" in status, (status, page.locator("#indexing").inner_text())
    assert "%" in status and "⚠" not in status and "Error" not in status
    page.wait_for_function("!document.querySelector('#indexing').innerText.includes('indexing')",
                           timeout=600_000)  # done: the line clears
    page.locator("#search").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('results')", timeout=60_000)
    assert "for sketch" in page.locator("#status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-indexing-then-search.png"), full_page=True)
    page.close()
