"""`hystar index` and `hystar search`: thin wrappers over `hystar.index`.

Options left out on a re-run (encoder, adapter, kind) are taken from the index's meta.json.

`--no-adapt` embeds the *query* with the base encoder, also against a gallery indexed with an adapter: the
adapter is a residual on the base encoder's embedding space and gallery photos were adapted by their own
(photo) style, so this is the "no adaptation for the query" ablation. An index is only searched with its base
encoder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..embed import embed_image, embed_texts
from ..encoder import DEFAULT_ENCODER
from ..encoder.search import open_search_encoder
from ..images import open_image
from ..index import (
    KINDS,
    REPORT,
    RERANKERS,
    BuildConfig,
    GalleryIndex,
    IndexMeta,
    IndexNotFoundError,
    KindConfig,
    build_index,
    load_named_reranker,
)
from ..sketch import prepare_query

SKIPPED_SHOWN = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index", help="index a folder of images (incremental, resumable)",
        description="Embed every image under DIR (jpg, png, webp, bmp, tiff, first frame of gif) into an "
                    "index folder. Re-running adds new or changed files, drops deleted ones, embeds nothing "
                    "else; an interrupted run resumes where it stopped. Unreadable files are skipped and "
                    "reported.")
    index.add_argument("dir", type=Path, help="folder of images, walked recursively")
    index.add_argument("--out", type=Path, required=True, help="index folder (created if missing)")
    index.add_argument("--encoder", help=f"encoder spec (default: the index's, else {DEFAULT_ENCODER})")
    index.add_argument("--adapter", type=Path, help="adapter file (default: the index's, if any)")
    index.add_argument("--kind", choices=KINDS, help="flat: exact (default, up to ~1 M images); ivfpq, hnsw: "
                                                     "approximate, for larger galleries")
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--chunk-size", type=int, default=256, help="images per checkpoint")
    index.add_argument("--rebuild", action="store_true", help="forget the index there and embed everything")
    index.add_argument("--no-progress", action="store_true")
    index.add_argument("--json", action="store_true", help="print the run's report as JSON")
    index.set_defaults(func=run_index)

    search = subparsers.add_parser("search", help="search an index by text or image",
                                   description="Top-k gallery images for a text or an image query.")
    search.add_argument("index", type=Path, help="index folder written by `hystar index`")
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", type=Path, help="image query (a sketch, painting, photo, ...)")
    search.add_argument("--encoder", help="encoder spec (default: the one the index was built with)")
    search.add_argument("--adapter", type=Path, help="adapter file (default: the index's, if any)")
    search.add_argument("--no-adapt", action="store_true", help="embed the query with the base encoder")
    search.add_argument("--rerank", choices=RERANKERS, help="re-rank the top candidates")
    search.add_argument("--candidates", type=int, default=100, help="candidates the re-ranker sees")
    search.add_argument("-k", type=int, default=10, help="results to show")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=run_search)


def _existing_meta(folder: Path) -> IndexMeta | None:
    try:
        return IndexMeta.read(folder)
    except IndexNotFoundError:
        return None


def run_index(args: argparse.Namespace) -> int:
    meta = None if args.rebuild else _existing_meta(args.out)
    spec = args.encoder or (meta.encoder["spec"] if meta else DEFAULT_ENCODER)
    adapter = args.adapter
    if adapter is None and args.encoder is None and meta is not None and meta.adapter:
        adapter = meta.adapter["path"]
    if args.kind is None and meta is not None:
        kind = KindConfig.from_json(meta.kind_config)
    else:
        kind = KindConfig(args.kind or "flat")
    encoder, identity = open_search_encoder(spec, adapter)
    config = BuildConfig(kind=kind, batch_size=args.batch_size, chunk_size=args.chunk_size,
                         rebuild=args.rebuild, progress=not args.no_progress)
    report = build_index(args.dir, args.out, encoder, identity, config)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    print(report.summary())
    for item in report.skipped[:SKIPPED_SHOWN]:
        print(f"  skipped {item.path}: {item.reason}")
    if len(report.skipped) > SKIPPED_SHOWN:
        print(f"  ... and {len(report.skipped) - SKIPPED_SHOWN} more in {args.out / REPORT}")
    return 0


def run_search(args: argparse.Namespace) -> int:
    if args.no_adapt and args.adapter is not None:
        raise ValueError("--no-adapt and --adapter contradict each other: pick one")
    index = GalleryIndex.load(args.index)
    spec = args.encoder or index.meta.encoder["spec"]
    adapter = None if args.no_adapt else args.adapter or (index.meta.adapter or {}).get("path")
    encoder, identity = open_search_encoder(spec, adapter)
    index.check_query(identity, query_only=args.no_adapt)
    if args.text is not None:
        vector = embed_texts(encoder, [args.text])[0]
    else:
        vector = embed_image(encoder, prepare_query(open_image(args.image)))  # line drawings as the service has them
    reranker = load_named_reranker(args.rerank, encoder.fingerprint) if args.rerank else None
    hits = index.hits(index.search(vector, args.k, reranker=reranker, candidates=args.candidates))
    if args.json:
        query = {"text": args.text} if args.text is not None else {"image": str(args.image)}
        print(json.dumps({"index": str(args.index), "query": query, "adapted": identity.adapter_fingerprint
                          is not None, "rerank": args.rerank,
                          "results": [{"rank": h.rank, "score": round(h.score, 6), "path": str(h.path),
                                       "relpath": h.relpath} for h in hits]}, indent=2))
        return 0
    if not hits:
        print(f"no results: {args.index} holds no images")
    for hit in hits:
        print(f"{hit.rank:3d}  {hit.score:7.4f}  {hit.path}")
    return 0
