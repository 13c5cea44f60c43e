"""The UMAP view's lifecycle: loaded from its cache or fitted, in a background thread; loading, fitting, ready or
failed. Loading a cached map still takes a while (numba compiles `transform`), so the page says which it is doing."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from .views import UmapConfig, UmapMap, compile_map, fit_and_cache_umap, umap_cache_path, umap_key

log = logging.getLogger(__name__)

MIN_UMAP_PHOTOS = 20                   # below it the UMAP view waits: a map of a handful of photos says nothing


class UmapJob:
    """The map of one gallery, made in a daemon thread (a slow view never holds up the app, nor its exit)."""

    def __init__(self, vectors, classes, cache, key, config: UmapConfig):
        self.future: Future = Future()
        self.state = "loading" if cache.is_file() else "fitting"   # a stale cache turns to "fitting" below
        self.failure = ""

        def run() -> None:
            started = time.perf_counter()
            try:
                cached = UmapMap.load(cache, key)
                if cached is not None:
                    result = compile_map(cached, vectors)
                else:
                    self.state = "fitting"
                    result = fit_and_cache_umap(vectors, classes, cache, key, config)
                log.info("UMAP view ready in %.1f s (%s)", time.perf_counter() - started,
                         "loaded from its cache" if cached is not None else "fitted")
                self.state = "ready"
                self.future.set_result(result)
            except BaseException as error:  # noqa: BLE001 - handed to whoever asks for the map
                self.state = "failed"
                self.future.set_exception(error)

        threading.Thread(target=run, name="hystar-umap", daemon=True).start()

    def ready(self, timeout: float | None = 0.0) -> tuple[UmapMap | None, bool]:
        """(the map or None, whether to keep waiting for it): None while it is made (waits up to `timeout` seconds,
        None: for ever); a failed map is logged and given up (`failure` says why)."""
        try:
            return self.future.result(timeout=timeout), True
        except TimeoutError:
            return None, True
        except Exception as error:  # noqa: BLE001 - the map is a view: the search works without it
            log.warning("UMAP unavailable: %s", error)
            self.failure = f"the UMAP view failed: {error}"
            return None, False


def start_umap(config: UmapConfig | None, base) -> tuple[UmapJob | None, str]:
    """The UMAP of the base gallery space, loaded or fitted in the background; or None and why."""
    index = base.index
    if config is None:
        return None, "the UMAP view is off (--no-umap)"
    if len(index) < MIN_UMAP_PHOTOS:
        return None, f"the UMAP view appears once the gallery has {MIN_UMAP_PHOTOS} photos (it has {len(index)})"
    return UmapJob(index.vectors, base.classes, umap_cache_path(index.folder),
                   umap_key(index.meta.generation, len(index), config), config), ""
