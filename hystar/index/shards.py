"""Shards of an indexing run embedded by another engine (`hystar.index.ray_engine`); nothing here knows that engine.

The files to embed, sorted by path, are cut into contiguous shards. Results come back in any order; a shard is
written once its last row is back, as one checkpoint chunk of each index it feeds (`IndexUpdate.write_chunk`:
vectors.npy + manifest.jsonl + skipped.jsonl, one atomic rename). A re-run after a killed driver or a lost worker
takes the written shards over from the index's pending/ folder (`IndexUpdate.start`) and embeds the rest: nothing
twice, nothing lost but the shards in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .build import IndexUpdate
from .format import Entry, FileStat, Skipped

EMBEDDED, REUSED, SKIPPED = "embedded", "reused", "skipped"


@dataclass(frozen=True)
class ShardRow:
    """One file's outcome: embedded (a vector per side), reused (its content is already indexed) or skipped."""

    stat: FileStat
    status: str
    sha1: str = ""
    reason: str = ""
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)


def plan_shards(todo: Sequence[FileStat], size: int) -> list[list[FileStat]]:
    """Contiguous blocks of at most `size` files, in path order: the same work always gives the same shards."""
    if size < 1:
        raise ValueError(f"shard size must be positive, got {size}")
    ordered = sorted(todo, key=lambda s: s.path)
    return [ordered[start:start + size] for start in range(0, len(ordered), size)]


class ShardCollector:
    """Gathers rows by shard and hands out each shard, rows in path order, once all its files are back."""

    def __init__(self, shards: Sequence[Sequence[FileStat]]):
        self._expected = [{s.path for s in shard} for shard in shards]
        self._rows: list[dict[str, ShardRow]] = [{} for _ in shards]
        self.written = 0

    def add(self, shard: int, row: ShardRow) -> list[ShardRow] | None:
        if row.stat.path not in self._expected[shard]:
            raise ValueError(f"{row.stat.path} does not belong to shard {shard}")
        rows = self._rows[shard]
        rows[row.stat.path] = row  # a retried task's repeat replaces, never duplicates
        if len(rows) < len(self._expected[shard]):
            return None
        self._rows[shard], self._expected[shard] = {}, set()
        self.written += 1
        return [rows[path] for path in sorted(rows)]

    def unfinished(self) -> int:
        return sum(bool(expected) for expected in self._expected)


def write_shard(rows: Iterable[ShardRow], updates: Mapping[str, tuple[IndexUpdate, set[str]]], dim: int) -> None:
    """Checkpoint a finished shard into each index it feeds: side -> (its update, the paths it asked for)."""
    rows = list(rows)
    for side, (update, wanted) in updates.items():
        entries: list[Entry] = []
        vectors: list[np.ndarray] = []
        skipped: list[Skipped] = []
        embedded = reused = 0
        for row in (r for r in rows if r.stat.path in wanted):
            if row.status == SKIPPED:
                skipped.append(Skipped(row.stat.path, row.stat.size, row.stat.mtime_ns, row.reason))
                continue
            vector = row.vectors[side] if row.status == EMBEDDED else update.known_vector(row.sha1)
            if vector is None:
                raise RuntimeError(f"{row.stat.path}: content {row.sha1} was to be reused but is not indexed")
            entries.append(Entry(row.stat.path, row.stat.size, row.stat.mtime_ns, row.sha1))
            vectors.append(np.asarray(vector))
            embedded += row.status == EMBEDDED
            reused += row.status == REUSED
        stacked = np.stack(vectors).astype(np.float16) if vectors else np.zeros((0, dim), np.float16)
        update.write_chunk(entries, stacked, skipped, embedded, reused)


def rows_of_batch(batch: Mapping[str, np.ndarray], sides: Sequence[str]) -> Iterator[tuple[int, ShardRow]]:
    """(shard, row) pairs of one result batch: columns path, size, mtime_ns, shard, status, sha1, reason and a
    vector column per side."""
    for i in range(len(batch["path"])):
        status = str(batch["status"][i])
        stat = FileStat(str(batch["path"][i]), int(batch["size"][i]), int(batch["mtime_ns"][i]))
        vectors = {side: batch[side][i] for side in sides} if status == EMBEDDED else {}
        yield int(batch["shard"][i]), ShardRow(stat, status, str(batch["sha1"][i]), str(batch["reason"][i]), vectors)
