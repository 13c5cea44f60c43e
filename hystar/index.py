"""Gallery indexes: a folder of images as searchable vectors, built incrementally, safe to kill at any moment.

An index folder holds:

    meta.json      the commit record (encoder and adapter fingerprints, dim, metric, kind, count, versions,
                   the current generation); replaced atomically, so readers never see a half-written index
    gen-NNNNNN/    one generation: vectors.npy (float16, row i = manifest line i, memory-mappable),
                   manifest.jsonl (relative path, size, mtime_ns, sha1), skipped.jsonl, index.faiss
                   [, trained.faiss: the trained, empty IVF-PQ index that later generations re-use]
    pending/       chunks embedded since the last commit; each chunk-NNNNNN/ appears by one atomic rename
    report.json    the last run's counts and skipped files, for people (never read back)

A run scans the folder and keeps every file whose size and mtime match a known row (committed or pending).
Other files are hashed (sha1): known content re-uses its vector (touched, copied and moved files), the rest is
embedded chunk by chunk, each chunk checkpointed. The run ends by writing a new generation and committing it
by replacing meta.json. `kill -9` at any moment loses at most the chunk in flight; a re-run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import platform
import queue
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from stat import S_ISREG
from typing import Any, Protocol

import faiss
import numpy as np
from PIL import Image
from tqdm import tqdm

from . import __version__
from .embed import ImageBatchResult, embed_images
from .encoder import Encoder, shared_encoder
from .images import is_image_path, open_image

FORMAT_VERSION = 1
META, PENDING, REPORT, LOCK = "meta.json", "pending", "report.json", ".lock"
VECTORS, MANIFEST, SKIPPED, FAISS_INDEX, TRAINED = (
    "vectors.npy", "manifest.jsonl", "skipped.jsonl", "index.faiss", "trained.faiss")
KINDS = ("flat", "ivfpq", "hnsw")
METRIC = "inner_product"
RERANKERS = ("quari",)
ADD_BLOCK = 16_384


class IndexMismatchError(ValueError):
    """An index and an encoder (or adapter) that do not belong together; the message says what to do."""


class IndexNotFoundError(FileNotFoundError):
    """No committed index in a folder."""


class CorruptIndexError(ValueError):
    """An index whose files are damaged (truncated, garbage, inconsistent); the message says how to rebuild it."""

    def __init__(self, folder: Path, detail: str):
        lines = str(detail).strip().splitlines() or ["unreadable"]
        detail = re.sub(r"Error in .*? at \S+:\d+: (Error: )?", "", lines[0])[:200]  # faiss's C++ location
        super().__init__(f"{folder}: the index is damaged ({detail}); rebuild it with "
                         f"`hystar index DIR --out {folder} --rebuild`")
        self.folder = folder


GENERATION_NAME = re.compile(r"gen-\d{6}")


# -------------------------------------------------------------------------------- files and hashes

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write `path` so that readers see the old or the new content, never a mix (tmp + fsync + os.replace)."""
    tmp = path.with_name(f".{path.name}.tmp")
    _fsync_write(tmp, (json.dumps(payload, indent=2) + "\n").encode())
    os.replace(tmp, path)


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_fingerprint(path: str | os.PathLike) -> str:
    """An adapter is identified by its file: sha256 of the bytes, first 16 hex digits."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class FileStat:
    path: str        # relative to the indexed folder, POSIX separators
    size: int
    mtime_ns: int

    def same_stat(self, other: FileStat) -> bool:
        return (self.size, self.mtime_ns) == (other.size, other.mtime_ns)


@dataclass(frozen=True, slots=True)
class Entry(FileStat):
    sha1: str


@dataclass(frozen=True, slots=True)
class Skipped(FileStat):
    reason: str


def _write_jsonl(path: Path, records: Sequence[Any]) -> None:
    _fsync_write(path, "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records).encode())


def _read_jsonl(path: Path, cls: type) -> list:
    if not path.is_file():
        return []
    return [cls(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def scan_folder(root: Path, files: Sequence[str | os.PathLike] | None = None) -> list[FileStat]:
    """Image files under `root` (recursive; hidden files and folders skipped), or the given `files` under it,
    sorted by relative path."""
    root = Path(os.path.abspath(root))
    paths: list[Path] = []
    if files is None:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [s for s in subfolders if not s.startswith(".")]
            paths.extend(Path(folder, n) for n in names if not n.startswith(".") and is_image_path(n))
    else:
        paths = [Path(os.path.abspath(f)) for f in files if is_image_path(f)]
    stats = {}
    for path in paths:
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not inside the indexed folder {root}") from None
        try:
            st = path.stat()
        except OSError:
            continue  # vanished or a dangling link: not a file to index
        if S_ISREG(st.st_mode):
            stats[rel] = FileStat(rel, st.st_size, st.st_mtime_ns)
    return [stats[rel] for rel in sorted(stats)]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer per index folder; the lock dies with its process, so kill -9 never leaves it stuck."""
    import fcntl

    with open(folder / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{folder} is being written by another `hystar index` run") from None
        yield


# -------------------------------------------------------------------------------- encoder identity

@dataclass(frozen=True)
class EncoderIdentity:
    """What made the vectors: the base encoder's weights and, when adapted, the adapter file."""

    spec: str
    name: str
    fingerprint: str
    adapter_path: str | None = None
    adapter_fingerprint: str | None = None

    @classmethod
    def of(cls, base: Encoder, spec: str | None = None,
           adapter_path: str | os.PathLike | None = None) -> EncoderIdentity:
        adapter = Path(adapter_path).absolute() if adapter_path is not None else None
        return cls(spec or base.name, base.name, base.fingerprint, str(adapter) if adapter else None,
                   adapter_fingerprint(adapter) if adapter else None)

    def describe(self) -> str:
        text = f"encoder {self.spec!r} (fingerprint {self.fingerprint})"
        if self.adapter_fingerprint:
            text += f" with adapter {self.adapter_path} (fingerprint {self.adapter_fingerprint})"
        return text + ("" if self.adapter_fingerprint else " without an adapter")


def load_search_encoder(encoder_spec: str, adapter_path: str | os.PathLike | None = None) -> Encoder:
    """The encoder that embeds galleries and queries: the base encoder, adapted when an adapter file is given.

    Indexes identify it by the base encoder's fingerprint plus the adapter file's (see `EncoderIdentity`).
    """
    if adapter_path is not None:
        from .adapters import shared_adapted

        return shared_adapted(encoder_spec, str(Path(adapter_path).resolve()))
    return shared_encoder(encoder_spec)


def open_search_encoder(encoder_spec: str,
                        adapter_path: str | os.PathLike | None = None) -> tuple[Encoder, EncoderIdentity]:
    """The search encoder and its identity (an adapted encoder exposes its base encoder as `.base`)."""
    if adapter_path is not None and not Path(adapter_path).is_file():
        raise FileNotFoundError(f"adapter file {adapter_path} does not exist")
    encoder = load_search_encoder(encoder_spec, adapter_path)
    base = getattr(encoder, "base", encoder)
    return encoder, EncoderIdentity.of(base, encoder_spec, adapter_path)


# -------------------------------------------------------------------------------- FAISS kinds

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


def _to_gpu(built_kind: str, index: faiss.Index, vectors: np.ndarray) -> tuple[faiss.Index, Any]:
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


# -------------------------------------------------------------------------------- meta

@dataclass
class IndexMeta:
    generation: str
    root: str
    encoder: dict[str, str]              # spec, name, fingerprint (of the base encoder)
    adapter: dict[str, str] | None       # path, fingerprint (sha256 of the file), or None
    dim: int
    count: int
    skipped: int
    kind: str                            # as asked for
    built_kind: str                      # as built
    kind_config: dict[str, Any]
    kind_params: dict[str, Any]          # effective parameters of the built index
    metric: str = METRIC
    vector_dtype: str = "float16"
    format: int = FORMAT_VERSION
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    updated: str = ""

    @property
    def identity(self) -> EncoderIdentity:
        adapter = self.adapter or {}
        return EncoderIdentity(self.encoder["spec"], self.encoder["name"], self.encoder["fingerprint"],
                               adapter.get("path"), adapter.get("fingerprint"))

    @classmethod
    def read(cls, folder: Path) -> IndexMeta:
        path = folder / META
        if not path.is_file():
            raise IndexNotFoundError(f"{folder}: no index here (no {META}); build one with "
                                     f"`hystar index DIR --out {folder}`")
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as error:
            raise CorruptIndexError(folder, f"{META}: {error}") from None
        if isinstance(data.get("format"), int) and data["format"] > FORMAT_VERSION:
            raise ValueError(f"{folder} has index format {data['format']}; this hystar reads up to "
                             f"{FORMAT_VERSION}: upgrade hystar or rebuild the index")
        known = {f.name for f in fields(cls)}
        try:
            meta = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as error:
            raise CorruptIndexError(folder, f"{META}: {error}") from None
        if not (isinstance(meta.generation, str) and GENERATION_NAME.fullmatch(meta.generation)
                and isinstance(meta.dim, int) and isinstance(meta.encoder, dict)):
            raise CorruptIndexError(folder, f"{META}: fields of the wrong kind")
        return meta


def versions() -> dict[str, str]:
    import torch

    return {"hystar": __version__, "faiss": faiss.__version__, "numpy": np.__version__,
            "torch": torch.__version__, "python": platform.python_version()}


SEARCH_HINT = "search with the encoder and adapter it was built with (--encoder, --adapter), or rebuild it"
BUILD_HINT = "pass the encoder and adapter it was built with, --rebuild to re-embed all, or a new --out"


def check_compatible(folder: Path, built: EncoderIdentity, query: EncoderIdentity, query_only: bool = False,
                     hint: str = SEARCH_HINT) -> None:
    """Refuse vectors from another encoder or adapter. With `query_only` (search --no-adapt) a base-encoder
    query may search an adapted gallery: the adapter is a residual on the same embedding space."""
    same_base = query.fingerprint == built.fingerprint
    same_adapter = query.adapter_fingerprint == built.adapter_fingerprint
    if same_base and (same_adapter or (query_only and query.adapter_fingerprint is None)):
        return
    raise IndexMismatchError(f"{folder} was built with {built.describe()}, not {query.describe()}: "
                             f"their vectors are not comparable; {hint}")


# -------------------------------------------------------------------------------- search

class Reranker(Protocol):
    def rerank(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores (n,) for candidate vectors (n, d) given one query vector (d,); higher is better."""


def load_reranker(name: str, encoder_fingerprint: str) -> Reranker:
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


def _top(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")[:k]
    out_scores = np.full(k, -np.inf, np.float32)
    out_rows = np.full(k, -1, np.int64)
    out_scores[:len(order)], out_rows[:len(order)] = scores[order], rows[order]
    return out_scores, out_rows


class RowFile:
    """Rows of a 2-d .npy file, read with pread. Scattered rows read through a memory map map their neighbours
    too (the kernel's fault-around): a gallery's vectors would creep into every searcher's RSS."""

    def __init__(self, path: str | os.PathLike):
        self._file = open(path, "rb")  # lives as long as the searcher
        version = np.lib.format.read_magic(self._file)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, self.dtype = read_header(self._file)
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
                self._searcher, self._gpu_resources = _to_gpu(built_kind, index, vectors)
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

    def search(self, queries: np.ndarray, k: int = 10, reranker: Reranker | None = None,
               candidates: int = 100) -> SearchResult:
        """Top-k rows by inner product for each query (q, d) or (d,). With a `reranker`, the best `candidates`
        are re-scored by it and its scores are returned."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise ValueError(f"query vectors have dimension {queries.shape[1]}; the index holds {self.dim}")
        k = min(k, len(self))
        if k <= 0:
            empty = np.zeros((len(queries), 0))
            return SearchResult(empty.astype(np.float32), empty.astype(np.int64))
        want = min(len(self), max(k, candidates)) if reranker is not None else k
        fetch = min(len(self), max(want, int(self.params.get("refine", 0)))) if self.approximate else want
        scores, rows = self._searcher.search(np.ascontiguousarray(queries), fetch)
        if self.approximate:
            scores, rows = self._rescore(queries, rows, want, self._exact_scores)
        if reranker is not None:
            rerank = lambda q, r: np.asarray(reranker.rerank(q, self.rows(r)), np.float32)
            scores, rows = self._rescore(queries, rows[:, :want], k, rerank)
        return SearchResult(scores[:, :k].astype(np.float32), rows[:, :k].astype(np.int64))

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
            out_scores[i], out_rows[i] = _top(scores, valid, keep)
        return out_scores, out_rows


class GalleryIndex:
    """A committed index, read-only: vectors memory-mapped, FAISS index in memory (on a GPU when present)."""

    def __init__(self, folder: Path, meta: IndexMeta, entries: list[Entry], skipped: list[Skipped],
                 vectors: np.ndarray, index: faiss.Index, gpu: bool | None = None):
        self.folder, self.meta, self.entries, self.skipped = folder, meta, entries, skipped
        self.vectors, self.index = vectors, index
        self.searcher = VectorSearch(vectors, index, meta.built_kind, meta.kind_params, gpu,
                                     row_file=folder / meta.generation / VECTORS)

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
        entries, vectors, skipped = read_generation(folder, meta)
        try:
            index = faiss.read_index(str(folder / meta.generation / FAISS_INDEX))
        except RuntimeError as error:
            raise CorruptIndexError(folder, f"{FAISS_INDEX}: {error}") from None
        if index.ntotal != len(entries) or index.d != meta.dim:
            raise CorruptIndexError(folder, f"{len(entries)} manifest rows but {index.ntotal} indexed vectors of "
                                            f"dimension {index.d}")
        return cls(folder, meta, entries, skipped, vectors, index, gpu)

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

    def search(self, queries: np.ndarray, k: int = 10, reranker: Reranker | None = None,
               candidates: int = 100) -> SearchResult:
        """See `VectorSearch.search`; rows index `entries` (and `vectors`)."""
        return self.searcher.search(queries, k, reranker, candidates)

    def hits(self, result: SearchResult, query: int = 0) -> list[Hit]:
        pairs = zip(result.scores[query], result.rows[query], strict=True)
        return [Hit(rank + 1, float(score), int(row), self.path(int(row)), self.entries[int(row)].path)
                for rank, (score, row) in enumerate(pairs) if row >= 0]


def _open_vectors(path: Path) -> np.ndarray:
    vectors = np.load(path, mmap_mode="r")
    if vectors.ndim != 2:
        raise RuntimeError(f"{path}: expected a 2-d array, found shape {vectors.shape}")
    return vectors


def _faiss_readable(path: Path, count: int, dim: int) -> bool:
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except RuntimeError:
        return False
    return index.ntotal == count and index.d == dim


def read_generation(folder: Path, meta: IndexMeta) -> tuple[list[Entry], np.ndarray, list[Skipped]]:
    """The committed rows of an index: manifest, memory-mapped vectors, skipped files; `CorruptIndexError` when
    they are missing, unreadable or disagree with each other or with meta.json."""
    generation = folder / meta.generation
    missing = [name for name in (MANIFEST, SKIPPED, VECTORS) if not (generation / name).is_file()]
    if missing:
        raise CorruptIndexError(folder, f"{meta.generation}/{missing[0]} is missing")
    current = MANIFEST
    try:
        entries = _read_jsonl(generation / MANIFEST, Entry)
        current = SKIPPED
        skipped = _read_jsonl(generation / SKIPPED, Skipped)
        current = VECTORS
        vectors = _open_vectors(generation / VECTORS)
    except (OSError, ValueError, TypeError, EOFError, RuntimeError, UnicodeDecodeError) as error:
        raise CorruptIndexError(folder, f"{meta.generation}/{current}: {error}") from None
    if len(vectors) != len(entries) or vectors.shape[1] != meta.dim:
        raise CorruptIndexError(folder, f"{len(entries)} manifest rows but {len(vectors)} vectors of dimension "
                                        f"{vectors.shape[1]} (meta.json: {meta.dim})")
    if (len(entries), len(skipped)) != (meta.count, meta.skipped):  # e.g. rows cut off at a line's end
        raise CorruptIndexError(folder, f"{meta.generation} holds {len(entries)} images and {len(skipped)} skipped "
                                        f"files; meta.json says {meta.count} and {meta.skipped}")
    return entries, vectors, skipped


# -------------------------------------------------------------------------------- building

@dataclass(frozen=True)
class BuildConfig:
    kind: KindConfig = field(default_factory=KindConfig)
    batch_size: int = 32
    chunk_size: int = 256        # images per checkpoint: a kill loses at most this much work
    rebuild: bool = False        # forget the existing index (and its encoder) and embed everything again
    progress: bool = True
    prefetch: int = 64           # images decoded ahead, in a thread, while the encoder runs


@dataclass
class BuildReport:
    folder: Path
    root: Path
    count: int = 0           # images in the index after the run
    added: int = 0           # compared with the index before the run
    changed: int = 0
    removed: int = 0
    embedded: int = 0        # images that went through the encoder in this run
    reused: int = 0          # new paths whose content was already embedded (touched, copied, moved files)
    resumed: int = 0         # rows taken over from the checkpoints of an interrupted run
    skipped: list[Skipped] = field(default_factory=list)
    committed: bool = False  # False: the index was already up to date
    seconds: float = 0.0

    def summary(self) -> str:
        head = (f"{self.folder}: {self.count} images indexed" if self.committed
                else f"{self.folder}: up to date, {self.count} images")
        details = [f"{self.added} added", f"{self.changed} changed", f"{self.removed} removed",
                   f"{self.embedded} embedded"]
        if self.reused:
            details.append(f"{self.reused} re-used by content")
        if self.resumed:
            details.append(f"{self.resumed} resumed from an interrupted run")
        line = f"{head} ({', '.join(details)}) in {self.seconds:.1f} s"
        if self.skipped:
            line += f"; {len(self.skipped)} unreadable files skipped (listed in {self.folder / REPORT})"
        return line

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(folder=str(self.folder), root=str(self.root),
                    skipped=[{"path": s.path, "reason": s.reason} for s in self.skipped])
        return data


@dataclass(frozen=True)
class _Ref:
    entry: Entry
    source: int   # index into _Known.sources
    row: int


class _Known:
    """Every row a run can take without embedding: the committed generation, then pending chunks in order.
    Later rows for a path replace earlier ones: a path's latest verdict (embedded or skipped) wins."""

    def __init__(self) -> None:
        self.sources: list[np.ndarray] = []
        self.rows: dict[str, _Ref] = {}
        self.bad: dict[str, Skipped] = {}
        self.by_hash: dict[str, _Ref] = {}

    def absorb(self, entries: Sequence[Entry], vectors: np.ndarray, skipped: Sequence[Skipped]) -> None:
        source = len(self.sources)
        self.sources.append(vectors)
        for row, entry in enumerate(entries):
            ref = _Ref(entry, source, row)
            self.rows[entry.path] = self.by_hash[entry.sha1] = ref
            self.bad.pop(entry.path, None)
        for item in skipped:
            self.bad[item.path] = item
            self.rows.pop(item.path, None)

    def vector(self, ref: _Ref) -> np.ndarray:
        return self.sources[ref.source][ref.row]

    def current(self, stat: FileStat) -> _Ref | None:
        ref = self.rows.get(stat.path)
        return ref if ref is not None and ref.entry.same_stat(stat) else None

    def still_bad(self, stat: FileStat) -> Skipped | None:
        item = self.bad.get(stat.path)
        return item if item is not None and item.same_stat(stat) else None


class _Prefetcher:
    """Decodes and preprocesses the images of a list, in order, in a background thread, so that this work
    overlaps the encoder's forward pass."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Image.Image], Any], ahead: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(paths), preprocess), daemon=True)
        self._thread.start()

    def _run(self, paths: list[Path], preprocess: Callable[[Image.Image], Any]) -> None:
        for path in paths:
            try:
                item = preprocess(open_image(path))
            except Exception as error:  # handed over in order; embed_images reports or raises it
                item = error
            while not self._stop.is_set():
                try:
                    self._queue.put((path, item), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return

    def __call__(self, path: Path) -> Any:
        expected, item = self._queue.get()
        if expected != path:
            raise RuntimeError(f"prefetcher out of order: asked for {path}, decoded {expected}")
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Preprocessed:
    """The encoder as `embed_images` sees it when the prefetcher has already run its preprocessing."""

    def __init__(self, encoder: Encoder):
        self._encoder = encoder

    @staticmethod
    def preprocess(pixels: Any) -> Any:
        return pixels

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


def embed_files(encoder: Encoder, paths: Sequence[Path], batch_size: int, prefetch: int,
                on_batch: Callable[[ImageBatchResult], None] | None = None) -> ImageBatchResult:
    """`embed_images` over files; with `prefetch` > 0, images are decoded and preprocessed in a thread."""
    if prefetch <= 0:
        return embed_images(encoder, paths, batch_size, progress=False, on_batch=on_batch)
    loader = _Prefetcher(paths, encoder.preprocess, prefetch)
    try:
        return embed_images(_Preprocessed(encoder), paths, batch_size, progress=False,  # type: ignore[arg-type]
                            loader=loader, on_batch=on_batch)
    finally:
        loader.close()


class _Pending:
    """Checkpoints of the current run, each an atomically renamed folder tagged with who wrote it."""

    def __init__(self, folder: Path, owner: dict[str, Any]):
        self.folder, self.owner = folder, owner
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".chunk-*"):
            shutil.rmtree(stale, ignore_errors=True)
        existing = self.chunks()
        self.next_number = int(existing[-1].name.split("-")[1]) + 1 if existing else 0

    def chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*"))

    def load(self, known: _Known, log: Callable[[str], None]) -> int:
        """Absorb the chunks this encoder wrote for this folder, drop others; returns the rows taken over."""
        rows = 0
        for chunk in self.chunks():
            try:
                if json.loads((chunk / "owner.json").read_text()) != self.owner:
                    raise ValueError("written by another encoder, adapter or folder")
                entries = _read_jsonl(chunk / MANIFEST, Entry)
                vectors = np.load(chunk / VECTORS, mmap_mode="r")
                if len(vectors) != len(entries):
                    raise ValueError("rows and vectors disagree")
            except (OSError, ValueError, TypeError, KeyError) as error:
                log(f"dropping checkpoint {chunk.name}: {error}")
                shutil.rmtree(chunk, ignore_errors=True)
                continue
            known.absorb(entries, vectors, _read_jsonl(chunk / SKIPPED, Skipped))
            rows += len(entries)
        return rows

    def write(self, entries: Sequence[Entry], vectors: np.ndarray, skipped: Sequence[Skipped]) -> np.ndarray:
        """Checkpoint a chunk; returns its vectors, memory-mapped from the checkpoint."""
        number, self.next_number = self.next_number, self.next_number + 1
        tmp = self.folder / f".chunk-{number:06d}"
        tmp.mkdir()
        np.save(tmp / VECTORS, vectors)
        with open(tmp / VECTORS, "rb+") as handle:
            os.fsync(handle.fileno())
        _write_jsonl(tmp / MANIFEST, entries)
        _write_jsonl(tmp / SKIPPED, skipped)
        _fsync_write(tmp / "owner.json", json.dumps(self.owner).encode())
        final = self.folder / f"chunk-{number:06d}"
        os.replace(tmp, final)
        return np.load(final / VECTORS, mmap_mode="r")

    def clear(self) -> None:
        for chunk in self.chunks():
            shutil.rmtree(chunk, ignore_errors=True)


def _reason(stat: FileStat, message: str) -> str:
    """An `ImageError` message without the file name it starts with (the path is recorded beside it)."""
    prefix = f"{stat.path.rsplit('/', 1)[-1]}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class _Builder:
    def __init__(self, root: Path, out: Path, encoder: Encoder, identity: EncoderIdentity,
                 config: BuildConfig):
        self.root, self.out, self.encoder, self.identity, self.config = root, out, encoder, identity, config
        self.log = _stderr if config.progress else (lambda message: None)
        self.dim = int(encoder.embed_dim)
        self.known = _Known()
        self.report = BuildReport(out, root)
        self.resumed_sources: set[int] = set()

    def run(self, files: Sequence[str | os.PathLike] | None) -> BuildReport:
        start = time.perf_counter()
        if self.config.rebuild:
            self._forget_all()
        previous = self._load_committed()
        owner = {"encoder": self.identity.fingerprint, "adapter": self.identity.adapter_fingerprint,
                 "root": str(self.root), "dim": self.dim}
        pending = _Pending(self.out / PENDING, owner)
        first_pending = len(self.known.sources)
        resumable = pending.load(self.known, self.log)
        self.resumed_sources = set(range(first_pending, len(self.known.sources)))
        scan = scan_folder(self.root, files)
        todo = [s for s in scan if self.known.current(s) is None and self.known.still_bad(s) is None]
        if resumable:
            self.log(f"resuming: {resumable} images embedded by an interrupted run")
        if todo:
            self._embed(todo, pending)
        self._finish(previous, pending, scan)
        self.report.seconds = time.perf_counter() - start
        return self.report

    def _forget_all(self) -> None:
        for path in [self.out / META, self.out / REPORT]:
            path.unlink(missing_ok=True)
        for folder in [*self.out.glob("gen-*"), self.out / PENDING]:
            shutil.rmtree(folder, ignore_errors=True)

    def _load_committed(self) -> IndexMeta | None:
        if not (self.out / META).is_file():
            ours = {LOCK, PENDING, REPORT, f".{META}.tmp", f".{REPORT}.tmp"}
            foreign = [p.name for p in self.out.iterdir()
                       if p.name not in ours and not p.name.startswith("gen-")]
            if foreign:
                raise ValueError(f"{self.out} is not empty and holds no index (found {foreign[0]!r}); "
                                 f"choose an empty or new --out")
            return None
        meta = IndexMeta.read(self.out)
        check_compatible(self.out, meta.identity, self.identity, hint=BUILD_HINT)
        self.known.absorb(*read_generation(self.out, meta))
        if meta.root != str(self.root):
            self.log(f"{self.out} indexed {meta.root} before; now indexing {self.root} (unchanged content is "
                     f"re-used by hash)")
        return meta

    def _embed(self, todo: list[FileStat], pending: _Pending) -> None:
        bar = tqdm(total=len(todo), desc=f"indexing {self.root.name or self.root}", unit="img",
                   disable=not self.config.progress, file=sys.stderr)
        for start in range(0, len(todo), self.config.chunk_size):
            chunk = todo[start:start + self.config.chunk_size]
            entries, vectors, skipped = self._embed_chunk(chunk, bar)
            self.known.absorb(entries, pending.write(entries, vectors, skipped), skipped)
        bar.close()

    def _embed_chunk(self, chunk: list[FileStat], bar: tqdm) -> tuple[list[Entry], np.ndarray, list[Skipped]]:
        entries: list[Entry] = []
        vectors: list[np.ndarray] = []
        skipped: list[Skipped] = []
        fresh: dict[str, list[FileStat]] = {}  # sha1 -> files with that content that need the encoder
        for stat in chunk:
            try:
                sha1 = file_sha1(self.root / stat.path)
            except OSError as error:
                skipped.append(Skipped(**asdict(stat), reason=f"cannot read ({error.strerror})"))
                bar.update(1)
                continue
            ref = self.known.by_hash.get(sha1)
            if ref is not None:
                entries.append(Entry(**asdict(stat), sha1=sha1))
                vectors.append(self.known.vector(ref))
                self.report.reused += 1
                bar.update(1)
            else:
                fresh.setdefault(sha1, []).append(stat)
        hashes = list(fresh)
        paths = [self.root / fresh[h][0].path for h in hashes]
        result = embed_files(self.encoder, paths, self.config.batch_size, self.config.prefetch,
                             on_batch=lambda batch: bar.update(sum(len(fresh[hashes[i]]) for i in batch.ok)))
        for i, vector in zip(result.ok, result.vectors, strict=True):
            for stat in fresh[hashes[i]]:
                entries.append(Entry(**asdict(stat), sha1=hashes[i]))
                vectors.append(vector)
        for i, message in result.errors.items():
            decoded = fresh[hashes[i]][0]  # the file that was read; the others have the same bytes
            skipped.extend(Skipped(**asdict(s), reason=_reason(decoded, message)) for s in fresh[hashes[i]])
            bar.update(len(fresh[hashes[i]]))
        self.report.embedded += len(result.ok)
        stacked = np.stack(vectors).astype(np.float16) if vectors else np.zeros((0, self.dim), np.float16)
        return entries, stacked, skipped

    def _finish(self, previous: IndexMeta | None, pending: _Pending, scan: list[FileStat]) -> None:
        refs = [ref for ref in map(self.known.current, scan) if ref is not None]
        skipped = [item for item in map(self.known.still_bad, scan) if item is not None]
        before = self._previous_entries(previous)
        after = {ref.entry.path: ref.entry.sha1 for ref in refs}
        report = self.report
        report.count, report.skipped = len(refs), skipped
        report.added = sum(path not in before for path in after)
        report.changed = sum(path in before and before[path] != sha1 for path, sha1 in after.items())
        report.removed = sum(path not in after for path in before)
        report.resumed = sum(ref.source in self.resumed_sources for ref in refs)
        if previous is None or self._differs(previous, refs, skipped):
            self._commit(previous, refs, skipped)
            report.committed = True
        pending.clear()
        self._clean_generations()
        atomic_write_json(self.out / REPORT, report.to_json())

    def _previous_entries(self, previous: IndexMeta | None) -> dict[str, str]:
        if previous is None:
            return {}
        return {e.path: e.sha1 for e in _read_jsonl(self.out / previous.generation / MANIFEST, Entry)}

    def _differs(self, previous: IndexMeta, refs: list[_Ref], skipped: list[Skipped]) -> bool:
        generation = self.out / previous.generation
        return (previous.root != str(self.root)
                or previous.kind_config != self.config.kind.to_json()
                or [r.entry for r in refs] != _read_jsonl(generation / MANIFEST, Entry)
                or skipped != _read_jsonl(generation / SKIPPED, Skipped)
                or not _faiss_readable(generation / FAISS_INDEX, len(refs), self.dim))

    def _commit(self, previous: IndexMeta | None, refs: list[_Ref], skipped: list[Skipped]) -> None:
        """A new generation; its FAISS index is built from the raw vectors, so a damaged one heals here."""
        number = int(previous.generation.split("-")[1]) + 1 if previous else 0
        name = f"gen-{number:06d}"
        generation = self.out / name
        shutil.rmtree(generation, ignore_errors=True)  # left by a run killed while committing
        generation.mkdir()
        vectors = self._write_vectors(generation / VECTORS, refs)
        _write_jsonl(generation / MANIFEST, [r.entry for r in refs])
        _write_jsonl(generation / SKIPPED, skipped)
        trained = self._previous_trained(previous)
        if self.config.progress and self.config.kind.kind != "flat" and len(refs) >= 10_000:
            self.log(f"building the {self.config.kind.kind} index over {len(refs)} vectors")
        built = build_faiss(vectors, self.config.kind, trained)
        faiss.write_index(built.index, str(generation / FAISS_INDEX))
        if built.trained is not None:
            faiss.write_index(built.trained, str(generation / TRAINED))
        self._write_meta(previous, name, built, len(refs), len(skipped))

    def _write_vectors(self, path: Path, refs: list[_Ref]) -> np.ndarray:
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(refs), self.dim))
        by_source: dict[int, list[tuple[int, int]]] = {}
        for position, ref in enumerate(refs):
            by_source.setdefault(ref.source, []).append((position, ref.row))
        for source, pairs in by_source.items():
            pairs_array = np.asarray(pairs, np.int64)
            for start in range(0, len(pairs_array), ADD_BLOCK):
                block = pairs_array[start:start + ADD_BLOCK]
                out[block[:, 0]] = self.known.sources[source][block[:, 1]]
        out.flush()
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        return out

    def _previous_trained(self, previous: IndexMeta | None) -> faiss.Index | None:
        if previous is None or previous.kind_config != self.config.kind.to_json():
            return None
        path = self.out / previous.generation / TRAINED
        return faiss.read_index(str(path)) if path.is_file() else None

    def _write_meta(self, previous: IndexMeta | None, generation: str, built: BuiltIndex, count: int,
                    skipped: int) -> None:
        identity = self.identity
        meta = IndexMeta(
            generation=generation, root=str(self.root),
            encoder={"spec": identity.spec, "name": identity.name, "fingerprint": identity.fingerprint},
            adapter=({"path": identity.adapter_path, "fingerprint": identity.adapter_fingerprint}
                     if identity.adapter_fingerprint else None),
            dim=self.dim, count=count, skipped=skipped, kind=self.config.kind.kind, built_kind=built.kind,
            kind_config=self.config.kind.to_json(), kind_params=built.params, versions=versions(),
            created=previous.created if previous else _now(), updated=_now())
        atomic_write_json(self.out / META, asdict(meta))  # the commit point

    def _clean_generations(self) -> None:
        current = IndexMeta.read(self.out).generation if (self.out / META).is_file() else None
        for folder in self.out.glob("gen-*"):
            if folder.name != current:
                shutil.rmtree(folder, ignore_errors=True)


def build_index(root: str | os.PathLike, out: str | os.PathLike, encoder: Encoder,
                identity: EncoderIdentity | None = None, config: BuildConfig | None = None,
                files: Sequence[str | os.PathLike] | None = None) -> BuildReport:
    """Index the images under `root` (or just `files`, which must lie under it) into the folder `out`: add new
    and changed files, drop deleted ones, embed nothing else. Safe to kill and re-run at any moment."""
    root, out = Path(os.path.abspath(root)), Path(os.path.abspath(out))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        identity = identity or EncoderIdentity.of(encoder)
        return _Builder(root, out, encoder, identity, config or BuildConfig()).run(files)


def read_kind_config(folder: str | os.PathLike) -> KindConfig | None:
    """The kind an existing index was asked to be, so that a re-run keeps it."""
    try:
        return KindConfig.from_json(IndexMeta.read(Path(folder)).kind_config)
    except IndexNotFoundError:
        return None
