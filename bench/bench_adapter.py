"""Adapted-encode time / base-encode time for the same batch, measured side by side in one run.

    python bench/bench_adapter.py [--encoder hystar-mini] [--adapter FILE] [--batch 32] [--repeats 7]

Both paths start from the same pixels; runs alternate base / adapted so machine load hits both alike.
Goal (issue 3): ratio ≤ 1.15.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from hystar.adapt import HystarAdapter, HystarEncoder
from hystar.encoder import load_encoder
from hystar.encoder.search import load_search_encoder

DEFAULT_ADAPTER = Path(__file__).resolve().parent.parent / "assets" / "hystar-mini-adapter.safetensors"


def timed(fn, pixels: torch.Tensor) -> float:
    started = time.perf_counter()
    fn(pixels)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="hystar-mini")
    parser.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.adapter.is_file():
        adapted = load_search_encoder(args.encoder, args.adapter, shared=False)
        base, source = adapted.base, str(args.adapter)
    else:
        base = load_encoder(args.encoder)
        adapted, source = HystarEncoder(base, HystarAdapter(base)).eval(), "untrained adapter (same cost)"
    pixels = torch.randn(args.batch, 3, 224, 224)
    base_times, adapted_times = [], []
    with torch.inference_mode():
        base.encode_image(pixels), adapted.encode_image(pixels)  # warm-up
        for _ in range(args.repeats):
            base_times.append(timed(base.encode_image, pixels))
            adapted_times.append(timed(adapted.encode_image, pixels))
    b, a = statistics.median(base_times), statistics.median(adapted_times)
    print(f"encoder {args.encoder}, adapter: {source}, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"base encode    median {b * 1000:8.1f} ms  ({args.batch / b:6.1f} img/s)")
    print(f"adapted encode median {a * 1000:8.1f} ms  ({args.batch / a:6.1f} img/s)")
    print(f"ratio adapted/base: {a / b:.3f}  (goal ≤ 1.15)")


if __name__ == "__main__":
    main()
