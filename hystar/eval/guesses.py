"""How often the app's "reads as" guesses (`hystar.guesses`) name what a sketch depicts: the true class first, or among
the three guesses, for a dataset's test sketches prepared as the app prepares them; per model, per vocabulary.

Vocabularies: "classes", the dataset's own class names (what the app uses on a gallery with class names); "shipped",
the vocabulary the app falls back to (a query whose name is not in it counts as a miss; `covered` says how many of
the queries' names it holds; doodles are named by their Quick, Draw! category). The mean probability of the first
guess beside the first-guess accuracy says whether the shown percentages can be taken at their word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data import Dataset, Item
from ..doodles import Doodle
from ..embed import embed_features, embed_texts
from ..guesses import GuessConfig, Guesser, Vocabulary, display_name, shipped_vocabulary, vocabulary_for
from ..synthetic_canvas import DOODLE
from .retrieval import DatasetViews

VOCABULARIES = ("classes", "shipped")
TEMPERATURES = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15)


def vocabulary_of(dataset: Dataset, which: str) -> Vocabulary:
    """"classes": the names a query is judged by (Quick, Draw!'s 345 categories for doodles), else the shipped ones."""
    return vocabulary_for(dataset.words or dataset.classes) if which == "classes" else shipped_vocabulary()


def guessed_queries(dataset: Dataset, split: str) -> tuple[list[Item], list[str]]:
    """The queries guesses are measured on, with each one's true name: sketches by class, or (a dataset of
    doodles) doodles by their Quick, Draw! category."""
    if dataset.words:
        doodles = [d for d in dataset.select(style=DOODLE, split=split) if isinstance(d, Doodle)]
        return doodles, [d.category for d in doodles]
    sketches = dataset.select(style="sketch", split=split)
    return sketches, [item.label for item in sketches]


def guess_metrics(probabilities: np.ndarray, truth: np.ndarray) -> dict:
    """`truth`: each query's row in the vocabulary (-1: not in it). Top-1 / top-3 accuracy (%), mean first-guess
    probability (%) and the mean negative log-likelihood of the true name (where it is in the vocabulary)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
    first = order[:, 0] == truth
    three = (order == truth[:, None]).any(axis=1)
    known = truth >= 0
    nll = -np.log(np.maximum(probabilities[known, truth[known]], 1e-12)).mean() if known.any() else float("nan")
    return {"queries": len(truth), "top1": 100 * float(first.mean()), "top3": 100 * float(three.mean()),
            "confidence": 100 * float(probabilities.max(axis=1).mean()), "nll": float(nll)}


@torch.no_grad()
def sketch_guesses(models: Mapping[str, object], base_encoder, dataset: Dataset, split: str = "test",
                   vocabularies: Sequence[str] = VOCABULARIES, config: GuessConfig | None = None) -> dict:
    """model label -> vocabulary -> `guess_metrics` (with "seen"/"unseen" class groups where the dataset has both).
    The text side is each model's own (adapters leave the text tower as it is)."""
    config = config or GuessConfig()
    sketches, names = guessed_queries(dataset, split)
    if not sketches:
        raise ValueError(f"{dataset.name} has no sketches or doodles in its {split} split")
    features = DatasetViews(base_encoder, dataset).queries(sketches)
    unseen = np.array([item.unseen for item in sketches])
    out: dict = {}
    for label, model in models.items():
        vectors = embed_features(model, features)
        for which in vocabularies:
            vocabulary = vocabulary_of(dataset, which)
            guesser = Guesser.build(vocabulary, lambda texts, m=model: embed_texts(m, texts), config)
            row = {name: i for i, name in enumerate(vocabulary.names)}
            truth = np.array([row.get(display_name(name), -1) for name in names])
            probabilities = guesser.probabilities(vectors)
            metrics = guess_metrics(probabilities, truth)
            metrics["vocabulary"] = len(vocabulary.names)
            metrics["covered"] = len({display_name(c) for c in set(names)} & set(vocabulary.names))
            if unseen.any() and not unseen.all():
                metrics["groups"] = {group: guess_metrics(probabilities[mask], truth[mask])
                                     for group, mask in (("seen", ~unseen), ("unseen", unseen))}
            metrics["temperatures"] = {str(t): guess_metrics(Guesser(vocabulary, guesser.embeddings,
                                                                     GuessConfig(temperature=t)).probabilities(vectors),
                                                             truth)["nll"] for t in TEMPERATURES}
            out.setdefault(label, {})[which] = metrics
    return out


def guesses_table(results: Mapping[str, Mapping[str, dict]], dataset: str) -> str:
    lines = [f"| model | vocabulary | {dataset} queries | first guess right | in the three guesses | "
             f"mean first-guess probability | unseen classes: first / three |",
             "|---|---|---|---|---|---|---|"]
    for label, per_vocabulary in results.items():
        for which, m in per_vocabulary.items():
            unseen = m.get("groups", {}).get("unseen")
            groups = f"{unseen['top1']:.1f} % / {unseen['top3']:.1f} %" if unseen else "–"
            names = f"{which} ({m['vocabulary']} names; {m['covered']} of the queries' names in it)"
            lines.append(f"| {label} | {names} | {m['queries']} | {m['top1']:.1f} % | {m['top3']:.1f} % | "
                         f"{m['confidence']:.1f} % | {groups} |")
    return "\n".join(lines)
