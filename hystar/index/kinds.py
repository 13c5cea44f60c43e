"""FAISS index kinds: flat (exact), IVF-PQ and HNSW (approximate), their parameters, and GPU transfer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import faiss
import numpy as np

KINDS = ("flat", "ivfpq", "hnsw")
ADD_BLOCK = 16_384


@dataclass(frozen=True)
class KindConfig:
    """How vectors are searched. `flat` is exact; `ivfpq` and `hnsw` are approximate, and their `refine` best
    candidates are re-scored exactly from the float16 vectors."""

    kind: str = "flat"
    nlist: int = 0                 # ivfpq inverted lists; 0: chosen from the count
    pq_m: int = 0                  # ivfpq sub-quantizers (8 bits each); 0: one per 8 dimensions
    nprobe: int = 0                # ivfpq lists visited per query; 0: chosen from nlist and the count
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    refine: int = 256
    train_size: int = 131_072      # ivfpq trains on a seeded subsample of at most this many vectors
    min_count: int = 10_000        # ivfpq below this count is built flat: exact and already sub-millisecond
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KindConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_nlist(count: int) -> int:
    """About 2·sqrt(n) lists, a power of two, with at least 39 training vectors per list."""
    target = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(count))))
    return int(max(1, min(target, count // 39)))


def default_pq_m(dim: int) -> int:
    """The most sub-quantizers of at least 8 dimensions that divide `dim`."""
    return max([m for m in range(1, dim // 8 + 1) if dim % m == 0] or [1])


def default_nprobe(nlist: int, count: int, min_scan: int = 20_000) -> int:
    """Visit an eighth of the lists and at least `min_scan` vectors: small galleries have broad
    neighbourhoods (their 10th neighbour is far), and scanning them whole is cheap anyway."""
    wanted = max(nlist // 8, math.ceil(nlist * min_scan / max(count, 1)))
    return int(max(1, min(nlist, wanted)))


def _blocks(vectors: np.ndarray, size: int = ADD_BLOCK) -> Iterator[np.ndarray]:
    for start in range(0, len(vectors), size):
        yield np.ascontiguousarray(vectors[start:start + size], dtype=np.float32)


def _training_sample(vectors: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(vectors) <= size:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


@dataclass
class BuiltIndex:
    index: faiss.Index
    kind: str                           # what was built (ivfpq below min_count is built flat)
    params: dict[str, Any]              # the effective parameters
    trained: faiss.Index | None = None  # ivfpq: the trained, empty index, re-usable by later builds


def _trained_fits(trained: faiss.Index | None, dim: int, nlist: int, m: int) -> bool:
    if trained is None:
        return False
    ivf = faiss.downcast_index(trained)
    return isinstance(ivf, faiss.IndexIVFPQ) and (ivf.d, ivf.nlist, ivf.pq.M) == (dim, nlist, m)


def build_faiss(vectors: np.ndarray, config: KindConfig, trained: faiss.Index | None = None) -> BuiltIndex:
    """A FAISS index over `vectors` (n, d), float16 or float32, possibly memory-mapped; row i gets id i."""
    count, dim = vectors.shape
    if config.kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, config.hnsw_m,
                                  faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        if not index.is_trained:
            index.train(_training_sample(vectors, config.train_size, config.seed))
        for block in _blocks(vectors):
            index.add(block)
        index.hnsw.efSearch = config.ef_search
        return BuiltIndex(index, "hnsw", {"hnsw_m": config.hnsw_m, "ef_construction": config.ef_construction,
                                          "ef_search": config.ef_search, "refine": config.refine})
    if config.kind == "ivfpq" and count >= max(config.min_count, 256):
        return _build_ivfpq(vectors, config, trained)
    # Exact inner product; the vectors are stored as float16, so fp16 storage loses nothing, halves the scan.
    index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    for block in _blocks(vectors):
        index.add(block)
    return BuiltIndex(index, "flat", {})


def _build_ivfpq(vectors: np.ndarray, config: KindConfig, trained: faiss.Index | None) -> BuiltIndex:
    count, dim = vectors.shape
    nlist = config.nlist or default_nlist(count)
    m = config.pq_m or default_pq_m(dim)
    if dim % m:
        raise ValueError(f"pq_m={m} does not divide the dimension {dim}")
    if _trained_fits(trained, dim, nlist, m) and faiss.downcast_index(trained).ntotal == 0:
        index = faiss.clone_index(trained)
    else:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = index.pq.cp.seed = config.seed
        index.train(_training_sample(vectors, max(config.train_size, 256), config.seed))
        trained = faiss.clone_index(index)
    for block in _blocks(vectors):
        index.add(block)
    index.nprobe = config.nprobe or default_nprobe(nlist, count)
    params = {"nlist": nlist, "pq_m": m, "nprobe": int(index.nprobe), "refine": config.refine}
    return BuiltIndex(index, "ivfpq", params, trained)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(built_kind: str, index: faiss.Index, vectors: np.ndarray) -> tuple[faiss.Index, Any]:
    """The same search on a faiss GPU: flat as a float16 GpuIndexFlatIP, ivfpq cloned."""
    resources = faiss.StandardGpuResources()
    if built_kind == "flat":
        config = faiss.GpuIndexFlatConfig()
        config.useFloat16 = True
        gpu_index = faiss.GpuIndexFlatIP(resources, index.d, config)
        for block in _blocks(vectors):
            gpu_index.add(block)
        return gpu_index, resources
    options = faiss.GpuClonerOptions()
    options.useFloat16LookupTables = True
    return faiss.index_cpu_to_gpu(resources, 0, index, options), resources


