"""Quick, Draw! doodles as training views of hystar-mini: cached trunk features of train doodles drawn on the
canvas (several augmented drawings each), their category among the trainable Quick, Draw! words, and the seen
class they depict where there is one (then photos of that class are their positives).

Doodles of categories that depict one of Sketchy's unseen classes never enter, and neither do those words: the
text loss would teach the model to reject them (`../shared/NOTES.md`: unseen classes fall to ~1 % as negatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import class_name
from ..doodles import BITMAP, DOODLE, DRAWING_PROMPT, load_doodles
from ..encoder.base import Encoder
from ..features import View, text_features, trunk_features


@dataclass(frozen=True)
class DoodleConfig:
    batch: int = 0                 # doodles per step (0: no doodles)
    views: int = 2                 # augmented drawings of each stroke doodle (strokes dropped / shortened)
    bitmaps_per_category: int = 200  # 28x28 bitmap doodles of each of the 19 bitmap categories (0: none)
    depicting_share: float = 0.5   # of each doodle batch, drawn from doodles that depict a seen class
    text_weight: float = 1.0       # doodle -> "a drawing of a {category}" over the trainable categories
    photo_weight: float = 1.0      # doodle -> a photo of the class it depicts (InfoNCE, same class not negative)


@dataclass
class DoodleSet:
    features: torch.Tensor         # (D, C, 14, 14) float16
    word: torch.Tensor             # (D,) index in `words`
    photo_class: torch.Tensor      # (D,) index of the seen class depicted, -1 for none
    words: list[str]
    word_text: torch.Tensor        # (W, text features) of DRAWING_PROMPT per word

    def __len__(self) -> int:
        return len(self.features)


def doodle_set(encoder: Encoder, classes: list[str], cfg: DoodleConfig, split: str = "train", limit: int = 0
               ) -> DoodleSet:
    """The train doodles' cached features; `classes`: the trained class names (`class_name` form); `limit` > 0:
    only every doodle whose rank in the list is a multiple of len / limit (a short run)."""
    doodles = [d for d in load_doodles(bitmaps_per_category=cfg.bitmaps_per_category)
               if d.split == split and not d.unseen]
    if limit:
        doodles = doodles[::max(1, len(doodles) // limit)]
    words = sorted({d.category for d in doodles})
    index_of = {c: k for k, c in enumerate(classes)}

    def depicted(doodle) -> int:  # the Sketchy class, else a trained class of the same name (PACS "house")
        return index_of.get(class_name(doodle.label or doodle.category), -1)

    views = [View(d, f"doodleaug{k}+sketchnorm") for d in doodles if d.style == DOODLE for k in range(cfg.views)]
    views += [View(d, "doodle+sketchnorm") for d in doodles if d.style == BITMAP]
    features = trunk_features(encoder, views, f"quickdraw-{split}-x{cfg.views}-b{cfg.bitmaps_per_category}")
    return DoodleSet(features, torch.tensor([words.index(v.item.category) for v in views]),
                     torch.tensor([depicted(v.item) for v in views]), words,
                     text_features(encoder, [DRAWING_PROMPT.format(w) for w in words]))


class DoodleBatches:
    """Draws each step's doodles (a share of them depicting a seen class) and, for those, one train photo of
    their class."""

    def __init__(self, doodles: DoodleSet, photo_label: torch.Tensor, cfg: DoodleConfig):
        self.doodles, self.cfg = doodles, cfg
        self.depicting = torch.nonzero(doodles.photo_class >= 0).flatten()
        self.photos_of = {int(c): torch.nonzero(photo_label == c).flatten() for c in doodles.photo_class.unique()
                          if c >= 0}
        self.depicting = self.depicting[[len(self.photos_of.get(int(doodles.photo_class[r]), [])) > 0
                                         for r in self.depicting.tolist()]]

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(doodle rows, photo rows): the photo rows belong to the first len(photo rows) doodles."""
        depicting = min(len(self.depicting), round(self.cfg.batch * self.cfg.depicting_share))
        first = self.depicting[torch.randperm(len(self.depicting), generator=generator)[:depicting]]
        rest = torch.randint(len(self.doodles), (self.cfg.batch - depicting,), generator=generator)
        photos = [self.photos_of[int(self.doodles.photo_class[r])] for r in first.tolist()]
        photo_rows = torch.tensor([p[int(torch.randint(len(p), (1,), generator=generator))] for p in photos],
                                  dtype=torch.long)
        return torch.cat([first, rest]), photo_rows
