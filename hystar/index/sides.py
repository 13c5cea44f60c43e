"""The base and the adapted index of one folder from one pass: each photo read, hashed and decoded once, the
frozen trunk run once, both embeddings written from its features (`embed_pixel_sides`).

The plan and the merge are the local engine's (`open_update`: diff against each index, checkpoints, commit), the
shards those of the Ray engine (`hystar.index.shards`), so a killed run resumes and a side that is up to date is
never re-embedded. Decoding runs a batch ahead in a thread while torch embeds the batch before it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..embed import embed_pixel_sides
from ..encoder import Encoder
from ..encoder.search import EncoderIdentity
from ..images import ImageError, open_image
from ..io import file_sha1
from .build import BuildConfig, BuildReport, cannot_read, open_update, skip_reason
from .format import FileStat
from .shards import EMBEDDED, REUSED, SKIPPED, ShardRow, plan_shards, write_shard

Progress = Callable[[int, int], None]   # (images done, images to do)


def build_sides(root: str | os.PathLike, targets: Mapping[str, tuple[Path, EncoderIdentity, BuildConfig]],
                encoder: Encoder, files: Sequence[str | os.PathLike] | None = None,
                on_progress: Progress | None = None) -> dict[str, BuildReport]:
    """Index `root` into each target, side ("base", "adapted") -> (index folder, identity, config), in one pass.
    "adapted" needs `encoder` to be the adapted search encoder (its `.base` embeds the base side)."""
    if not targets:
        return {}
    config = next(iter(targets.values()))[2]
    dim = int(encoder.embed_dim)
    with contextlib.ExitStack() as stack:
        updates = {side: stack.enter_context(open_update(root, folder, identity, dim, side_config))
                   for side, (folder, identity, side_config) in targets.items()}
        todos = {side: update.start(files) for side, update in updates.items()}
        union = {s.path: s for todo in todos.values() for s in todo}
        if on_progress is not None:
            on_progress(0, len(union))
        if union:
            known = frozenset.intersection(*(frozenset(u.known_hashes()) for u in updates.values()))
            wanted = {side: (updates[side], {s.path for s in todo}) for side, todo in todos.items()}
            _embed(Path(os.path.abspath(root)), encoder, list(union.values()), known, wanted, config, on_progress)
        return {side: update.finish() for side, update in updates.items()}


def _embed(root: Path, encoder: Encoder, todo: list[FileStat], known: frozenset[str], wanted: dict,
           config: BuildConfig, on_progress: Progress | None) -> None:
    sides = tuple(wanted)
    bar = tqdm(total=len(todo), desc=f"indexing {root.name or root} ({' + '.join(sides)}, one pass)", unit="img",
               disable=not config.progress, file=sys.stderr)
    done = 0
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        for shard in plan_shards(todo, config.chunk_size):
            batches = [shard[i:i + config.batch_size] for i in range(0, len(shard), config.batch_size)]
            ahead: Future = pool.submit(_decode, root, batches[0], encoder, known)
            rows: list[ShardRow] = []
            for number in range(len(batches)):
                decoded = ahead.result()
                if number + 1 < len(batches):
                    ahead = pool.submit(_decode, root, batches[number + 1], encoder, known)
                rows.extend(_embed_batch(encoder, decoded, sides))
                done += len(batches[number])
                bar.update(len(batches[number]))
                if on_progress is not None:
                    on_progress(done, len(todo))
            write_shard(rows, wanted, int(encoder.embed_dim))
    bar.close()


def _decode(root: Path, stats: list[FileStat], encoder: Encoder, known: frozenset[str]
            ) -> list[tuple[ShardRow, torch.Tensor | None]]:
    """Hash every file, skip content both sides know, decode and preprocess the rest; never raises for a bad file."""
    preprocess = getattr(encoder, "base", encoder).preprocess
    out = []
    for stat in stats:
        path = root / stat.path
        try:
            sha1 = file_sha1(path)
        except OSError as error:
            out.append((ShardRow(stat, SKIPPED, reason=cannot_read(error)), None))
            continue
        if sha1 in known:
            out.append((ShardRow(stat, REUSED, sha1), None))
            continue
        try:
            out.append((ShardRow(stat, EMBEDDED, sha1), preprocess(open_image(path))))
        except ImageError as error:
            out.append((ShardRow(stat, SKIPPED, sha1, skip_reason(stat, str(error))), None))
    return out


def _embed_batch(encoder: Encoder, decoded: list[tuple[ShardRow, torch.Tensor | None]],
                 sides: tuple[str, ...]) -> list[ShardRow]:
    rows = [row for row, _ in decoded]
    todo = [i for i, (_, pixels) in enumerate(decoded) if pixels is not None]
    if todo:
        vectors = embed_pixel_sides(encoder, torch.stack([decoded[i][1] for i in todo]), sides)
        for position, i in enumerate(todo):
            row = rows[i]
            rows[i] = ShardRow(row.stat, row.status, row.sha1, row.reason,
                               {side: np.asarray(vectors[side][position]) for side in sides})
    return rows
