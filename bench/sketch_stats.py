"""Stroke width and framing of the train sketches: where `hystar.sketch.SketchConfig`'s defaults come from, and
how often `is_line_drawing` calls each style a line drawing. Run: `python bench/sketch_stats.py [--per-style N]`.

Per dataset: the ink's longer side over the image side (fill), and the median stroke width after cropping and
centring at 224 px with that fill (before any width change).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from hystar.data import load_dataset
from hystar.images import open_image
from hystar.sketch import SketchConfig, centred_ink, ink_box, ink_map, is_line_drawing, stroke_width


def sketch_stats(names: tuple[str, ...], count: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    cfg = SketchConfig()
    out = {}
    for name in names:
        sketches = [i for i in load_dataset(name).select(style="sketch", split="train", unseen=False)]
        fills, widths = [], []
        for item in tqdm(rng.sample(sketches, min(count, len(sketches))), desc=f"{name} sketches"):
            ink = ink_map(open_image(item.path), cfg)
            box = ink_box(ink, cfg)
            if box is None:
                continue
            top, left, bottom, right = box
            fills.append(max(bottom - top, right - left) / max(ink.shape))
            widths.append(stroke_width(centred_ink(ink, replace(cfg, fill=cfg.fill)), cfg.ink_threshold))
        out[name] = {"sketches": len(fills), "fill_median": float(np.median(fills)),
                     "fill_p10_p90": [float(np.percentile(fills, 10)), float(np.percentile(fills, 90))],
                     "width_median_224": float(np.median(widths)),
                     "width_p10_p90": [float(np.percentile(widths, 10)), float(np.percentile(widths, 90))]}
    return out


def line_drawing_rates(count: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    dataset = load_dataset("pacs")
    rates = {}
    for style in dataset.styles:
        items = rng.sample(dataset.select(style=style), count)
        hits = [is_line_drawing(open_image(i.path)) for i in tqdm(items, desc=f"pacs {style}")]
        rates[f"pacs {style}"] = float(np.mean(hits) * 100)
    sketchy = load_dataset("sketchy")
    for style in ("photo", "sketch"):
        items = rng.sample(sketchy.select(style=style), count)
        rates[f"sketchy {style}"] = float(np.mean([is_line_drawing(open_image(i.path)) for i in
                                                   tqdm(items, desc=f"sketchy {style}")]) * 100)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-style", type=int, default=300, help="images sampled per dataset / style")
    args = parser.parse_args()
    report = {"strokes": sketch_stats(("sketchy", "pacs"), args.per_style),
              "line_drawing_percent": line_drawing_rates(args.per_style)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
