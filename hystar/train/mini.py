"""Train hystar-mini on photos only (`hystar train-mini`, see `hystar.cli.train_mini`).

Losses on cached trunk features of train-split photos (PACS, Sketchy seen classes, COCO-mini):
- class-prompt contrastive: cross-entropy of image vs "a photo of a {class}" over the *seen* classes only
  (unseen classes are never negatives, or the model learns to reject them);
- caption contrastive: symmetric InfoNCE of COCO-mini train photos vs one of their captions;
- distillation of the EfficientNet-Lite0 ImageNet classifier: cosine to the target text embedding
  sum_c p_teacher(c) * text("a photo of a {c}"), plus KL between the image-vs-ImageNet-prompt softmax and p_teacher.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import PROMPT, Dataset, class_name, iter_datasets
from ..encoder.mini import MiniConfig, build_mini, save_mini
from ..features import dataset_features, text_features
from ..io import atomic_write_json
from .losses import symmetric_info_nce
from .schedule import warmup_cosine


@dataclass(frozen=True)
class MiniTrainConfig:
    epochs: int = 8
    batch_size: int = 128
    caption_batch: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    temperature: float = 0.05
    distill_cos_weight: float = 1.0
    distill_kl_weight: float = 1.0
    caption_weight: float = 0.5
    instance_weight: float = 0.0  # InfoNCE between two augmented views of each photo (instance discrimination)
    token_drop: float = 0.15
    seed: int = 0


def imagenet_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


@dataclass
class PhotoTrainingSet:
    features: torch.Tensor       # (N, C, H, W) float16
    labels: torch.Tensor         # (N,) index into class_names, -1 for unlabelled (COCO)
    class_names: list[str]
    caption_features: torch.Tensor  # (M, 384) frozen text features of captions
    caption_owner: torch.Tensor     # (M,) row in `features` of the photo each caption describes


def photo_training_set(encoder, datasets: list[Dataset]) -> PhotoTrainingSet:
    seen: set[str] = set()
    feats, labels, owners, captions = [], [], [], []
    classes = sorted({class_name(i.label) for d in datasets for i in d.photos("train") if i.label and not i.unseen})
    index_of = {c: k for k, c in enumerate(classes)}
    row = 0
    for dataset in datasets:
        all_features = dataset_features(encoder, dataset)
        row_of_instance = {}
        for position, item in enumerate(dataset.items):
            if item.style != "photo" or item.split != "train" or item.unseen or item.key in seen:
                continue
            seen.add(item.key)
            feats.append(all_features[position])
            labels.append(index_of[class_name(item.label)] if item.label else -1)
            row_of_instance[item.instance_id] = row
            row += 1
        for text in dataset.text_queries("train"):
            if text.instance_id in row_of_instance:
                captions.append(text.text)
                owners.append(row_of_instance[text.instance_id])
    return PhotoTrainingSet(torch.stack(feats), torch.tensor(labels), classes,
                            text_features(encoder, captions), torch.tensor(owners))


def augment(visual, features: torch.Tensor, token_drop: float, generator: torch.Generator) -> torch.Tensor:
    """Mirror half the batch (a mirrored photo is still the same photo), then drop whole tokens."""
    flip = torch.rand(features.shape[0], generator=generator) < 0.5
    features = features.clone()
    features[flip] = visual.mirror(features[flip])
    if token_drop > 0:
        keep = (torch.rand(features.shape[0], 1, *features.shape[2:], generator=generator) >= token_drop)
        features = features * keep.to(features.dtype)
    return features


def train_mini(cfg: MiniTrainConfig, out: Path, model_cfg: MiniConfig | None = None) -> dict:
    torch.manual_seed(cfg.seed)
    model_cfg = model_cfg or MiniConfig()
    encoder = build_mini(model_cfg)
    datasets = list(iter_datasets())
    data = photo_training_set(encoder, datasets)
    class_text = text_features(encoder, [PROMPT.format(c) for c in data.class_names])
    imagenet_text = text_features(encoder, [PROMPT.format(c) for c in imagenet_names()])
    with torch.no_grad():
        teacher = torch.cat([encoder.visual.teacher_logits(data.features[i:i + 256].float()).softmax(-1)
                             for i in range(0, len(data.features), 256)])
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(data.features) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    labelled = data.labels >= 0
    caption_rows = torch.arange(len(data.caption_owner))
    encoder.train()
    step, log = 0, []
    started = time.time()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(data.features), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"train-mini epoch {epoch + 1}/{cfg.epochs}")
        for batch_index in bar:
            rows = order[batch_index * cfg.batch_size:(batch_index + 1) * cfg.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(step, total, cfg.warmup_steps)
            image = F.normalize(encoder.visual.forward_features(
                augment(encoder.visual, data.features[rows], cfg.token_drop, generator).float()), dim=-1)
            classes = F.normalize(encoder.text.proj(class_text), dim=-1)
            imagenet = F.normalize(encoder.text.proj(imagenet_text), dim=-1)
            mask = labelled[rows]
            loss_class = F.cross_entropy(image[mask] @ classes.T / cfg.temperature, data.labels[rows][mask])
            target = F.normalize(teacher[rows] @ imagenet, dim=-1)
            loss_cos = (1 - (image * target).sum(-1)).mean()
            loss_kl = F.kl_div(F.log_softmax(image @ imagenet.T / cfg.temperature, dim=-1), teacher[rows],
                               reduction="batchmean")
            pick = caption_rows[torch.randperm(len(caption_rows), generator=generator)[:cfg.caption_batch]]
            owners = data.caption_owner[pick]
            unique_owner = torch.unique(owners, return_inverse=False)
            pick = torch.stack([pick[owners == o][0] for o in unique_owner])
            cap_img = F.normalize(encoder.visual.forward_features(
                augment(encoder.visual, data.features[unique_owner], 0.0, generator).float()), dim=-1)
            cap_txt = F.normalize(encoder.text.proj(data.caption_features[pick]), dim=-1)
            loss_caption = symmetric_info_nce(cap_img, cap_txt, cfg.temperature)
            loss = (loss_class + cfg.caption_weight * loss_caption + cfg.distill_cos_weight * loss_cos
                    + cfg.distill_kl_weight * loss_kl)
            if cfg.instance_weight:
                view = F.normalize(encoder.visual.forward_features(
                    augment(encoder.visual, data.features[rows], cfg.token_drop, generator).float()), dim=-1)
                loss = loss + cfg.instance_weight * symmetric_info_nce(image, view, cfg.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", cls=f"{loss_class.item():.3f}",
                            cap=f"{loss_caption.item():.3f}", kl=f"{loss_kl.item():.3f}")
        log.append({"epoch": epoch + 1, "loss": float(loss.item()), "seconds": round(time.time() - started, 1)})
    encoder.eval()
    save_mini(encoder, out, model_cfg)
    summary = {"config": asdict(cfg), "train_photos": len(data.features), "captions": len(data.caption_owner),
               "seen_classes": len(data.class_names), "log": log, "seconds": round(time.time() - started, 1)}
    atomic_write_json(Path(out) / "training.json", summary)
    return summary


def _assert_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise RuntimeError("non-finite values")
