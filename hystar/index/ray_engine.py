"""`hystar index --engine ray`: the local indexer's plan and merge, with Ray Data doing the reading and embedding.

The driver lists the files and diffs them against each index's manifest and checkpoints (`IndexUpdate.start`),
exactly as the local engine does. Ray Data then reads, hashes, decodes and preprocesses on CPU tasks (an unreadable
file becomes a skipped row with its reason) and embeds in an actor pool: a callable class that loads the encoder and
adapter once per actor, on a GPU when the actor has one. With `base_out`, the same trunk pass gives the base and the
adapted embedding, one per index. Rows stream back to the driver, which writes each finished shard as a checkpoint
chunk (`hystar.index.shards`) and finally merges and commits each index in the local engine's format.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..encoder import Encoder
from ..encoder.search import EncoderIdentity
from ..io import file_sha1
from .build import BuildConfig, BuildReport, cannot_read, open_update, skip_reason
from .format import FileStat
from .shards import EMBEDDED, REUSED, SKIPPED, ShardCollector, plan_shards, rows_of_batch, write_shard

INSTALL_HINT = '--engine ray needs Ray Data: pip install -e ".[ray]"'
DECODED = "decoded"


def require_ray() -> Any:
    """The `ray` module with Ray Data, or a one-line RuntimeError naming the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None           # None: RAY_ADDRESS, else a local Ray on this machine
    workers: int = 1                     # embedding actors
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0 (CPU actors)
    cpus_per_worker: float | None = None  # CPU actors; None: the cluster's CPUs left by decoding, shared out
    decode_cpus: float = 0.5             # per decode task
    decode_batch: int = 16               # images per decode task batch

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must not be negative, got {self.gpus_per_worker}")


@dataclass
class RayRunStats:
    """Where the time of a Ray run went (seconds)."""

    ray_start: float = 0.0      # ray.init (0 when Ray was already up)
    first_result: float = 0.0   # pipeline start to the first embedded batch: actor start-up and model load
    pipeline: float = 0.0       # pipeline start to the last row back
    images: int = 0             # files sent through the pipeline
    extra: dict[str, Any] = field(default_factory=dict)


def decode_batch(batch: dict[str, np.ndarray], root: str, shape: tuple[int, ...], preprocess: Any,
                 known: frozenset[str]) -> dict[str, np.ndarray]:
    """CPU task: hash each file, skip known content, decode and preprocess the rest; never raises for a bad file."""
    from ..images import ImageError, open_image

    count = len(batch["path"])
    pixels = np.zeros((count, *shape), np.float32)
    status, sha1s, reasons = [DECODED] * count, [""] * count, [""] * count
    for i in range(count):
        stat = FileStat(str(batch["path"][i]), int(batch["size"][i]), int(batch["mtime_ns"][i]))
        path = Path(root, stat.path)
        try:
            sha1s[i] = file_sha1(path)
        except OSError as error:
            status[i], reasons[i] = SKIPPED, cannot_read(error)
            continue
        if sha1s[i] in known:
            status[i] = REUSED
            continue
        try:
            pixels[i] = np.asarray(preprocess(open_image(path)), np.float32)
        except ImageError as error:
            status[i], reasons[i] = SKIPPED, skip_reason(stat, str(error))
    return {**batch, "status": np.array(status), "sha1": np.array(sha1s), "reason": np.array(reasons),
            "pixels": pixels}


class Embedder:
    """The actor: loads the search encoder (and adapter) once, then embeds decoded rows batch by batch."""

    def __init__(self, spec: str, adapter_path: str | None, sides: tuple[str, ...], threads: int | None):
        import torch

        from ..encoder.search import load_search_encoder

        if threads:
            torch.set_num_threads(threads)
        encoder = load_search_encoder(spec, adapter_path)
        self.encoder = encoder.to("cuda") if torch.cuda.is_available() else encoder
        self.sides, self.dim = sides, int(encoder.embed_dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from ..embed import embed_pixel_sides

        out = {k: v for k, v in batch.items() if k != "pixels"}
        rows = np.flatnonzero(batch["status"] == DECODED)
        for side in self.sides:
            out[side] = np.zeros((len(batch["status"]), self.dim), np.float32)
        if len(rows):
            vectors = embed_pixel_sides(self.encoder, torch.from_numpy(batch["pixels"][rows]), self.sides)
            for side, values in vectors.items():
                out[side][rows] = values
            out["status"] = batch["status"].astype(object)
            out["status"][rows] = EMBEDDED
            out["status"] = out["status"].astype(str)
        return out


def _connect(ray: Any, config: RayConfig) -> float:
    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING", configure_logging=True)
    return time.perf_counter() - start


def _actor_resources(ray: Any, config: RayConfig) -> tuple[dict[str, float], int | None]:
    """Ray resources per actor and the torch threads of a CPU actor."""
    resources = ray.cluster_resources()
    gpus = config.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    if gpus > 0:
        return {"num_gpus": gpus}, None
    cpus = config.cpus_per_worker
    if cpus is None:
        cpus = max(0.25, (resources.get("CPU", 1) - config.decode_cpus) / config.workers)
    return {"num_cpus": cpus}, max(1, math.ceil(cpus))


def build_index_ray(root: str | os.PathLike, out: str | os.PathLike, encoder: Encoder, identity: EncoderIdentity,
                    config: BuildConfig | None = None, ray_config: RayConfig | None = None,
                    files: Sequence[str | os.PathLike] | None = None, base_out: str | os.PathLike | None = None,
                    stats: RayRunStats | None = None) -> list[BuildReport]:
    """`build_index` on Ray: the index at `out` (adapted when `identity` has an adapter) and, with `base_out`, the
    base encoder's index of the same files from the same pass. Returns one report per index."""
    ray = require_ray()
    config, ray_config, stats = config or BuildConfig(), ray_config or RayConfig(), stats or RayRunStats()
    if base_out is not None and identity.adapter_fingerprint is None:
        raise ValueError("--base-out writes the base encoder's index beside an adapted one: it needs --adapter")
    base = getattr(encoder, "base", encoder)
    targets = {"adapted" if identity.adapter_fingerprint else "base": (Path(out), identity)}
    if base_out is not None:
        targets["base"] = (Path(base_out), EncoderIdentity.of(base, identity.spec))
    dim = int(encoder.embed_dim)
    with contextlib.ExitStack() as stack:
        updates = {side: stack.enter_context(open_update(root, folder, ident, dim, config))
                   for side, (folder, ident) in targets.items()}
        todos = {side: update.start(files) for side, update in updates.items()}
        union = {s.path: s for todo in todos.values() for s in todo}
        if union:
            known = frozenset.intersection(*(frozenset(u.known_hashes()) for u in updates.values()))
            wanted = {side: (updates[side], {s.path for s in todo}) for side, todo in todos.items()}
            _embed_on_ray(ray, Path(os.path.abspath(root)), encoder, identity, list(union.values()), known,
                          wanted, config, ray_config, stats)
        return [update.finish() for update in updates.values()]


def _embed_on_ray(ray: Any, root: Path, encoder: Encoder, identity: EncoderIdentity, todo: list[FileStat],
                  known: frozenset[str], wanted: dict[str, Any], config: BuildConfig, ray_config: RayConfig,
                  stats: RayRunStats) -> None:
    stats.ray_start = _connect(ray, ray_config)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    shards = plan_shards(todo, config.chunk_size)
    items = [{"path": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "shard": number}
             for number, shard in enumerate(shards) for s in shard]
    shape = tuple(np.asarray(encoder.preprocess(Image.new("RGB", (64, 64)))).shape)
    resources, threads = _actor_resources(ray, ray_config)
    sides = tuple(wanted)
    blocks = max(1, min(len(items), math.ceil(len(items) / ray_config.decode_batch)))
    dataset = (ray.data.from_items(items, override_num_blocks=blocks)
               .map_batches(decode_batch, batch_size=ray_config.decode_batch, num_cpus=ray_config.decode_cpus,
                            fn_kwargs={"root": str(root), "shape": shape, "preprocess": encoder.preprocess,
                                       "known": known})
               .map_batches(Embedder, batch_size=config.batch_size,
                            compute=ray.data.ActorPoolStrategy(size=ray_config.workers),
                            fn_constructor_kwargs={"spec": identity.spec, "adapter_path": identity.adapter_path,
                                                   "sides": sides, "threads": threads}, **resources))
    collector = ShardCollector(shards)
    bar = tqdm(total=len(items), desc=f"indexing {root.name or root} on Ray", unit="img",
               disable=not config.progress, file=sys.stderr)
    start = time.perf_counter()
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if not stats.first_result:
            stats.first_result = time.perf_counter() - start
        for shard, row in rows_of_batch(batch, sides):
            finished = collector.add(shard, row)
            if finished is not None:
                write_shard(finished, wanted, int(encoder.embed_dim))
        bar.update(len(batch["path"]))
    bar.close()
    stats.pipeline, stats.images = time.perf_counter() - start, len(items)
    if collector.unfinished():
        raise RuntimeError(f"Ray returned no rows for {collector.unfinished()} shards; re-run to finish them")
