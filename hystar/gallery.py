"""The app's preloaded gallery: an index of the demo photos (or of a folder of images), built on first start.

Indexes live under `gallery/index/` (git-ignored), one folder per gallery, encoder and adapter, so switching
encoders never rebuilds what was built before.

Without demo photos and without a gallery folder (a fresh Hugging Face Space), the app owns an upload gallery,
`<index root>/uploads/`: it starts empty and `copy_uploads` fills it with uploaded images and the images of
uploaded zip archives (capped, zip-slip safe); the index is then extended incrementally by `ensure_demo_index`.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .data import DATA_ENV, DATASETS, DataNotFoundError, data_root, load_dataset, merged_photos
from .defaults import UPLOAD_MAX_BYTES, UPLOAD_MAX_FILES
from .encoder import DEFAULT_ENCODER
from .images import is_image_path
from .index import (
    BuildConfig,
    CorruptIndexError,
    EncoderIdentity,
    GalleryIndex,
    IndexMismatchError,
    IndexNotFoundError,
    KindConfig,
    open_search_encoder,
)
from .index.sides import Progress, build_sides
from .io import atomic_write_bytes
from .paths import GALLERY_INDEX_ROOT

UPLOADS = "uploads"                     # the app-owned gallery folder under the index root


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
    side = "adapted" if adapter_path is not None else "base"
    return ensure_gallery_indexes(encoder_spec, gallery_dir, adapter_path, index_root, kind, refresh, progress,
                                  sides=(side,))[side]


def ensure_gallery_indexes(encoder_spec: str = DEFAULT_ENCODER, gallery_dir: str | os.PathLike | None = None,
                           adapter_path: str | os.PathLike | None = None,
                           index_root: str | os.PathLike = GALLERY_INDEX_ROOT, kind: str = "flat",
                           refresh: bool = False, progress: bool = True, sides: tuple[str, ...] | None = None,
                           on_progress: Progress | None = None, embedder: Any = None) -> dict[str, GalleryIndex]:
    """The base index and, with an adapter, the adapted index of the gallery: each loaded when it exists, the
    missing ones built together in one pass per photo (`build_sides`). `on_progress(done, total)` follows it.
    `embedder`: the search encoder that embeds (e.g. the service's copy on its GPU; default the shared one)."""
    source = gallery_source(gallery_dir)
    sides = sides or (("base", "adapted") if adapter_path is not None else ("base",))
    adapted, adapted_identity = (open_search_encoder(encoder_spec, adapter_path) if adapter_path is not None
                                 else (None, None))
    base, base_identity = open_search_encoder(encoder_spec)
    identities = {"base": base_identity, "adapted": adapted_identity}
    folders = {side: gallery_index_dir(source, identities[side], index_root) for side in sides}
    loaded: dict[str, GalleryIndex] = {}
    targets = {}
    for side in sides:
        rebuild = False
        if not refresh:
            try:
                index = GalleryIndex.load(folders[side])
                index.check_query(identities[side])
                loaded[side] = index
                continue
            except IndexNotFoundError:
                pass
            except IndexMismatchError:
                rebuild = True
            except CorruptIndexError as error:  # the app's own cache of the gallery: mended or rebuilt, never a crash
                print(f"{error}: {'mending' if error.repairable else 'rebuilding'} it now", file=sys.stderr)
                rebuild = not error.repairable
        config = BuildConfig(kind=KindConfig(kind), rebuild=rebuild, progress=progress)
        targets[side] = (folders[side], identities[side], config)
    if targets:
        if progress and not refresh:
            print(f"indexing {source.describe()} into {', '.join(str(f) for f, _, _ in targets.values())} "
                  f"(once; later starts load it)", file=sys.stderr)
        encoder = embedder or (adapted if "adapted" in targets else base)
        reports = build_sides(source.root, targets, encoder, source.files, on_progress)
        for side, report in reports.items():
            if progress:
                print(report.summary(), file=sys.stderr)
            loaded[side] = GalleryIndex.load(folders[side])
    elif on_progress is not None:
        on_progress(0, 0)
    return {side: loaded[side] for side in sides}


# ---------------------------------------------------------------------------------------------- uploads

def upload_gallery_dir(index_root: str | os.PathLike = GALLERY_INDEX_ROOT) -> Path:
    """The app-owned gallery that uploads go into (created on demand; nothing else is ever written to)."""
    return Path(os.path.abspath(Path(index_root) / UPLOADS))


@dataclass(frozen=True)
class UploadLimits:
    max_files: int = UPLOAD_MAX_FILES      # images per upload, zip members included
    max_bytes: int = UPLOAD_MAX_BYTES      # their total size (uncompressed)

    def __post_init__(self) -> None:
        if self.max_files < 1 or self.max_bytes < 1:
            raise ValueError(f"upload caps must be positive: {self.max_files} files, {self.max_bytes} bytes")


class UploadLimitError(ValueError):
    """An upload over `UploadLimits`; the message is one line for the user. Nothing was copied."""


@dataclass
class CopiedUploads:
    files: dict[Path, str] = field(default_factory=dict)          # copied into the gallery folder -> uploaded name
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name as uploaded, why)


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._")[:60] or "photo"
    return f"{stem}{Path(name).suffix.lower()}"


def _zip_member_problem(info: zipfile.ZipInfo) -> str:
    """Why a zip member is not taken ("" when it is): unsafe paths (zip-slip), folders, non-images."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return "unsafe path in the archive (absolute or with ..): ignored"
    if info.is_dir() or any(part.startswith(".") or part == "__MACOSX" for part in parts):
        return ""
    if not is_image_path(name):
        return "not an image file (by its extension)"
    return "ok"


def copy_uploads(uploads: Iterable[str | os.PathLike], gallery_dir: str | os.PathLike,
                 limits: UploadLimits = UploadLimits()) -> CopiedUploads:
    """Copy uploaded images, and the images inside uploaded .zip archives, into `gallery_dir` under names of the
    app's own (content hash + cleaned name: the same photo twice is one file). Zip members with absolute or `..`
    paths are never extracted; files that are neither images nor zips are skipped with their reason. Whether an
    image decodes is judged later, by the indexer. Raises `UploadLimitError` (copying nothing) past `limits`."""
    plan: list[tuple[str, Path | None, zipfile.ZipFile | None, zipfile.ZipInfo | None]] = []
    copied = CopiedUploads()
    archives: list[zipfile.ZipFile] = []
    total = 0
    try:
        for upload in uploads:
            path = Path(upload)
            if path.suffix.lower() == ".zip":
                try:
                    archive = zipfile.ZipFile(path)
                except (zipfile.BadZipFile, OSError) as error:
                    copied.skipped.append((path.name, f"not a readable zip archive ({error})"))
                    continue
                archives.append(archive)
                for info in archive.infolist():
                    problem = _zip_member_problem(info)
                    if problem == "ok":
                        plan.append((f"{path.name}:{info.filename}", None, archive, info))
                        total += info.file_size
                    elif problem:
                        copied.skipped.append((f"{path.name}:{info.filename}", problem))
            elif is_image_path(path):
                plan.append((path.name, path, None, None))
                total += path.stat().st_size
            else:
                copied.skipped.append((path.name, "not an image file nor a .zip archive"))
        if len(plan) > limits.max_files or total > limits.max_bytes:
            raise UploadLimitError(f"too much at once: {len(plan)} images, {total / 2**20:.1f} MB; an upload takes "
                                   f"at most {limits.max_files} images and {limits.max_bytes / 2**20:.0f} MB")
        folder = Path(gallery_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, path, archive, info in plan:
            try:
                data = path.read_bytes() if path is not None else archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                copied.skipped.append((name, f"could not be read ({error})"))
                continue
            target = folder / f"{hashlib.sha1(data).hexdigest()[:12]}-{_safe_name(name.rsplit(':', 1)[-1])}"
            if not target.is_file():
                atomic_write_bytes(target, data)
            copied.files[target] = name
    finally:
        for archive in archives:
            archive.close()
    return copied


def remove_from_gallery(files: Iterable[Path], gallery_dir: str | os.PathLike) -> None:
    """Delete files the indexer refused from the upload gallery (only files inside it)."""
    folder = Path(os.path.realpath(gallery_dir))
    for path in files:
        if Path(os.path.realpath(path)).parent == folder:
            Path(path).unlink(missing_ok=True)

