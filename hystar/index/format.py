"""The on-disk index format: meta.json, generations, manifests; errors; reading a committed generation.

An index folder holds:

    meta.json      the commit record (encoder and adapter fingerprints, dim, metric, kind, count, versions,
                   the current generation, the checksums of its files, a crc32 of itself); replaced atomically,
                   so readers never see a half-written index
    gen-NNNNNN/    one generation: vectors.npy (float16, row i = manifest line i, memory-mappable),
                   manifest.jsonl (relative path, size, mtime_ns, sha1), skipped.jsonl, index.faiss
                   [, trained.faiss: the trained, empty IVF-PQ index that later generations re-use]
    pending/       chunks embedded since the last commit; each chunk-NNNNNN/ appears by one atomic rename
    report.json    the last run's counts and skipped files, for people (never read back)

How a run writes it: `hystar.index.build`; the checksums and how they are checked: `hystar.index.checksums`.
"""

from __future__ import annotations

import json
import platform
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .. import __version__
from ..encoder.search import EncoderIdentity
from ..io import atomic_write_json, fsync_write

FORMAT_VERSION = 1
META, PENDING, REPORT, LOCK = "meta.json", "pending", "report.json", ".lock"
VECTORS, MANIFEST, SKIPPED, FAISS_INDEX, TRAINED = (
    "vectors.npy", "manifest.jsonl", "skipped.jsonl", "index.faiss", "trained.faiss")
METRIC = "inner_product"


class IndexMismatchError(ValueError):
    """An index and an encoder (or adapter) that do not belong together; the message says what to do."""


class IndexNotFoundError(FileNotFoundError):
    """No committed index in a folder."""


class CorruptIndexError(ValueError):
    """An index whose files are damaged (truncated, garbage, inconsistent, not matching their checksums); the
    message says how to rebuild it. `repairable`: a plain `hystar index` run can mend it (the manifest is sound: the
    damaged rows are re-embedded from their images, a damaged FAISS file is rebuilt from the vectors)."""

    def __init__(self, folder: Path, detail: str, repairable: bool = False):
        lines = str(detail).strip().splitlines() or ["unreadable"]
        detail = re.sub(r"Error in .*? at \S+:\d+: (Error: )?", "", lines[0])[:200]  # faiss's C++ location
        super().__init__(f"{folder}: the index is damaged ({detail}); rebuild it with "
                         f"`hystar index DIR --out {folder} --rebuild`")
        self.folder, self.repairable = folder, repairable


GENERATION_NAME = re.compile(r"gen-\d{6}")

def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def write_jsonl(path: Path, records: Sequence[Any]) -> None:
    fsync_write(path, "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records).encode())


def read_jsonl(path: Path, cls: type) -> list:
    if not path.is_file():
        return []
    return [cls(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


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
    checksums: dict[str, Any] | None = None   # `hystar.index.checksums.Checksums`; None: written before them

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
        if "crc32" in data and data.pop("crc32") != _json_crc(data):
            raise CorruptIndexError(folder, f"{META} does not match its checksum")
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

    def write(self, folder: Path) -> None:
        """Replace meta.json atomically (the commit point), with a crc32 of its other fields."""
        data = asdict(self)
        atomic_write_json(folder / META, {**data, "crc32": _json_crc(data)})


def _json_crc(data: dict[str, Any]) -> str:
    return f"{zlib.crc32(json.dumps(data, sort_keys=True).encode()):08x}"


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


def read_npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, Fortran order) of the .npy file open in `handle`, which is left where the rows start."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(handle)
    return shape, dtype, fortran_order


def open_vectors(path: Path) -> np.ndarray:
    vectors = np.load(path, mmap_mode="r")
    if vectors.ndim != 2:
        raise RuntimeError(f"{path}: expected a 2-d array, found shape {vectors.shape}")
    return vectors


def faiss_readable(path: Path, count: int, dim: int) -> bool:
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except RuntimeError:
        return False
    return index.ntotal == count and index.d == dim


def read_generation(folder: Path, meta: IndexMeta, read_skipped: bool = True
                    ) -> tuple[list[Entry], np.ndarray, list[Skipped]]:
    """The committed rows of an index: manifest, memory-mapped vectors, skipped files (none without `read_skipped`:
    a damaged skipped.jsonl, whose files are tried again); `CorruptIndexError` when they are missing, unreadable or
    disagree with each other or with meta.json."""
    generation = folder / meta.generation
    needed = (MANIFEST, SKIPPED, VECTORS) if read_skipped else (MANIFEST, VECTORS)
    missing = [name for name in needed if not (generation / name).is_file()]
    if missing:
        raise CorruptIndexError(folder, f"{meta.generation}/{missing[0]} is missing")
    current = MANIFEST
    try:
        entries = read_jsonl(generation / MANIFEST, Entry)
        current = SKIPPED
        skipped = read_jsonl(generation / SKIPPED, Skipped) if read_skipped else []
        current = VECTORS
        vectors = open_vectors(generation / VECTORS)
    except (OSError, ValueError, TypeError, EOFError, RuntimeError, UnicodeDecodeError) as error:
        raise CorruptIndexError(folder, f"{meta.generation}/{current}: {error}") from None
    if len(vectors) != len(entries) or vectors.shape[1] != meta.dim:
        raise CorruptIndexError(folder, f"{len(entries)} manifest rows but {len(vectors)} vectors of dimension "
                                        f"{vectors.shape[1]} (meta.json: {meta.dim})")
    counted = (len(entries), len(skipped) if read_skipped else meta.skipped)
    if counted != (meta.count, meta.skipped):  # e.g. rows cut off at a line's end
        raise CorruptIndexError(folder, f"{meta.generation} holds {len(entries)} images and {len(skipped)} skipped "
                                        f"files; meta.json says {meta.count} and {meta.skipped}")
    return entries, vectors, skipped


