"""`hystar eval`: every model side by side on the same tasks in one run; JSON and a Markdown table out."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..data import EVAL_DATASETS, QUICKDRAW, data_root
from ..encoder import DEFAULT_ENCODER
from ..eval.compare import eval_dataset, models_to_compare, render_report, run_eval, write_report
from ..eval.guesses import guessed_queries, guesses_table, sketch_guesses
from ..eval.online import DEFAULT_STREAM, evaluate_stream, segment_table, stream_table
from ..guesses import NamePrior
from ..online import PARAMETER_SETS, OnlineConfig
from ..paths import RERANKER_DIR
from ..ranking import QueryExpansion
from ..rerank import RERANK_DEPTH


def expansion_setting(text: str) -> QueryExpansion:
    """NEIGHBORS:WEIGHT:POWER[:GALLERY_NEIGHBORS:GALLERY_WEIGHT] (without the last two: no gallery side)."""
    try:
        parts = text.split(":")
        if len(parts) not in (3, 5):
            raise ValueError
        gallery = (int(parts[3]), float(parts[4])) if len(parts) == 5 else (0, 0.0)
        return QueryExpansion(int(parts[0]), float(parts[1]), float(parts[2]), *gallery)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NEIGHBORS:WEIGHT:POWER"
                                         "[:GALLERY_NEIGHBORS:GALLERY_WEIGHT], e.g. 5:1.5:3:5:1") from None


def default_datasets() -> list[str]:
    """Every evaluation dataset; the doodle protocol only where its data is present."""
    return [name for name in EVAL_DATASETS if name != QUICKDRAW or (data_root() / QUICKDRAW).is_dir()]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="full-gallery Recall@K / mAP per query style, models side by side")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--adapter", action="append", metavar="[LABEL=]FILE", help="adapter to compare (repeatable)")
    parser.add_argument("--baseline", choices=("none", "effnet-lite0"), default="none")
    parser.add_argument("--no-base", action="store_true", help="leave the unadapted encoder out")
    parser.add_argument("--rerank", choices=("none", "quari"), default="none",
                        help="also each model re-ranked by its QuARI (trained with `hystar train-quari`)")
    parser.add_argument("--top-k", "--depth", dest="top_k", type=int, default=RERANK_DEPTH,
                        help=f"candidates re-ranked per query (default {RERANK_DEPTH}, as in the app and `hystar "
                             f"search`; assets/eval/quari-top1000.md was measured at 1000)")
    parser.add_argument("--quari-dir", type=Path, default=RERANKER_DIR, help="where to look for QuARI checkpoints")
    parser.add_argument("--quari-blend", type=float, nargs="+", metavar="B",
                        help="re-rank with blend B (QuARI's share of the score) instead of the checkpoint's; "
                             "several: one model each")
    parser.add_argument("--expand", type=expansion_setting, nargs="*", metavar="N:W:P[:GN:GW]",
                        help="also each model (before re-ranking) with query expansion as the app searches: label "
                             "+qe; with settings NEIGHBORS:WEIGHT:POWER[:GALLERY_NEIGHBORS:GALLERY_WEIGHT], one "
                             "model each (to choose them on val)")
    parser.add_argument("--name-prior", nargs="*", metavar="WEIGHT[:MIN_CONFIDENCE]",
                        help="also each encoder's search with drawings leaning toward the gallery's class names "
                             "they read as, as the app searches (`hystar.guesses.NamePrior`), after each --expand "
                             "setting; with settings, one model per setting (default "
                             f"{NamePrior.weight:g}:{NamePrior.min_confidence:g}: a drawing whose first guess is less "
                             "sure does not lean)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="queries of this split (the gallery is always every photo); choose settings on val")
    parser.add_argument("--data", action="append",
                        help=f"{' | '.join(EVAL_DATASETS)} | FOLDER with a manifest.csv (repeatable; default: all; "
                             f"{QUICKDRAW}: Quick, Draw! test doodles drawn on the canvas -> Sketchy photos by class, "
                             f"and doodle -> text over its 345 categories)")
    parser.add_argument("--zero-shot", action="store_true", help="also zero-shot classification of test photos")
    parser.add_argument("--canvas", action="store_true",
                        help="also every sketch task with its queries re-drawn as on the app's 512-px canvas (thick "
                             "brush, filling 80-95 %% of it, shifted; seeded)")
    parser.add_argument("--styles", nargs="+", metavar="STYLE",
                        help="only the tasks of these query styles (e.g. sketch art_painting mosaic text)")
    parser.add_argument("--no-query-norm", "--no-sketch-norm", dest="no_query_norm", action="store_true",
                        help="feed queries as stored, without the app's query preparation (sketches normalised, "
                             "mosaics de-blocked: `hystar.query`); an ablation")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    parser.add_argument("--render", type=Path, metavar="OUT.json",
                        help="print (and with --out write) the tables of a saved report instead of evaluating")
    parser.add_argument("--guesses", action="store_true",
                        help="instead of the tables: how often the app's \"reads as\" guesses name what a sketch "
                             "depicts (first guess, among the three), per model and vocabulary, for the sketches of "
                             "--split in each --data set that has sketches (default: sketchy)")
    online = parser.add_argument_group("online adaptation (instead of the tables)")
    online.add_argument("--online", action="store_true",
                        help="feed a stream of test queries through an online session per model; report the later "
                             "stream adapted vs not, and photo / text quality after the stream vs before")
    online.add_argument("--stream", default=",".join(DEFAULT_STREAM), metavar="DATA:STYLE,...",
                        help="segments of the stream, in order (one dataset)")
    online.add_argument("--online-params", choices=PARAMETER_SETS, default=OnlineConfig.params)
    online.add_argument("--online-lr", type=float, default=OnlineConfig.lr)
    online.add_argument("--online-batch", type=int, default=16, help="queries per observed batch")
    parser.set_defaults(func=_run)


@torch.enable_grad()
def run_online(args: argparse.Namespace) -> int:
    args.rerank, args.baseline = "none", "none"
    base, models = models_to_compare(args)
    segments = [s.strip() for s in args.stream.split(",") if s.strip()]
    data = segments[0].partition(":")[0]
    cfg = OnlineConfig(params=args.online_params, lr=args.online_lr)
    results = {}
    for label, model in models.items():
        if args.online_params != "ln" and model.adapter is None:
            print(f"hystar eval: {label} has no adapter; its online session adapts the LayerNorms only")
            model_cfg = OnlineConfig(**{**asdict(cfg), "params": "ln"})
        else:
            model_cfg = cfg
        results[label] = evaluate_stream(model, base, model_cfg, data, segments, args.online_batch, split=args.split)
    text = (f"Command: `hystar {' '.join(args.argv)}`\n\nStream: {' then '.join(segments)} ({args.split} split); later "
            f"stream = its second half.\n\n{stream_table(results)}\n\n{segment_table(results)}\n")
    print(text)
    if args.out:
        write_report(args.out, text, results)
    return 0


def run_guesses(args: argparse.Namespace) -> int:
    args.rerank, args.expand, args.baseline = "none", None, "none"
    base, models = models_to_compare(args)
    models = {label: model for label, model in models.items() if hasattr(model, "encode_text")}
    sections, results = [], {}
    for name in args.data or ["sketchy", *([QUICKDRAW] if QUICKDRAW in default_datasets() else [])]:
        dataset = eval_dataset(name)
        if not guessed_queries(dataset, args.split)[0]:
            print(f"hystar eval: {name} has no sketches or doodles in its {args.split} split; skipped")
            continue
        results[dataset.name] = sketch_guesses(models, base, dataset, split=args.split)
        kind = "doodles" if dataset.words else "sketches"
        sections.append(f"### {dataset.name} ({args.split} {kind})\n\n"
                        f"{guesses_table(results[dataset.name], dataset.name)}")
    text = (f"Command: `hystar {' '.join(args.argv)}`\n\nThe app's \"reads as\" guesses (`hystar.guesses`): the "
            f"text tower's zero-shot names for the sketch or doodle, as the app prepares it.\n\n"
            + "\n\n".join(sections) + "\n")
    print(text)
    if args.out:
        write_report(args.out, text, results)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.online:
        return run_online(args)
    if args.guesses:
        return run_guesses(args)
    if args.render:
        report = json.loads(args.render.read_text())
        command = report.get("command") or f"hystar eval (rendered from {args.render})"
    else:
        args.data = args.data or default_datasets()
        report = run_eval(args)
        command = report["command"] = f"hystar {' '.join(args.argv)}"
    text = render_report(report, command)
    print(text)
    if args.out:
        write_report(args.out, text, None if args.render else report)
    return 0
