"""The search service behind the app: one fused query in; base and adapted results, ΔS data and UMAP places out.

A query is any combination of a sketch (the flattened canvas), an uploaded image, a text and a negative text.
Each part is embedded and L2-normalised; the query vector is the normalised weighted sum, the negative text
subtracted. With an adapter, the image parts go through the trunk once and come out twice
(`HystarEncoder.explain`): the base embedding searches the base gallery index, the adapted one the gallery index
built with the adapter. Text parts use the text tower, which adapters leave untouched.

Online adaptation (`hystar.online`, our reading of REST) is per user: with `Query.online` and a user key (the app
passes its Gradio session), the image parts are observed by that user's `OnlineSession` (one adaptation step) and
embedded by it: on the adapted side with adaptation on, else on the base side. A session adapts a private copy of
a few query-side parameters; the shared encoders and the gallery indexes are never written nor re-embedded. Text
parts are unaffected. Sessions are kept for at most `OnlineServiceConfig.max_users` users, least recently used
dropped first.

Its parts live beside it: `hystar.spaces` (the base and adapted sides), `hystar.online.users` (the per-user session
registry), `hystar.shifts` (ΔS summaries), `hystar.umap_job` (the UMAP view's lifecycle), `hystar.uploads` (adding
photos to the app-owned gallery).

Once a gallery is installed its indexes are checked against their checksums in a background thread
(`GalleryIndex.verify_in_background`; opening checked the small files, this reads the vectors of a big gallery, off
the serving path). An index found damaged is not served: searches get its one-line "damaged; rebuild it with ..."
message (`GalleryDamagedError`).

After construction the service is read-only (encoders in eval mode, memory-mapped indexes, a fitted UMAP behind a
lock), so requests may run concurrently; nothing is shared between them.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adapt import AdapterMismatchError, HystarEncoder
from .embed import embed_pixels, embed_texts
from .encoder import DEFAULT_ENCODER, Encoder
from .encoder.search import open_search_encoder
from .gallery import UploadLimitError, UploadLimits, demo_source, gallery_source, upload_gallery_dir
from .images import ImageError, is_blank, open_image
from .index import GalleryIndex, Rescorer
from .index.sides import Progress
from .indexing import IndexingProgress, IndexingStatus
from .online import OnlineSession, session_parameter_names
from .online.users import OnlineServiceConfig, OnlineSessions, OnlineStatus, TrackedSession
from .paths import ADAPTER_PATH as DEFAULT_ADAPTER
from .paths import GALLERY_INDEX_ROOT, RERANKER_DIR
from .query import prepare_query
from .ranking import QueryExpansion
from .rerank import RERANK_DEPTH
from .shifts import ShiftSummary
from .spaces import Space, gallery_classes, load_spaces
from .umap_job import ready_map, start_umap
from .uploads import AddReport, add_to_gallery
from .views import Explanation, MlpOffset, Placement, UmapConfig, UmapMap

log = logging.getLogger(__name__)

MAX_K = 50
EMPTY_GALLERY = "the gallery is empty: add photos first"


class QueryError(ValueError):
    """A query with nothing to search for; the message is one line for the user."""


class GalleryIndexingError(QueryError):
    """A search or an upload while the gallery is still being indexed: "indexing: N % ..." (`IndexingStatus.line`)."""


class GalleryDamagedError(QueryError):
    """A search of a gallery whose index failed a check of its checksums: the index's one-line `CorruptIndexError`
    message ("... the index is damaged (file, rows); rebuild it with `hystar index ...`")."""


@dataclass(frozen=True)
class ServiceConfig:
    encoder: str = DEFAULT_ENCODER
    adapter: Path | None = None        # None: base encoder only
    gallery: Path | None = None        # None: the demo photos under $HYSTAR_DATA
    index_root: Path = GALLERY_INDEX_ROOT
    reranker_dir: Path = RERANKER_DIR
    candidates: int = RERANK_DEPTH     # what the re-ranker re-scores
    expansion: QueryExpansion = field(default_factory=QueryExpansion)   # for queries with `expand`
    umap: UmapConfig | None = field(default_factory=UmapConfig)   # None: no UMAP view
    device: str | None = None          # None: CUDA when present, else the CPU
    progress: bool = True
    online: OnlineServiceConfig | None = field(default_factory=OnlineServiceConfig)   # None: no online adaptation
    upload_limits: UploadLimits = field(default_factory=UploadLimits)   # per upload into the app-owned gallery
    index_threads: int | None = None   # torch threads while indexing; None: every core
    threads: int | None = None         # torch threads for serving, set once indexing is done; None: unchanged


@dataclass
class Query:
    sketch: Any = None                 # the flattened canvas (PIL, array, path or bytes); blank means absent
    image: Any = None                  # an upload: path, bytes, PIL or array
    text: str = ""
    negative: str = ""
    sketch_weight: float = 1.0
    image_weight: float = 1.0
    text_weight: float = 1.0
    negative_weight: float = 0.5
    k: int = 12
    adapt: bool = True
    rerank: bool = False
    expand: bool = True                # query expansion (`QueryExpansion`); QuARI re-ranking replaces it
    online: bool = False               # adapt the user's session to this query, and embed it with the session


@dataclass(frozen=True)
class Result:
    rank: int
    score: float
    row: int
    path: Path
    name: str                          # path relative to the gallery folder
    cls: str                           # class, "" when unknown

    @property
    def label(self) -> str:
        return self.cls or Path(self.name).name


@dataclass
class SearchResponse:
    base: list[Result]
    adapted: list[Result] | None       # None: adaptation off or unavailable
    parts: list[str]                   # what the query was made of: "sketch", "image", "text", "negative text"
    explanations: list[Explanation]    # dynamic ΔS per query image (adapted searches only)
    offsets: list[MlpOffset]           # static MLP offsets (adapted searches only)
    vectors: dict[str, np.ndarray]     # "base" and, adapted, "adapted": the fused query vectors
    placement: Placement | None = None
    reranked: bool = False
    expanded: bool = False
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)   # milliseconds
    online: OnlineStatus | None = None  # None: online adaptation off for this search


@dataclass
class _Embedded:
    base: np.ndarray                   # fused and normalised
    adapted: np.ndarray | None
    parts: list[str]
    explanations: list[Explanation]
    offsets: list[MlpOffset]
    observed: bool = False             # the image parts went through an online session


# ---------------------------------------------------------------------------------------------- fusion

def fuse(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Normalised weighted sum of normalised embeddings; a negative weight subtracts."""
    total = sum(weight * vector / max(float(np.linalg.norm(vector)), 1e-12) for vector, weight in parts)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise QueryError("the query's parts cancel out: change the weights")
    return (total / norm).astype(np.float32)


class SearchService:
    """Fused queries against a gallery, with and without style adaptation, optionally re-ranked."""

    def __init__(self, encoder: Encoder, base: Space | None, adapter: HystarEncoder | None = None,
                 adapted: Space | None = None, candidates: int = RERANK_DEPTH, umap: Future | UmapMap | None = None,
                 online: OnlineServiceConfig | None = None, config: ServiceConfig | None = None,
                 uploads: Path | None = None, umap_note: str = ""):
        """`base` None: the gallery is being indexed (`index_in_background`); searches wait for it."""
        if base is not None and (adapter is None) != (adapted is None):
            raise ValueError("an adapted encoder and its gallery space come together")
        self.indexing = IndexingProgress(ready=base is not None)
        self.max_k = MAX_K
        self.encoder, self.adapter = encoder, adapter
        self._galleries = (base, adapted)  # swapped as one: a search never sees a new base beside an old adapted
        self.candidates = candidates
        self._umap = umap
        self._shifts = ShiftSummary(adapter.adapter if adapter is not None else None)
        self.online_config = online
        self.online_note = self._online_unavailable(online)
        self.online = None if self.online_note else OnlineSessions(self._new_session, online.max_users)
        self._online_lock = threading.Lock()
        self._online_galleries: dict[str, torch.Tensor] = {}
        self._anchors: torch.Tensor | None = None
        self._anchors_ready = False
        self.config = config or ServiceConfig()
        self.uploads = uploads         # the app-owned gallery folder photos can be added to; None: read-only
        self.umap_note = umap_note     # why there is no UMAP view, when there is none
        self._add_lock = threading.Lock()

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def open(cls, config: ServiceConfig, background: bool = False) -> SearchService:
        """Load the encoder, the adapter (if any), the gallery indexes (built on first use, base and adapted in one
        pass per photo) and re-rankers; UMAP is fitted (or loaded from its cache) in the background. With no
        gallery folder and no demo photos, the gallery is the app-owned upload folder under the index root (empty
        at first; see `add_photos`). `background`: return at once and index in a thread (`indexing_status`)."""
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        adapter = None
        if config.adapter is not None:
            adapter, _ = open_search_encoder(config.encoder, config.adapter)
            adapter = adapter if device == "cpu" else copy.deepcopy(adapter).to(device)
            encoder = adapter.base
        else:
            encoder, _ = open_search_encoder(config.encoder)
            encoder = encoder if device == "cpu" else copy.deepcopy(encoder).to(device)
        uploads = upload_gallery_dir(config.index_root)
        if config.gallery is None and demo_source() is None:
            uploads.mkdir(parents=True, exist_ok=True)
            gallery = uploads
        else:
            gallery = config.gallery
            if gallery is None or Path(os.path.abspath(Path(gallery).expanduser())) != uploads:
                uploads = None      # the user's folder or the data set: never written to
        if gallery is not None:
            gallery_source(gallery)  # no such folder: one line now, not from the background
        service = cls(encoder, None, adapter, None, config.candidates, None, config.online, config, uploads)
        if background:
            threading.Thread(target=service._index, args=(gallery, True), name="gallery-indexing",
                             daemon=True).start()
        else:
            service._index(gallery, False)
        return service

    def _index(self, gallery: Path | None, background: bool) -> None:
        """Load or build the gallery's spaces with every core, then install them and set the serving threads.
        In the background a failure is kept in the indexing state (searches and the page say it); else raised."""
        config = self.config
        try:
            torch.set_num_threads(config.index_threads or os.cpu_count() or 1)
            base, adapted = load_spaces(config, gallery, self.encoder, self.adapter, refresh=False,
                                        on_progress=self.indexing.update)
        except Exception as error:  # noqa: BLE001 - the page and searches say it; the log has the traceback
            if not background:
                raise
            log.exception("indexing the gallery failed")
            self.indexing.fail(f"{type(error).__name__}: {error}")
            return
        finally:
            if config.threads:
                torch.set_num_threads(config.threads)
        umap, note = start_umap(config.umap, base)
        with self._online_lock:
            self._galleries, self._umap, self.umap_note = (base, adapted), umap, note
        self._verify_in_background()
        self.indexing.finish(len(base.index))

    def indexing_status(self) -> IndexingStatus:
        """Where the gallery's indexing stands: done / total images, seconds left, ready, error."""
        return self.indexing.status()

    def _require_ready(self) -> None:
        status = self.indexing.status()
        if not status.ready:
            raise GalleryIndexingError(status.line() if status.error else
                                       f"{status.line()}; search again once it is done")

    def _verify_in_background(self) -> None:
        for space in self.spaces:
            space.index.verify_in_background()

    def _require_intact(self) -> None:
        for space in self.spaces:
            if space.index.damage is not None:
                raise GalleryDamagedError(str(space.index.damage))

    @classmethod
    def over_index(cls, index: GalleryIndex, encoder: Encoder, adapter: HystarEncoder | None = None,
                   reranker: Rescorer | None = None, candidates: int = RERANK_DEPTH) -> SearchService:
        """The service over one index folder (`hystar search`): with `adapter`, adapted queries search it
        (`SearchResponse.adapted`) and base queries too (`.base`, the "no adaptation" ablation); else base queries.
        No UMAP, no online adaptation, no uploads."""
        space = Space("index", index, [""] * len(index), reranker,
                      "" if reranker is not None else "no re-ranker was asked for (--rerank)")
        config = ServiceConfig(encoder=index.meta.encoder["spec"], umap=None, online=None, candidates=candidates,
                               progress=False)
        service = cls(encoder, space, adapter, space if adapter is not None else None, candidates, None, None,
                      config)
        service.max_k = max(len(index), 1)
        return service

    # -- adding photos ------------------------------------------------------------------------------

    @property
    def can_add(self) -> bool:
        return self.uploads is not None

    def add_photos(self, files: Sequence[str | os.PathLike], on_progress: Progress | None = None) -> AddReport:
        """Copy uploaded images (and the images of .zip archives) into the app-owned gallery, index them
        incrementally (`on_progress(done, total)` as they are embedded) and search the grown gallery from now on.
        Raises `QueryError` (one line) when there is nothing to add, the upload is over
        `ServiceConfig.upload_limits`, or this gallery is not the app's own."""
        if self.uploads is None:
            raise QueryError("photos can be added only to the app's own upload gallery, not to a --gallery "
                             "folder or the demo data")
        if not files:
            raise QueryError("nothing to add: choose photos or a .zip archive of photos")
        self._require_ready()
        with self._add_lock:
            before = {entry.path for entry in self.base.index.entries}
            reindex = lambda: load_spaces(self.config, self.uploads, self.encoder, self.adapter, refresh=True,
                                          on_progress=on_progress)
            try:
                report, (base, adapted) = add_to_gallery(files, self.uploads, self.config.upload_limits, before,
                                                         reindex)
            except UploadLimitError as error:
                raise QueryError(str(error)) from None
            umap, note = start_umap(self.config.umap, base)
            with self._online_lock:   # sessions hold the old gallery's vectors: they start again on the new one
                self._galleries, self._umap, self.umap_note = (base, adapted), umap, note
                self._online_galleries.clear()
                self._anchors, self._anchors_ready = None, False
                if self.online is not None:
                    self.online = OnlineSessions(self._new_session, self.online_config.max_users)
            self._verify_in_background()
            return report

    # -- state --------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.indexing.status().ready

    @property
    def base(self) -> Space | None:
        """The base side; None while the gallery is being indexed."""
        return self._galleries[0]

    @property
    def adapted(self) -> Space | None:
        return self._galleries[1]

    @property
    def can_adapt(self) -> bool:
        return self.adapter is not None

    @property
    def can_rerank(self) -> bool:
        return any(space.reranker is not None for space in self.spaces)

    @property
    def spaces(self) -> list[Space]:
        base, adapted = self._galleries
        return [space for space in (base, adapted) if space is not None]

    @property
    def can_online(self) -> bool:
        return self.online is not None

    @property
    def has_umap(self) -> bool:
        return self._umap is not None

    @property
    def gallery_size(self) -> int:
        base = self.base
        return 0 if base is None else len(base.index)

    def umap_map(self, timeout: float | None = 0.0) -> UmapMap | None:
        """The fitted map; None while it is being fitted (waits up to `timeout` seconds, None: for ever)."""
        projection, keep = ready_map(self._umap, timeout)
        if not keep:
            self._umap = None
        return projection

    # -- search -------------------------------------------------------------------------------------

    def search(self, query: Query, place: bool = True, user: str | None = None) -> SearchResponse:
        """Top-k for `query` in the base space and, when asked and available, the adapted space.
        With `query.online`, `user`'s online session embeds (and adapts to) the query's images.
        Raises `QueryError` (nothing to search for, a damaged gallery index) or `ImageError` (an image that cannot
        be read)."""
        self._require_ready()
        self._require_intact()
        if self.gallery_size == 0:
            raise QueryError(EMPTY_GALLERY)
        k = int(min(max(query.k, 1), self.max_k))
        base_space, adapted_space = self._galleries
        adapt = query.adapt and self.adapter is not None
        notes = []
        start = time.perf_counter()
        tracked = self._online_session(query, adapt, user, notes)
        embedded = self._embed(query, adapt, tracked)
        timings = {"embed": _ms(start)}
        searched = time.perf_counter()
        base, reranked, expanded = self._search(base_space, embedded.base, k, query, notes)
        adapted = None
        if adapt:
            adapted, also_reranked, also_expanded = self._search(adapted_space, embedded.adapted, k, query, notes)
            reranked, expanded = reranked or also_reranked, expanded or also_expanded
        timings["search"] = _ms(searched)
        vectors = {"base": embedded.base} | ({"adapted": embedded.adapted} if adapt else {})
        response = SearchResponse(base, adapted, embedded.parts, embedded.explanations, embedded.offsets,
                                  vectors, reranked=reranked, expanded=expanded, notes=notes, timings=timings,
                                  online=None if tracked is None else tracked.status(embedded.observed))
        if place:
            self.place(response)
        timings["total"] = _ms(start)
        return response

    def place(self, response: SearchResponse) -> None:
        """Put the response's query vectors on the UMAP (a note says why not when it cannot)."""
        started = time.perf_counter()
        projection = self.umap_map()
        if projection is None:
            if self._umap is not None:
                response.notes.append("the UMAP view is still being fitted; it appears with a later search")
            return
        vectors = [response.vectors["base"]] + ([response.vectors["adapted"]] if "adapted" in response.vectors
                                                 else [])
        coords = projection.place(np.stack(vectors))
        points = [(float(x), float(y)) for x, y in coords]
        response.placement = Placement(points[0], points[1] if len(points) > 1 else None)
        response.timings["umap"] = _ms(started)

    def _search(self, space: Space, vector: np.ndarray, k: int, query: Query, notes: list[str]
                ) -> tuple[list[Result], bool, bool]:
        """The space's top k for `vector`: (results, re-ranked, expanded). QuARI re-ranking, where asked and
        available, re-scores the plain candidates in place of query expansion."""
        reranker = space.reranker if query.rerank else None
        if query.rerank and reranker is None:
            notes.append(f"no re-ranking for {space.name} results: {space.rerank_note}")
        expansion = self.config.expansion if query.expand and reranker is None else None
        result = space.index.search(vector, k, reranker=reranker, candidates=self.candidates, expansion=expansion)
        hits = space.index.hits(result)
        return [Result(h.rank, h.score, h.row, h.path, h.relpath, space.classes[h.row]) for h in hits], \
            reranker is not None, expansion is not None

    # -- online adaptation ----------------------------------------------------------------------------

    def reset_online(self, user: str | None) -> bool:
        """`user`'s online sessions back to the shared model; False when there was none to reset."""
        return self.online is not None and user is not None and self.online.reset(user)

    def drop_online(self, user: str | None) -> None:
        """Forget `user`'s online sessions (their app session closed)."""
        if self.online is not None and user is not None:
            self.online.drop(user)

    def _online_unavailable(self, config: OnlineServiceConfig | None) -> str:
        """Why online adaptation cannot run here; "" when it can."""
        if config is None:
            return "turned off in the service configuration"
        try:
            for encoder in [self.encoder] + ([self.adapter] if self.adapter is not None else []):
                session_parameter_names(encoder, config.adaptation.params)
        except (ValueError, AttributeError) as error:
            return str(error)
        return ""

    def _online_session(self, query: Query, adapt: bool, user: str | None,
                        notes: list[str]) -> TrackedSession | None:
        if not query.online:
            return None
        if self.online is None:
            notes.append(f"online adaptation is unavailable: {self.online_note}")
            return None
        if not user:
            notes.append("online adaptation needs a user session: this search used the shared model")
            return None
        return self.online.get(user, "adapted" if adapt else "base")

    def _new_session(self, side: str) -> OnlineSession:
        encoder = self.adapter if side == "adapted" else self.encoder
        return OnlineSession(encoder, self._online_gallery(side), self.online_config.adaptation,
                             anchor_features=self._anchor_features())

    def _online_gallery(self, side: str) -> torch.Tensor:
        """The side's gallery vectors as one float32 tensor that all sessions share (made on first use)."""
        with self._online_lock:
            if side not in self._online_galleries:
                space = self.adapted if side == "adapted" else self.base
                vectors = np.asarray(space.index.vectors, dtype=np.float32)
                self._online_galleries[side] = torch.from_numpy(vectors).to(self.encoder.device)
            return self._online_galleries[side]

    def _anchor_features(self) -> torch.Tensor | None:
        """Trunk features of a few gallery photos, evenly spread over the gallery (shared by all sessions)."""
        with self._online_lock:
            if not self._anchors_ready:
                self._anchors = self._read_anchors(self.online_config.anchors)
                self._anchors_ready = True
            return self._anchors

    def _read_anchors(self, count: int) -> torch.Tensor | None:
        index = self.base.index
        rows = np.unique(np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int))
        pixels = []
        for row in rows if count > 0 else []:
            try:
                pixels.append(self.encoder.preprocess(open_image(index.path(int(row)))))
            except (ImageError, OSError) as error:
                log.warning("online anchor %s skipped: %s", index.path(int(row)), error)
        return self._trunk(torch.stack(pixels)) if pixels else None

    def _trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.encoder.visual.trunk(pixels.to(self.encoder.device))

    # -- embedding ----------------------------------------------------------------------------------

    def _embed(self, query: Query, adapt: bool, tracked: TrackedSession | None = None) -> _Embedded:
        images, texts = self._parts(query)
        if not images and not any(weight > 0 for _, weight, _ in texts):
            raise QueryError(_empty_message(query))
        base_parts: list[tuple[np.ndarray, float]] = []
        adapted_parts: list[tuple[np.ndarray, float]] = []
        explanations: list[Explanation] = []
        offsets: list[MlpOffset] = []
        if images:
            base_vectors, adapted_vectors, explanations, offsets = self._embed_images(images, adapt, tracked)
            for (_, weight, _), b, a in zip(images, base_vectors, adapted_vectors, strict=True):
                base_parts.append((b, weight))
                adapted_parts.append((a, weight))
        if texts:
            vectors = embed_texts(self.encoder, [text for _, _, text in texts])
            for (_, weight, _), vector in zip(texts, vectors, strict=True):
                base_parts.append((vector, weight))
                adapted_parts.append((vector, weight))
        parts = [name for name, _, _ in images] + [name for name, _, _ in texts]
        return _Embedded(fuse(base_parts), fuse(adapted_parts) if adapt else None, parts, explanations, offsets,
                         observed=tracked is not None and bool(images))

    def _embed_images(self, images: list[tuple[str, float, Any]], adapt: bool, tracked: TrackedSession | None
                      ) -> tuple[np.ndarray, np.ndarray, list[Explanation], list[MlpOffset]]:
        """Base and adapted embeddings of the images, their ΔS and the static offsets (adapted searches only).
        An online session embeds the side it adapts: the adapted one with adaptation on, else the base one;
        ΔS and the offsets stay those of the shared adapter."""
        pixels = torch.stack([self.encoder.preprocess(prepare_query(image, drawn=name == "sketch"))
                              for name, _, image in images]).to(self.encoder.device)
        observed = None if tracked is None else tracked.observe(self._trunk(pixels))
        if not adapt:
            base = observed if observed is not None else embed_pixels(self.encoder, pixels)
            return base, base, [], []
        explained = self.adapter.explain(pixels)
        base = explained["base"].float().cpu().numpy()
        adapted = observed if observed is not None else explained["adapted"].float().cpu().numpy()
        explanations = self._shifts.explanations([name for name, _, _ in images], explained["delta_s"])
        return base, adapted, explanations, self._shifts.offsets(explained["static"])

    @staticmethod
    def _parts(query: Query) -> tuple[list[tuple[str, float, Any]], list[tuple[str, float, str]]]:
        """(name, signed weight, opened image) and (name, signed weight, text) of the parts that count."""
        images = []
        if query.sketch is not None and query.sketch_weight > 0:
            sketch = open_image(query.sketch)
            if not is_blank(sketch):
                images.append(("sketch", float(query.sketch_weight), sketch))
        if query.image is not None and query.image_weight > 0:
            images.append(("image", float(query.image_weight), open_image(query.image)))
        texts = []
        if query.text.strip() and query.text_weight > 0:
            texts.append(("text", float(query.text_weight), query.text.strip()))
        if query.negative.strip() and query.negative_weight > 0:
            texts.append(("negative text", -float(query.negative_weight), query.negative.strip()))
        return images, texts


# ---------------------------------------------------------------------------------------------- helpers

def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _empty_message(query: Query) -> str:
    if query.negative.strip() and query.negative_weight > 0:
        return "a negative text alone is not a query: add a sketch, an image or a text to search for"
    if query.sketch is not None:
        return "the canvas is blank and there is nothing else to search for: draw, upload an image or type a text"
    return "empty query: draw on the canvas, upload an image or type a text"


def default_adapter() -> Path | None:
    """The trained hystar-mini adapter, when it has been trained."""
    return DEFAULT_ADAPTER if DEFAULT_ADAPTER.is_file() else None


__all__ = ["AddReport", "AdapterMismatchError", "DEFAULT_ADAPTER", "EMPTY_GALLERY", "GalleryDamagedError",
           "GalleryIndexingError",
           "ImageError", "IndexingStatus", "MAX_K", "RERANK_DEPTH",
           "OnlineServiceConfig", "OnlineSessions", "OnlineStatus", "Query", "QueryError", "Result", "SearchResponse",
           "SearchService", "ServiceConfig", "Space", "TrackedSession", "default_adapter", "fuse", "gallery_classes"]
