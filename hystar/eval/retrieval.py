"""Full-gallery retrieval evaluation per query style, and zero-shot classification.

For a dataset, the gallery is every photo in it (all splits: train photos are distractors). Queries come from the
test split: each real query style (sketch, art_painting, ...), each synthetic style of the test photos (mosaic,
art, pencil), and captions. A task is instance-level when every query names a gallery instance, else category-level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..data import PROMPT, Dataset, Item, class_name
from ..doodles import DRAWING_PROMPT, Doodle
from ..embed import embed_features, embed_texts
from ..encoder.mini import COARSE_CHANNELS, FINE_CHANNELS, efficientnet_lite0
from ..features import View, item_features, trunk_features
from ..guesses import Guesser, NamePrior, vocabulary_for
from ..ranking import QueryExpansion
from ..rerank import RERANK_DEPTH
from ..sketch_views import query_view_features
from ..synthetic import SYNTHETIC_STYLES
from ..synthetic_canvas import BITMAP, CANVAS, DOODLE, upload_view_style
from .metrics import metrics_by_group, relevance, retrieval_metrics, zero_shot_accuracy


class FeatureEncoder(Protocol):
    """What evaluation needs: embeddings from trunk features (and texts, where the model has a text tower)."""
    name: str

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor: ...


@dataclass(frozen=True)
class Task:
    dataset: str
    query_style: str
    level: str  # "instance" or "category"
    render: str = ""  # "canvas": the queries re-drawn as on the app's canvas (`hystar.synthetic_canvas`)

    @property
    def name(self) -> str:
        drawn = f" on {self.render}" if self.render else ""
        return f"{self.dataset} {self.query_style}{drawn}→photo ({self.level})"


class EffNetPooled(torch.nn.Module):
    """Baseline: raw ImageNet EfficientNet-Lite0 global-pooled features (no text tower), from the cached features of
    hystar-mini's trunk; with v2 the stride-32 stages are the ImageNet ones, not the ones v2 trained."""

    name = "effnet-lite0-pooled"

    def __init__(self, mini_encoder):
        super().__init__()
        self.split = mini_encoder.visual.split
        self.imagenet = efficientnet_lite0()

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        e, features = self.imagenet, features.float()
        coarse = (e.blocks[self.split:](features[:, :FINE_CHANNELS]) if self.split is not None  # (no thumbnail)
                  else features[:, -COARSE_CHANNELS:])
        z = e.global_pool(e.bn2(e.conv_head(coarse)))
        return F.normalize(z, dim=-1) if normalize else z


class Rescored:
    """A model that embeds as `model` does and scores the gallery its own way (`scores`); `suffix` names it."""

    suffix = "+rescored"

    def __init__(self, model):
        self.model = model
        self.name = f"{getattr(model, 'name', 'model')}{self.suffix}"

    def __getattr__(self, attribute: str):
        return getattr(self.model, attribute)

    def encode_features(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode_features(features, normalize)

    def scores(self, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Reranked(Rescored):
    """A model whose top-k gallery candidates per query are re-scored by a re-ranker (e.g. QuARI)."""

    suffix = "+rerank"

    def __init__(self, model, reranker, top_k: int = RERANK_DEPTH):
        self.reranker, self.top_k = reranker, top_k
        super().__init__(model)

    def scores(self, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        if len(gallery) <= self.top_k:
            return self.reranker.rerank_batch(queries, gallery)
        base = queries @ gallery.T
        out = base - 1e3  # everything outside the top k ranks below the re-ranked candidates
        for row, query in enumerate(queries):
            top = np.argpartition(-base[row], self.top_k)[:self.top_k]
            out[row, top] = self.reranker.rerank(query, gallery[top])
        return out


class Expanded(Rescored):
    """A model whose queries are expanded by their best gallery matches (`QueryExpansion`, as the app searches)."""

    suffix = "+qe"

    def __init__(self, model, expansion: QueryExpansion):
        self.expansion = expansion
        super().__init__(model)

    def scores(self, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return self.expansion.scores(queries, gallery)


DRAWN_STYLES = ("sketch", DOODLE, BITMAP)   # queries the app takes as drawings: on its canvas, or uploads that pass
                                          # its line-drawing test (as `DatasetViews.queries` prepares them)


class NamePriored(Rescored):
    """A model, scoring as it does (e.g. `Expanded`), whose drawing queries lean toward the gallery's class names
    they read as (`hystar.guesses.NamePrior`), as the app searches; other queries as they are."""

    suffix = "+names"

    def __init__(self, model, prior: NamePrior):
        self.prior = prior
        self._guessers: dict[tuple[str, ...], Guesser] = {}
        super().__init__(model)

    def scores(self, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        score = getattr(self.model, "scores", None)
        return score(queries, gallery) if score is not None else queries @ gallery.T

    def lean(self, vectors: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        vocabulary = vocabulary_for(classes)
        if vocabulary.names not in self._guessers:
            self._guessers[vocabulary.names] = Guesser.build(vocabulary,
                                                             lambda texts: embed_texts(embedding_model(self), texts))
        return self.prior.lean(vectors, self._guessers[vocabulary.names])


def embedding_model(model):
    """The model that embeds for `model`: itself, or what a `Rescored` wraps (however deep)."""
    while isinstance(model, Rescored):
        model = model.model
    return model


@torch.no_grad()
def embed_captions(encoder, texts: Sequence[str]) -> np.ndarray:
    return embed_texts(encoder, texts)


def _has_text(encoder) -> bool:
    return hasattr(encoder, "encode_text")


class DatasetViews:
    """Cached trunk features for a dataset's items and for synthetic styles of its photos, queries as the app sees
    them (`query_norm`: prepared by `hystar.query`) or as stored."""

    def __init__(self, base_encoder, dataset: Dataset, query_norm: bool = True):
        self.base, self.dataset, self.query_norm = base_encoder, dataset, query_norm
        self._styled: dict[str, torch.Tensor] = {}

    def originals(self, items: Sequence[Item]) -> torch.Tensor:
        """`items` as stored (sketches too only when a task asks for them raw: `query_norm` off)."""
        return item_features(self.base, items, f"{self.dataset.name}-stored")

    def queries(self, items: Sequence[Item], render: str = "") -> torch.Tensor:
        """Stored queries as the app sees them: sketches normalised (and drawn on the canvas first, with render)."""
        viewed = query_view_features(self.base, items, self.dataset.name, render, self.query_norm)
        return self.originals(items) if viewed is None else viewed

    def styled_photos(self, style: str, items: Sequence[Item]) -> torch.Tensor:
        """Photos rendered in a synthetic `style`, as uploaded queries."""
        if style not in self._styled:
            photos = self.dataset.photos()
            view = upload_view_style(style, self.query_norm)
            self._styled[style] = trunk_features(self.base, [View(p, view) for p in photos],
                                                 f"{self.dataset.name}-photo-{view}")
            self._photo_row = {id(p): k for k, p in enumerate(photos)}
        return self._styled[style][[self._photo_row[id(item)] for item in items]]


def tasks_for(dataset: Dataset, synthetic: Sequence[str] = SYNTHETIC_STYLES, split: str = "test",
              canvas: bool = False) -> list[Task]:
    """Every query style's tasks; with `canvas`, each sketch task also on the canvas protocol."""
    gallery_instances = {item.instance_id for item in dataset.photos() if item.instance_id}
    tasks = []
    for style in dataset.styles:
        if style == "photo":
            continue
        queries = dataset.select(style=style, split=split)
        if style == DOODLE:  # no stored image: doodles are always drawn on the canvas, judged by class
            tasks += [Task(dataset.name, style, "category", CANVAS)] if any(q.label for q in queries) else []
            continue
        paired = bool(queries) and all(q.instance_id in gallery_instances for q in queries)
        if paired:
            tasks.append(Task(dataset.name, style, "instance"))
        if any(q.label for q in queries):
            tasks.append(Task(dataset.name, style, "category"))
        if canvas and style == "sketch":
            tasks += [Task(t.dataset, t.query_style, t.level, "canvas") for t in tasks if t.query_style == style]
    own_photos = all(p.dataset == dataset.name for p in dataset.photos())  # not another dataset's gallery
    for style in synthetic if own_photos else ():
        tasks.append(Task(dataset.name, style, "instance"))
    if dataset.text_queries(split):
        tasks.append(Task(dataset.name, "text", "instance"))
    return tasks


CLASS_GROUPS = ("seen classes", "unseen classes")


def class_groups(queries: Sequence[Item]) -> dict[str, np.ndarray]:
    """Masks of the queries from classes seen in training and from classes never trained on (Sketchy's unseen
    classes), when a task holds both; else none."""
    unseen = np.array([q.unseen for q in queries], dtype=bool)
    return dict(zip(CLASS_GROUPS, (~unseen, unseen), strict=True)) if unseen.any() and not unseen.all() else {}


@dataclass
class TaskQueries:
    vectors: np.ndarray
    keys: np.ndarray                 # per query: its class (category tasks) or instance (instance tasks)
    groups: dict[str, np.ndarray]    # `class_groups`


def embed_task_queries(encoder, views: DatasetViews, task: Task, split: str = "test") -> TaskQueries | None:
    """The queries of `task` from `split`, embedded (None for a text task and an encoder without text)."""
    dataset = views.dataset
    if task.query_style == "text":
        if not _has_text(encoder):
            return None
        texts = dataset.text_queries(split)
        return TaskQueries(embed_captions(encoder, [t.text for t in texts]), np.array([t.instance_id for t in texts]),
                           {})
    if task.query_style in SYNTHETIC_STYLES:
        queries = dataset.photos(split)
        vectors = embed_features(encoder, views.styled_photos(task.query_style, queries))
    else:
        queries = dataset.select(style=task.query_style, split=split)
        if task.level == "category":  # a query without a class has nothing to find at category level
            queries = [q for q in queries if q.label]
        vectors = embed_features(encoder, views.queries(queries, task.render))
    attribute = "label" if task.level == "category" else "key"
    return TaskQueries(vectors, np.array([getattr(q, attribute) for q in queries]), class_groups(queries))


def evaluate_task(encoder, views: DatasetViews, task: Task, gallery_vectors: np.ndarray, split: str = "test",
                  queries: TaskQueries | None = None) -> dict | None:
    """Queries of `split` (the test split; "val" to choose settings) against the whole gallery, scored by the
    model's `scores` where it has one; where they mix seen and unseen classes, each group's metrics too (under
    "groups"). `queries`: the task's queries embedded already (`embed_task_queries`)."""
    queries = queries or embed_task_queries(encoder, views, task, split)
    if queries is None:
        return None
    gallery = views.dataset.photos()
    if isinstance(encoder, NamePriored) and task.query_style in DRAWN_STYLES:
        queries = replace(queries, vectors=encoder.lean(queries.vectors, [g.label for g in gallery]))
    attribute = "label" if task.level == "category" else "key"
    gallery_keys = np.array([getattr(g, attribute) if task.query_style != "text" else g.instance_id
                             for g in gallery])
    score = getattr(encoder, "scores", None)
    scores = score(queries.vectors, gallery_vectors) if score is not None else queries.vectors @ gallery_vectors.T
    relevant = relevance(queries.keys, gallery_keys)
    metrics = retrieval_metrics(scores, relevant)
    if queries.groups:
        metrics["groups"] = metrics_by_group(scores, relevant, queries.groups)
    if task.level == "instance":
        row_of = {key: row for row, key in enumerate(gallery_keys)}
        metrics |= dsr_protocol(queries.vectors, gallery_vectors[[row_of[k] for k in queries.keys]], score=score)
    return metrics


def evaluate_dataset(encoder, base_encoder, dataset: Dataset, tasks: Sequence[Task] | None = None,
                     split: str = "test", canvas: bool = False, query_norm: bool = True,
                     embeddings: dict | None = None) -> dict:
    """Every task (default: all of `tasks_for`, with `canvas` the canvas protocol too); queries prepared as
    the app prepares them unless `query_norm` is False. `embeddings`, a dict kept across calls, holds what each
    embedding model gave, so that models which only score differently (`Rescored`) embed nothing again."""
    views = DatasetViews(base_encoder, dataset, query_norm)
    embedder = embedding_model(encoder)
    memo = embeddings if embeddings is not None else {}
    key = (id(embedder), dataset.name, query_norm)

    def remember(what: tuple, embed: Callable[[], object]):
        if key + what not in memo:
            memo[key + what] = embed()
        return memo[key + what]

    gallery_vectors = remember(("gallery",), lambda: embed_features(embedder, views.originals(dataset.photos())))
    results = {}
    for task in tasks or tasks_for(dataset, split=split, canvas=canvas):
        queries = remember((task.name, split), lambda: embed_task_queries(embedder, views, task, split))  # noqa: B023
        metrics = evaluate_task(encoder, views, task, gallery_vectors, split, queries) if queries else None
        if metrics is not None:
            results[task.name] = {**asdict(task), **metrics}
    return results


@torch.no_grad()
def zero_shot(encoder, base_encoder, dataset: Dataset, split: str = "test") -> dict:
    """Accuracy (%) of "a photo of a {class}" over all the dataset's classes, on its photos of `split`."""
    views = DatasetViews(base_encoder, dataset)
    classes = dataset.classes
    class_text = embed_captions(encoder, [PROMPT.format(class_name(c)) for c in classes])
    out = {"classes": len(classes)}
    for group, unseen in (("seen", False), ("unseen", True)):
        photos = [p for p in dataset.photos(split) if p.unseen == unseen]
        if photos:
            labels = np.array([classes.index(p.label) for p in photos])
            image = embed_features(encoder, views.originals(photos))
            out[f"{group}_accuracy"] = zero_shot_accuracy(image, class_text, labels)
            out[f"{group}_photos"] = len(photos)
    return out


@torch.no_grad()
def doodle_text(encoder, base_encoder, dataset: Dataset, split: str = "test", ks: Sequence[int] = (1, 5)) -> dict:
    """Doodle -> text zero-shot: top-k accuracy (%) of "a drawing of a {category}" over all of `dataset.words`
    (Quick, Draw!'s 345 categories), on the stroke doodles of `split` drawn on the canvas; the doodles of
    categories that depict a never-trained class apart ("unseen")."""
    words = dataset.words
    doodles = [d for d in dataset.select(style=DOODLE, split=split) if isinstance(d, Doodle)]
    views = DatasetViews(base_encoder, dataset)
    image = embed_features(encoder, views.queries(doodles, CANVAS))
    text = embed_captions(encoder, [DRAWING_PROMPT.format(w) for w in words])
    labels = np.array([words.index(d.category) for d in doodles])
    top = np.argsort(-(image @ text.T), axis=1)[:, :max(ks)]
    hit = top == labels[:, None]
    unseen = np.array([d.unseen for d in doodles], dtype=bool)
    out = {"categories": len(words)}
    for group, mask in (("all", np.ones_like(unseen)), ("seen", ~unseen), ("unseen", unseen)):
        if mask.any():
            out[f"{group}_doodles"] = int(mask.sum())
            out |= {f"{group}_top{k}": float(hit[mask, :k].any(1).mean() * 100) for k in ks}
    return out


def markdown_table(results: dict[str, dict[str, dict]], columns: Sequence[str] = ("R@1", "R@5", "R@10", "mAP")) -> str:
    """Rows: tasks; one group of columns per model. `results` maps model name -> task name -> metrics."""
    models = list(results)
    tasks = list(dict.fromkeys(t for m in models for t in results[m]))
    header = "| task | queries | " + " | ".join(f"{m} {c}" for m in models for c in columns) + " |"
    lines = [header, "|" + "---|" * (2 + len(models) * len(columns))]
    for task in tasks:
        first = next(results[m][task] for m in models if task in results[m])
        cells = [f"{results[m][task][c]:.1f}" if task in results[m] else "–" for m in models for c in columns]
        lines.append(f"| {task} | {first['queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_metric(task: str) -> str:
    """The metric a task is judged by: mAP at category level, R@5 for text, R@1 for other instance tasks."""
    if task.endswith("(category)"):
        return "mAP"
    return "R@5" if " text→" in f" {task}" else "R@1"


def headline_table(results: dict[str, dict[str, dict]], reference: str = "base") -> str:
    """One number per task and model (its headline metric), with the change against `reference` when present."""
    models = list(results)
    tasks = list(dict.fromkeys(t for m in models for t in results[m]))
    lines = ["| task | metric | " + " | ".join(models) + " |", "|" + "---|" * (2 + len(models))]
    for task in tasks:
        metric = headline_metric(task)
        ref = results.get(reference, {}).get(task)
        cells = []
        for m in models:
            if task not in results[m]:
                cells.append("–")
                continue
            value = results[m][task][metric]
            change = "" if ref is None or m == reference else f" ({value - ref[metric]:+.1f})"
            cells.append(f"{value:.1f}{change}")
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(results: dict[str, dict[str, dict]]) -> str:
    """The headline metric of the seen and the unseen classes for the tasks that measure them apart, models side
    by side."""
    models = list(results)
    tasks = list(dict.fromkeys(t for m in models for t, r in results[m].items() if "groups" in r))
    if not tasks:
        return ""
    header = ("| task | metric | " + " | ".join(f"{g} (queries)" for g in CLASS_GROUPS) + " | "
              + " | ".join(f"{m} {g}" for m in models for g in CLASS_GROUPS) + " |")
    lines = [header, "|" + "---|" * (2 + (1 + len(models)) * len(CLASS_GROUPS))]
    for task in tasks:
        metric = headline_metric(task)
        apart = {m: results[m][task]["groups"] for m in models if "groups" in results[m].get(task, {})}
        first = next(iter(apart.values()))
        cells = [str(first[g]["queries"]) for g in CLASS_GROUPS]
        cells += [f"{apart[m][g][metric]:.1f}" if m in apart else "–" for m in models for g in CLASS_GROUPS]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DSR_COLUMNS = ("DSR R@1", 'DSR "R@5" (top-4)', "DSR top-5")


def dsr_table(results: dict[str, dict[str, dict]]) -> str:
    """The DSR protocol's numbers (batches of 24 pairs) for the tasks that have them, models side by side."""
    models = list(results)
    tasks = list(dict.fromkeys(t for m in models for t, r in results[m].items() if DSR_COLUMNS[0] in r))
    if not tasks:
        return ""
    header = "| task | batches | " + " | ".join(f"{m} {c.removeprefix('DSR ')}" for m in models for c in DSR_COLUMNS)
    lines = [header + " |", "|" + "---|" * (2 + len(models) * len(DSR_COLUMNS))]
    for task in tasks:
        first = next(results[m][task] for m in models if DSR_COLUMNS[0] in results[m].get(task, {}))
        cells = [f"{results[m][task][c]:.1f}" if DSR_COLUMNS[0] in results[m].get(task, {}) else "–"
                 for m in models for c in DSR_COLUMNS]
        lines.append(f"| {task} | {first['DSR batches']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dsr_protocol(query_vectors: np.ndarray, photo_vectors: np.ndarray, seed: int = 0, batch: int = 24,
                 score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> dict:
    """The DSR benchmark protocol, labelled as such: queries in shuffled batches of 24 (query, photo) pairs, each
    query ranked against its batch's 24 photos (by `score`, a model's own scoring, else the inner product). Their
    "R@5" counts the top 4 (as their code does); we add true top 5. `photo_vectors[i]` is query i's positive photo."""
    if len(query_vectors) < batch:
        return {}  # not one whole batch: the protocol does not apply
    order = np.random.default_rng(seed).permutation(len(query_vectors))
    hits = {1: [], 4: [], 5: []}
    for start in range(0, len(order) - batch + 1, batch):
        rows = order[start:start + batch]
        queries, photos = query_vectors[rows], photo_vectors[rows]
        scores = score(queries, photos) if score is not None else queries @ photos.T
        rank = (scores > scores.diagonal()[:, None]).sum(1)
        for k in hits:
            hits[k].extend(rank < k)
    return {"DSR R@1": float(np.mean(hits[1]) * 100), 'DSR "R@5" (top-4)': float(np.mean(hits[4]) * 100),
            "DSR top-5": float(np.mean(hits[5]) * 100), "DSR batches": len(hits[1]) // batch}
