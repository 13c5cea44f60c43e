"""ZeroGPU, the free GPUs of Hugging Face Spaces: GPU work must run inside functions decorated with `spaces.GPU`.

When the `spaces` package is importable (it is on every Space), the service's GPU work (embedding a query, the
vocabulary of its guesses, indexing photos) goes through `Gpu.query` / `Gpu.index`, which call the service's own
method inside a `spaces.GPU` function; elsewhere `spaces.GPU` does nothing. Without the package nothing changes:
the methods are called directly.

On ZeroGPU the decorated function runs in a worker process forked from the app, which gets a GPU for the call:
arguments and results are pickled across, so they are plain data (pixel tensors, texts, arrays), never a model; the
service itself is found in that process by a key (`_owners`, filled before the worker forks). Whatever the call
changes in the worker (an online session's step, the indexing progress) stays there: the service turns online
adaptation off on ZeroGPU (`on_zerogpu`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

QUERY_SECONDS = 20        # a query, or the vocabulary of the guesses, takes well under a second on a GPU
INDEX_SECONDS = 120       # an upload of photos into the app's gallery (500 at most)

# kept across a reload of this module (the tests reload it with a stand-in `spaces`)
_owners: weakref.WeakValueDictionary[int, Any] = globals().get("_owners", weakref.WeakValueDictionary())


def _query(owner: int, method: str, *args: Any) -> Any:
    return getattr(_owners[owner], method)(*args)


def _index(owner: int, method: str, *args: Any) -> Any:
    return getattr(_owners[owner], method)(*args)


def _decorate(fn: Callable[..., Any], seconds: int) -> tuple[Callable[..., Any], bool]:
    try:
        import spaces
    except ImportError:
        return fn, False
    return spaces.GPU(duration=seconds)(fn), True


# Decorated once, at import: ZeroGPU looks for its functions as the app starts.
_gpu_query, DECORATED = _decorate(_query, QUERY_SECONDS)
_gpu_index, _ = _decorate(_index, INDEX_SECONDS)


def on_zerogpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (the `spaces` package reads the same variable)."""
    return DECORATED and os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "true", "yes"}


class Gpu:
    """The GPU calls of one owner (a `SearchService`): `query(method, *args)` runs `owner.method(*args)` inside
    the query's `spaces.GPU` function, `index` inside the indexing one; plain calls without `spaces`."""

    def __init__(self, owner: Any):
        self.key = id(owner)
        _owners[self.key] = owner

    @property
    def decorated(self) -> bool:
        return DECORATED

    def query(self, method: str, *args: Any) -> Any:
        return _gpu_query(self.key, method, *args)

    def index(self, method: str, *args: Any) -> Any:
        return _gpu_index(self.key, method, *args)
