"""Checking a big gallery's vectors against their checksums, on a synthetic generation of 1 M x 384 float16 rows (no
images: its files are written directly with `hystar.index.format`). Times, in seconds:

1. `record`: computing the checksums of its files (what `hystar index` adds before it commits a generation);
2. `open_checks`: the checks opening the index runs (the manifests; files up to `OPEN_CHECK_BYTES`): the only ones
   on the serving path; beside it `parse_manifest`, what opening spends reading the manifest anyway;
3. `verify_warm` / `verify_cold`: every vectors block checked (`hystar index --verify`, the app's background check),
   the file in the page cache, then dropped from it (`posix_fadvise(DONTNEED)`; a VM's host may still cache it);
4. `find_flip`: a bit flipped in the last row, found, and the first damaged block named.

    python bench/bench_verify.py                         # 1 000 000 x 384
    python bench/bench_verify.py --rows 100000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hystar.index import checksums
from hystar.index.checksums import Checksums, GenerationCheck
from hystar.index.format import MANIFEST, SKIPPED, VECTORS, Entry, IndexMeta, read_jsonl, write_jsonl


def write_generation(folder: Path, rows: int, dim: int, seed: int = 0) -> IndexMeta:
    """A committed generation of `rows` random unit float16 rows and their manifest, without a FAISS index."""
    generation = folder / "gen-000000"
    generation.mkdir(parents=True)
    vectors = np.lib.format.open_memmap(generation / VECTORS, mode="w+", dtype=np.float16, shape=(rows, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 65_536):
        block = rng.standard_normal((min(65_536, rows - start), dim), dtype=np.float32)
        vectors[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    vectors.flush()
    del vectors
    write_jsonl(generation / MANIFEST, [Entry(f"photos/{i // 1000:04d}/{i:07d}.jpg", 100_000 + i, 1_700_000_000 + i,
                                              f"{i:040x}") for i in range(rows)])
    write_jsonl(generation / SKIPPED, [])
    meta = IndexMeta(generation="gen-000000", root=str(folder / "photos"),
                     encoder={"spec": "synthetic", "name": "synthetic", "fingerprint": "0" * 16}, adapter=None,
                     dim=dim, count=rows, skipped=0, kind="flat", built_kind="flat", kind_config={}, kind_params={})
    return meta


def drop_from_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="hystar-bench-verify-"))
    try:
        written, meta = timed(lambda: write_generation(folder, args.rows, args.dim))
        generation = folder / meta.generation
        record, sums = timed(lambda: Checksums.of(generation))
        meta.checksums = sums.to_json()
        meta.write(folder)
        check = GenerationCheck(folder, IndexMeta.read(folder))
        now, later = check.split()
        open_checks, _ = timed(lambda: check.require(now))
        parse, _ = timed(lambda: read_jsonl(generation / MANIFEST, Entry))
        warm, _ = timed(lambda: check.require([VECTORS]))
        drop_from_cache(generation / VECTORS)
        cold, _ = timed(lambda: check.require([VECTORS]))
        with open(generation / VECTORS, "r+b") as handle:  # one bit of the last row
            handle.seek(-1, os.SEEK_END)
            byte = handle.read(1)[0]
            handle.seek(-1, os.SEEK_END)
            handle.write(bytes([byte ^ 1]))
        find, damage = timed(lambda: check.survey([VECTORS], first_only=True))
        size = (generation / VECTORS).stat().st_size
        report = {
            "rows": args.rows, "dim": args.dim, "vectors_mib": round(size / 2**20, 1),
            "block_rows": sums.vectors.block_rows, "blocks": len(sums.vectors.blocks),
            "open_check_bytes": checksums.OPEN_CHECK_BYTES, "checked_at_open": now, "checked_later": later,
            "seconds": {"write_generation": round(written, 3), "record": round(record, 3),
                        "open_checks": round(open_checks, 3), "parse_manifest": round(parse, 3),
                        "verify_warm": round(warm, 3), "verify_cold": round(cold, 3), "find_flip": round(find, 3)},
            "found": damage.first(), "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    seconds = report["seconds"]
    print(f"{args.rows:,} x {args.dim} float16 vectors ({report['vectors_mib']} MiB), {report['blocks']} blocks of "
          f"{report['block_rows']} rows")
    print(f"record the checksums (hystar index, before the commit): {seconds['record']:.3f} s")
    print(f"checks at opening ({', '.join(now)}; serving path): {seconds['open_checks']:.3f} s (parsing the "
          f"manifest, which opening does anyway: {seconds['parse_manifest']:.3f} s)")
    print(f"every vectors block (background / --verify; left for later at opening: {', '.join(later) or 'none'}): "
          f"{seconds['verify_warm']:.3f} s warm, {seconds['verify_cold']:.3f} s cold")
    print(f"a flipped bit in the last row: found in {seconds['find_flip']:.3f} s: {report['found']}")
    print(f"load average at the end: {' '.join(map(str, report['load_average']))}")


if __name__ == "__main__":
    main()
