"""`hystar eval --online`: a stream of queries through an online session vs the static encoder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data import load_dataset
from ..online import OnlineConfig, OnlineSession
from ..synthetic import SYNTHETIC_STYLES
from .metrics import retrieval_metrics
from .retrieval import DatasetViews, embed_captions, embed_features

DEFAULT_STREAM = ("pacs:mosaic", "pacs:sketch")


@dataclass
class StreamQueries:
    features: torch.Tensor   # (Q, ...) trunk features, stream order
    relevant: np.ndarray     # (Q, G) boolean against the gallery
    segment: list[str]       # "pacs:mosaic" per query


def stream_queries(views, segments: Sequence[str], seed: int = 0, split: str = "test") -> StreamQueries:
    """`split` queries of each `dataset:style` segment, shuffled within the segment, segments in order.

    Synthetic styles (mosaic, art, pencil) of test photos are instance-level; real styles are category-level.
    """
    dataset = views.dataset
    gallery = dataset.photos()
    rng = np.random.default_rng(seed)
    features, relevant, labels = [], [], []
    for segment in segments:
        name, _, style = segment.partition(":")
        if name != dataset.name:
            raise ValueError(f"stream segment {segment!r} is not of dataset {dataset.name!r}")
        if style in SYNTHETIC_STYLES:
            queries = dataset.photos(split)
            part, attribute = views.styled_photos(style, queries), "key"
        else:
            queries = dataset.select(style=style, split=split)
            part, attribute = views.originals(queries), "label"
        if not queries:
            raise ValueError(f"stream segment {segment!r} has no {split} queries")
        order = rng.permutation(len(queries))
        features.append(part[order])
        keys = np.array([getattr(queries[i], attribute) for i in order])
        relevant.append(keys[:, None] == np.array([getattr(g, attribute) for g in gallery])[None, :])
        labels += [segment] * len(queries)
    return StreamQueries(torch.cat(features), np.concatenate(relevant), labels)


def _metrics(vectors: np.ndarray, gallery: np.ndarray, relevant: np.ndarray) -> dict:
    return retrieval_metrics(vectors @ gallery.T, relevant)


def leave_one_out_photo_metrics(vectors: np.ndarray, gallery: np.ndarray, rows: np.ndarray,
                                labels: np.ndarray) -> dict:
    """Photo → photo at category level: each query is a gallery photo; its own row is left out of the ranking."""
    scores = vectors @ gallery.T
    scores[np.arange(len(rows)), rows] = -np.inf
    relevant = labels[rows][:, None] == labels[None, :]
    relevant[np.arange(len(rows)), rows] = False
    return retrieval_metrics(scores, relevant)


def evaluate_stream(encoder, base_encoder, cfg: OnlineConfig | None = None, data: str = "pacs",
                    segments: Sequence[str] = DEFAULT_STREAM, batch_size: int = 16, anchors: int = 32,
                    text_data: str | None = "coco_mini", seed: int = 0, split: str = "test") -> dict:
    """A stream of `split` queries through a session vs the static encoder, then photo and text quality before/after
    (photos and captions of `split` too; "val" to choose settings).

    - stream: R@1 / mAP on the later half of the stream, adapted (each batch embedded before its own update, as
      its search would be) vs no adaptation; and per segment;
    - photo → photo: the dataset's test photos as queries (session-embedded) against the fixed gallery, category
      level, leave-one-out;
    - text → photo: `text_data`'s captions against its photos embedded by the session (the gallery re-embedded:
      stricter than deployment, where the gallery index stays fixed and text search cannot change).
    Anchors: `anchors` train-split photos of the gallery (never the test photos scored above).
    """
    cfg = cfg or OnlineConfig()
    started = time.time()
    dataset = load_dataset(data)
    views = DatasetViews(base_encoder, dataset)
    gallery_items = dataset.photos()
    gallery_features = views.originals(gallery_items)
    gallery = embed_features(encoder, gallery_features)
    train_rows = [k for k, g in enumerate(gallery_items) if g.split == "train"]
    pick = np.random.default_rng(seed).choice(train_rows, size=min(anchors, len(train_rows)), replace=False)
    session = OnlineSession(encoder, gallery, cfg, anchor_features=gallery_features[np.sort(pick)])
    stream = stream_queries(views, segments, seed, split)

    static = embed_features(encoder, stream.features)
    online, reliable, adapted, conflicts = [], 0, 0, 0
    for start in range(0, len(stream.features), batch_size):
        z, report = session.observe_with_report(stream.features[start:start + batch_size].float())
        online.append(z.cpu().numpy())
        reliable, adapted, conflicts = reliable + report.reliable, adapted + report.adapted, conflicts + report.conflict
    online = np.concatenate(online)

    half = len(online) // 2
    later = slice(half, None)
    result = {"encoder": encoder.name, "config": asdict(cfg), "data": data,
              "segments": list(segments), "batch_size": batch_size, "queries": len(online),
              "reliable": reliable, "updates": adapted, "conflicting_updates": conflicts,
              "later": {"queries": len(online) - half,
                        "static": _metrics(static[later], gallery, stream.relevant[later]),
                        "online": _metrics(online[later], gallery, stream.relevant[later])},
              "segment": {}}
    for segment in dict.fromkeys(stream.segment):
        rows = np.array([s == segment for s in stream.segment])
        result["segment"][segment] = {"static": _metrics(static[rows], gallery, stream.relevant[rows]),
                                      "online": _metrics(online[rows], gallery, stream.relevant[rows])}

    photo_rows = np.array([k for k, g in enumerate(gallery_items) if g.split == split])
    labels = np.array([g.label or g.key for g in gallery_items])
    photo_features = gallery_features[photo_rows]
    after_photos = torch.cat([session.embed(photo_features[i:i + 256].float())
                              for i in range(0, len(photo_rows), 256)]).cpu().numpy()
    result["photo"] = {"before": leave_one_out_photo_metrics(gallery[photo_rows], gallery, photo_rows, labels),
                       "after": leave_one_out_photo_metrics(after_photos, gallery, photo_rows, labels),
                       "drift": float(1 - (after_photos * gallery[photo_rows]).sum(1).mean())}
    if text_data and hasattr(encoder, "encode_text"):
        text_set = load_dataset(text_data)
        texts = text_set.text_queries(split)
        text_views = DatasetViews(base_encoder, text_set)
        photos = text_set.photos()
        photo_features = text_views.originals(photos)
        captions = embed_captions(encoder, [t.text for t in texts])
        relevant = np.array([t.instance_id for t in texts])[:, None] == np.array([p.instance_id for p in photos])
        before = embed_features(encoder, photo_features)
        after = torch.cat([session.embed(photo_features[i:i + 256].float())
                           for i in range(0, len(photos), 256)]).cpu().numpy()
        result["text"] = {"data": text_data, "before": _metrics(captions, before, relevant),
                          "after": _metrics(captions, after, relevant)}
    result["seconds"] = round(time.time() - started, 1)
    return result


def stream_table(results: dict[str, dict]) -> str:
    """Markdown: one row per model, later-stream quality adapted vs not, and photo / text quality before vs after."""
    lines = ["| model | later-stream R@1 (static → online) | later-stream mAP | photo→photo R@1 (before → after) "
             "| photo→photo mAP | text→photo R@5 (before → after) | reliable / queries | updates (conflicting) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        later, photo, text = r["later"], r["photo"], r.get("text")
        cells = [_change(later["static"], later["online"], "R@1"), _change(later["static"], later["online"], "mAP"),
                 _change(photo["before"], photo["after"], "R@1"), _change(photo["before"], photo["after"], "mAP"),
                 _change(text["before"], text["after"], "R@5") if text else "–",
                 f"{r['reliable']} / {r['queries']}", f"{r['updates']} ({r['conflicting_updates']})"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _change(before: dict, after: dict, key: str) -> str:
    return f"{before[key]:.1f} → {after[key]:.1f} ({after[key] - before[key]:+.1f})"


def segment_table(results: dict[str, dict]) -> str:
    lines = ["| model | segment | queries | R@1 static → online | mAP static → online |", "|---|---|---|---|---|"]
    for label, r in results.items():
        for segment, m in r["segment"].items():
            s, o = m["static"], m["online"]
            lines.append(f"| {label} | {segment} | {s['queries']} | {s['R@1']:.1f} → {o['R@1']:.1f} "
                         f"| {s['mAP']:.1f} → {o['mAP']:.1f} |")
    return "\n".join(lines)
