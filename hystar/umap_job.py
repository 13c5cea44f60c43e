"""The UMAP view's lifecycle: fitted (or loaded from its cache) in a background thread; ready, pending or failed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .views import UmapConfig, UmapMap, load_or_fit_umap, umap_cache_path, umap_key

log = logging.getLogger(__name__)

MIN_UMAP_PHOTOS = 20                   # below it the UMAP view waits: a map of a handful of photos says nothing


def in_background(fn: Callable[..., Any], *args: Any) -> Future:
    """`fn(*args)` in a daemon thread: a slow view never holds up the app, nor its exit."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(error)

    threading.Thread(target=run, name=f"hystar-{fn.__name__}", daemon=True).start()
    return future


def start_umap(config: UmapConfig | None, base) -> tuple[Future | None, str]:
    """The UMAP of the base gallery space, fitted (or loaded) in the background; or None and why."""
    index = base.index
    if config is None:
        return None, "UMAP view is off"
    if len(index) < MIN_UMAP_PHOTOS:
        return None, f"the UMAP view appears once the gallery has {MIN_UMAP_PHOTOS} photos (it has {len(index)})"
    return in_background(load_or_fit_umap, index.vectors, base.classes, umap_cache_path(index.folder),
                         umap_key(index.meta.generation, len(index), config), config), ""


def ready_map(umap: Future | UmapMap | None, timeout: float | None = 0.0) -> tuple[UmapMap | None, bool]:
    """(the fitted map or None, whether to keep waiting for it): None while it is being fitted (waits up to
    `timeout` seconds, None: for ever); a failed fit is logged and given up."""
    if umap is None or isinstance(umap, UmapMap):
        return umap, umap is not None
    try:
        return umap.result(timeout=timeout), True
    except TimeoutError:
        return None, True
    except Exception as error:  # noqa: BLE001 - the map is a view: the search works without it
        log.warning("UMAP unavailable: %s", error)
        return None, False
