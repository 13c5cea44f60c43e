"""The app as a person meets it, in a real browser (headless Chromium through Playwright), on a running app:

1. a house drawn with the mouse edge to edge, as people fill the canvas: results, what it reads as, the UMAP view
   (must fill its panel after the search), the ΔS chart;
2. a click on its second guess: the guess goes into the text and the search runs again;
3. Clear, then a stick giraffe drawn small in a corner on the same page (the canvas must take the new strokes);
4. the canvas's own trash icon, then a new drawing without choosing the brush again;
5. a thumbnail (48 px, JPEG) of a gallery photo uploaded: does it find its own photo?
6. with --sample N: N seeded gallery photos per dataset of the demo data, each uploaded as such a thumbnail through
   the app's API: how many find their own photo first, per side.

Each step prints the top results of both sides (label · score), the "reads as" line and the UMAP panel's fill, and
saves a screenshot under test-artifacts/tour/ (the whole page, and the two plots apart). The server's log, when
given (--log), is checked for tracebacks at the end.

    python app.py &                                   # the demo gallery (indexed on first start)
    python bench/browser_tour.py --url http://127.0.0.1:7860/ --photo PATH_OF_A_GALLERY_PHOTO [--sample 10]
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test-artifacts" / "tour"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# fractions of the canvas element from its centre; its white drawing area ends near ±0.4
HOUSE = [[(-0.36, 0.38), (-0.36, -0.05), (0.0, -0.38), (0.36, -0.05), (0.36, 0.38), (-0.36, 0.38)],
         [(-0.1, 0.38), (-0.1, 0.1), (0.1, 0.1), (0.1, 0.38)],
         [(0.18, 0.0), (0.32, 0.0), (0.32, 0.14), (0.18, 0.14), (0.18, 0.0)]]
GIRAFFE = [[(0.10, 0.40), (0.12, 0.25), (0.30, 0.25), (0.32, 0.40)],        # legs and body
           [(0.12, 0.25), (0.10, 0.35)], [(0.30, 0.25), (0.30, 0.37)],
           [(0.28, 0.25), (0.36, 0.05), (0.42, 0.04)]]                     # neck and head


def circle(cx, cy, r, n=20, start=0.0, end=2 * math.pi):
    return [(cx + r * math.cos(start + (end - start) * k / n), cy + r * math.sin(start + (end - start) * k / n))
            for k in range(n + 1)]
CAT_FACE = [circle(0, 0.06, 0.3),
            [(-0.26, -0.08), (-0.22, -0.36), (-0.06, -0.22)], [(0.06, -0.22), (0.22, -0.36), (0.26, -0.08)],
            circle(-0.11, -0.02, 0.04, 10), circle(0.11, -0.02, 0.04, 10),
            [(-0.03, 0.08), (0.03, 0.08), (0.0, 0.12), (-0.03, 0.08)],
            [(0.0, 0.12), (-0.05, 0.18)], [(0.0, 0.12), (0.05, 0.18)],
            [(-0.08, 0.12), (-0.36, 0.06)], [(-0.08, 0.15), (-0.37, 0.16)],
            [(0.08, 0.12), (0.36, 0.06)], [(0.08, 0.15), (0.37, 0.16)]]
TREE = [[(-0.06, 0.38), (-0.05, 0.08)], [(0.06, 0.38), (0.05, 0.08)], [(-0.2, 0.38), (0.2, 0.38)],
        [(-0.05, 0.08), (-0.2, 0.1), (-0.32, 0.0), (-0.3, -0.15), (-0.22, -0.3), (-0.05, -0.38), (0.12, -0.35),
         (0.28, -0.25), (0.33, -0.08), (0.28, 0.05), (0.18, 0.1), (0.05, 0.08)]]
STICK_FIGURE = [circle(0, -0.25, 0.12), circle(-0.045, -0.28, 0.012, 6), circle(0.045, -0.28, 0.012, 6),
                circle(0, -0.25, 0.07, 10, 0.35, math.pi - 0.35),
                [(0, -0.13), (0, 0.15)], [(-0.25, -0.05), (0, -0.02), (0.25, -0.05)],
                [(0, 0.15), (-0.17, 0.38)], [(0, 0.15), (0.17, 0.38)]]
AIRPLANE_ABOVE = [[(0, -0.38), (0.04, -0.3), (0.05, 0.25), (0.0, 0.32), (-0.05, 0.25), (-0.04, -0.3), (0, -0.38)],
                  [(-0.045, -0.06), (-0.38, 0.08), (-0.38, 0.13), (-0.05, 0.06)],
                  [(0.045, -0.06), (0.38, 0.08), (0.38, 0.13), (0.05, 0.06)],
                  [(-0.04, 0.22), (-0.15, 0.3), (-0.15, 0.33), (-0.02, 0.3)],
                  [(0.04, 0.22), (0.15, 0.3), (0.15, 0.33), (0.02, 0.3)]]
GIRAFFE_FILLING = [[(-0.22, 0.02), (0.12, 0.0), (0.16, 0.12), (0.1, 0.16), (-0.2, 0.16), (-0.26, 0.08), (-0.22, 0.02)],
                   [(-0.18, 0.16), (-0.2, 0.38)], [(-0.1, 0.16), (-0.1, 0.38)],
                   [(0.02, 0.16), (0.03, 0.38)], [(0.1, 0.16), (0.13, 0.38)],
                   [(0.06, 0.0), (0.16, -0.3)], [(0.14, 0.04), (0.24, -0.28)],
                   [(0.16, -0.3), (0.18, -0.36), (0.3, -0.36), (0.36, -0.3), (0.24, -0.28)],
                   [(0.2, -0.36), (0.19, -0.4)], [(0.25, -0.36), (0.25, -0.4)], [(-0.25, 0.06), (-0.32, 0.2)],
                   [(-0.12, 0.06), (-0.08, 0.1)], [(0.0, 0.06), (0.04, 0.1)], [(0.14, -0.1), (0.17, -0.14)]]
# what issue 27 asks of the drawings people make (each filling the canvas): the class whose photos must come back
DRAWINGS = {"cat face": (CAT_FACE, "cat"), "tree": (TREE, "tree"), "smiling stick figure": (STICK_FIGURE, "person"),
            "airplane seen from above": (AIRPLANE_ABOVE, "airplane"), "house": (HOUSE, "house"),
            "giraffe": (GIRAFFE_FILLING, "giraffe")}


def is_same_file(photo: Path, name: str) -> bool:
    """Whether a result's `name` (its path under the gallery folder) is `photo`: whole path parts must match, as
    datasets repeat file names across folders (PACS: giraffe/084_0001.jpg and horse/084_0001.jpg)."""
    return photo.resolve().parts[-len(Path(name).parts):] == Path(name).parts


def draw(page, strokes, steps: int = 4) -> None:
    """`strokes` drawn with the mouse, `steps` pointer moves between two points of a stroke (the editor joins
    them with straight segments); says how long the moves took (a slow browser shows here first)."""
    page.wait_for_timeout(3000)  # the editor resets its layers once after the page settles: strokes before are lost
    page.locator("#sketch canvas").first.scroll_into_view_if_needed()
    box = page.locator("#sketch canvas").first.bounding_box()
    cx, cy, size = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, min(box["width"], box["height"])
    started, moves = time.perf_counter(), 0
    for stroke in strokes:
        page.mouse.move(cx + stroke[0][0] * size, cy + stroke[0][1] * size)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(cx + x * size, cy + y * size, steps=steps)
            moves += steps
        page.mouse.up()
    print(f"  (drew {len(strokes)} strokes, {moves} pointer moves, in {time.perf_counter() - started:.1f} s)")


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#sketch canvas", timeout=60_000)
    page.wait_for_timeout(4000)


WAIT_NEW_STATUS = ("(before) => { const line = document.querySelector('#status').innerText.split('\\n')[0];"
                   " return line !== before && /results|⚠/.test(line); }")


def search_and_report(page, name: str, click=None) -> None:
    """Click Search (or `click`), wait for this search's own status line, report and take the screenshots."""
    before = page.locator("#status").inner_text().splitlines()[0]
    (click or page.locator("#search")).click()
    page.wait_for_function(WAIT_NEW_STATUS, arg=before, timeout=120_000)
    page.wait_for_timeout(2500)  # the plots draw after the status
    print(f"\n== {name}: {page.locator('#status').inner_text().splitlines()[0]}")
    for side in ("base", "adapted"):
        captions = [c for c in page.locator(f"#{side}-results").inner_text().splitlines() if " · " in c]
        print(f"  {side:8s}: " + " | ".join(captions[:8]))
    if page.locator("#guess-line").is_visible():
        print(f"  guesses : {page.locator('#guess-line').inner_text().strip()}")
    print(f"  UMAP    : the points fill {umap_fill(page):.0%} of the plot's width and height (by their box)")
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
    for plot in ("umap-plot", "delta-plot"):
        if page.locator(f"#{plot}").is_visible():
            page.locator(f"#{plot}").screenshot(path=str(OUT / f"{name}-{plot}.png"))


def umap_fill(page) -> float:
    """The smaller of the width and height shares of the UMAP plot's area that its dots span (1: edge to edge)."""
    return page.evaluate("""() => {
        const area = document.querySelector('#umap-plot .nsewdrag');
        const dots = [...document.querySelectorAll('#umap-plot .scatterlayer .point')];
        if (!area || !dots.length) return 0;
        const a = area.getBoundingClientRect();
        const boxes = dots.map(d => d.getBoundingClientRect());
        const w = Math.max(...boxes.map(b => b.right)) - Math.min(...boxes.map(b => b.left));
        const h = Math.max(...boxes.map(b => b.bottom)) - Math.min(...boxes.map(b => b.top));
        return Math.min(w / a.width, h / a.height);
    }""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--photo", type=Path, help="a photo of the gallery, uploaded as a thumbnail (needed unless "
                                                    "--drawings)")
    parser.add_argument("--sample", type=int, default=0,
                        help="also N seeded gallery photos per dataset as thumbnails through the API (demo gallery)")
    parser.add_argument("--log", type=Path, help="the server's log: checked for tracebacks once the tour is done")
    parser.add_argument("--drawings", action="store_true",
                        help="only the drawings people make (a cat's face, a tree, a smiling stick figure, an airplane "
                             "seen from above, a house, a giraffe), each filling the canvas: how many of the top 8 "
                             "of each side are of its class")
    args = parser.parse_args(argv)
    if args.photo is None and not args.drawings:
        parser.error("--photo is needed (a photo of the gallery), unless --drawings")
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    thumb = Path(tempfile.mkdtemp()) / "thumbnail.jpg"
    image = save_thumbnail(args.photo, thumb) if args.photo else None
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        if args.drawings:
            tour_drawings(page, args.url)
            browser.close()
            return check_log(args.log)
        open_page(page, args.url)
        page.screenshot(path=str(OUT / "page-as-it-opens.png"), full_page=True)
        draw(page, HOUSE)
        search_and_report(page, "house-filling-the-canvas")
        if page.locator("#guess-1").is_visible():
            print(f"\n  clicking the second guess: {page.locator('#guess-1').inner_text().strip()}")
            search_and_report(page, "house-plus-its-second-guess", click=page.locator("#guess-1"))
            print(f"  the text is now: {page.locator('textarea').nth(0).input_value()!r}")
        page.get_by_role("button", name="Clear", exact=True).click()
        page.wait_for_timeout(2000)
        overlay = page.locator("#sketch [data-testid=status-tracker]").first.inner_text().strip()
        print(f"\n== after Clear: the canvas's overlay says {overlay!r} (should be empty)")
        page.screenshot(path=str(OUT / "after-clear.png"), full_page=True)
        draw(page, GIRAFFE)
        search_and_report(page, "giraffe-small-in-a-corner-after-clear")
        page.locator("#sketch button[aria-label='Clear canvas']").click()
        draw(page, HOUSE)
        search_and_report(page, "house-after-the-trash-icon")
        open_page(page, args.url)
        page.locator("#upload input[type=file]").set_input_files(str(thumb))
        page.wait_for_timeout(1500)
        search_and_report(page, f"thumbnail-of-{args.photo.stem}")
        browser.close()
    from gradio_client import Client

    client = Client(args.url, verbose=False)
    for side, rank in own_photo_ranks(client, args.photo, thumb).items():
        print(f"  the thumbnail's own photo on the {side} side: " + (f"rank {rank}" if rank else "not in the top 12"))
    print(f"\nscreenshots in {OUT}; the thumbnail was {args.photo} at {image.size[0]}x{image.size[1]} px")
    if args.sample:
        sample_thumbnails(client, args.sample, thumb)
    return check_log(args.log)


def check_log(log: Path | None) -> int:
    if log is None:
        return 0
    tracebacks = log.read_text(errors="replace").count("Traceback")
    print(f"\nserver log {log}: {tracebacks} traceback(s)")
    return 1 if tracebacks else 0


def tour_drawings(page, url: str, top: int = 8) -> None:
    """Each of DRAWINGS drawn with the mouse on a freshly opened page, searched: the photos of its class among each
    side's first `top` (by the class the gallery gives each photo); then its guess that names the class clicked.
    (A fresh page each: after many drawings on one page headless Chromium's software canvas grew slow, ~0.5 s a
    pointer move; Clear is toured on its own, without --drawings.)"""
    for name, (strokes, wanted) in DRAWINGS.items():
        open_page(page, url)
        draw(page, strokes)
        search_and_report(page, name.replace(" ", "-"))
        count_class(page, wanted, top)
        guess = next((page.locator(f"#guess-{k}") for k in range(3) if page.locator(f"#guess-{k}").is_visible()
                      and page.locator(f"#guess-{k}").inner_text().strip().lstrip("+ ").split(" (")[0] == wanted), None)
        print(f"  '{wanted}' is {'among' if guess else 'not among'} the three guesses")
        if guess is not None:
            search_and_report(page, f"{name.replace(' ', '-')}-plus-its-guess", click=guess)
            count_class(page, wanted, top)


def count_class(page, wanted: str, top: int) -> None:
    for side in ("base", "adapted"):
        labels = [c.split(" · ")[0].strip() for c in page.locator(f"#{side}-results").inner_text().splitlines()
                  if " · " in c][:top]
        print(f"  {side:8s}: {sum(label == wanted for label in labels)} of {top} are {wanted}")


def save_thumbnail(photo: Path, out: Path) -> Image.Image:
    """`photo` shrunk to fit 48 px and saved as a JPEG (quality 60), as a thumbnail reaches an upload box."""
    image = Image.open(photo).convert("RGB")
    image.thumbnail((48, 48))
    image.save(out, "JPEG", quality=60)
    return image


def own_photo_ranks(client, photo: Path, thumb: Path) -> dict[str, int | None]:
    """Rank of `photo` among the top 12 of each side when `thumb` is searched through the app's API."""
    from gradio_client import handle_file

    answer = client.predict(None, handle_file(str(thumb)), "", "", 1.0, 1.0, 1.0, 0.5, True, False, 12, False,
                            api_name="/search")[5]
    return {side: next((k + 1 for k, row in enumerate(answer.get(side) or []) if is_same_file(photo, row["name"])),
                       None) for side in ("base", "adapted")}


def sample_thumbnails(client, per_dataset: int, thumb: Path) -> None:
    from hystar.data import data_root

    rng = random.Random(0)
    for manifest in sorted(data_root().glob("*/manifest.csv")):
        with manifest.open() as handle:
            photos = [row["path"] for row in csv.DictReader(handle)
                      if row["style"] == "photo" and row["role"] == "gallery"]
        first = {"base": 0, "adapted": 0}
        for path in rng.sample(photos, min(per_dataset, len(photos))):
            save_thumbnail(manifest.parent / path, thumb)
            for side, rank in own_photo_ranks(client, manifest.parent / path, thumb).items():
                first[side] += rank == 1
        print(f"  {manifest.parent.name}: a 48-px thumbnail finds its own photo first for base {first['base']}, "
              f"adapted {first['adapted']} of {min(per_dataset, len(photos))}")


if __name__ == "__main__":
    sys.exit(main())
