"""The two sides of the side-by-side: a gallery index each (base and adapted), the classes of its rows (and a
caption where its data set has one and no class), and its QuARI re-ranker when one is trained for its encoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .data import DATASETS, DataNotFoundError, load_dataset
from .encoder import Encoder
from .encoder.search import SearchEncoder
from .gallery import ensure_gallery_indexes
from .index import GalleryIndex, Rescorer
from .index.sides import Progress
from .rerank import NoRerankerError, load_default_reranker

log = logging.getLogger(__name__)
CAPTION_CHARS = 60                     # a result's caption is a label under a thumbnail, not a paragraph


@dataclass
class Space:
    """One side of the side-by-side: a gallery index, the classes of its rows, and its re-ranker."""
    name: str
    index: GalleryIndex
    classes: list[str]
    reranker: Rescorer | None = None
    rerank_note: str = ""              # why there is no re-ranker (for the people searching)
    captions: dict[int, str] = field(default_factory=dict)   # row -> caption, for rows without a class


def _demo_rows(root: Path) -> dict[str, tuple[str, str]]:
    """Path under `root` -> (class, shortest caption) of the photos of the data sets found there."""
    known: dict[str, tuple[str, str]] = {}
    for name in DATASETS:
        if not (root / name / "manifest.csv").is_file():
            continue
        try:
            dataset = load_dataset(root / name)
        except (DataNotFoundError, ValueError):
            continue
        captions: dict[str, str] = {}
        for text in dataset.texts:
            if text.instance_id not in captions or len(text.text) < len(captions[text.instance_id]):
                captions[text.instance_id] = text.text
        known.update({(Path(name) / item.path.relative_to(dataset.root)).as_posix():
                      (item.label, _short(captions.get(item.instance_id, ""))) for item in dataset.photos()})
    return known


def _short(caption: str) -> str:
    caption = " ".join(caption.split()).rstrip(".")
    return caption if len(caption) <= CAPTION_CHARS else caption[:CAPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"


def gallery_classes(index: GalleryIndex) -> list[str]:
    """The class of every row: from the datasets' manifests for demo photos, else the image's folder name."""
    return gallery_labels(index)[0]


def gallery_labels(index: GalleryIndex) -> tuple[list[str], dict[int, str]]:
    """The class of every row (`gallery_classes`) and the captions of rows without one (COCO's photos)."""
    known = _demo_rows(index.root)
    classes, captions = [], {}
    for row, entry in enumerate(index.entries):
        label, caption = known.get(entry.path, ("", ""))
        classes.append(label if entry.path in known else (Path(entry.path).parent.name if "/" in entry.path else ""))
        if caption and not classes[-1]:
            captions[row] = caption
    return classes, captions


def load_space(name: str, index: GalleryIndex, fingerprint: str, reranker_dir: Path) -> Space:
    try:
        reranker, note = load_default_reranker(fingerprint, reranker_dir), ""
    except NoRerankerError:
        log.info("no QuARI re-ranker for the %s side (train one with `hystar train-quari`)", name)
        reranker, note = None, "no QuARI re-ranker is trained for it"
    except (ValueError, OSError) as error:
        log.warning("the QuARI re-ranker of the %s side could not be loaded: %s", name, error)
        reranker, note = None, "its QuARI re-ranker could not be loaded"
    classes, captions = gallery_labels(index)
    return Space(name, index, classes, reranker, note, captions)


def load_spaces(config, gallery: Path | None, encoder: Encoder, adapter: SearchEncoder | None,
                refresh: bool, on_progress: Progress | None = None) -> tuple[Space, Space | None]:
    """The base space and, with an adapter, the adapted one, of `gallery`: loaded, else built in one pass per photo
    (`refresh`: extended with the images added since), through `ensure_gallery_indexes`."""
    indexes = ensure_gallery_indexes(config.encoder, gallery, config.adapter if adapter is not None else None,
                                     config.index_root, refresh=refresh, progress=config.progress,
                                     on_progress=on_progress, embedder=adapter or encoder)
    base = load_space("base", indexes["base"], encoder.fingerprint, config.reranker_dir)
    if adapter is None:
        return base, None
    return base, load_space("adapted", indexes["adapted"], adapter.fingerprint, config.reranker_dir)
