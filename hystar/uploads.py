"""The upload flow of the app-owned gallery: copy the uploaded photos in, re-index, report what was added and why
the rest was not (unreadable files are removed from the folder again)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .gallery import UploadLimits, copy_uploads, remove_from_gallery
from .spaces import Space


@dataclass
class AddReport:
    """What an upload into the app-owned gallery did."""
    added: list[str]                   # uploaded names now in the gallery
    skipped: list[tuple[str, str]]     # (uploaded name, why)
    count: int                         # photos in the gallery now

    def summary(self) -> str:
        line = f"{len(self.added)} photo{'' if len(self.added) == 1 else 's'} added; the gallery has {self.count}"
        if self.skipped:
            line += f"; {len(self.skipped)} skipped: " + "; ".join(f"{name} ({why})" for name, why in self.skipped)
        return line


def add_to_gallery(files: Sequence[str | os.PathLike], folder: Path, limits: UploadLimits, before: set[str],
                   reindex: Callable[[], tuple[Space, Space | None]]) -> tuple[AddReport, tuple[Space, Space | None]]:
    """Copy `files` (images, .zip archives of images) into `folder`, `reindex` it, and report against the paths
    indexed `before`. Raises `UploadLimitError` when the upload is over `limits`."""
    copied = copy_uploads(files, folder, limits)
    base, adapted = reindex()
    refused = {item.path: item.reason for item in base.index.skipped}
    added, skipped, bad = [], list(copied.skipped), []
    for target, name in copied.files.items():
        relpath = target.relative_to(folder).as_posix()
        if relpath in refused:
            skipped.append((name, refused[relpath]))
            bad.append(target)
        elif relpath in before:
            skipped.append((name, "already in the gallery"))
        else:
            added.append(name)
    remove_from_gallery(bad, folder)
    return AddReport(added, skipped, len(base.index)), (base, adapted)
