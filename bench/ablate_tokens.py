"""Which trunk tokens keep the detail instance matching needs? An ablation behind hystar-mini's token design.

The same trainable head (linear to width 256, class token, 4 open_clip blocks, projection; fresh weights, seed 0) is
trained on Sketchy train pairs (real sketch → its photo, mosaic of a photo → the photo; InfoNCE) from three token
sources of the one frozen EfficientNet-Lite0 trunk, all read from the joined-token feature cache:

- s32:     the stride-32 map, 7x7 tokens of 320 (hystar-mini's tokens)
- s16:     the stride-16 map, 14x14 tokens of 112 (four times the tokens, about four times the cost)
- s16+s32: 7x7 tokens of 768, each stride-32 token joined to the 2x2 stride-16 cells beneath it
  (`hystar train-mini --fine-tokens`)

and scored on Sketchy test queries against the full gallery (3,125 photos). Run: `python bench/ablate_tokens.py`.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, ResidualAttentionBlock
from torch import nn

from hystar.data import load_dataset
from hystar.encoder.mini import COARSE_CHANNELS, build_mini, joined_tokens_config
from hystar.eval.metrics import relevance, retrieval_metrics
from hystar.features import View, dataset_features, trunk_features
from hystar.train.losses import info_nce

SOURCES = ("s32", "s16", "s16+s32")


def tokens_of(features: torch.Tensor, source: str) -> torch.Tensor:
    """Joined-token features (N, 768, 7, 7) → the chosen token source, float16."""
    if source == "s32":
        return features[:, -COARSE_CHANNELS:]
    if source == "s16":
        return F.pixel_shuffle(features[:, :-COARSE_CHANNELS], 2)
    return features


class Head(nn.Module):
    def __init__(self, channels: int, tokens: int, width: int = 256, layers: int = 4, dim: int = 384):
        super().__init__()
        self.proj_in = nn.Linear(channels, width)
        self.cls = nn.Parameter(width ** -0.5 * torch.randn(width))
        self.pos = nn.Parameter(width ** -0.5 * torch.randn(tokens + 1, width))
        self.ln_pre, self.ln_post = LayerNorm(width), LayerNorm(width)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, 4, 4.0) for _ in range(layers))
        self.proj = nn.Linear(width, dim, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(features.float().flatten(2).transpose(1, 2))
        x = self.ln_pre(torch.cat([self.cls.expand(len(x), 1, -1), x], 1) + self.pos)
        for block in self.blocks:
            x = block(x)
        return F.normalize(self.proj(self.ln_post(x[:, 0])), dim=-1)


@torch.no_grad()
def embed(head: Head, features: torch.Tensor) -> np.ndarray:
    return torch.cat([head(features[i:i + 128]) for i in range(0, len(features), 128)]).numpy()


def run(source: str, epochs: int, batch: int = 48, lr: float = 3e-4) -> dict:
    encoder = build_mini(joined_tokens_config())  # its trunk (frozen, pretrained) is all that is used
    sketchy = load_dataset("sketchy")
    photos = sketchy.photos()
    row_of = {p.key: k for k, p in enumerate(photos)}
    position = {id(item): k for k, item in enumerate(sketchy.items)}
    everything = tokens_of(dataset_features(encoder, sketchy), source)
    mosaics = tokens_of(trunk_features(encoder, [View(p, "mosaic") for p in photos], "sketchy-photo-mosaic"), source)
    gallery = everything[[position[id(p)] for p in photos]]
    sketches = sketchy.select(style="sketch", split="train", unseen=False)
    train_photos = [k for k, p in enumerate(photos) if p.split == "train" and not p.unseen]
    queries = torch.cat([everything[[position[id(s)] for s in sketches]], mosaics[train_photos]])
    targets = torch.tensor([row_of[s.instance_id] for s in sketches] + train_photos)

    torch.manual_seed(0)
    head = Head(queries.shape[1], queries.shape[2] * queries.shape[3]).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    steps = len(queries) // batch
    started = time.time()
    for epoch in range(epochs):
        order = torch.randperm(len(queries))
        for b in range(steps):
            rows = order[b * batch:(b + 1) * batch]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + b) / (epochs * steps)))
            z = head(torch.cat([queries[rows], gallery[targets[rows]]]))
            same_photo = targets[rows][:, None] == targets[rows][None]
            loss = info_nce(z[:len(rows)], z[len(rows):], same_photo)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        print(f"  {source} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, {time.time() - started:.0f} s",
              flush=True)
    head.eval()
    gallery_vectors, gallery_keys = embed(head, gallery), np.array([p.key for p in photos])
    test_sketches = sketchy.select(style="sketch", split="test")
    test_photos = sketchy.photos("test")
    out = {"tokens": f"{queries.shape[2]}x{queries.shape[3]}x{queries.shape[1]}",
           "train seconds": round(time.time() - started)}
    for name, vectors, keys in (
            ("sketch", embed(head, everything[[position[id(s)] for s in test_sketches]]),
             [s.instance_id for s in test_sketches]),
            ("mosaic", embed(head, mosaics[[row_of[p.key] for p in test_photos]]), [p.key for p in test_photos])):
        metrics = retrieval_metrics(vectors @ gallery_vectors.T, relevance(np.array(keys), gallery_keys))
        out[f"{name} R@1"], out[f"{name} mAP"] = round(metrics["R@1"], 1), round(metrics["mAP"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {source: run(source, args.epochs) for source in args.sources}
    print("| tokens | shape | train s | Sketchy sketch→photo R@1 | mAP | Sketchy mosaic→photo R@1 | mAP |")
    print("|---|---|---|---|---|---|---|")
    for source, r in results.items():
        print(f"| {source} | {r['tokens']} | {r['train seconds']} | {r['sketch R@1']} | {r['sketch mAP']} "
              f"| {r['mosaic R@1']} | {r['mosaic mAP']} |")


if __name__ == "__main__":
    main()
