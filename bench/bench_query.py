"""Acceptance bench of the app's query path, in one run: a sketch drawn on the canvas, end to end.

    canvas PNG -> decode -> encode (base + adapted, one trunk pass) -> search both 10 k galleries -> QuARI re-rank

and the same with the app's default in place of re-ranking, query expansion (per side: two searches, then one for
the neighbours of the best 100 candidates; `QueryExpansion`), with its "reads as" guesses (one matrix product of the
query's image embedding with the cached vocabulary: 125 class names, as the demo gallery has) and the name prior
(the drawing leaning toward those names), through `SearchService.search` exactly as the app calls it
(place=False); the default without guesses, and without the name prior, beside it;
then, separately, the UMAP placement of the query's two embeddings (`SearchService.place`).
Acceptance, each path: p50 <= 150 ms and p95 <= 250 ms, UMAP excluded.

The encoder is the shipped hystar-mini with the trained adapter when it exists (else a seeded random adapter of
the same shape: the cost does not depend on the weights), and the trained QuARI re-ranker when there is one
(else a random one). The galleries are 10 k synthetic unit vectors per side in flat indexes: a flat search costs
the same whatever the vectors hold. Torch threads default to what app.py uses: cores / concurrent searches.

    python bench/bench_query.py [--gallery 10000] [--runs 100] [--threads N] [--no-umap] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hystar.adapt import HystarAdapter, HystarEncoder  # noqa: E402
from hystar.encoder import shared_encoder  # noqa: E402
from hystar.encoder.search import load_search_encoder  # noqa: E402
from hystar.guesses import shipped_vocabulary  # noqa: E402
from hystar.index import Entry, GalleryIndex, IndexMeta, KindConfig, build_faiss  # noqa: E402
from hystar.rerank import NoRerankerError, QuARI, QuARIConfig, Reranker, load_default_reranker  # noqa: E402
from hystar.service import DEFAULT_ADAPTER, Query, SearchService, Space  # noqa: E402
from hystar.ui import UiConfig  # noqa: E402
from hystar.views import UmapConfig, fit_umap  # noqa: E402

SKETCH = ROOT / "assets" / "examples" / "sketch_giraffe.png"
P50_MS, P95_MS = 150.0, 250.0
CLASS_NAMES = 125  # the gallery's class names (Sketchy has 125): the guesses' vocabulary, the name prior's names


def synthetic_index(count: int, dim: int, seed: int, folder: Path) -> GalleryIndex:
    """A flat GalleryIndex over `count` unit float16 vectors in 100 classes (class = folder of the entry)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    labels = rng.integers(0, 100, count)
    vectors = centres[labels] + 0.8 * rng.standard_normal((count, dim)).astype(np.float32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    generation = folder / "gen-000000"  # the index's own layout: memory-mapped rows, read back with pread
    generation.mkdir(parents=True, exist_ok=True)
    np.save(generation / "vectors.npy", vectors)
    vectors = np.load(generation / "vectors.npy", mmap_mode="r")
    built = build_faiss(vectors, KindConfig("flat"))
    meta = IndexMeta(generation="gen-000000", root=str(folder), encoder={"spec": "synthetic", "name": "synthetic",
                                                                          "fingerprint": "synthetic"},
                     adapter=None, dim=dim, count=count, skipped=0, kind="flat", built_kind=built.kind,
                     kind_config=KindConfig().to_json(), kind_params=built.params)
    entries = [Entry(f"class{label:03d}/{row:06d}.jpg", 0, 0, "") for row, label in enumerate(labels)]
    return GalleryIndex(folder, meta, entries, [], vectors, built.index, gpu=False)


def adapted_encoder(base) -> tuple[HystarEncoder, str]:
    if DEFAULT_ADAPTER.is_file():  # the one constructor: the file's fingerprint finds the trained QuARI
        return load_search_encoder(base.name, DEFAULT_ADAPTER, shared=False, base=base), DEFAULT_ADAPTER.name
    torch.manual_seed(0)
    adapter = HystarAdapter(base)
    with torch.no_grad():
        for hyper in adapter.hyper.values():
            hyper.net[-1].weight.normal_(0, 0.02)
    return HystarEncoder(base, adapter.eval()).eval(), "random adapter (no trained adapter yet)"


def reranker_for(fingerprint: str, dim: int) -> tuple[Reranker, str]:
    try:
        return load_default_reranker(fingerprint), "trained QuARI"
    except NoRerankerError:
        torch.manual_seed(0)
        return Reranker(QuARI(QuARIConfig(dim=dim)), fingerprint), "random QuARI (none trained yet)"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
    return {"p50": pick(0.5), "p95": pick(0.95), "mean": statistics.fmean(ordered), "max": ordered[-1]}


def timed(fn, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=10_000, help="vectors per gallery side")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) // UiConfig.concurrency))
    parser.add_argument("--candidates", type=int, default=100, help="what the re-ranker re-scores")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP placement timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = shared_encoder("hystar-mini")
    adapted, adapter_name = adapted_encoder(base)
    dim = base.embed_dim
    folder = Path(tempfile.mkdtemp(prefix="bench-query-"))
    base_reranker, base_reranker_name = reranker_for(base.fingerprint, dim)
    adapted_reranker, adapted_reranker_name = reranker_for(adapted.fingerprint, dim)
    reranker_name = f"base: {base_reranker_name}, adapted: {adapted_reranker_name}"
    base_index = synthetic_index(args.gallery, dim, 1, folder / "base")
    adapted_index = synthetic_index(args.gallery, dim, 2, folder / "adapted")
    names = shipped_vocabulary().names[:CLASS_NAMES]  # class names, as the demo gallery has: the name prior leans
    classes = [names[row % len(names)] for row in range(args.gallery)]
    spaces = [Space(name, index, classes, reranker)
              for name, index, reranker in (("base", base_index, base_reranker),
                                            ("adapted", adapted_index, adapted_reranker))]
    umap = None
    if not args.no_umap:
        started = time.perf_counter()
        umap = fit_umap(base_index.vectors, spaces[0].classes, UmapConfig(), {})
        umap_fit_s = time.perf_counter() - started
    service = SearchService(base, spaces[0], adapted, spaces[1], args.candidates, umap)

    canvas = SKETCH.read_bytes()  # what the canvas hands over: a PNG of black strokes on white
    query = Query(sketch=canvas, k=12, adapt=True, rerank=True)
    check = service.search(query, place=False)
    assert check.reranked and check.adapted is not None and len(check.base) == 12

    expanded = Query(sketch=canvas, k=12, adapt=True)  # the app's default: query expansion, no re-ranking
    assert service.search(expanded, place=False).expanded
    warm = service.search(expanded, place=False)  # the vocabulary embedded once, before timing
    assert len(warm.guesses) == 3 and warm.leaned

    full = percentiles(timed(lambda: service.search(query, place=False), args.runs))
    guess_ms: list[float] = []
    default = percentiles(timed(lambda: guess_ms.append(service.search(expanded, place=False).timings["guesses"]),
                                args.runs))
    with_guesses = service.config
    service.config = replace(with_guesses, guesses=None)
    no_guesses = percentiles(timed(lambda: service.search(expanded, place=False), args.runs))
    service.config = replace(with_guesses, name_prior=None)
    no_prior = percentiles(timed(lambda: service.search(expanded, place=False), args.runs))
    service.config = with_guesses
    base_only = percentiles(timed(lambda: service.search(Query(sketch=canvas, k=12, adapt=False, rerank=True),
                                                         place=False), args.runs))
    app_expansion = service.config.expansion  # its gallery side's cost, measured beside it
    service.config = replace(service.config, expansion=replace(app_expansion, gallery_neighbors=0))
    query_side = percentiles(timed(lambda: service.search(expanded, place=False), args.runs))
    service.config = replace(service.config, expansion=app_expansion)
    report = {"gallery": args.gallery, "runs": args.runs, "threads": args.threads, "adapter": adapter_name,
              "reranker": reranker_name, "candidates": args.candidates,
              "sketch_end_to_end_ms": full, "sketch_expanded_ms": default, "sketch_base_only_ms": base_only,
              "sketch_expanded_without_guesses_ms": no_guesses, "sketch_expanded_without_name_prior_ms": no_prior,
              "guesses_ms": percentiles(guess_ms[-args.runs:]),
              "sketch_expanded_query_side_ms": query_side}
    if umap is not None:
        response = service.search(query, place=False)
        report["umap_fit_s"] = umap_fit_s
        report["umap_place_ms"] = percentiles(timed(lambda: service.place(response), args.runs))
    passed = all(stats["p50"] <= P50_MS and stats["p95"] <= P95_MS for stats in (full, default))
    report["acceptance"] = {"p50_max_ms": P50_MS, "p95_max_ms": P95_MS, "passed": passed}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"sketch query, {args.gallery:,} vectors per side, {args.threads} torch thread(s), {adapter_name}, "
              f"{reranker_name} over {args.candidates} candidates, {args.runs} runs")
        for name, key in (("end to end (base + adapted + re-rank)", "sketch_end_to_end_ms"),
                          ("end to end, expansion + guesses + name prior (app default)", "sketch_expanded_ms"),
                          ("  the same without guesses", "sketch_expanded_without_guesses_ms"),
                          ("  the same without the name prior", "sketch_expanded_without_name_prior_ms"),
                          ("  of it, the guesses", "guesses_ms"),
                          ("  the same, query side only", "sketch_expanded_query_side_ms"),
                          ("base only (+ re-rank)", "sketch_base_only_ms"), ("UMAP placement", "umap_place_ms")):
            if key in report:
                stats = report[key]
                print(f"  {name:52s} p50 {stats['p50']:6.1f} ms  p95 {stats['p95']:6.1f} ms  "
                      f"max {stats['max']:6.1f} ms")
        if umap is not None:
            print(f"  {'UMAP fit (once per gallery, cached)':52s} {umap_fit_s:6.1f} s")
        print(f"acceptance p50 <= {P50_MS:.0f} ms, p95 <= {P95_MS:.0f} ms (UMAP excluded): "
              f"{'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
