"""Searching a committed index: FAISS candidates, exact re-scoring from the float16 rows, an optional re-ranker."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from ..encoder.search import EncoderIdentity
from ..ranking import QueryExpansion, keep_first, padded_top_k
from .checksums import GenerationCheck
from .format import (
    FAISS_INDEX,
    VECTORS,
    CorruptIndexError,
    Entry,
    IndexMeta,
    Skipped,
    check_compatible,
    read_generation,
    read_npy_header,
)
from .kinds import BuiltIndex, gpu_available, to_gpu

RERANKERS = ("quari",)
_warned: set[Path] = set()


def _warn_unchecked(folder: Path) -> None:
    """Once per folder: an index written before checksums cannot tell damage from data."""
    folder = Path(os.path.abspath(folder))
    if folder not in _warned:
        _warned.add(folder)
        warnings.warn(f"{folder} has no checksums (written by an older hystar): damage in it cannot be detected; "
                      f"`hystar index --verify {folder}` adds them", stacklevel=4)


class Rescorer(Protocol):
    """What the search accepts as a re-ranker (`hystar.rerank.Reranker` is one)."""

    def rerank(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores (n,) for candidate vectors (n, d) given one query vector (d,); higher is better."""


def load_named_reranker(name: str, encoder_fingerprint: str) -> Rescorer:
    """The one rerank hook: `hystar.rerank.load_default_reranker(encoder_fingerprint)`."""
    if name not in RERANKERS:
        raise ValueError(f"unknown re-ranker {name!r}; choose from {', '.join(RERANKERS)}")
    try:
        rerank = importlib.import_module("hystar.rerank")
    except ModuleNotFoundError as error:
        if error.name != "hystar.rerank":
            raise
        raise RuntimeError("--rerank quari needs the QuARI re-ranker (hystar.rerank), which this "
                           "installation does not have yet") from None
    return rerank.load_default_reranker(encoder_fingerprint)


@dataclass
class SearchResult:
    scores: np.ndarray   # (queries, k) float32, best first
    rows: np.ndarray     # (queries, k) int64 rows of the index; -1 pads when the index has fewer than k


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    row: int
    path: Path
    relpath: str


class RowFile:
    """Rows of a 2-d .npy file, read with pread. Scattered rows read through a memory map map their neighbours
    too (the kernel's fault-around): a gallery's vectors would creep into every searcher's RSS."""

    def __init__(self, path: str | os.PathLike):
        self._file = open(path, "rb")  # lives as long as the searcher
        shape, self.dtype, fortran_order = read_npy_header(self._file)
        if len(shape) != 2 or fortran_order:
            raise ValueError(f"{path}: expected a C-ordered 2-d array, found shape {shape}")
        self.shape, self.offset = shape, self._file.tell()
        self.row_bytes = shape[1] * self.dtype.itemsize

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        descriptor = self._file.fileno()
        for i, row in enumerate(rows.tolist()):
            if os.preadv(descriptor, [out[i]], self.offset + row * self.row_bytes) != self.row_bytes:
                raise OSError(f"{self._file.name}: short read at row {row}")
        return out


class VectorSearch:
    """Search over float16 rows: the FAISS index (on a GPU when present), then, for approximate kinds, exact
    re-scoring of its best `refine` candidates from the rows, then an optional re-ranker. With `row_file`
    (the .npy file of `vectors`) candidate rows are read with pread instead of through the memory map."""

    def __init__(self, vectors: np.ndarray, index: faiss.Index, built_kind: str, params: dict[str, Any],
                 gpu: bool | None = None, row_file: str | os.PathLike | None = None):
        self.vectors, self.index, self.built_kind, self.params = vectors, index, built_kind, dict(params)
        self._row_file = RowFile(row_file) if row_file is not None and len(vectors) else None
        self._searcher, self._gpu_resources = index, None
        if len(vectors) and built_kind != "hnsw" and (gpu or (gpu is None and gpu_available())):
            try:
                self._searcher, self._gpu_resources = to_gpu(built_kind, index, vectors)
            except Exception as error:  # any GPU trouble: the CPU index gives the same answers
                if gpu:
                    raise
                warnings.warn(f"faiss GPU search unavailable ({error}); searching on the CPU", stacklevel=2)

    @classmethod
    def of(cls, vectors: np.ndarray, built: BuiltIndex, gpu: bool | None = None) -> VectorSearch:
        return cls(vectors, built.index, built.kind, built.params, gpu)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def approximate(self) -> bool:
        return self.built_kind != "flat"

    def tune(self, nprobe: int | None = None, ef_search: int | None = None,
             refine: int | None = None) -> None:
        """Trade speed for recall on an approximate index (ignored where it does not apply)."""
        if nprobe is not None and self.built_kind == "ivfpq":
            self._searcher.nprobe = self.params["nprobe"] = nprobe
        if ef_search is not None and self.built_kind == "hnsw":
            self.index.hnsw.efSearch = self.params["ef_search"] = ef_search
        if refine is not None:
            self.params["refine"] = refine

    def search(self, queries: np.ndarray, k: int = 10, reranker: Rescorer | None = None,
               candidates: int = 100, expansion: QueryExpansion | None = None) -> SearchResult:
        """Top-k rows by inner product for each query (q, d) or (d,). With an `expansion`, each query's best
        matches expand it, the expanded query's best `pool` are re-scored (`QueryExpansion.rescore_pool`) and the
        query's best match stays first: the ranking of `QueryExpansion.scores`. With a `reranker`, the best
        `candidates` (of the expanded query, with both, in place of the pool's re-scoring) are re-scored by it and
        its scores are returned."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {queries.shape[1]}; the index holds {self.dim}")
        k = min(k, len(self))
        if k <= 0:
            empty = np.zeros((len(queries), 0))
            return SearchResult(empty.astype(np.float32), empty.astype(np.int64))
        if expansion is not None:
            return self._expanded_search(queries, k, reranker, candidates, expansion)
        want = min(len(self), max(k, candidates)) if reranker is not None else k
        fetch = min(len(self), max(want, int(self.params.get("refine", 0)))) if self.approximate else want
        scores, rows = self._searcher.search(np.ascontiguousarray(queries), fetch)
        if self.approximate:
            scores, rows = self._rescore(queries, rows, want, self._exact_scores)
        if reranker is not None:
            rerank = lambda q, r: np.asarray(reranker.rerank(q, self.rows(r)), np.float32)
            scores, rows = self._rescore(queries, rows[:, :want], k, rerank)
        return SearchResult(scores[:, :k].astype(np.float32), rows[:, :k].astype(np.int64))

    def _expanded_search(self, queries: np.ndarray, k: int, reranker: Rescorer | None, candidates: int,
                         expansion: QueryExpansion) -> SearchResult:
        best = self.search(queries, expansion.neighbors)
        neighbors = self.rows(np.maximum(best.rows, 0).ravel()).reshape(*best.rows.shape, self.dim)
        plain = np.where(best.rows >= 0, best.scores, -np.inf)
        if reranker is None and expansion.gallery_neighbors:
            reranker, candidates = ExpandedPool(expansion), expansion.pool
        result = self.search(expansion.expand(queries, neighbors, plain), k, reranker, candidates)
        for i in range(len(queries)):  # the query's best match (with any tied with it) stays first
            tied = (best.rows[i] >= 0) & (plain[i] >= plain[i, 0])
            first, others = best.rows[i][tied], ~np.isin(result.rows[i], best.rows[i][tied])
            rows = np.concatenate([first, result.rows[i][others]])
            scores = np.concatenate([np.full(len(first), -np.inf, np.float32), result.scores[i][others]])
            floor = np.concatenate([plain[i][tied], np.full(others.sum(), -np.inf)])
            keep_first(scores[None], (np.arange(len(rows)) < len(first))[None], floor[None])
            result.scores[i], result.rows[i] = padded_top_k(scores, rows, k)
        return result

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of `rows` as float32 (read in ascending order: kind to disks)."""
        order = np.argsort(rows)
        out = np.empty((len(rows), self.dim), np.float32)
        ascending = rows[order]
        out[order] = self._row_file.read(ascending) if self._row_file is not None else self.vectors[ascending]
        return out

    def _exact_scores(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.rows(rows) @ query

    @staticmethod
    def _rescore(queries: np.ndarray, rows: np.ndarray, keep: int,
                 score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out_scores = np.empty((len(queries), keep), np.float32)
        out_rows = np.empty((len(queries), keep), np.int64)
        for i, query in enumerate(queries):
            valid = rows[i][rows[i] >= 0]
            scores = score(query, valid)
            if scores.shape != valid.shape:
                raise ValueError(f"re-ranker returned {scores.shape} scores for {len(valid)} candidates")
            out_scores[i], out_rows[i] = padded_top_k(scores, valid, keep)
        return out_scores, out_rows


class ExpandedPool:
    """The re-scorer of `QueryExpansion.gallery_neighbors` over the expanded query's best `pool` matches."""

    def __init__(self, expansion: QueryExpansion):
        self.expansion = expansion

    def rerank(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return self.expansion.rescore_pool(query, candidates)


class GalleryIndex:
    """A committed index, read-only: vectors memory-mapped, FAISS index in memory (on a GPU when present).

    Opening it checks its small files against their checksums (`GenerationCheck.split`); `verify` checks the rest
    (the app runs it in the background: `verify_in_background`). Once a check has failed the index refuses to search:
    `search` raises the `CorruptIndexError` that `damage` holds."""

    def __init__(self, folder: Path, meta: IndexMeta, entries: list[Entry], skipped: list[Skipped],
                 vectors: np.ndarray, index: faiss.Index, gpu: bool | None = None,
                 check: GenerationCheck | None = None, unverified: Sequence[str] = ()):
        self.folder, self.meta, self.entries, self.skipped = folder, meta, entries, skipped
        self.vectors, self.index = vectors, index
        self.searcher = VectorSearch(vectors, index, meta.built_kind, meta.kind_params, gpu,
                                     row_file=folder / meta.generation / VECTORS)
        self._check, self._unverified = check, list(unverified)
        self._damage: CorruptIndexError | None = None
        self._verify_lock, self._start_lock = threading.Lock(), threading.Lock()
        self._verifier: threading.Thread | None = None

    @classmethod
    def load(cls, folder: str | os.PathLike, gpu: bool | None = None) -> GalleryIndex:
        folder = Path(folder)
        meta = IndexMeta.read(folder)
        try:
            return cls._open(folder, meta, gpu)
        except CorruptIndexError:
            latest = IndexMeta.read(folder)
            if latest.generation == meta.generation:
                raise
            return cls._open(folder, latest, gpu)  # a writer committed and removed our generation meanwhile

    @classmethod
    def _open(cls, folder: Path, meta: IndexMeta, gpu: bool | None) -> GalleryIndex:
        check = GenerationCheck(folder, meta)
        now, later = check.split()
        check.require(now)
        if not check.recorded:
            _warn_unchecked(folder)
        entries, vectors, skipped = read_generation(folder, meta)
        try:
            index = faiss.read_index(str(folder / meta.generation / FAISS_INDEX))
        except RuntimeError as error:
            raise CorruptIndexError(folder, f"{FAISS_INDEX}: {error}") from None
        if index.ntotal != len(entries) or index.d != meta.dim:
            raise CorruptIndexError(folder, f"{len(entries)} manifest rows but {index.ntotal} indexed vectors of "
                                            f"dimension {index.d}")
        return cls(folder, meta, entries, skipped, vectors, index, gpu, check, later)

    # -- checksums ----------------------------------------------------------------------------------

    @property
    def damage(self) -> CorruptIndexError | None:
        """What a check of its checksums found wrong; None while none has failed."""
        return self._damage

    @property
    def verified(self) -> bool:
        """Every file has been checked against its checksums (or it has none to check)."""
        return not self._unverified

    def verify(self) -> None:
        """Check the files that opening it left unchecked (the vectors of a big gallery); `CorruptIndexError` naming
        the file and the first damaged rows when one differs, and the index refuses to search from then on."""
        with self._verify_lock:
            if self._unverified and self._damage is None:
                try:
                    self._check.require(self._unverified)
                except CorruptIndexError as error:
                    if not self._superseded():
                        self._damage = error
            self._unverified = []
        self.require_intact()

    def verify_in_background(self) -> threading.Thread:
        """`verify` in a daemon thread at the lowest CPU priority (started once); `damage` says what it found."""
        with self._start_lock:
            if self._verifier is None:
                self._verifier = threading.Thread(target=self._verify_quietly, name=f"verify {self.folder.name}",
                                                  daemon=True)
                self._verifier.start()
            return self._verifier

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Wait for `verify_in_background` (started here if it was not); True once every file is checked."""
        self.verify_in_background().join(timeout)
        return self.verified

    def require_intact(self) -> None:
        if self._damage is not None:
            raise self._damage.with_traceback(None)

    def _verify_quietly(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: this thread only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        with contextlib.suppress(CorruptIndexError):  # kept in `damage`
            self.verify()

    def _superseded(self) -> bool:
        """A writer committed another generation (and removed ours) since it was opened: its files are gone, not
        damaged; what it serves came from them before."""
        try:
            return IndexMeta.read(self.folder).generation != self.meta.generation
        except (OSError, ValueError):
            return False

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def root(self) -> Path:
        return Path(self.meta.root)

    @property
    def identity(self) -> EncoderIdentity:
        return self.meta.identity

    @property
    def approximate(self) -> bool:
        return self.searcher.approximate

    def path(self, row: int) -> Path:
        return self.root / self.entries[row].path

    def check_query(self, identity: EncoderIdentity, query_only: bool = False) -> None:
        check_compatible(self.folder, self.identity, identity, query_only)

    def tune(self, nprobe: int | None = None, ef_search: int | None = None,
             refine: int | None = None) -> None:
        self.searcher.tune(nprobe, ef_search, refine)

    def search(self, queries: np.ndarray, k: int = 10, reranker: Rescorer | None = None,
               candidates: int = 100, expansion: QueryExpansion | None = None) -> SearchResult:
        """See `VectorSearch.search`; rows index `entries` (and `vectors`). `CorruptIndexError` once a check of
        its checksums has failed."""
        self.require_intact()
        return self.searcher.search(queries, k, reranker, candidates, expansion)

    def hits(self, result: SearchResult, query: int = 0) -> list[Hit]:
        self.require_intact()
        pairs = zip(result.scores[query], result.rows[query], strict=True)
        return [Hit(rank + 1, float(score), int(row), self.path(int(row)), self.entries[int(row)].path)
                for rank, (score, row) in enumerate(pairs) if row >= 0]

