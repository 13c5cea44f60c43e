"""The two sides of the side-by-side: a gallery index each (base and adapted), the classes of its rows, and its
QuARI re-ranker when one is trained for its encoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data import DATASETS, DataNotFoundError, load_dataset
from .encoder import Encoder
from .encoder.search import SearchEncoder
from .gallery import ensure_gallery_indexes
from .index import GalleryIndex, Rescorer
from .index.sides import Progress
from .rerank import NoRerankerError, load_default_reranker


@dataclass
class Space:
    """One side of the side-by-side: a gallery index, the classes of its rows, and its re-ranker."""
    name: str
    index: GalleryIndex
    classes: list[str]
    reranker: Rescorer | None = None
    rerank_note: str = ""              # why there is no re-ranker


def gallery_classes(index: GalleryIndex) -> list[str]:
    """The class of every row: from the datasets' manifests for demo photos, else the image's folder name."""
    root = index.root
    known: dict[str, str] = {}
    for name in DATASETS:
        if not (root / name / "manifest.csv").is_file():
            continue
        try:
            dataset = load_dataset(root / name)
        except (DataNotFoundError, ValueError):
            continue
        known.update({(Path(name) / item.path.relative_to(dataset.root)).as_posix(): item.label
                      for item in dataset.photos()})
    return [known[e.path] if e.path in known else (Path(e.path).parent.name if "/" in e.path else "")
            for e in index.entries]


def load_space(name: str, index: GalleryIndex, fingerprint: str, reranker_dir: Path) -> Space:
    try:
        reranker, note = load_default_reranker(fingerprint, reranker_dir), ""
    except NoRerankerError:
        reranker, note = None, "no QuARI re-ranker is trained for this encoder yet (`hystar train-quari`)"
    except (ValueError, OSError) as error:
        reranker, note = None, f"the QuARI re-ranker could not be loaded ({error})"
    return Space(name, index, gallery_classes(index), reranker, note)


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
