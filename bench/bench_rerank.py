"""QuARI re-ranking speed: a top-k re-rank, and a full re-rank of a float16 gallery against a flat search.

    python bench/bench_rerank.py [--n 1000000] [--dim 384] [--k 1000] [--layers 4] [--steps 4] [--threads N]

Flat search = faiss IndexFlatIP, one query over the n × dim float32 vectors, top 100. Full re-rank =
`Reranker.search` of one query over the same vectors as a float16 memmap (the index's storage), top 100,
hypernetwork included. Both run in the same process on the same threads; the ratio is printed. Weights are
random: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import torch

from hystar.rerank import QuARI, QuARIConfig, Reranker


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def unit_rows(rng: np.random.Generator, n: int, dim: int, block: int = 65536) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        rows = rng.standard_normal((min(block, n - start), dim), dtype=np.float32)
        out[start:start + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=1000, help="candidates of the top-k re-rank")
    parser.add_argument("--width", type=int, default=QuARIConfig(dim=1).width, help="QuARI transformer width")
    parser.add_argument("--layers", type=int, default=QuARIConfig(dim=1).layers, help="transformer layers")
    parser.add_argument("--steps", type=int, default=QuARIConfig(dim=1).steps, help="refinement steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    reranker = Reranker(QuARI(QuARIConfig(dim=args.dim, width=args.width, layers=args.layers,
                                           steps=args.steps)), "bench")
    query = unit_rows(rng, 1, args.dim)[0]
    vectors = unit_rows(rng, args.n, args.dim)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "gallery.npy", vectors.astype(np.float16))
        del vectors
        gallery = np.load(Path(tmp) / "gallery.npy", mmap_mode="r")
        candidates = np.asarray(gallery[np.sort(rng.choice(args.n, args.k, replace=False))])
        adapted = reranker.adapt(query)

        ms = {
            "hypernetwork (1 query)": timed(lambda: reranker.adapt(query), args.repeats),
            f"score top {args.k} (given the adaptation)": timed(
                lambda: reranker.score(adapted, candidates[None]), args.repeats),
            f"re-rank top {args.k} (hypernetwork + scores)": timed(
                lambda: reranker.rerank(query, candidates), args.repeats),
            "flat search, faiss IndexFlatIP float32": timed(
                lambda: flat.search(query[None], 100), args.repeats),
            "full re-rank, Reranker.search float16": timed(
                lambda: reranker.search(query, gallery, 100), args.repeats),
            "full scores, Reranker.score_gallery float16": timed(
                lambda: reranker.score_gallery(query, gallery), max(1, args.repeats // 2)),
        }
    flat_ms = ms["flat search, faiss IndexFlatIP float32"]
    ratio = ms["full re-rank, Reranker.search float16"] / flat_ms
    ratio_scores_only = (ms["full re-rank, Reranker.search float16"] - ms["hypernetwork (1 query)"]) / flat_ms

    print(f"n={args.n} dim={args.dim} width={args.width} layers={args.layers} steps={args.steps} "
          f"threads={args.threads} "
          f"torch={torch.__version__} faiss={faiss.__version__}")
    for name, value in ms.items():
        print(f"  {name:<48} {value:9.2f} ms")
    print(f"  full re-rank / flat search: {ratio:.2f}x  (without the hypernetwork: {ratio_scores_only:.2f}x)")
    print(json.dumps({"n": args.n, "dim": args.dim, "width": args.width, "layers": args.layers, "steps": args.steps,
                      "threads": args.threads,
                      "ms": {k: round(v, 3) for k, v in ms.items()}, "full_over_flat": round(ratio, 3)}))


if __name__ == "__main__":
    main()
