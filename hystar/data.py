"""Datasets read through their `manifest.csv`, with deterministic splits.

Splits are decided by a hash, never by chance or file order:
- an item's *split key* is its `instance_id` when it has one (so a sketch follows the photo it draws, and a photo that
  is in two datasets lands in the same split in both), else its path;
- sha1(key) mapped to [0, 1) puts it in train (< 0.7), val (< 0.8) or test;
- Sketchy's 20 *unseen* classes (the 20 smallest sha1 of the class name) are never trained on: all their items are
  in test and flagged `unseen`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .paths import DEFAULT_DATA

DATA_ENV = "HYSTAR_DATA"
DATASETS = ("pacs", "sketchy", "coco_mini")
QUICKDRAW = "quickdraw"              # doodles against Sketchy's photos (`hystar.doodles`): evaluation's fourth
EVAL_DATASETS = (*DATASETS, QUICKDRAW)
SPLITS = ("train", "val", "test")
TRAIN_FRACTION, VAL_FRACTION = 0.7, 0.1
UNSEEN_CLASS_COUNT = {"sketchy": 20}
MANIFEST_COLUMNS = ("path", "style", "class", "instance_id", "role")


PROMPT = "a photo of a {}"           # a class as text (zero-shot classification, training prompts)


def class_name(label: str) -> str:
    return label.replace("_", " ").strip().lower()


class DataNotFoundError(FileNotFoundError):
    """The data folder or a manifest is missing; the message is one line naming HYSTAR_DATA."""


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser()


def unit_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / 16**12


def split_of(key: str) -> str:
    h = unit_hash(key)
    return "train" if h < TRAIN_FRACTION else "val" if h < TRAIN_FRACTION + VAL_FRACTION else "test"


def choose_unseen(classes: Iterable[str], count: int) -> frozenset[str]:
    return frozenset(sorted(set(classes), key=lambda c: hashlib.sha1(c.encode()).hexdigest())[:count])


@dataclass(frozen=True)
class Item:
    dataset: str
    path: Path
    style: str
    label: str
    instance_id: str
    role: str
    split: str
    unseen: bool = False

    @property
    def key(self) -> str:
        """Identity across datasets: the instance when known, else the file."""
        return self.instance_id or f"{self.dataset}:{self.path.name}"

    @property
    def file_name(self) -> str:
        return self.path.name

    @property
    def source_id(self) -> str:
        """Unique across datasets and files (PACS repeats file names across classes; a doodle file holds many)."""
        return str(self.path)


@dataclass(frozen=True)
class TextQuery:
    text: str
    instance_id: str
    split: str


@dataclass
class Dataset:
    name: str
    root: Path
    items: list[Item]
    texts: list[TextQuery] = field(default_factory=list)
    words: list[str] = field(default_factory=list)  # names for doodle -> text zero-shot (Quick, Draw!'s categories)

    @cached_property
    def classes(self) -> list[str]:
        return sorted({item.label for item in self.items if item.label})

    @cached_property
    def unseen_classes(self) -> frozenset[str]:
        return frozenset(item.label for item in self.items if item.unseen)

    @property
    def styles(self) -> list[str]:
        return sorted({item.style for item in self.items})

    def select(self, *, style: str | None = None, split: str | Iterable[str] | None = None,
               role: str | None = None, unseen: bool | None = None) -> list[Item]:
        splits = {split} if isinstance(split, str) else set(split) if split is not None else None
        return [item for item in self.items
                if (style is None or item.style == style) and (splits is None or item.split in splits)
                and (role is None or item.role == role) and (unseen is None or item.unseen == unseen)]

    def photos(self, split: str | Iterable[str] | None = None) -> list[Item]:
        return self.select(style="photo", split=split)

    def text_queries(self, split: str | None = None) -> list[TextQuery]:
        return [t for t in self.texts if split is None or t.split == split]


def _manifest_path(root: Path) -> Path:
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise DataNotFoundError(
            f"no dataset at {root} (missing manifest.csv); set {DATA_ENV} to the folder holding "
            f"pacs/, sketchy/ and coco_mini/, or pass a folder with a manifest.csv"
        )
    return manifest


def load_dataset(name_or_folder: str | os.PathLike) -> Dataset:
    """A named dataset under `$HYSTAR_DATA`, or any folder with a manifest.csv of the same columns."""
    candidate = Path(name_or_folder)
    named = str(name_or_folder) in DATASETS
    root = data_root() / str(name_or_folder) if named else candidate
    name = str(name_or_folder) if named else candidate.resolve().name
    with open(_manifest_path(root), newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in MANIFEST_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{root / 'manifest.csv'}: missing columns {missing}; need {list(MANIFEST_COLUMNS)}")
    unseen = choose_unseen((r["class"] for r in rows), UNSEEN_CLASS_COUNT.get(name, 0))
    items = []
    for row in rows:
        instance = row["instance_id"].strip()
        label = row["class"].strip()
        is_unseen = label in unseen
        items.append(Item(
            dataset=name, path=root / row["path"], style=row["style"].strip(), label=label,
            instance_id=instance, role=row["role"].strip(),
            split="test" if is_unseen else split_of(instance or f"{name}:{row['path']}"), unseen=is_unseen,
        ))
    return Dataset(name=name, root=root, items=items, texts=_read_texts(root))


def _read_texts(root: Path) -> list[TextQuery]:
    path = root / "text_queries.jsonl"
    if not path.is_file():
        return []
    texts = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            instance = str(record["image_id"])
            texts.append(TextQuery(text=record["caption"], instance_id=instance, split=split_of(instance)))
    return texts


def iter_datasets(names: Iterable[str] = DATASETS) -> Iterator[Dataset]:
    for name in names:
        yield load_dataset(name)


def merged_photos(datasets: Iterable[Dataset], split: str | Iterable[str] | None = None) -> list[Item]:
    """Photos of several datasets with shared instances (PACS and Sketchy share 111) kept once."""
    seen: set[str] = set()
    photos = []
    for dataset in datasets:
        for item in dataset.photos(split):
            if item.key not in seen:
                seen.add(item.key)
                photos.append(item)
    return photos
