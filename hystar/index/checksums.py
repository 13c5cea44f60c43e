"""Checksums of a generation's files, kept in its commit record (`IndexMeta.checksums`), and checking them.

crc32 (zlib) of each file whole, except vectors.npy: its header and each block of `block_rows` rows apart, so that a
mismatch names the rows it damaged, `hystar index` re-embeds just those, and a big gallery's vectors are checked after
the app is up. Recorded as:

    "checksums": {"algorithm": "crc32",
                  "files": {"manifest.jsonl": {"size": 1234, "crc32": "89abcdef"}, ...},   # all but the vectors
                  "vectors": {"size": 4736, "offset": 128, "row_bytes": 768, "block_rows": 1024,
                              "header": "01234567", "blocks": ["89abcdef", ...]}}

`GenerationCheck` checks a committed generation: `split` says what opening an index checks (the manifests, parsed
anyway, and every file up to `OPEN_CHECK_BYTES`) and what is left for later (`GalleryIndex.verify`, in the
background in the app); `hystar index --verify` checks everything (`hystar.index.verify`).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .format import FAISS_INDEX, MANIFEST, SKIPPED, TRAINED, VECTORS, CorruptIndexError, IndexMeta, read_npy_header

ALGORITHM = "crc32"
BLOCK_ROWS = 1024                # rows per vectors block: 768 KiB of 384-d float16, re-embedded together when damaged
OPEN_CHECK_BYTES = 64 << 20      # files up to this size are checked when an index is opened (about 50 ms each)
READ_BYTES = 8 << 20
FILES = (MANIFEST, SKIPPED, FAISS_INDEX, TRAINED)   # checksummed whole, when present


def crc32(path: Path, start: int = 0, length: int | None = None) -> str:
    """crc32 of `length` bytes of `path` from `start` (None: to the end), as 8 hex digits."""
    crc, left = 0, length
    with open(path, "rb") as handle:
        handle.seek(start)
        while left is None or left > 0:
            data = handle.read(READ_BYTES if left is None else min(READ_BYTES, left))
            if not data:
                break
            crc = zlib.crc32(data, crc)
            left = None if left is None else left - len(data)
    return f"{crc:08x}"


@dataclass(frozen=True)
class FileSum:
    size: int
    crc32: str

    @classmethod
    def of(cls, path: Path) -> FileSum:
        return cls(path.stat().st_size, crc32(path))


@dataclass(frozen=True)
class VectorSums:
    size: int                    # of the whole file
    offset: int                  # where row 0 starts, after the .npy header
    row_bytes: int
    block_rows: int
    header: str                  # crc32 of the bytes before `offset`
    blocks: list[str]            # crc32 of rows [i * block_rows, (i + 1) * block_rows)

    @property
    def block_bytes(self) -> int:
        return self.block_rows * self.row_bytes

    @property
    def rows(self) -> int:
        return (self.size - self.offset) // self.row_bytes if self.row_bytes else 0

    def block_range(self, block: int) -> range:
        return range(block * self.block_rows, min((block + 1) * self.block_rows, self.rows))

    @classmethod
    def of(cls, path: Path, block_rows: int = BLOCK_ROWS) -> VectorSums:
        with open(path, "rb") as handle:
            shape, dtype, _ = read_npy_header(handle)
            offset = handle.tell()
        size, row_bytes = path.stat().st_size, int(shape[1]) * dtype.itemsize
        step = block_rows * row_bytes
        blocks = [crc32(path, start, step) for start in range(offset, size, step)] if step else []
        return cls(size, offset, row_bytes, block_rows, crc32(path, 0, offset), blocks)


@dataclass(frozen=True)
class Checksums:
    files: dict[str, FileSum]
    vectors: VectorSums
    algorithm: str = ALGORITHM

    @classmethod
    def of(cls, generation: Path, block_rows: int = BLOCK_ROWS) -> Checksums:
        """The checksums of a generation's files as they are on disk now."""
        files = {name: FileSum.of(generation / name) for name in FILES if (generation / name).is_file()}
        return cls(files, VectorSums.of(generation / VECTORS, block_rows))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checksums:
        """Raises ValueError, TypeError or KeyError on a record of the wrong shape."""
        if data.get("algorithm") != ALGORITHM:
            raise ValueError(f"unknown checksum algorithm {data.get('algorithm')!r}")
        vectors = VectorSums(**data["vectors"])
        if vectors.row_bytes <= 0 or vectors.block_rows <= 0 or not isinstance(vectors.blocks, list):
            raise ValueError("vectors: fields of the wrong kind")
        return cls({name: FileSum(**value) for name, value in data["files"].items()}, vectors)


@dataclass
class Damage:
    """What a check found: files that differ from their record (name -> what is wrong), in the order checked, and
    the vectors blocks that do. `repairable`: the manifest and the vectors' layout are sound, so `hystar index` can
    re-embed the damaged blocks' rows and rebuild the FAISS files."""
    generation: str
    files: dict[str, str] = field(default_factory=dict)
    blocks: list[int] = field(default_factory=list)
    vectors: VectorSums | None = None

    def __bool__(self) -> bool:
        return bool(self.files or self.blocks)

    @property
    def repairable(self) -> bool:
        return MANIFEST not in self.files and VECTORS not in self.files

    def rows(self) -> set[int]:
        """The rows of the damaged blocks."""
        return {row for block in self.blocks for row in self.vectors.block_range(block)}

    def first(self) -> str:
        """The first problem, one line, naming the file (and for the vectors the first damaged rows); "" for none."""
        if not self:
            return ""
        if self.files:
            name, problem = next(iter(self.files.items()))
            return f"{self.generation}/{name} {problem}"
        block, rows = self.blocks[0], self.vectors.block_range(self.blocks[0])
        return (f"{self.generation}/{VECTORS}: rows {rows.start}-{rows.stop - 1} (block {block}) do not match their "
                f"checksum")

    def error(self, folder: Path) -> CorruptIndexError:
        return CorruptIndexError(folder, self.first(), self.repairable)


class GenerationCheck:
    """The checks of an index's committed generation against its checksums (none for an index written before them:
    `recorded` is False and every check passes)."""

    def __init__(self, folder: Path, meta: IndexMeta):
        self.folder, self.meta, self.generation = folder, meta, folder / meta.generation
        try:
            self.sums = None if meta.checksums is None else Checksums.from_json(meta.checksums)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise CorruptIndexError(folder, f"meta.json: checksums: {error}") from None

    @property
    def recorded(self) -> bool:
        return self.sums is not None

    def names(self) -> list[str]:
        return [*self.sums.files, VECTORS] if self.sums is not None else []

    def split(self) -> tuple[list[str], list[str]]:
        """(checked when the index is opened, left for later): the manifests, which are parsed anyway, and every
        file up to `OPEN_CHECK_BYTES`; then the rest."""
        now, later = [], []
        for name in self.names():
            size = self.sums.vectors.size if name == VECTORS else self.sums.files[name].size
            (now if name in (MANIFEST, SKIPPED) or size <= OPEN_CHECK_BYTES else later).append(name)
        return now, later

    def survey(self, names: Iterable[str], first_only: bool = False) -> Damage:
        """Check `names` against their record; with `first_only`, stop at the first problem."""
        damage = Damage(self.meta.generation, vectors=self.sums.vectors if self.sums else None)
        for name in names:
            if first_only and damage:
                break
            try:
                if name == VECTORS:
                    self._survey_vectors(damage, first_only)
                    continue
                path, expected = self.generation / name, self.sums.files[name]
                problem = _size_problem(path, expected.size)
                if not problem and crc32(path) != expected.crc32:
                    problem = "does not match its checksum"
            except OSError as error:  # e.g. EIO: a bad sector
                problem = f"cannot be read ({error.strerror or error})"
            if problem:
                damage.files[name] = problem
        return damage

    def require(self, names: Iterable[str]) -> None:
        """Raise `CorruptIndexError` (one line, naming the file and rows) at the first of `names` that differs."""
        damage = self.survey(names, first_only=True)
        if damage:
            raise damage.error(self.folder)

    def _survey_vectors(self, damage: Damage, first_only: bool) -> None:
        path, sums = self.generation / VECTORS, self.sums.vectors
        problem = _size_problem(path, sums.size)
        if not problem and crc32(path, 0, sums.offset) != sums.header:
            problem = "has a header that does not match its checksum"
        if problem:
            damage.files[VECTORS] = problem
            return
        with open(path, "rb") as handle:
            handle.seek(sums.offset)
            for block, expected in enumerate(sums.blocks):
                data = handle.read(sums.block_bytes)
                if f"{zlib.crc32(data):08x}" != expected:
                    damage.blocks.append(block)
                    if first_only:
                        return


def _size_problem(path: Path, size: int) -> str:
    try:
        actual = os.stat(path).st_size
    except FileNotFoundError:
        return "is missing"
    return "" if actual == size else f"is {actual} bytes; its checksum record says {size}"
