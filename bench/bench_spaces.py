"""The Hugging Face Spaces path, as a new Space meets it: `python app.py` with no data and no --gallery, on a fresh
index root, in whatever environment runs this script (for the real measurement: a fresh venv with only
`pip install -r requirements.txt`):

1. seconds from `python app.py` to HTTP 200 on the empty-gallery page (goal: seconds);
2. a zip of 50 photos uploaded through the app's API: seconds until it is searchable, the progress updates the page
   received on the way, and whether each photo finds itself first.

    /tmp/spaces-venv/bin/python bench/bench_spaces.py            # photos: 50 PACS photos when $HYSTAR_DATA has them
    python bench/bench_spaces.py --photos DIR                     # or the first 50 images of DIR

The app itself never sees $HYSTAR_DATA (it is pointed at an empty folder, as on a Space).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench_startup import App, load

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def sample_photos(folder: Path | None, count: int) -> list[Path]:
    if folder is None:
        data = Path(os.environ.get("HYSTAR_DATA", ROOT.parent / "shared" / "data"))
        folder = data / "pacs" / "PACS" / "photo"
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(photos) < count:
        raise SystemExit(f"{folder} has {len(photos)} images; {count} needed (pass --photos DIR)")
    step = len(photos) // count
    return photos[::step][:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="folder to take the 50 photos from")
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args(argv)
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="hystar-spaces-"))
    photos = sample_photos(args.photos, args.count)
    archive = work / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for k, photo in enumerate(photos):
            zipped.write(photo, f"trip/{k:02d}-{photo.name}")
    (work / "no-data").mkdir()
    os.environ["HYSTAR_DATA"] = str(work / "no-data")
    print(f"python {sys.executable}; {os.cpu_count()} cores; load average before: {load()}")
    app = App(work / "index", [])
    try:
        http = app.wait_http(180)
        print(f"empty gallery page: HTTP 200 after {http:.1f} s (goal: seconds)")
        client = Client(app.url, verbose=False)
        started = time.perf_counter()
        job = client.submit([handle_file(str(archive))], api_name="/add_photos")
        updates = []
        while not job.done():
            progress = job.status().progress_data
            if progress and progress[0].desc and (not updates or updates[-1] != progress[0].desc):
                updates.append(progress[0].desc)
            time.sleep(0.2)
        status = job.result()[0]
        added = time.perf_counter() - started
        print(f"zip of {len(photos)} photos: searchable after {added:.1f} s; the page said: {status.splitlines()[0]!r}")
        print(f"progress shown meanwhile ({len(updates)} updates): "
              f"{updates[0]!r} ... {updates[-1]!r}" if updates else "progress shown meanwhile: none")
        hits = 0
        for k, photo in enumerate(photos[:10]):
            answer = client.predict(None, handle_file(str(photo)), "", "", 1.0, 1.0, 1.0, 0.5, False, False, 3,
                                    False, api_name="/search")
            top = answer[5]["base"][0]["name"] if answer[5].get("base") else ""
            hits += top.endswith(f"{k:02d}-{photo.name}")
        print(f"each of the first 10 photos finds itself first: {hits} / 10")
    finally:
        app.stop()
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
