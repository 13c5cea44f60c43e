"""`hystar eval`'s models side by side: which models, every task for each, and the report's tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..data import QUICKDRAW, load_dataset
from ..doodles import load_quickdraw
from ..encoder import Encoder, load_encoder
from ..encoder.search import load_search_encoder
from ..guesses import NamePrior
from ..ranking import QueryExpansion
from ..rerank import NoRerankerError, load_default_reranker
from ..synthetic_canvas import DOODLE
from .retrieval import (
    EffNetPooled,
    Expanded,
    NamePriored,
    Reranked,
    Rescored,
    doodle_text,
    dsr_table,
    evaluate_dataset,
    group_table,
    headline_table,
    markdown_table,
    tasks_for,
    zero_shot,
)


def expansion_label(expansion: QueryExpansion) -> str:
    """"qe" for the app's query expansion, else "qe(NEIGHBORS:WEIGHT:POWER[:GALLERY_NEIGHBORS:GALLERY_WEIGHT])"."""
    if expansion == QueryExpansion():
        return "qe"
    gallery = f":{expansion.gallery_neighbors}:{expansion.gallery_weight:g}" if expansion.gallery_neighbors else ""
    return f"qe({expansion.neighbors}:{expansion.weight:g}:{expansion.power:g}{gallery})"


def name_prior_label(prior: NamePrior) -> str:
    """"names" for the app's name prior, else "names(WEIGHT)", or "names(WEIGHT:MIN_CONFIDENCE)" where its gate
    differs from the app's."""
    if prior == NamePrior():
        return "names"
    gate = "" if prior.min_confidence == NamePrior.min_confidence else f":{prior.min_confidence:g}"
    return f"names({prior.weight:g}{gate})"


def parse_name_prior(spec: str) -> NamePrior:
    """"WEIGHT" or "WEIGHT:MIN_CONFIDENCE" (e.g. "1:0": leaning whatever the first guess's probability)."""
    weight, _, gate = str(spec).partition(":")
    try:
        prior = NamePrior(weight=float(weight), min_confidence=float(gate) if gate else NamePrior.min_confidence)
    except ValueError:
        prior = None
    if prior is None or prior.weight < 0 or not 0 <= prior.min_confidence <= 1:
        raise ValueError(f"name prior {spec!r}: give WEIGHT or WEIGHT:MIN_CONFIDENCE (a weight of 0 or more, a "
                         "probability 0..1), e.g. 1 or 1:0.2")
    return prior


def models_to_compare(args: Any) -> tuple[Encoder, dict[str, Any]]:
    """The base encoder and every model `hystar eval` compares, by label; `args` as `hystar.cli.eval` parses them
    (encoder, adapter, no_base, rerank, quari_dir, quari_blend, top_k, expand, name_prior, baseline)."""
    base = load_encoder(args.encoder).requires_grad_(False)
    models = {} if args.no_base else {"base": base}
    for entry in args.adapter or []:
        label, _, path = entry.rpartition("=")
        label = label or Path(path).stem
        models[label] = load_search_encoder(args.encoder, path, shared=False, base=base)
    if args.rerank == "quari":
        for label, model in list(models.items()):
            try:
                reranker = load_default_reranker(model.fingerprint, args.quari_dir)
            except NoRerankerError as error:
                print(f"hystar eval: no QuARI for {label}: {error}")
                continue
            if not args.quari_blend:
                models[f"{label}+quari"] = Reranked(model, reranker, args.top_k)
            for blend in args.quari_blend or []:
                models[f"{label}+quari@{blend:g}"] = Reranked(model, reranker.with_blend(blend), args.top_k)
    if args.expand is not None:
        plain = [(label, model) for label, model in models.items() if not isinstance(model, Reranked)]
        for label, model in plain:
            for expansion in args.expand or [QueryExpansion()]:
                models[f"{label}+{expansion_label(expansion)}"] = Expanded(model, expansion)
    if getattr(args, "name_prior", None) is not None:  # each encoder's search as the app runs it, drawings leaning
        for label in [label for label in models if "+" not in label]:
            expanded = [f"{label}+{expansion_label(expansion)}" for expansion in args.expand or [QueryExpansion()]]
            for searched in [name for name in expanded if name in models] or [label]:
                for prior in [parse_name_prior(spec) for spec in args.name_prior] or [NamePrior()]:
                    models[f"{searched}+{name_prior_label(prior)}"] = NamePriored(models[searched], prior)
    if args.baseline == "effnet-lite0":
        if not hasattr(base.visual, "pooled_features"):
            raise ValueError("the effnet-lite0 baseline needs the hystar-mini encoder (it shares its trunk)")
        models["effnet-lite0"] = EffNetPooled(base)
    return base, models


def eval_dataset(name: str):
    """A dataset to evaluate on: the doodle protocol's (`quickdraw`), a named one or any folder with a manifest."""
    return load_quickdraw() if name == QUICKDRAW else load_dataset(name)


@torch.no_grad()
def run_eval(args: Any) -> dict:
    """One report over `args.data`: every model on the tasks of `tasks_for` (with `args.canvas` the canvas protocol
    too), only those of `args.styles` when given; queries prepared as the app does unless `args.no_query_norm`."""
    base, models = models_to_compare(args)
    report = {"encoder": args.encoder, "models": list(models), "split": args.split, "retrieval": {}, "zero_shot": {},
              "doodle_text": {}, "query_norm": not args.no_query_norm}
    embeddings: dict = {}  # models that only re-score (+qe, +quari) reuse their model's embeddings
    for name in args.data:
        dataset = eval_dataset(name)
        tasks = [t for t in tasks_for(dataset, split=args.split, canvas=args.canvas)
                 if not args.styles or t.query_style in args.styles]
        for label, model in models.items():
            if tasks:
                report["retrieval"].setdefault(label, {}).update(evaluate_dataset(
                    model, base, dataset, tasks, split=args.split, query_norm=not args.no_query_norm,
                    embeddings=embeddings))
            if not hasattr(model, "encode_text") or isinstance(model, Rescored):
                continue  # re-scoring models embed as their model does: the same zero-shot figures
            if dataset.words and (not args.styles or DOODLE in args.styles):
                report["doodle_text"][label] = doodle_text(model, base, dataset, split=args.split)
            elif args.zero_shot and dataset.classes:
                report["zero_shot"].setdefault(label, {})[dataset.name] = zero_shot(model, base, dataset)
    return report


def zero_shot_table(report: dict) -> str:
    lines = ["| model | dataset | classes | seen-class test photos | accuracy (seen) | accuracy (unseen) |",
             "|---|---|---|---|---|---|"]
    for label, per_dataset in report["zero_shot"].items():
        for name, z in per_dataset.items():
            unseen = f"{z['unseen_accuracy']:.1f}" if "unseen_accuracy" in z else "–"
            lines.append(f"| {label} | {name} | {z['classes']} | {z.get('seen_photos', 0)} | "
                         f"{z.get('seen_accuracy', float('nan')):.1f} | {unseen} |")
    return "\n".join(lines)


def doodle_text_table(report: dict) -> str:
    lines = ["| model | categories | doodles (seen / unseen) | top-1 | top-5 | top-1 seen | top-5 seen | top-1 unseen "
             "| top-5 unseen |", "|---|---|---|---|---|---|---|---|---|"]
    for label, z in report.get("doodle_text", {}).items():
        keys = ("all_top1", "all_top5", "seen_top1", "seen_top5", "unseen_top1", "unseen_top5")
        cells = [f"{z[key]:.1f}" if key in z else "–" for key in keys]
        lines.append(f"| {label} | {z['categories']} | {z.get('seen_doodles', 0)} / {z.get('unseen_doodles', 0)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(report: dict, command: str) -> str:
    retrieval = report["retrieval"]
    split = report.get("split", "test")
    prepared = report.get("query_norm", report.get("sketch_norm"))
    sketches = {True: " Queries prepared as the app does (`hystar.query`: sketches normalised, mosaics de-blocked).",
                False: " Queries as stored (no normalisation)."}.get(prepared, "")
    text = (f"Command: `{command}`\n\nQueries of the {split} split, full gallery.{sketches} "
            f"Headline metric per task (change against base):\n\n"
            f"{headline_table(retrieval)}\n\nAll metrics:\n\n{markdown_table(retrieval)}\n")
    dsr = dsr_table(retrieval)
    if dsr:
        text += ("\nThe DSR protocol, labelled as such (each query against its batch of 24 photos; their \"R@5\" "
                 "counts the top 4):\n\n" + dsr + "\n")
    groups = group_table(retrieval)
    if groups:
        text += ("\nSeen and unseen classes apart (Sketchy's unseen classes are never trained on; every item of "
                 "theirs is a test query), headline metric:\n\n" + groups + "\n")
    if report["zero_shot"]:
        text += "\nZero-shot classification (\"a photo of a {class}\", all classes of the dataset):\n\n"
        text += zero_shot_table(report) + "\n"
    if report.get("doodle_text"):
        text += (f"\nDoodle -> text zero-shot (Quick, Draw! {split} doodles drawn on the canvas, \"a drawing of a "
                 "{category}\" over every category; unseen: categories depicting a never-trained Sketchy class):\n\n"
                 + doodle_text_table(report) + "\n")
    return text


def report_paths(out: Path) -> tuple[Path, Path]:
    """OUT.json and OUT.md for `--out OUT`; a dot in OUT's name stays (results-v2.4 -> results-v2.4.json), and a
    given .json or .md ending is taken off first."""
    stem = out.with_suffix("") if out.suffix in (".json", ".md") else out
    return stem.parent / f"{stem.name}.json", stem.parent / f"{stem.name}.md"


def write_report(out: Path, text: str, data: dict | None = None) -> None:
    """The report's Markdown `text` to OUT.md and, when given, its `data` to OUT.json."""
    json_path, md_path = report_paths(out)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(text)
