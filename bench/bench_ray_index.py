"""The same folder through `hystar index` on the local engine and on Ray (1 and 2 embedding actors), one run:
throughput ratio, equality of the indexes, and where Ray's time goes (Ray start, actor start-up).

Ray runs locally on this machine (`ray.init(num_cpus=<cores>)`); each engine builds a fresh index of the same files
with the same encoder. Throughput is end to end (scan, hash, decode, embed, commit), as a user sees it.

    python bench/bench_ray_index.py                    # 256 demo photos (generated JPEGs without the datasets)
    python bench/bench_ray_index.py --images 512 --encoder hystar-mini
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import bench_images  # noqa: E402


def same_index(a: Path, b: Path) -> tuple[bool, float]:
    from hystar.index import GalleryIndex

    left, right = GalleryIndex.load(a), GalleryIndex.load(b)
    ids = [e.path for e in left.entries] == [e.path for e in right.entries]
    skipped = [(s.path, s.reason) for s in left.skipped] == [(s.path, s.reason) for s in right.skipped]
    diff = float(np.abs(np.asarray(left.vectors, np.float32) - np.asarray(right.vectors, np.float32)).max()) \
        if ids and len(left) else 0.0
    return ids and skipped and diff <= 2e-3, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--encoder", default="hystar-mini")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import ray

    from hystar.index import BuildConfig, build_index, open_search_encoder
    from hystar.index.ray_engine import RayConfig, RayRunStats, build_index_ray

    work = Path(tempfile.mkdtemp(prefix="bench-ray-index-"))
    root, paths, source = bench_images(args.images, work / "images")
    encoder, identity = open_search_encoder(args.encoder)
    config = BuildConfig(batch_size=args.batch_size, progress=False)
    cores = os.cpu_count() or 1
    print(f"{len(paths)} {source}, encoder {args.encoder}, batch {args.batch_size}, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")

    local = build_index(root, work / "local", encoder, identity, config, files=paths)
    local_rate = local.count / local.seconds
    print(f"local engine: {local.count} images in {local.seconds:.1f} s = {local_rate:.1f} img/s")

    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    print(f"Ray start (ray.init, local, {cores} CPUs): {time.perf_counter() - start:.1f} s (not counted below)")
    try:
        for workers in args.workers:
            stats = RayRunStats()
            out = work / f"ray-{workers}"
            report, = build_index_ray(root, out, encoder, identity, config, RayConfig(workers=workers),
                                      files=paths, stats=stats)
            rate = report.count / report.seconds
            steady = (stats.images - args.batch_size) / max(stats.pipeline - stats.first_result, 1e-9)
            equal, diff = same_index(out, work / "local")
            print(f"ray engine, {workers} worker(s): {report.count} images in {report.seconds:.1f} s = {rate:.1f} "
                  f"img/s, {rate / local_rate:.2f}x local; actor start-up to first batch {stats.first_result:.1f} s, "
                  f"after it {steady:.1f} img/s; same ids, skipped and vectors as local: {equal} "
                  f"(max |diff| {diff:.1e})")
    finally:
        ray.shutdown()
    print(f"load average {os.getloadavg()[0]:.1f} at the end; work folder {work}")


if __name__ == "__main__":
    main()
