"""Gallery indexes: a folder of images as searchable vectors, built incrementally, safe to kill at any moment.

- `format`: the on-disk format (meta.json, generations, manifests), its errors, reading a committed generation.
- `checksums`: crc32 of every file of a generation (of the vectors per block of rows), recorded in meta.json and
              checked on reading; `verify`: `hystar index --verify`.
- `kinds`:  FAISS kinds (flat, IVF-PQ, HNSW), their parameters, GPU transfer.
- `search`: `GalleryIndex` and `VectorSearch` (candidates, exact re-scoring, an optional re-ranker).
- `build`:  `build_index` (scan, hash, embed with checkpoints, commit a generation); `open_update`, the same
            steps for another embedding engine.
- `ray_engine`, `shards`: `hystar index --engine ray` (optional; imported only by that command, Ray is heavy).

The encoder that embeds (and its identity, checked against meta.json) comes from `hystar.encoder.search`.
"""

from ..encoder.search import EncoderIdentity, load_search_encoder, open_search_encoder
from .build import (
    BuildConfig,
    BuildReport,
    IndexUpdate,
    build_index,
    cannot_read,
    open_update,
    read_kind_config,
    scan_folder,
    skip_reason,
)
from .checksums import Checksums, GenerationCheck
from .format import (
    FAISS_INDEX,
    FORMAT_VERSION,
    MANIFEST,
    META,
    REPORT,
    SKIPPED,
    VECTORS,
    CorruptIndexError,
    Entry,
    FileStat,
    IndexMeta,
    IndexMismatchError,
    IndexNotFoundError,
    Skipped,
    check_compatible,
    read_generation,
)
from .kinds import KINDS, BuiltIndex, KindConfig, build_faiss, default_nlist, default_nprobe, default_pq_m
from .search import RERANKERS, GalleryIndex, Hit, Rescorer, RowFile, SearchResult, VectorSearch, load_named_reranker
from .verify import VerifyReport, verify_index

__all__ = ["BuildConfig", "BuildReport", "BuiltIndex", "Checksums", "CorruptIndexError", "EncoderIdentity", "Entry",
           "FAISS_INDEX", "FORMAT_VERSION", "FileStat", "GalleryIndex", "GenerationCheck", "Hit", "IndexMeta",
           "IndexMismatchError", "IndexNotFoundError", "IndexUpdate", "KINDS", "KindConfig", "MANIFEST", "META",
           "REPORT", "RERANKERS", "Rescorer", "RowFile", "SKIPPED", "SearchResult", "Skipped", "VECTORS",
           "VectorSearch", "VerifyReport", "build_faiss", "build_index", "cannot_read", "check_compatible",
           "default_nlist", "default_nprobe", "default_pq_m", "load_named_reranker", "load_search_encoder",
           "open_search_encoder", "open_update", "read_generation", "read_kind_config", "scan_folder", "skip_reason",
           "verify_index"]
