"""`hystar index --verify`: every file of an index checked against its checksums, every vectors block included, and
its structure read (rows, vectors and FAISS index agree). An index written before checksums gets them here, once
its structure has been read."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import write_lock
from .checksums import Checksums
from .format import IndexMeta
from .search import GalleryIndex


@dataclass(frozen=True)
class VerifyReport:
    folder: Path
    generation: str
    files: int          # checksummed files, vectors included
    rows: int
    blocks: int         # vectors blocks
    written: bool       # the index had no checksums: they were computed and committed by this run
    seconds: float

    def summary(self) -> str:
        what = (f"{self.files} files, {self.rows} vector rows in {self.blocks} blocks")
        if self.written:
            return (f"{self.folder}: it had no checksums: its structure read, the checksums of {self.generation} "
                    f"written ({what}) in {self.seconds:.1f} s")
        return f"{self.folder}: intact: {self.generation} matches its checksums ({what}) in {self.seconds:.1f} s"

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "generation": self.generation, "files": self.files, "rows": self.rows,
                "blocks": self.blocks, "written": self.written, "seconds": round(self.seconds, 3)}


def verify_index(folder: str | os.PathLike) -> VerifyReport:
    """Check the whole index in `folder`; `CorruptIndexError` (one line, naming the file and the first damaged rows)
    when anything differs. Holds the writer's lock, so an `hystar index` run never changes it meanwhile."""
    folder = Path(os.path.abspath(folder))
    started = time.perf_counter()
    IndexMeta.read(folder)  # no index: say so before locking (which would create the folder's lock file)
    with write_lock(folder):
        meta = IndexMeta.read(folder)
        written = meta.checksums is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no checksums": about to be written
            index = GalleryIndex.load(folder, gpu=False)
        index.verify()
        if written:
            meta.checksums = Checksums.of(folder / meta.generation).to_json()
            meta.write(folder)
    sums = Checksums.from_json(meta.checksums)
    return VerifyReport(folder, meta.generation, len(sums.files) + 1, sums.vectors.rows, len(sums.vectors.blocks),
                        written, time.perf_counter() - started)
