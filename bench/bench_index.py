"""Acceptance bench for gallery indexes, in one run:

1. indexing throughput (img/s) against the bare encoder's forward pass on the same, already decoded images
   (acceptance: ratio >= 0.9);
2. single-query search latency at 10 k / 100 k / 1 M synthetic vectors, flat vs IVF-PQ (ratios printed);
3. IVF-PQ recall@10 against flat (acceptance: >= 0.95 at 1 M);
4. peak RSS per million vectors, building and serving, each in its own process (`resource.getrusage`).

Synthetic vectors model an embedding gallery rather than uniform noise: L2-normalised draws of 2,000 class
centres plus a rank-32 within-class variation with a decaying spectrum plus isotropic noise. Queries are fresh
draws of the same model (not gallery copies). The printed top-1 / random-pair cosines show the regime.

    python bench/bench_index.py                      # everything (the 1 M part takes a few minutes)
    python bench/bench_index.py --sizes 10000 100000 --images 128
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHILD_QUERIES = 50


# --- synthetic vectors -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Synthetic:
    dim: int = 384
    classes: int = 2000
    rank: int = 32
    spread: float = 0.6
    noise: float = 0.25
    seed: int = 12345

    def sample(self, count: int, seed: int, block: int = 100_000) -> np.ndarray:
        model = np.random.default_rng(self.seed)
        centres = model.standard_normal((self.classes, self.dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        basis, _ = np.linalg.qr(model.standard_normal((self.dim, self.rank)))
        scales = 1 / np.sqrt(np.arange(1, self.rank + 1))
        within = (basis * scales * self.spread / np.linalg.norm(scales)).astype(np.float32)
        rng = np.random.default_rng(seed)
        out = np.empty((count, self.dim), np.float32)
        for start in range(0, count, block):
            n = min(block, count - start)
            z = (centres[rng.integers(0, self.classes, n)]
                 + rng.standard_normal((n, self.rank)).astype(np.float32) @ within.T
                 + self.noise / np.sqrt(self.dim) * rng.standard_normal((n, self.dim)).astype(np.float32))
            out[start:start + n] = z / np.linalg.norm(z, axis=1, keepdims=True)
        return out

    def write(self, path: Path, count: int, seed: int = 1, block: int = 100_000) -> None:
        vectors = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(count, self.dim))
        for start in range(0, count, block):
            n = min(block, count - start)
            vectors[start:start + n] = self.sample(n, seed * 1_000_003 + start)
        vectors.flush()


# --- child processes: each measurement in a fresh process, so that its peak RSS is its own ---------------
# (Linux carries ru_maxrss over fork and exec: the parent stays small and never imports torch or hystar.)

def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child_baseline(args: argparse.Namespace) -> dict:
    import faiss  # noqa: F401 - what every child imports

    from hystar.index import VectorSearch  # noqa: F401

    return {"peak_rss_mb": peak_rss_mb()}


def child_generate(args: argparse.Namespace) -> dict:
    synthetic = Synthetic(dim=args.dim)
    started = time.perf_counter()
    synthetic.write(Path(args.vectors), args.count)
    queries = synthetic.sample(CHILD_QUERIES + 5, seed=99)
    np.save(args.queries, queries)
    vectors = np.load(args.vectors, mmap_mode="r")
    sample = np.asarray(vectors[:200_000], np.float32)
    return {"generate_s": time.perf_counter() - started,
            "top1_cos": float((queries[:20] @ sample.T).max(axis=1).mean()),
            "random_pair_cos": float(np.sum(sample[:1000] * sample[1000:2000], axis=1).mean())}


def child_build(args: argparse.Namespace) -> dict:
    import faiss

    from hystar.index import KindConfig, build_faiss

    vectors = np.load(args.vectors, mmap_mode="r")
    start = time.perf_counter()
    built = build_faiss(vectors, KindConfig(args.kind))
    seconds = time.perf_counter() - start
    faiss.write_index(built.index, args.index)
    Path(args.index + ".json").write_text(json.dumps({"kind": built.kind, "params": built.params}))
    return {"build_s": seconds, "kind": built.kind, "params": built.params, "peak_rss_mb": peak_rss_mb()}


def child_serve(args: argparse.Namespace) -> dict:
    """Load the index as the app does (FAISS in memory, vectors memory-mapped) and time single queries."""
    import faiss

    from hystar.index import VectorSearch

    vectors = np.load(args.vectors, mmap_mode="r")
    info = json.loads(Path(args.index + ".json").read_text())
    search = VectorSearch(vectors, faiss.read_index(args.index), info["kind"], info["params"], gpu=False,
                          row_file=args.vectors)
    queries = np.load(args.queries)
    for query in queries[CHILD_QUERIES:]:
        search.search(query, 10)  # warm-up on queries that are not timed
    rows, latencies = [], []
    for query in queries[:CHILD_QUERIES]:
        start = time.perf_counter()
        result = search.search(query, 10)
        latencies.append(time.perf_counter() - start)
        rows.append(result.rows[0])
    np.save(args.rows, np.stack(rows))
    latencies_ms = 1000 * np.asarray(latencies)
    return {"median_ms": float(np.median(latencies_ms)), "p95_ms": float(np.percentile(latencies_ms, 95)),
            "peak_rss_mb": peak_rss_mb()}


def child_throughput(args: argparse.Namespace) -> dict:
    """Indexing throughput against the bare encoder's forward pass on the same images."""
    import torch

    from hystar.encoder import load_encoder
    from hystar.encoder.mini import build_mini
    from hystar.images import open_image
    from hystar.index import BuildConfig, EncoderIdentity, build_index

    try:
        encoder, encoder_note = load_encoder(args.encoder).requires_grad_(False), args.encoder
    except FileNotFoundError:
        torch.manual_seed(0)
        encoder, encoder_note = build_mini().eval().requires_grad_(False), "hystar-mini (untrained weights)"
    work = Path(args.index)
    root, paths, source = bench_images(args.images, work / "images")
    pixels = torch.stack([encoder.preprocess(open_image(p)) for p in paths])  # decoded up front, untimed

    def bare() -> float:
        with torch.no_grad():
            start = time.perf_counter()
            for batch in pixels.split(args.batch_size):
                encoder.encode_image(batch)
            return len(paths) / (time.perf_counter() - start)

    identity = EncoderIdentity.of(encoder)  # the weights' fingerprint: once per process, not per image

    def indexed(run: int) -> float:
        config = BuildConfig(batch_size=args.batch_size, progress=False)
        start = time.perf_counter()
        report = build_index(root, work / f"index-{run}", encoder, identity, config, paths)
        assert report.count == len(paths), report.summary()
        return len(paths) / (time.perf_counter() - start)

    with torch.no_grad():
        encoder.encode_image(pixels[:args.batch_size])  # warm-up
    bare_runs, index_runs = [], []
    for run in range(args.repeats):  # interleaved, best of each: the machine is shared
        bare_runs.append(bare())
        index_runs.append(indexed(run))
    return {"images": len(paths), "source": source, "encoder": encoder_note,
            "threads": torch.get_num_threads(), "batch_size": args.batch_size, "bare_img_s": bare_runs,
            "index_img_s": index_runs, "ratio": max(index_runs) / max(bare_runs)}


def bench_images(count: int, folder: Path) -> tuple[Path, list[Path], str]:
    """The first `count` demo photos when the datasets are there, else generated 256x256 JPEGs."""
    from PIL import Image

    from hystar.gallery import demo_source

    demo = demo_source()
    if demo is not None and len(demo.files) >= count:
        return demo.root, sorted(demo.files)[:count], "demo photos"
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        paths.append(folder / f"img{i:05d}.jpg")
        Image.fromarray(blocks).resize((256, 256), Image.BICUBIC).save(paths[-1], quality=90)
    return folder, paths, "generated 256x256 JPEGs"


CHILDREN = {"baseline": child_baseline, "generate": child_generate, "build": child_build,
            "serve": child_serve, "throughput": child_throughput}


def run_child(name: str, args: argparse.Namespace, **options: object) -> dict:
    command = [sys.executable, __file__, "--child", name, "--dim", str(args.dim), "--encoder", args.encoder,
               "--batch-size", str(args.batch_size), "--repeats", str(args.repeats),
               "--images", str(args.images)]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"bench child {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run -------------------------------------------------------------------------------------------

def bench_search(args: argparse.Namespace, work: Path, baseline_mb: float) -> list[dict]:
    results = []
    for count in args.sizes:
        vectors, queries = work / f"vectors-{count}.npy", work / f"queries-{count}.npy"
        row = {"count": count, "baseline_mb": baseline_mb,
               **run_child("generate", args, count=count, vectors=vectors, queries=queries)}
        for kind in ("flat", "ivfpq"):
            files = {"vectors": vectors, "index": work / f"{kind}-{count}.faiss"}
            built = run_child("build", args, kind=kind, **files)
            rows = work / f"rows-{kind}-{count}.npy"
            served = run_child("serve", args, queries=queries, rows=rows, **files)
            row[kind] = {"kind": built["kind"], "params": built["params"], "build_s": built["build_s"],
                         "median_ms": served["median_ms"], "p95_ms": served["p95_ms"]}
            for phase, measured in (("build", built), ("serve", served)):
                row[kind][f"{phase}_peak_rss_mb"] = measured["peak_rss_mb"]
                extra = measured["peak_rss_mb"] - baseline_mb
                row[kind][f"{phase}_rss_mb_per_million"] = extra / count * 1e6
        truth, found = np.load(work / f"rows-flat-{count}.npy"), np.load(work / f"rows-ivfpq-{count}.npy")
        row["ivfpq"]["recall_at_10"] = float(np.mean([len(set(t) & set(f)) / 10
                                                      for t, f in zip(truth, found, strict=True)]))
        row["speedup"] = row["flat"]["median_ms"] / row["ivfpq"]["median_ms"]
        for path in work.glob(f"*-{count}.*"):
            path.unlink()
        results.append(row)
        print_search_row(row)
    return results


def print_search_row(row: dict) -> None:
    flat, ivf = row["flat"], row["ivfpq"]
    print(f"{row['count']:>9,}  flat {flat['median_ms']:7.2f} ms (p95 {flat['p95_ms']:7.2f})  "
          f"{ivf['kind']} {ivf['median_ms']:6.2f} ms (p95 {ivf['p95_ms']:6.2f})  "
          f"flat/ivfpq x{row['speedup']:.1f}  recall@10 {ivf['recall_at_10']:.3f}", flush=True)
    print(f"{'':>11}build: flat {flat['build_s']:.1f} s, {ivf['kind']} {ivf['build_s']:.1f} s "
          f"{ivf['params']}; top-1 cos {row['top1_cos']:.2f}, random pair {row['random_pair_cos']:.2f}",
          flush=True)
    print(f"{'':>11}peak RSS: flat build {flat['build_peak_rss_mb']:.0f} MB / serve "
          f"{flat['serve_peak_rss_mb']:.0f} MB, ivfpq build {ivf['build_peak_rss_mb']:.0f} MB / serve "
          f"{ivf['serve_peak_rss_mb']:.0f} MB; per million vectors above the baseline: flat "
          f"{flat['build_rss_mb_per_million']:.0f} / {flat['serve_rss_mb_per_million']:.0f} MB, ivfpq "
          f"{ivf['build_rss_mb_per_million']:.0f} / {ivf['serve_rss_mb_per_million']:.0f} MB", flush=True)


def verdicts(throughput: dict | None, search: list[dict]) -> list[tuple[str, bool]]:
    checks = []
    if throughput is not None:
        ratio = throughput["ratio"]
        checks.append((f"indexing / bare forward throughput = {ratio:.2f} >= 0.9", ratio >= 0.9))
    if search:
        largest = max(search, key=lambda r: r["count"])
        recall = largest["ivfpq"]["recall_at_10"]
        checks.append((f"IVF-PQ recall@10 vs flat at {largest['count']:,} = {recall:.3f} >= 0.95",
                       recall >= 0.95))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images for the throughput part (0: skip)")
    parser.add_argument("--encoder", default="hystar-mini")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    for option in ("vectors", "index", "queries", "rows", "kind"):
        parser.add_argument(f"--{option}", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="hystar-bench-", dir=args.workdir))
    try:
        throughput = None
        if args.images:
            throughput = run_child("throughput", args, index=work)
            runs = lambda key: " / ".join(f"{v:.1f}" for v in throughput[key])
            print(f"indexing throughput on {throughput['images']} {throughput['source']} "
                  f"({throughput['encoder']}, {throughput['threads']} threads, "
                  f"batch {throughput['batch_size']}):")
            print(f"  bare encoder forward  {runs('bare_img_s')} img/s")
            print(f"  hystar index          {runs('index_img_s')} img/s")
            print(f"  ratio (best of each)  {throughput['ratio']:.3f}", flush=True)
        baseline_mb = run_child("baseline", args)["peak_rss_mb"]
        print(f"search latency (single queries, k=10, dim {args.dim}, median of {CHILD_QUERIES}); "
              f"baseline RSS of a process that imports hystar.index: {baseline_mb:.0f} MB", flush=True)
        search = bench_search(args, work, baseline_mb)
        checks = verdicts(throughput, search)
        for text, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        if args.json:
            args.json.write_text(json.dumps({"throughput": throughput, "baseline_rss_mb": baseline_mb,
                                             "search": search}, indent=2))
        return 0 if all(ok for _, ok in checks) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
