"""Files: atomic writes (one temp-name scheme), the one file fingerprint, safetensors with JSON metadata."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temp_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is renamed into place: hidden, beside it, private to this thread."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` only when the block completes (temp file + fsync + os.replace):
    readers see the old or the new content, never a mix."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def file_sha1(path: str | os.PathLike) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """A model file is identified by its bytes: sha256, first 16 hex digits (adapters, index compatibility)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def save_safetensors(state: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Tensors (detached, contiguous, on the CPU) to a safetensors file, atomically."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def save_with_metadata(state: dict, path: str | os.PathLike, key: str, meta: dict) -> Path:
    """A safetensors file with `meta` as JSON under metadata `key`, and the same JSON in a .json beside it."""
    path = save_safetensors(state, path, {key: json.dumps(meta)})
    atomic_write_bytes(path.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return path


def read_metadata(path: str | os.PathLike, key: str, what: str) -> dict | None:
    """The JSON metadata under `key` of a safetensors file; None when it has none. `what` names the file kind in
    the errors (missing file, damaged header)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as handle:
            raw = (handle.metadata() or {}).get(key)
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{path.name} is not a readable {what} file (safetensors: {error})") from None
    return None if raw is None else json.loads(raw)


def load_tensors(path: str | os.PathLike) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
