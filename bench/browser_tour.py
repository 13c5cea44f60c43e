"""The app as a person meets it, in a real browser (headless Chromium through Playwright), on a running app:

1. a house drawn with the mouse edge to edge, as people fill the canvas;
2. a stick giraffe drawn small in a corner;
3. a thumbnail (48 px, JPEG) of a gallery photo uploaded: does it find its own photo?

Each step prints the top results of both sides (label · score) and saves a screenshot under test-artifacts/tour/.

    python app.py &                                   # the demo gallery (indexed on first start)
    python bench/browser_tour.py --url http://127.0.0.1:7860/ --photo PATH_OF_A_GALLERY_PHOTO
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
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


def draw(page, strokes) -> None:
    page.wait_for_timeout(3000)  # the editor resets its layers once after the page settles: strokes before are lost
    box = page.locator("#sketch canvas").first.bounding_box()
    cx, cy, size = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, min(box["width"], box["height"])
    for stroke in strokes:
        page.mouse.move(cx + stroke[0][0] * size, cy + stroke[0][1] * size)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(cx + x * size, cy + y * size, steps=12)
        page.mouse.up()


def search_and_report(page, name: str) -> None:
    page.locator("#search").click()
    page.wait_for_function("document.querySelector('#status').innerText.match(/results|⚠/)", timeout=120_000)
    page.wait_for_timeout(1500)
    print(f"\n== {name}: {page.locator('#status').inner_text().splitlines()[0]}")
    for side in ("base", "adapted"):
        captions = [c for c in page.locator(f"#{side}-results").inner_text().splitlines() if " · " in c]
        print(f"  {side:8s}: " + " | ".join(captions[:8]))
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--photo", type=Path, required=True, help="a photo of the gallery, uploaded as a thumbnail")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    thumb = Path(tempfile.mkdtemp()) / "thumbnail.jpg"
    image = Image.open(args.photo).convert("RGB")
    image.thumbnail((48, 48))
    image.save(thumb, "JPEG", quality=60)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1300})
        page.goto(args.url)
        page.wait_for_selector("#sketch canvas", timeout=60_000)
        draw(page, HOUSE)
        search_and_report(page, "house-filling-the-canvas")
        page.goto(args.url)
        page.wait_for_selector("#sketch canvas", timeout=60_000)
        draw(page, GIRAFFE)
        search_and_report(page, "giraffe-small-in-a-corner")
        page.goto(args.url)
        page.wait_for_selector("#sketch canvas", timeout=60_000)
        page.locator("#upload input[type=file]").set_input_files(str(thumb))
        page.wait_for_timeout(1500)
        search_and_report(page, f"thumbnail-of-{args.photo.stem}")
        browser.close()
    from gradio_client import Client, handle_file

    answer = Client(args.url, verbose=False).predict(None, handle_file(str(thumb)), "", "", 1.0, 1.0, 1.0, 0.5,
                                                     True, False, 12, False, api_name="/search")[5]
    for side in ("base", "adapted"):
        names = [row["name"] for row in answer.get(side) or []]
        rank = next((k + 1 for k, name in enumerate(names) if name == args.photo.name), None)
        print(f"  the thumbnail's own photo on the {side} side: " + (f"rank {rank}" if rank else "not in the top 12"))
    print(f"\nscreenshots in {OUT}; the thumbnail was {args.photo} at {image.size[0]}x{image.size[1]} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
