"""hystar-mini v2: the trunk's later stages trained for styles, tokens that also read a colour thumbnail.
`hystar train-mini-v2`.

Split: EfficientNet-Lite0 stem ... stride-16 (blocks[:5]) stays frozen and its 112x14x14 maps are cached in float16
for every training view, with the image's 14x14-pixel colour thumbnail (the usual `hystar.features` cache, trunk id
`effnet-lite0-s16-rgb14`); the stride-32 stages (blocks[5:], 2.26 M parameters), the token projection and the class
token's thumbnail projection (both read the thumbnail: the colour layout a low-res or mosaic query keeps) and the
transformer blocks are trained.
Lineage: ImageNet stages + v1's head -> v2.0 (4 epochs, no thumbnail; `assets/hystar-mini-v2.0`) -> v2.2 (this
trainer's default start: v2.0 with zero thumbnail weights, so it starts embedding exactly as v2.0; no sketch batch)
-> v2.3 (`--start-from` v2.2, with the sketch batch) -> v2.4 (4 more, caption weight 1.5) -> v3 (2 more, with Quick,
Draw! doodles, `--doodle-batch 128`) -> v3.1 (4 more, 192 doodles a step, caption weight 1.5). The trainer's default
start is now the shipped model. v2.1 (tokens read the thumbnail, no class-token path, no low-res loss; 5 epochs) is
in git history only.

BatchNorm in the trained stages runs in eval mode: the ImageNet running statistics are frozen, the affine scale and
shift are trained. With batches of 64 mixed-style views on the CPU, batch statistics would be noisy, and the running
statistics of the frozen trunk's input distribution stay the ones the later stages were trained with.

Views per train photo (Sketchy unseen classes never enter): the photo; its synthetic renderings (mosaic, art,
pencil, low-res thumbnail), each prepared as the app prepares an upload (mosaics de-blocked); its real sketches
(Sketchy, PACS `n0*`), normalised as the app does and also drawn on the canvas then normalised (scale, shift and
stroke-thickness augmentation). Category-level views: PACS art paintings, cartoons and unpaired sketches.

Losses: a cross-style instance InfoNCE (a photo and one of its own renderings are the positive pair, symmetric),
the same against one of its own low-res renderings (mosaic or blurry thumbnail) for every photo of the batch,
the same on a batch of its own for photos that have real sketches (each against one of its sketches: in the main
batch such a photo draws one of a dozen or more renderings, so a given sketch would come up about once in 16 epochs),
the class-prompt cross-entropy over the seen classes on photos, renderings and category views, and, as in
`hystar.train.mini`, what keeps text -> image and zero-shot working: on photos the KL and cosine distillation of the
ImageNet classifier's prompts, and the InfoNCE of COCO-mini train photos against one of their captions.
v3 adds a doodle batch (`hystar.train.doodle_set`): train doodles drawn on the canvas, each against "a drawing of a
{category}" over the trainable Quick, Draw! categories, in the class loss where they depict a trained class, and then
against a photo of that class (InfoNCE, photos of the same class not negatives).
Checkpoints: one per epoch under `out` (`hystar train-mini-v2 --out`, default runs/mini-v2, gitignored), resumed
from the latest.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import PROMPT, Dataset, class_name, iter_datasets
from ..encoder.base import Encoder
from ..encoder.mini import (
    COARSE_CHANNELS,
    FINE_STAGE,
    THUMBNAIL_CHANNELS,
    MiniConfig,
    build_mini,
    save_mini,
    trainable_state,
)
from ..features import View, text_features, trunk_features
from ..io import atomic_write_json, load_tensors
from ..paths import MINI_DIR
from ..synthetic import SYNTHETIC_STYLES
from ..synthetic_canvas import upload_view_style
from .doodle_set import DoodleBatches, DoodleConfig, doodle_set
from .losses import info_nce, symmetric_info_nce
from .mini import imagenet_names
from .schedule import warmup_cosine

SKETCH_VIEWS = ("sketchnorm", "canvas+sketchnorm")
# lowres: a blurry, JPEG-damaged thumbnail (training only); each rendered as uploaded (mosaics de-blocked), as the
# app, the adapter training and the eval see them
RENDERINGS = tuple(upload_view_style(style) for style in (*SYNTHETIC_STYLES, "lowres"))
LOW_RES = tuple(upload_view_style(style) for style in ("mosaic", "lowres"))  # renderings that keep only the layout


def v2_config() -> MiniConfig:
    return MiniConfig(trained_from_stage=FINE_STAGE, thumbnail=True, thumbnail_class=True,
                      trunk_channels=COARSE_CHANNELS + THUMBNAIL_CHANNELS)


def build_mini_v2(start_from: Path | None = MINI_DIR) -> Encoder:
    """hystar-mini v2 before training: the ImageNet trunk, with the weights of `start_from` (a hystar-mini folder:
    v2.0 by default, or v1's head) where they fit. A token projection without thumbnail inputs is padded with zero
    columns for them, so the start embeds exactly as `start_from` does."""
    encoder = build_mini(v2_config())
    if start_from is not None and (Path(start_from) / "weights.safetensors").is_file():
        source = load_tensors(Path(start_from) / "weights.safetensors")
        target = encoder.state_dict()
        start = {}
        for key, value in source.items():
            if key not in target:
                continue
            if value.shape != target[key].shape:
                if key != "visual.token_proj.weight" or value.shape[0] != target[key].shape[0]:
                    raise RuntimeError(f"{start_from}: {key} {tuple(value.shape)} does not fit "
                                       f"{tuple(target[key].shape)}")
                value = torch.cat([value, value.new_zeros(value.shape[0], target[key].shape[1] - value.shape[1])], 1)
            start[key] = value
        encoder.load_state_dict(start, strict=False)
    return encoder


@dataclass(frozen=True)
class V2TrainConfig:
    epochs: int = 4
    batch_size: int = 64          # photos per step; each with one of its renderings
    category_batch: int = 32      # category-level views per step (art, cartoon, unpaired sketches)
    caption_batch: int = 32       # COCO-mini train photos per step, each against one of its captions
    lr: float = 3e-4              # head
    lr_trunk: float = 5e-5        # the stride-32 stages, from ImageNet weights
    lr_text: float | None = None  # the text projection (shared by captions, prompts and doodle words); None: lr,
                                  # 0: frozen, so doodle words move only the image side
    weight_decay: float = 0.05
    warmup_steps: int = 50
    temperature: float = 0.05
    instance_weight: float = 1.0
    class_weight: float = 1.0
    distill_kl_weight: float = 1.0
    distill_cos_weight: float = 1.0
    caption_weight: float = 0.5
    lowres_weight: float = 1.0    # every photo also against its own low-res rendering (mosaic or blurry thumbnail)
    sketch_batch: int = 48        # photos with real sketches per step, each against one of its sketches (0: off)
    sketch_weight: float = 1.0
    same_class: int = 4           # photos of one class side by side in a batch: each other's hard negatives
    seed: int = 0
    limit: int = 0                # > 0: at most this many train photos per dataset (a short run)
    doodles: DoodleConfig = DoodleConfig()  # Quick, Draw! doodles beside the photos (v3; batch 0: off)


@dataclass
class StyleTrainingSet:
    photos: torch.Tensor               # (P, 112, 14, 14) float16
    photo_label: torch.Tensor          # (P,) class index, -1 unlabelled
    renderings: torch.Tensor           # (R, 112, 14, 14)
    rendering_photo: torch.Tensor      # (R,) row in photos
    rendering_lowres: torch.Tensor     # (R,) bool: a LOW_RES rendering
    rendering_sketch: torch.Tensor     # (R,) bool: a real sketch of the photo (normalised, or drawn on the canvas)
    category: torch.Tensor             # (C, 112, 14, 14)
    category_label: torch.Tensor       # (C,)
    class_names: list[str]
    captions: list[str]                # COCO-mini train captions
    caption_photo: torch.Tensor        # (M,) row in photos of the photo each caption describes


def style_training_set(encoder: Encoder, datasets: list[Dataset], limit: int = 0, seed: int = 0
                       ) -> StyleTrainingSet:
    classes = sorted({class_name(i.label) for d in datasets for i in d.photos("train") if i.label and not i.unseen})
    index_of = {c: k for k, c in enumerate(classes)}
    rng = random.Random(seed)
    photos, labels, renderings, owners, lowres, sketch, category, category_labels = [], [], [], [], [], [], [], []
    captions, caption_photo = [], []
    seen: set[str] = set()
    for dataset in datasets:
        train = [p for p in dataset.photos("train") if not p.unseen and p.key not in seen]
        if limit:
            train = sorted(rng.sample(train, min(limit, len(train))), key=lambda p: str(p.path))
        seen.update(p.key for p in train)
        offset = sum(len(t) for t in photos)
        row_of = {p.key: offset + k for k, p in enumerate(train)}
        photos.append(trunk_features(encoder, [View(p) for p in train], f"{dataset.name}-v2-photos"))
        labels += [index_of[class_name(p.label)] if p.label else -1 for p in train]
        for text in dataset.text_queries("train"):
            if text.instance_id in row_of:
                captions.append(text.text)
                caption_photo.append(row_of[text.instance_id])
        for style in RENDERINGS:
            renderings.append(trunk_features(encoder, [View(p, style) for p in train], f"{dataset.name}-v2-{style}"))
            owners += [row_of[p.key] for p in train]
            lowres += [style in LOW_RES] * len(train)
            sketch += [False] * len(train)
        queries = [q for q in dataset.select(split="train", unseen=False) if q.style != "photo"]
        paired = [q for q in queries if q.style == "sketch" and q.instance_id in row_of]
        for view in SKETCH_VIEWS:
            if paired:
                renderings.append(trunk_features(encoder, [View(q, view) for q in paired],
                                                 f"{dataset.name}-v2-sketch-{view}"))
                owners += [row_of[q.instance_id] for q in paired]
                lowres += [False] * len(paired)
                sketch += [True] * len(paired)
        unpaired = [q for q in queries if q.label and q.instance_id not in row_of and not q.instance_id]
        if limit:
            unpaired = rng.sample(unpaired, min(limit, len(unpaired)))
        if unpaired:
            views = [View(q, "sketchnorm" if q.style == "sketch" else None) for q in unpaired]
            category.append(trunk_features(encoder, views, f"{dataset.name}-v2-category"))
            category_labels += [index_of[class_name(q.label)] for q in unpaired]
    empty = photos[0][:0]
    return StyleTrainingSet(torch.cat(photos), torch.tensor(labels), torch.cat(renderings) if renderings else empty,
                            torch.tensor(owners), torch.tensor(lowres, dtype=torch.bool),
                            torch.tensor(sketch, dtype=torch.bool),
                            torch.cat(category) if category else empty,
                            torch.tensor(category_labels, dtype=torch.long), classes, captions,
                            torch.tensor(caption_photo, dtype=torch.long))


def class_grouped_order(rows: torch.Tensor, labels: torch.Tensor, group: int, generator: torch.Generator
                        ) -> torch.Tensor:
    """`rows` shuffled so that runs of `group` photos share a class (unlabelled photos form runs of their own): in
    the instance InfoNCE a photo's rendering must then be told apart from photos of its own class, not only from
    other classes. `group` 1 is a plain shuffle."""
    rows = rows[torch.randperm(len(rows), generator=generator)]
    if group <= 1:
        return rows
    by_label: dict[int, list[int]] = {}
    for row in rows.tolist():
        by_label.setdefault(int(labels[row]), []).append(row)
    runs = [members[k:k + group] for members in by_label.values() for k in range(0, len(members), group)]
    return torch.tensor([row for k in torch.randperm(len(runs), generator=generator).tolist() for row in runs[k]])


def rows_by_photo(owners: torch.Tensor, keep: torch.Tensor | None = None) -> dict[int, list[int]]:
    """The rendering rows of each photo (`owners[row]` is its photo), only those where `keep` is true if given;
    photos without such rows are absent."""
    rows_of: dict[int, list[int]] = {}
    for row, owner in enumerate(owners.tolist()):
        if keep is None or keep[row]:
            rows_of.setdefault(owner, []).append(row)
    return rows_of


def _pick(rows_of: dict[int, list[int]], photo_rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of each photo's rows in `rows_of`, drawn uniformly."""
    return torch.tensor([rows_of[p][int(torch.randint(len(rows_of[p]), (1,), generator=generator))]
                         for p in photo_rows.tolist()], dtype=torch.long)


def _checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("epoch-*.pt"))
    return found[-1] if found else None


def train_mini_v2(cfg: V2TrainConfig, out: Path, save_to: Path | None = None,
                  start_from: Path | None = MINI_DIR) -> dict:
    """Train v2 from the hystar-mini folder `start_from` (resuming from the latest checkpoint in `out`); `save_to`:
    write the model folder at the end."""
    torch.manual_seed(cfg.seed)
    if start_from is not None and not (Path(start_from) / "weights.safetensors").is_file():
        raise FileNotFoundError(f"{start_from}: no weights.safetensors to start from; earlier versions are in git "
                                f"history (docs/training.md says how to restore them)")
    encoder = build_mini_v2(start_from)
    data = style_training_set(encoder, list(iter_datasets()), cfg.limit, cfg.seed)
    doodles = doodle_set(encoder, data.class_names, cfg.doodles, limit=cfg.limit) if cfg.doodles.batch else None
    doodle_batches = DoodleBatches(doodles, data.photo_label, cfg.doodles) if doodles else None
    word_text = doodles.word_text if doodles else None
    class_text = text_features(encoder, [PROMPT.format(c) for c in data.class_names])
    imagenet_text = text_features(encoder, [PROMPT.format(c) for c in imagenet_names()])
    caption_text = text_features(encoder, data.captions)
    with torch.no_grad():
        teacher = torch.cat([encoder.visual.teacher_logits(data.photos[i:i + 128].float()).softmax(-1)
                             for i in range(0, len(data.photos), 128)])
    visual = encoder.visual
    trunk_params = list(visual.later_stages.parameters())
    # the text projection has a group of its own only when given its own rate (the default keeps the two groups
    # of earlier checkpoints, which then resume as before)
    text_params = list(encoder.text.proj.parameters()) if cfg.lr_text is not None else []
    if cfg.lr_text == 0:
        for param in text_params:
            param.requires_grad_(False)
        text_params = []
    apart = {id(p) for p in trunk_params + text_params}
    head_params = [p for p in encoder.parameters() if p.requires_grad and id(p) not in apart]
    groups = [{"params": head_params, "lr": cfg.lr, "base": cfg.lr},
              {"params": trunk_params, "lr": cfg.lr_trunk, "base": cfg.lr_trunk}]
    if text_params:
        groups.append({"params": text_params, "lr": cfg.lr_text, "base": cfg.lr_text})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    by_photo = rows_by_photo(data.rendering_photo)
    lowres_of = rows_by_photo(data.rendering_photo, data.rendering_lowres)
    sketches_of = rows_by_photo(data.rendering_photo, data.rendering_sketch)
    rendered = torch.tensor(sorted(by_photo))
    sketched = torch.tensor(sorted(sketches_of), dtype=torch.long)
    steps_per_epoch = math.ceil(len(rendered) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    out.mkdir(parents=True, exist_ok=True)
    start_epoch, log, step = 0, [], 0
    generator = torch.Generator().manual_seed(cfg.seed)
    latest = _checkpoint(out)
    if latest is not None:
        state = torch.load(latest, map_location="cpu", weights_only=True)
        encoder.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_epoch, log, step = state["epoch"], state["log"], state["step"]
    started = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        encoder.train()  # the trunk's BatchNorm stays in eval mode (MiniVisionTower.train)
        order = class_grouped_order(rendered, data.photo_label, cfg.same_class, generator)
        bar = tqdm(range(steps_per_epoch), desc=f"train-mini-v2 epoch {epoch + 1}/{cfg.epochs}", unit="step")
        seen_images, epoch_start = 0, time.time()
        for batch_index in bar:
            photo_rows = order[batch_index * cfg.batch_size:(batch_index + 1) * cfg.batch_size]
            picks = _pick(by_photo, photo_rows, generator)
            has_lowres = torch.tensor([bool(cfg.lowres_weight) and p in lowres_of for p in photo_rows.tolist()],
                                      dtype=torch.bool)
            lowres_picks = _pick(lowres_of, photo_rows[has_lowres], generator)
            # real sketches are a small part of the renderings: a batch of their own, so every epoch sees each
            sketched_rows = (sketched[torch.randperm(len(sketched), generator=generator)[:cfg.sketch_batch]]
                             if cfg.sketch_batch else sketched[:0])  # 0: v2.2's recipe, same random draws
            sketch_picks = _pick(sketches_of, sketched_rows, generator)
            for group in optimizer.param_groups:
                group["lr"] = group["base"] * warmup_cosine(step, total, cfg.warmup_steps)
            category_rows = torch.randint(len(data.category), (min(cfg.category_batch, len(data.category)),),
                                          generator=generator)
            doodle_rows, class_photo_rows = (doodle_batches.sample(generator) if doodle_batches
                                             else (torch.zeros(0, dtype=torch.long),) * 2)
            caption_rows = torch.randperm(len(data.captions), generator=generator)[:cfg.caption_batch]
            owners, first = torch.unique(data.caption_photo[caption_rows], return_inverse=True)
            caption_rows = torch.stack([caption_rows[first == k][0] for k in range(len(owners))]) \
                if len(owners) else caption_rows  # one caption per photo: no duplicate positives
            batch = torch.cat([data.photos[photo_rows], data.renderings[picks], data.category[category_rows],
                               data.renderings[lowres_picks], data.photos[owners], data.photos[sketched_rows],
                               data.renderings[sketch_picks]]
                              + ([doodles.features[doodle_rows], data.photos[class_photo_rows]] if doodles else []))
            z = F.normalize(visual.forward_features(batch.float()), dim=-1)
            photo_z, render_z, category_z, lowres_z, captioned_z, sketched_z, sketch_z, doodle_z, class_photo_z = \
                z.split([len(photo_rows), len(picks), len(category_rows), len(lowres_picks), len(owners),
                         len(sketched_rows), len(sketch_picks), len(doodle_rows), len(class_photo_rows)])
            z = torch.cat([photo_z, render_z, category_z, sketch_z, doodle_z])  # the views the class loss sees
            loss_instance = symmetric_info_nce(photo_z, render_z, cfg.temperature)
            loss_lowres = torch.zeros(())
            if len(lowres_picks) > 1:
                loss_lowres = symmetric_info_nce(photo_z[has_lowres], lowres_z, cfg.temperature)
            loss_sketch = torch.zeros(())
            if len(sketch_picks) > 1:
                loss_sketch = symmetric_info_nce(sketched_z, sketch_z, cfg.temperature)
            doodle_class = doodles.photo_class[doodle_rows] if doodles else data.photo_label[:0]
            labels = torch.cat([data.photo_label[photo_rows], data.photo_label[photo_rows],
                                data.category_label[category_rows], data.photo_label[sketched_rows], doodle_class])
            classes = F.normalize(encoder.text.proj(class_text), dim=-1)
            known = labels >= 0
            loss_class = F.cross_entropy(z[known] @ classes.T / cfg.temperature, labels[known])
            imagenet = F.normalize(encoder.text.proj(imagenet_text), dim=-1)
            loss_kl = F.kl_div(F.log_softmax(photo_z @ imagenet.T / cfg.temperature, dim=-1), teacher[photo_rows],
                               reduction="batchmean")
            loss_cos = (1 - (photo_z * F.normalize(teacher[photo_rows] @ imagenet, dim=-1)).sum(-1)).mean()
            loss_caption = torch.zeros(())
            if len(owners) > 1:
                text_z = F.normalize(encoder.text.proj(caption_text[caption_rows]), dim=-1)
                loss_caption = symmetric_info_nce(captioned_z, text_z, cfg.temperature)
            loss_doodle_text, loss_doodle_photo = torch.zeros(()), torch.zeros(())
            if doodles:
                words = F.normalize(encoder.text.proj(word_text), dim=-1)
                loss_doodle_text = F.cross_entropy(doodle_z @ words.T / cfg.temperature, doodles.word[doodle_rows])
                if len(class_photo_rows) > 1:  # the first doodles depict a class; each against a photo of it
                    depicted = doodle_class[:len(class_photo_rows)]
                    loss_doodle_photo = info_nce(doodle_z[:len(class_photo_rows)], class_photo_z,
                                                 depicted[:, None] == depicted[None, :], cfg.temperature)
            loss = (cfg.doodles.text_weight * loss_doodle_text + cfg.doodles.photo_weight * loss_doodle_photo
                    + cfg.instance_weight * loss_instance + cfg.class_weight * loss_class
                    + cfg.distill_kl_weight * loss_kl + cfg.distill_cos_weight * loss_cos
                    + cfg.caption_weight * loss_caption + cfg.lowres_weight * loss_lowres
                    + cfg.sketch_weight * loss_sketch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head_params + trunk_params + text_params, 1.0)
            optimizer.step()
            step += 1
            seen_images += len(batch)
            bar.set_postfix(loss=f"{loss.item():.3f}", inst=f"{loss_instance.item():.3f}",
                            low=f"{loss_lowres.item():.3f}", sk=f"{loss_sketch.item():.3f}",
                            cls=f"{loss_class.item():.3f}", cap=f"{loss_caption.item():.3f}",
                            dt=f"{loss_doodle_text.item():.3f}", dp=f"{loss_doodle_photo.item():.3f}",
                            img_s=f"{seen_images / max(1e-6, time.time() - epoch_start):.0f}")
        log.append({"epoch": epoch + 1, "loss": float(loss.item()), "images_per_s":
                    round(seen_images / (time.time() - epoch_start), 1), "seconds": round(time.time() - started, 1)})
        torch.save({"model": trainable_state(encoder), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "epoch": epoch + 1, "log": log, "step": step,
                    "config": asdict(cfg)}, out / f"epoch-{epoch + 1:02d}.pt")
    summary = {"config": asdict(cfg), "photos": len(data.photos), "captions": len(data.captions),
               "renderings": len(data.renderings), "category_views": len(data.category),
               "seen_classes": len(data.class_names), "doodle_views": len(doodles) if doodles else 0,
               "doodle_words": len(doodles.words) if doodles else 0, "log": log}
    atomic_write_json(out / "training.json", summary)
    if save_to is not None:
        save_mini(encoder.eval(), save_to, v2_config())
        atomic_write_json(Path(save_to) / "training.json", summary)
    return summary

