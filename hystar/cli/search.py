"""`hystar index` and `hystar search`: thin wrappers over `hystar.index` and, for searching, the app's own
`SearchService` (`SearchService.over_index`), so one query gives the same top-k in the app, the API and here.

Options left out on a re-run (encoder, adapter, kind) are taken from the index's meta.json. `hystar index --verify
INDEX` checks an index against its checksums (`hystar.index.verify`); `hystar search` checks what opening the index
left unchecked while the encoder loads, and searches only an intact index.

`--no-adapt` embeds the *query* with the base encoder, also against a gallery indexed with an adapter: the
adapter is a residual on the base encoder's embedding space and gallery photos were adapted by their own
(photo) style, so this is the "no adaptation for the query" ablation. An index is only searched with its base
encoder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..encoder import DEFAULT_ENCODER, Encoder
from ..encoder.search import EncoderIdentity, open_search_encoder
from ..guesses import guess_line
from ..index import (
    KINDS,
    REPORT,
    RERANKERS,
    BuildConfig,
    BuildReport,
    GalleryIndex,
    IndexMeta,
    IndexNotFoundError,
    KindConfig,
    build_index,
    load_named_reranker,
    verify_index,
)
from ..index.sides import build_sides
from ..rerank import RERANK_DEPTH
from ..service import Query, QueryError, SearchService

SKIPPED_SHOWN = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index", help="index a folder of images (incremental, resumable)",
        description="Embed every image under DIR (jpg, png, webp, bmp, tiff, first frame of gif) into an "
                    "index folder. Re-running adds new or changed files, drops deleted ones, embeds nothing "
                    "else; an interrupted run resumes where it stopped. Unreadable files are skipped and "
                    "reported. A damaged index (checked against its checksums) is mended: rows whose stored "
                    "vectors are damaged are embedded again from their images.")
    index.add_argument("dir", type=Path, nargs="?", help="folder of images, walked recursively")
    index.add_argument("--out", type=Path, help="index folder (created if missing); required, except with --verify")
    index.add_argument("--verify", type=Path, metavar="INDEX",
                       help="check every file of the index folder INDEX against its checksums (and write them for "
                            "an index that has none); exit 2 with one line naming what is damaged")
    index.add_argument("--encoder", help=f"encoder spec (default: the index's, else {DEFAULT_ENCODER})")
    index.add_argument("--adapter", type=Path, help="adapter file (default: the index's, if any)")
    index.add_argument("--kind", choices=KINDS, help="flat: exact (default, up to ~1 M images); ivfpq, hnsw: "
                                                     "approximate, for larger galleries")
    index.add_argument("--batch-size", type=int, default=32)
    index.add_argument("--chunk-size", type=int, default=256, help="images per checkpoint")
    index.add_argument("--rebuild", action="store_true", help="forget the index there and embed everything")
    index.add_argument("--no-progress", action="store_true")
    index.add_argument("--json", action="store_true", help="print the run's report as JSON")
    ray = index.add_argument_group("Ray engine (pip install -e \".[ray]\")")
    ray.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this process (default); ray: Ray Data decode tasks and an embedding actor pool")
    ray.add_argument("--address", help="Ray cluster: auto, ray://HOST:10001 (default: RAY_ADDRESS, else a local Ray)")
    ray.add_argument("--workers", type=int, help="embedding actors (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, help="GPUs per actor (default: 1 when the cluster has GPUs)")
    index.add_argument("--base-out", type=Path, help="with --adapter: also write the base encoder's index there, "
                                                     "from the same pass (one decode and trunk pass per photo)")
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
    search.add_argument("--no-expand", action="store_true",
                        help="plain nearest neighbours: no query expansion (on by default, as in the app)")
    search.add_argument("--no-name-prior", action="store_true",
                        help="a drawing searched as it is, not leaning toward the class names it reads as (on by "
                             "default, as in the app, where the index has class names)")
    search.add_argument("--candidates", type=int, default=RERANK_DEPTH,
                        help=f"candidates the re-ranker sees (default {RERANK_DEPTH}, as in the app)")
    search.add_argument("-k", type=int, default=10, help="results to show")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=run_search)


def _existing_meta(folder: Path) -> IndexMeta | None:
    try:
        return IndexMeta.read(folder)
    except IndexNotFoundError:
        return None


def run_index(args: argparse.Namespace) -> int:
    if args.verify is not None:
        return run_verify(args)
    if args.dir is None or args.out is None:
        raise ValueError("the following arguments are required: DIR, --out (or --verify INDEX alone)")
    if args.engine == "ray":
        from ..index.ray_engine import require_ray

        require_ray()  # before loading anything: one line naming the install command
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
    reports = _build(args, encoder, identity, config)
    if args.json:
        print(json.dumps(reports[0].to_json() if len(reports) == 1 else [r.to_json() for r in reports], indent=2))
        return 0
    for report in reports:
        _print_report(report)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    if args.dir is not None or args.out is not None:
        raise ValueError("--verify INDEX checks an index folder: give it no DIR and no --out")
    report = verify_index(args.verify)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.summary())
    return 0


def _build(args: argparse.Namespace, encoder: Encoder, identity: EncoderIdentity,
           config: BuildConfig) -> list[BuildReport]:
    ray_options = {"--address": args.address, "--workers": args.workers, "--gpus-per-worker": args.gpus_per_worker}
    if args.base_out is not None and identity.adapter_fingerprint is None:
        raise ValueError("--base-out writes the base encoder's index beside an adapted one: it needs --adapter")
    if args.engine == "local":
        given = [name for name, value in ray_options.items() if value is not None]
        if given:
            raise ValueError(f"{given[0]} is an option of --engine ray")
        if args.base_out is None:
            return [build_index(args.dir, args.out, encoder, identity, config)]
        targets = {"adapted": (args.out, identity, config),
                   "base": (args.base_out, EncoderIdentity.of(encoder.base, identity.spec), config)}
        return list(build_sides(args.dir, targets, encoder).values())  # one pass per photo for both
    from ..index.ray_engine import RayConfig, build_index_ray

    ray_config = RayConfig(address=args.address, workers=args.workers or 1, gpus_per_worker=args.gpus_per_worker)
    return build_index_ray(args.dir, args.out, encoder, identity, config, ray_config, base_out=args.base_out)


def _print_report(report: BuildReport) -> None:
    print(report.summary())
    for item in report.skipped[:SKIPPED_SHOWN]:
        print(f"  skipped {item.path}: {item.reason}")
    if len(report.skipped) > SKIPPED_SHOWN:
        print(f"  ... and {len(report.skipped) - SKIPPED_SHOWN} more in {report.folder / REPORT}")


def run_search(args: argparse.Namespace) -> int:
    if args.no_adapt and args.adapter is not None:
        raise ValueError("--no-adapt and --adapter contradict each other: pick one")
    index = GalleryIndex.load(args.index)
    index.verify_in_background()  # while the encoder loads
    spec = args.encoder or index.meta.encoder["spec"]
    adapter = None if args.no_adapt else args.adapter or (index.meta.adapter or {}).get("path")
    encoder, identity = open_search_encoder(spec, adapter)
    index.check_query(identity, query_only=args.no_adapt)
    reranker = load_named_reranker(args.rerank, encoder.fingerprint) if args.rerank else None
    adapted = identity.adapter_fingerprint is not None
    index.wait_verified()
    index.require_intact()
    service = SearchService.over_index(index, encoder.base, encoder if adapted else None, reranker, args.candidates)
    query = Query(text=args.text or "", image=args.image, k=args.k, adapt=adapted, rerank=reranker is not None,
                  expand=not args.no_expand, name_prior=not args.no_name_prior)
    hits, guesses, vocabulary, leaned = [], [], "", False
    if len(index):
        try:
            response = service.search(query, place=False)
        except QueryError as error:
            raise ValueError(str(error)) from None
        hits = response.adapted if adapted else response.base
        guesses, vocabulary, leaned = response.guesses, response.vocabulary, response.leaned
    if args.json:
        asked = {"text": args.text} if args.text is not None else {"image": str(args.image)}
        print(json.dumps({"index": str(args.index), "query": asked, "adapted": adapted, "rerank": args.rerank,
                          "expanded": not args.no_expand, "name_prior": leaned,
                          "results": [{"rank": h.rank, "score": round(h.score, 6), "path": str(h.path),
                                       "relpath": h.name} for h in hits],
                          "guesses": [{"name": g.name, "probability": round(g.probability, 4)} for g in guesses],
                          "guess_vocabulary": vocabulary}, indent=2))
        return 0
    if guesses:  # on stderr: stdout stays one result a line
        print(f"reads as (a guess from {vocabulary}): {guess_line(guesses)}", file=sys.stderr)
    if not hits:
        print(f"no results: {args.index} holds no images")
    for hit in hits:
        print(f"{hit.rank:3d}  {hit.score:7.4f}  {hit.path}")
    return 0
