"""Train adapters on (styled query, photo) pairs of the train split (`hystar train`, see `hystar.cli.train`).

Pairs, all from cached trunk features:
- instance: real sketches with the photo they draw (Sketchy, PACS `n0*` sketches); synthetic mosaic / art / pencil
  renderings of a train photo with that photo;
- category: PACS art paintings, cartoons and unpaired sketches with a photo of their class, drawn anew each epoch;
  Quick, Draw! train doodles drawn on the canvas (`hystar.train.doodle_set`) with a photo of the class they depict.
Both sides go through the adapted encoder, each conditioned on its own style. A photo-anchor term keeps adapted
photos near their base embeddings, so text → photo search (untouched text tower) keeps working.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..adapt import AdapterConfig, PromptConfig, build_adapter, save_adapter
from ..data import Dataset, class_name, iter_datasets
from ..encoder import load_encoder
from ..features import View, item_features, trunk_features
from ..io import atomic_open
from ..sketch_views import query_view_features
from ..synthetic import SYNTHETIC_STYLES
from ..synthetic_canvas import DOODLE, upload_view_style
from .doodle_set import DoodleConfig, doodle_set
from .losses import LOSSES, StyleNCEConfig
from .schedule import warmup_cosine

TRAIN_DATASETS = ("pacs", "sketchy", "coco_mini")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 48
    lr_static: float = 1e-3   # the reference's 1e-3
    lr_dynamic: float = 5e-4  # the reference's 1e-5 leaves the zero-initialised hypernetworks near zero in 2 epochs
    loss: str = "stylence"
    anchor_weight: float = 1.0
    synthetic_styles: tuple[str, ...] = SYNTHETIC_STYLES
    normalise_sketches: bool = True  # sketches as the app feeds them (`hystar.sketch`); False: as stored
    doodles: bool = True      # Quick, Draw! doodles that depict a trained class, as one more category-level style
    seed: int = 0


@dataclass
class PairSet:
    """Query features with, for each, its positive photo (instance) or its class (category)."""
    photos: torch.Tensor              # (P, ...) float16 trunk features of train photos
    photo_class: list[str]
    photo_key: list[str]
    queries: torch.Tensor             # (Q, ...) float16
    query_photo: list[int]            # photo row, or -1 for category-level
    query_class: list[str]
    query_style: list[str]

    def sample_positives(self, rng: random.Random) -> torch.Tensor:
        by_class = defaultdict(list)
        for row, label in enumerate(self.photo_class):
            by_class[label].append(row)
        return torch.tensor([row if row >= 0 else rng.choice(by_class[label])
                             for row, label in zip(self.query_photo, self.query_class, strict=True)])


def synthetic_features(encoder, dataset: Dataset, style: str) -> torch.Tensor:
    """Every photo rendered in synthetic `style` and prepared as the app prepares an upload (the eval's views)."""
    view = upload_view_style(style)
    return trunk_features(encoder, [View(p, view) for p in dataset.photos()], f"{dataset.name}-photo-{view}")


def build_pairs(encoder, datasets: list[Dataset], synthetic_styles: tuple[str, ...],
                normalise_sketches: bool = True, doodles: bool = False) -> PairSet:
    photos, photo_class, photo_key, row_of = [], [], [], {}
    queries, query_photo, query_class, query_style = [], [], [], []
    for dataset in datasets:
        sketches = dataset.select(style="sketch", split="train", unseen=False)
        viewed = query_view_features(encoder, sketches, f"{dataset.name}-train", normalise=normalise_sketches)
        sketch_row = {id(item): k for k, item in enumerate(sketches)} if viewed is not None else {}
        # the files as stored: photos and the queries that are not seen through a query view
        stored = [item for item in dataset.select(split="train", unseen=False) if id(item) not in sketch_row]
        features = item_features(encoder, stored, f"{dataset.name}-train-stored")
        position = {id(item): k for k, item in enumerate(stored)}
        train_photos = [p for p in dataset.photos("train") if not p.unseen]
        for photo in train_photos:
            if photo.key not in row_of:
                row_of[photo.key] = len(photos)
                photos.append(features[position[id(photo)]])
                photo_class.append(class_name(photo.label) if photo.label else f"instance:{photo.key}")
                photo_key.append(photo.key)
        for item in dataset.select(split="train", unseen=False):
            if item.style == "photo":
                continue
            paired = item.instance_id and item.instance_id in row_of
            row = sketch_row.get(id(item))
            queries.append(features[position[id(item)]] if row is None else viewed[row])
            query_photo.append(row_of[item.instance_id] if paired else -1)
            query_class.append(class_name(item.label))
            query_style.append(item.style)
        all_photos = dataset.photos()
        for style in synthetic_styles:
            styled = synthetic_features(encoder, dataset, style)
            for k, photo in enumerate(all_photos):
                if photo.split == "train" and not photo.unseen:
                    queries.append(styled[k])
                    query_photo.append(row_of[photo.key])
                    query_class.append(photo_class[row_of[photo.key]])
                    query_style.append(style)
    if doodles:
        classes = sorted(set(photo_class))
        drawn = doodle_set(encoder, classes, DoodleConfig())
        for row in torch.nonzero(drawn.photo_class >= 0).flatten().tolist():
            queries.append(drawn.features[row])
            query_photo.append(-1)
            query_class.append(classes[int(drawn.photo_class[row])])
            query_style.append(DOODLE)
    return PairSet(torch.stack(photos), photo_class, photo_key, torch.stack(queries), query_photo, query_class,
                   query_style)


def not_negative_mask(pairs: PairSet, rows: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Same photo twice, or a photo of the query's class for a category-level query: not a negative."""
    keys = [pairs.photo_key[p] for p in positives.tolist()]
    classes = [pairs.photo_class[p] for p in positives.tolist()]
    category = [pairs.query_photo[r] < 0 for r in rows.tolist()]
    size = len(rows)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        for j in range(size):
            mask[i, j] = keys[i] == keys[j] or (category[i] and classes[i] == classes[j])
    return mask


def make_loss(name: str, stylence: StyleNCEConfig):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    if name == "stylence":
        return lambda q, p, m: LOSSES[name](q, p, m, stylence)
    return LOSSES[name]


def build_for_training(base, adapter_cfg: AdapterConfig | PromptConfig, pairs: PairSet):
    adapter = build_adapter(base, adapter_cfg)
    adapter.init_for_training(base, pairs.queries, pairs.photos)
    return adapter


def train_adapter(encoder_spec: str, adapter_cfg: AdapterConfig | PromptConfig, cfg: TrainConfig, out: Path,
                  stylence: StyleNCEConfig | None = None, datasets: list[Dataset] | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    base = load_encoder(encoder_spec).requires_grad_(False)
    pairs = build_pairs(base, datasets or list(iter_datasets(TRAIN_DATASETS)), cfg.synthetic_styles,
                        cfg.normalise_sketches, cfg.doodles)
    adapter = build_for_training(base, adapter_cfg, pairs).train()
    dynamic = [p for n, p in adapter.named_parameters() if n.startswith("hyper.")]
    static = [p for n, p in adapter.named_parameters() if not n.startswith("hyper.")]
    groups = [g for g in ({"params": static, "lr": cfg.lr_static}, {"params": dynamic, "lr": cfg.lr_dynamic})
              if g["params"]]
    base_lrs = [g["lr"] for g in groups]  # the optimizer rewrites its groups' lr; keep the schedule's base apart
    optimizer = torch.optim.Adam(groups)
    stylence = stylence or StyleNCEConfig()
    loss_fn = make_loss(cfg.loss, stylence)
    steps = len(pairs.queries) // cfg.batch_size
    total, log, started = cfg.epochs * steps, [], time.time()
    checkpoint = Path(out).with_suffix(".ckpt")
    first_epoch = resume(checkpoint, adapter, optimizer, cfg, log)
    step = first_epoch * steps
    for epoch in range(first_epoch, cfg.epochs):
        order = torch.randperm(len(pairs.queries), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        positives_all = pairs.sample_positives(random.Random(cfg.seed * 1000 + epoch))
        bar = tqdm(range(steps), desc=f"train {cfg.loss} epoch {epoch + 1}/{cfg.epochs}")
        running = 0.0
        for b in bar:
            rows = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            positives = positives_all[rows]
            scale = warmup_cosine(step, total)
            for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base_lr * scale
            features = torch.cat([pairs.queries[rows], pairs.photos[positives]]).float()
            adapted, _ = adapter(base, features)
            adapted = F.normalize(adapted, dim=-1)
            q, p = adapted[:len(rows)], adapted[len(rows):]
            loss = loss_fn(q, p, not_negative_mask(pairs, rows, positives))
            if cfg.anchor_weight:
                with torch.no_grad():
                    anchor = base.encode_features(pairs.photos[positives].float())
                loss = loss + cfg.anchor_weight * (1 - (p * anchor).sum(-1)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running = 0.9 * running + 0.1 * loss.item() if b else loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
        log.append({"epoch": epoch + 1, "loss": round(running, 4), "seconds": round(time.time() - started, 1)})
        save_checkpoint(checkpoint, adapter, optimizer, cfg, epoch + 1, log)
    adapter.eval()
    summary = {"train": asdict(cfg), "stylence": asdict(stylence), "pairs": len(pairs.queries),
               "photos": len(pairs.photos), "log": log, "seconds": round(time.time() - started, 1)}
    save_adapter(adapter, out, encoder_spec, summary)
    checkpoint.unlink(missing_ok=True)
    return summary


def save_checkpoint(path: Path, adapter, optimizer, cfg: TrainConfig, epochs_done: int, log: list) -> None:
    """Adapter and optimizer state after a whole epoch, written atomically; `resume` continues from it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as handle:
        torch.save({"adapter": adapter.state_dict(), "optimizer": optimizer.state_dict(), "epochs_done": epochs_done,
                    "config": json.dumps(asdict(cfg)), "log": json.dumps(log)}, handle)


def resume(path: Path, adapter, optimizer, cfg: TrainConfig, log: list) -> int:
    """Epochs already done by an interrupted run of the same configuration (0 without a checkpoint)."""
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config"] != json.dumps(asdict(cfg)):
        print(f"hystar train: ignoring {path.name}: it was written by another configuration")
        return 0
    adapter.load_state_dict(state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    log.extend(json.loads(state["log"]))
    print(f"hystar train: resuming after epoch {state['epochs_done']} from {path.name}")
    return int(state["epochs_done"])
