"""The app's preloaded gallery: an index of the demo photos (or of a folder of images), built on first start.

Indexes live under `gallery/index/` (git-ignored), one folder per gallery, encoder and adapter, so switching
encoders never rebuilds what was built before.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .data import DATA_ENV, DATASETS, DataNotFoundError, data_root, load_dataset, merged_photos
from .encoder import DEFAULT_ENCODER
from .index import (
    BuildConfig,
    CorruptIndexError,
    EncoderIdentity,
    GalleryIndex,
    IndexMismatchError,
    IndexNotFoundError,
    KindConfig,
    build_index,
    open_search_encoder,
)

GALLERY_INDEX_ROOT = Path(__file__).resolve().parent.parent / "gallery" / "index"


class GalleryNotFoundError(FileNotFoundError):
    """Neither demo photos nor a gallery folder; the message says in one line how to point at images."""


@dataclass(frozen=True)
class GallerySource:
    name: str                            # names the index folder
    root: Path
    files: tuple[Path, ...] | None = None    # None: every image under root

    def describe(self) -> str:
        return f"{len(self.files)} demo photos" if self.files is not None else f"the images under {self.root}"


def demo_source() -> GallerySource | None:
    """The photos of the datasets under $HYSTAR_DATA (PACS, Sketchy, COCO-mini; shared instances once)."""
    datasets = []
    for name in DATASETS:
        try:
            datasets.append(load_dataset(name))
        except DataNotFoundError:
            continue
    photos = tuple(item.path for item in merged_photos(datasets) if item.path.is_file())
    return GallerySource("demo", data_root(), photos) if photos else None


def gallery_source(gallery_dir: str | os.PathLike | None = None) -> GallerySource:
    """`gallery_dir` when given, else the demo photos; raises `GalleryNotFoundError` when there is neither."""
    if gallery_dir is not None:
        folder = Path(os.path.abspath(Path(gallery_dir).expanduser()))
        if not folder.is_dir():
            raise GalleryNotFoundError(f"gallery folder {folder} does not exist; pass --gallery DIR, a "
                                       f"folder of images")
        digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
        return GallerySource(f"{folder.name or 'root'}-{digest}", folder)
    demo = demo_source()
    if demo is None:
        raise GalleryNotFoundError(f"no gallery: no demo photos under {data_root()}; start with --gallery "
                                   f"DIR (any folder of images) or set {DATA_ENV} to the folder holding "
                                   f"pacs/, sketchy/ and coco_mini/")
    return demo


def gallery_index_dir(source: GallerySource, identity: EncoderIdentity,
                      index_root: str | os.PathLike = GALLERY_INDEX_ROOT) -> Path:
    name = f"{source.name}-{identity.fingerprint[:8]}"
    if identity.adapter_fingerprint:
        name += f"-{identity.adapter_fingerprint[:8]}"
    return Path(index_root) / name


def ensure_demo_index(encoder_spec: str = DEFAULT_ENCODER, gallery_dir: str | os.PathLike | None = None,
                      adapter_path: str | os.PathLike | None = None,
                      index_root: str | os.PathLike = GALLERY_INDEX_ROOT, kind: str = "flat",
                      refresh: bool = False, progress: bool = True) -> GalleryIndex:
    """The gallery index for the app: loaded when it exists, else built (with progress) from `gallery_dir` or
    the demo photos. `refresh` re-scans the gallery for added, changed and deleted images."""
    source = gallery_source(gallery_dir)
    encoder, identity = open_search_encoder(encoder_spec, adapter_path)
    folder = gallery_index_dir(source, identity, index_root)
    rebuild = False
    if not refresh:
        try:
            index = GalleryIndex.load(folder)
            index.check_query(identity)
            return index
        except IndexNotFoundError:
            pass
        except IndexMismatchError:
            rebuild = True
        except CorruptIndexError as error:  # the app's own cache of the gallery: rebuilt, never a crash
            print(f"{error}: rebuilding it now", file=sys.stderr)
            rebuild = True
    if progress:
        print(f"indexing {source.describe()} into {folder} (once; later starts load it)", file=sys.stderr)
    config = BuildConfig(kind=KindConfig(kind), rebuild=rebuild, progress=progress)
    report = build_index(source.root, folder, encoder, identity, config, files=source.files)
    if progress:
        print(report.summary(), file=sys.stderr)
    return GalleryIndex.load(folder)
