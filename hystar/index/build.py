"""Building an index incrementally: scan, hash, embed chunk by chunk with checkpoints, commit a generation.

A run scans the folder and keeps every file whose size and mtime match a known row (committed or pending).
Other files are hashed (sha1): known content re-uses its vector (touched, copied and moved files), the rest is
embedded chunk by chunk, each chunk checkpointed. The run ends by writing a new generation, recording the checksums
of its files, and committing it by replacing meta.json. `kill -9` at any moment loses at most the chunk in flight;
a re-run resumes.

A run first checks the committed generation against its checksums and mends what it can: the rows of damaged
vectors blocks are dropped and their images, where still there, embedded again; damaged FAISS files are rebuilt from
the vectors; the files of a damaged skipped.jsonl are tried again. A damaged manifest cannot say which image a row
is: that needs `--rebuild`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from ..embed import embed_files
from ..encoder import Encoder
from ..encoder.search import EncoderIdentity
from ..images import is_image_path
from ..io import atomic_write_json, file_sha1, fsync_write, is_temp_name
from .checksums import BLOCK_ROWS, Checksums, GenerationCheck
from .format import (
    BUILD_HINT,
    FAISS_INDEX,
    LOCK,
    MANIFEST,
    META,
    PENDING,
    REPORT,
    SKIPPED,
    TRAINED,
    VECTORS,
    Entry,
    FileStat,
    IndexMeta,
    IndexNotFoundError,
    Skipped,
    check_compatible,
    faiss_readable,
    now,
    read_generation,
    read_jsonl,
    versions,
    write_jsonl,
)
from .kinds import ADD_BLOCK, BuiltIndex, KindConfig, build_faiss


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
def write_lock(folder: Path) -> Iterator[None]:
    """One writer per index folder; the lock dies with its process, so kill -9 never leaves it stuck."""
    import fcntl

    with open(folder / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{folder} is being written by another `hystar index` run") from None
        yield


@dataclass(frozen=True)
class BuildConfig:
    kind: KindConfig = field(default_factory=KindConfig)
    batch_size: int = 32
    chunk_size: int = 256        # images per checkpoint: a kill loses at most this much work
    rebuild: bool = False        # forget the existing index (and its encoder) and embed everything again
    progress: bool = True
    prefetch: int = 64           # images decoded ahead, in a thread, while the encoder runs
    block_rows: int = BLOCK_ROWS  # vectors rows per checksum: embedded again together when one is damaged


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
    repaired: int = 0        # rows of damaged vectors blocks, embedded again (counted in `embedded` too)
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
        if self.repaired:
            details.append(f"{self.repaired} damaged rows embedded again")
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

    def absorb(self, entries: Sequence[Entry], vectors: np.ndarray, skipped: Sequence[Skipped],
               damaged: set[int] | frozenset[int] = frozenset()) -> None:
        """`damaged`: rows whose vectors cannot be trusted, left out (their files are embedded again)."""
        source = len(self.sources)
        self.sources.append(vectors)
        for row, entry in enumerate(entries):
            if row in damaged:
                continue
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
                entries = read_jsonl(chunk / MANIFEST, Entry)
                vectors = np.load(chunk / VECTORS, mmap_mode="r")
                if len(vectors) != len(entries):
                    raise ValueError("rows and vectors disagree")
            except (OSError, ValueError, TypeError, KeyError) as error:
                log(f"dropping checkpoint {chunk.name}: {error}")
                shutil.rmtree(chunk, ignore_errors=True)
                continue
            known.absorb(entries, vectors, read_jsonl(chunk / SKIPPED, Skipped))
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
        write_jsonl(tmp / MANIFEST, entries)
        write_jsonl(tmp / SKIPPED, skipped)
        fsync_write(tmp / "owner.json", json.dumps(self.owner).encode())
        final = self.folder / f"chunk-{number:06d}"
        os.replace(tmp, final)
        return np.load(final / VECTORS, mmap_mode="r")

    def clear(self) -> None:
        for chunk in self.chunks():
            shutil.rmtree(chunk, ignore_errors=True)


def skip_reason(stat: FileStat, message: str) -> str:
    """An `ImageError` message without the file name it starts with (the path is recorded beside it)."""
    prefix = f"{stat.path.rsplit('/', 1)[-1]}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def cannot_read(error: OSError) -> str:
    """The skip reason of a file that could not even be read (for its hash)."""
    return f"cannot read ({error.strerror})"


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class IndexUpdate:
    """One run on one index folder: `start` (known rows and the files to embed), `write_chunk` (checkpoints),
    `finish` (merge and commit). `run` embeds here; another engine (`hystar.index.ray_engine`) calls the three steps."""

    def __init__(self, root: Path, out: Path, encoder: Encoder | None, identity: EncoderIdentity,
                 config: BuildConfig, dim: int | None = None):
        self.root, self.out, self.encoder, self.identity, self.config = root, out, encoder, identity, config
        self.log = _stderr if config.progress else (lambda message: None)
        self.dim = int(dim if dim is not None else encoder.embed_dim)
        self.known = _Known()
        self.report = BuildReport(out, root)
        self.resumed_sources: set[int] = set()
        self.damaged: set[str] = set()   # files of the committed generation that differ from their checksums
        self.damaged_paths: set[str] = set()

    def run(self, files: Sequence[str | os.PathLike] | None) -> BuildReport:
        todo = self.start(files)
        if todo:
            self._embed(todo, self.pending)
        return self.finish()

    def start(self, files: Sequence[str | os.PathLike] | None) -> list[FileStat]:
        """Load the committed rows and the checkpoints of an interrupted run; the files that still need work."""
        self.started = time.perf_counter()
        if self.config.rebuild:
            self._forget_all()
        self.previous = self._load_committed()
        owner = {"encoder": self.identity.fingerprint, "adapter": self.identity.adapter_fingerprint,
                 "root": str(self.root), "dim": self.dim}
        self.pending = _Pending(self.out / PENDING, owner)
        first_pending = len(self.known.sources)
        resumable = self.pending.load(self.known, self.log)
        self.resumed_sources = set(range(first_pending, len(self.known.sources)))
        self.scan = scan_folder(self.root, files)
        if resumable:
            self.log(f"resuming: {resumable} images embedded by an interrupted run")
        return [s for s in self.scan if self.known.current(s) is None and self.known.still_bad(s) is None]

    def known_hashes(self) -> set[str]:
        """The content (sha1) of every row this run can take without embedding."""
        return set(self.known.by_hash)

    def known_vector(self, sha1: str) -> np.ndarray | None:
        """The stored vector of content already embedded (committed or checkpointed), if any."""
        ref = self.known.by_hash.get(sha1)
        return None if ref is None else self.known.vector(ref)

    def write_chunk(self, entries: Sequence[Entry], vectors: np.ndarray, skipped: Sequence[Skipped],
                    embedded: int, reused: int = 0) -> None:
        """Checkpoint rows embedded by another engine; `embedded` and `reused` count towards the report."""
        self.known.absorb(entries, self.pending.write(entries, vectors, skipped), skipped)
        self.report.embedded += embedded
        self.report.reused += reused

    def finish(self) -> BuildReport:
        """Merge committed rows and checkpoints into a new generation (when anything changed) and commit it."""
        self._finish(self.previous, self.pending, self.scan)
        self.report.seconds = time.perf_counter() - self.started
        return self.report

    def _forget_all(self) -> None:
        for path in [self.out / META, self.out / REPORT]:
            path.unlink(missing_ok=True)
        for folder in [*self.out.glob("gen-*"), self.out / PENDING]:
            shutil.rmtree(folder, ignore_errors=True)

    def _load_committed(self) -> IndexMeta | None:
        if not (self.out / META).is_file():
            ours = {LOCK, PENDING, REPORT}
            foreign = [p.name for p in self.out.iterdir()
                       if p.name not in ours and not is_temp_name(p.name) and not p.name.startswith("gen-")]
            if foreign:
                raise ValueError(f"{self.out} is not empty and holds no index (found {foreign[0]!r}); "
                                 f"choose an empty or new --out")
            return None
        meta = IndexMeta.read(self.out)
        check_compatible(self.out, meta.identity, self.identity, hint=BUILD_HINT)
        check = GenerationCheck(self.out, meta)
        damage = check.survey(check.names())
        if damage and not damage.repairable:
            raise damage.error(self.out)
        entries, vectors, skipped = read_generation(self.out, meta, read_skipped=SKIPPED not in damage.files)
        self.damaged = set(damage.files) | ({VECTORS} if damage.blocks else set())
        rows = damage.rows() if damage.blocks else set()
        self.damaged_paths = {entries[row].path for row in rows}
        if damage:
            rebuilt = sorted(self.damaged - {VECTORS})
            self.log(f"{self.out} is damaged ({damage.first()}): mending it, {len(rows)} rows to embed again"
                     + (f", {' and '.join(rebuilt)} rebuilt" if rebuilt else ""))
        self.known.absorb(entries, vectors, skipped, rows)
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
                skipped.append(Skipped(**asdict(stat), reason=cannot_read(error)))
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
            skipped.extend(Skipped(**asdict(s), reason=skip_reason(decoded, message)) for s in fresh[hashes[i]])
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
        report.repaired = sum(ref.entry.path in self.damaged_paths for ref in refs)
        if previous is None or self._differs(previous, refs, skipped):
            self._commit(previous, refs, skipped)
            report.committed = True
        pending.clear()
        self._clean_generations()
        atomic_write_json(self.out / REPORT, report.to_json())

    def _previous_entries(self, previous: IndexMeta | None) -> dict[str, str]:
        if previous is None:
            return {}
        return {e.path: e.sha1 for e in read_jsonl(self.out / previous.generation / MANIFEST, Entry)}

    def _differs(self, previous: IndexMeta, refs: list[_Ref], skipped: list[Skipped]) -> bool:
        generation = self.out / previous.generation
        return (bool(self.damaged) or previous.checksums is None or previous.root != str(self.root)
                or previous.kind_config != self.config.kind.to_json()
                or [r.entry for r in refs] != read_jsonl(generation / MANIFEST, Entry)
                or skipped != read_jsonl(generation / SKIPPED, Skipped)
                or not faiss_readable(generation / FAISS_INDEX, len(refs), self.dim))

    def _commit(self, previous: IndexMeta | None, refs: list[_Ref], skipped: list[Skipped]) -> None:
        """A new generation; its FAISS index is built from the raw vectors, so a damaged one heals here."""
        number = int(previous.generation.split("-")[1]) + 1 if previous else 0
        name = f"gen-{number:06d}"
        generation = self.out / name
        shutil.rmtree(generation, ignore_errors=True)  # left by a run killed while committing
        generation.mkdir()
        vectors = self._write_vectors(generation / VECTORS, refs)
        write_jsonl(generation / MANIFEST, [r.entry for r in refs])
        write_jsonl(generation / SKIPPED, skipped)
        trained = self._previous_trained(previous)
        if self.config.progress and self.config.kind.kind != "flat" and len(refs) >= 10_000:
            self.log(f"building the {self.config.kind.kind} index over {len(refs)} vectors")
        built = build_faiss(vectors, self.config.kind, trained)
        _write_faiss(built.index, generation / FAISS_INDEX)
        if built.trained is not None:
            _write_faiss(built.trained, generation / TRAINED)
        checksums = Checksums.of(generation, self.config.block_rows)  # recorded before the commit point
        self._write_meta(previous, name, built, len(refs), len(skipped), checksums)

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
        if previous is None or previous.kind_config != self.config.kind.to_json() or TRAINED in self.damaged:
            return None
        path = self.out / previous.generation / TRAINED
        return faiss.read_index(str(path)) if path.is_file() else None

    def _write_meta(self, previous: IndexMeta | None, generation: str, built: BuiltIndex, count: int,
                    skipped: int, checksums: Checksums) -> None:
        identity = self.identity
        meta = IndexMeta(
            generation=generation, root=str(self.root),
            encoder={"spec": identity.spec, "name": identity.name, "fingerprint": identity.fingerprint},
            adapter=({"path": identity.adapter_path, "fingerprint": identity.adapter_fingerprint}
                     if identity.adapter_fingerprint else None),
            dim=self.dim, count=count, skipped=skipped, kind=self.config.kind.kind, built_kind=built.kind,
            kind_config=self.config.kind.to_json(), kind_params=built.params, versions=versions(),
            created=previous.created if previous else now(), updated=now(), checksums=checksums.to_json())
        meta.write(self.out)  # the commit point

    def _clean_generations(self) -> None:
        current = IndexMeta.read(self.out).generation if (self.out / META).is_file() else None
        for folder in self.out.glob("gen-*"):
            if folder.name != current:
                shutil.rmtree(folder, ignore_errors=True)


def _write_faiss(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def build_index(root: str | os.PathLike, out: str | os.PathLike, encoder: Encoder,
                identity: EncoderIdentity | None = None, config: BuildConfig | None = None,
                files: Sequence[str | os.PathLike] | None = None) -> BuildReport:
    """Index the images under `root` (or just `files`, which must lie under it) into the folder `out`: add new
    and changed files, drop deleted ones, embed nothing else. Safe to kill and re-run at any moment."""
    root, out = Path(os.path.abspath(root)), Path(os.path.abspath(out))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    with write_lock(out):
        identity = identity or EncoderIdentity.of(encoder)
        return IndexUpdate(root, out, encoder, identity, config or BuildConfig()).run(files)


@contextlib.contextmanager
def open_update(root: str | os.PathLike, out: str | os.PathLike, identity: EncoderIdentity, dim: int,
                config: BuildConfig | None = None) -> Iterator[IndexUpdate]:
    """`build_index` for another embedding engine: `out` locked, the caller runs `start`, `write_chunk`, `finish`."""
    root, out = Path(os.path.abspath(root)), Path(os.path.abspath(out))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    out.mkdir(parents=True, exist_ok=True)
    with write_lock(out):
        yield IndexUpdate(root, out, None, identity, config or BuildConfig(), dim)


def read_kind_config(folder: str | os.PathLike) -> KindConfig | None:
    """The kind an existing index was asked to be, so that a re-run keeps it."""
    try:
        return KindConfig.from_json(IndexMeta.read(Path(folder)).kind_config)
    except IndexNotFoundError:
        return None
