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

The service orchestrates parts that live beside it: `hystar.query_embedding` (a query's parts to vectors, its GPU
work in one call), `hystar.zerogpu` (that call inside `spaces.GPU` on Hugging Face's ZeroGPU), `hystar.spaces` (the
base and adapted sides), `hystar.online.served` (per-user sessions and what they share), `hystar.guesses` (what the
image part reads as), `hystar.shifts` (ΔS summaries), `hystar.umap_job` (the UMAP view's lifecycle),
`hystar.uploads` (adding photos to the app-owned gallery).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adapt import AdapterMismatchError, HystarEncoder
from .embed import embed_texts
from .encoder import DEFAULT_ENCODER, Encoder
from .encoder.search import open_search_encoder
from .gallery import (
    UploadLimitError,
    UploadLimits,
    demo_source,
    ensure_gallery_indexes,
    gallery_source,
    upload_gallery_dir,
)
from .guesses import (
    GALLERY,
    Guess,
    GuessConfig,
    GuesserCache,
    NamePrior,
    Vocabulary,
    display_name,
    vocabulary_for,
)
from .images import ImageError
from .index import GalleryIndex, Rescorer
from .index.sides import Progress
from .indexing import IndexingProgress, IndexingStatus
from .online.served import ServedOnline
from .online.users import OnlineServiceConfig, OnlineSessions, OnlineStatus, TrackedSession
from .paths import ADAPTER_PATH as DEFAULT_ADAPTER
from .paths import GALLERY_INDEX_ROOT, RERANKER_DIR
from .query_embedding import (
    Encoded,
    Parts,
    QueryError,
    encode,
    fuse,
    fused,
    lean_drawings,
    pixels_of,
    query_parts,
    texts_to_encode,
)
from .ranking import QueryExpansion
from .rerank import RERANK_DEPTH
from .shifts import ShiftSummary
from .spaces import Space, gallery_classes, load_spaces
from .umap_job import UmapJob, start_umap
from .uploads import AddReport, add_to_gallery
from .views import Explanation, MlpOffset, Placement, UmapConfig, UmapMap
from .zerogpu import Gpu, on_zerogpu

log = logging.getLogger(__name__)

MAX_K = 50
RERANKED, EXPANDED, PLAIN = "re-ranked by QuARI", "query expanded", "plain nearest neighbours"
EMPTY_GALLERY = "the gallery is empty: add photos first"


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
    guesses: GuessConfig | None = field(default_factory=GuessConfig)   # None: no "reads as" guesses
    name_prior: NamePrior | None = field(default_factory=NamePrior)   # None: drawings searched as they are


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
    name_prior: bool = True            # drawings lean toward the gallery's class names they read as (`NamePrior`)
    online: bool = False               # adapt the user's session to this query, and embed it with the session


@dataclass(frozen=True)
class Result:
    rank: int
    score: float
    row: int
    path: Path
    name: str                          # path relative to the gallery folder
    cls: str                           # class, "" when unknown
    caption: str = ""                  # what the photo shows, when its data set says (COCO's captions)

    @property
    def label(self) -> str:
        """How a person reads it: the class ("alarm clock"), else the data set's caption, else the file name."""
        return display_name(self.cls) if self.cls else self.caption or Path(self.name).name


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
    leaned: bool = False               # its drawings leaned toward the names they read as (`NamePrior`)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)   # milliseconds
    online: OnlineStatus | None = None  # None: online adaptation off for this search
    processing: dict[str, str] = field(default_factory=dict)   # side -> RERANKED, EXPANDED or PLAIN
    guesses: list[Guess] = field(default_factory=list)   # what the image part reads as; [] without images
    vocabulary: str = ""               # where the guesses' names come from (`hystar.guesses.GALLERY`, ...)


@dataclass
class _Embedded:
    base: np.ndarray                   # fused and normalised
    adapted: np.ndarray | None
    parts: list[str]
    explanations: list[Explanation]
    offsets: list[MlpOffset]
    images: np.ndarray | None = None   # the image parts alone, fused: what the guesses read
    observed: bool = False             # the image parts went through an online session
    leaned: bool = False               # the drawings leaned toward their names (`NamePrior`)



class SearchService:
    """Fused queries against a gallery, with and without style adaptation, optionally re-ranked."""

    _guessers = GuesserCache()         # shared by the services of a process: one vocabulary build per encoder

    def __init__(self, encoder: Encoder, base: Space | None, adapter: HystarEncoder | None = None,
                 adapted: Space | None = None, candidates: int = RERANK_DEPTH, umap: UmapJob | UmapMap | None = None,
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
        self._served_online = ServedOnline(encoder, adapter, online, self._space,
                                           ONLINE_ON_ZEROGPU if on_zerogpu() else "")
        self._lock = threading.Lock()
        self.config = config or ServiceConfig()
        self.uploads = uploads         # the app-owned gallery folder photos can be added to; None: read-only
        self.umap_note = umap_note     # why there is no UMAP view, when there is none
        self._add_lock = threading.Lock()
        self._gpu = Gpu(self)
        self._build_progress: Progress | None = None

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
            base, adapted = self._load_spaces(gallery, refresh=False, on_progress=self.indexing.update)
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
        with self._lock:
            self._galleries, self._umap, self.umap_note = (base, adapted), umap, note
        self._verify_in_background()
        self.indexing.finish(len(base.index))
        threading.Thread(target=self._warm_guesses, args=(base,), name="hystar-guesses", daemon=True).start()

    def _load_spaces(self, gallery: Path | None, refresh: bool, on_progress: Progress | None
                     ) -> tuple[Space, Space | None]:
        """The gallery's spaces; with `spaces` importable, what needs embedding is built inside a `spaces.GPU`
        function first (`hystar.zerogpu`), then loaded here."""
        if self._gpu.decorated:
            self._build_progress = on_progress
            try:
                self._gpu.index("_build_indexes", gallery, refresh)
            finally:
                self._build_progress = None
            refresh, on_progress = False, None
        return load_spaces(self.config, gallery, self.encoder, self.adapter, refresh=refresh,
                           on_progress=on_progress)

    def _build_indexes(self, gallery: Path | None, refresh: bool) -> None:
        """The GPU side of `_load_spaces`: embed what the gallery's indexes miss (nothing is returned: the indexes
        are files; on ZeroGPU this runs in its worker process)."""
        config = self.config
        ensure_gallery_indexes(config.encoder, gallery, config.adapter if self.adapter is not None else None,
                               config.index_root, refresh=refresh, progress=config.progress,
                               on_progress=self._build_progress, embedder=self.adapter or self.encoder)

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
        No UMAP, no online adaptation, no uploads; guesses from the shipped vocabulary."""
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
            reindex = lambda: self._load_spaces(self.uploads, refresh=True, on_progress=on_progress)
            try:
                report, (base, adapted) = add_to_gallery(files, self.uploads, self.config.upload_limits, before,
                                                         reindex)
            except UploadLimitError as error:
                raise QueryError(str(error)) from None
            umap, note = start_umap(self.config.umap, base)
            with self._lock:   # sessions hold the old gallery's vectors: they start again on the new one
                self._galleries, self._umap, self.umap_note = (base, adapted), umap, note
                self._served_online.new_gallery()
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

    def _space(self, side: str) -> Space:
        return self.adapted if side == "adapted" else self.base

    @property
    def can_adapt(self) -> bool:
        return self.adapter is not None

    @property
    def can_rerank(self) -> bool:
        return any(space.reranker is not None for space in self.spaces)

    @property
    def rerank_note(self) -> str:
        """Why re-ranking cannot be asked for now ("" when it can)."""
        if not self.ready:
            return "offered once the gallery is indexed"
        if self.can_rerank:
            return ""
        return self.base.rerank_note if self.base is not None else "no QuARI re-ranker is trained for this encoder"

    @property
    def spaces(self) -> list[Space]:
        base, adapted = self._galleries
        return [space for space in (base, adapted) if space is not None]

    @property
    def online(self) -> OnlineSessions | None:
        """Each user's online sessions; None when online adaptation is unavailable (`online_note` says why)."""
        return self._served_online.sessions

    @property
    def online_note(self) -> str:
        return self._served_online.note

    @property
    def can_online(self) -> bool:
        return self._served_online.available

    @property
    def has_umap(self) -> bool:
        return self._umap is not None

    @property
    def umap_state(self) -> str:
        """What the UMAP view is doing: "ready", "loading" (its cache), "fitting", or "off" (`umap_note` says
        why; while the gallery is indexed it says so)."""
        if not self.ready:
            return "off"
        if isinstance(self._umap, UmapMap):
            return "ready"
        return self._umap.state if self._umap is not None else "off"

    @property
    def umap_waiting_note(self) -> str:
        """What the page says while there is no map to show."""
        if self.config.umap is None:
            return "the UMAP view is off (--no-umap)"
        if not self.ready:
            return "the UMAP view appears once the gallery is indexed"
        state = self.umap_state
        if state == "loading":
            return "the UMAP view is being loaded from its cache (once per start, about half a minute)…"
        if state == "fitting":
            return "the UMAP view is being fitted (once per gallery, then cached)…"
        return self.umap_note or "the UMAP view is off"

    @property
    def gallery_size(self) -> int:
        base = self.base
        return 0 if base is None else len(base.index)

    def umap_map(self, timeout: float | None = 0.0) -> UmapMap | None:
        """The fitted map; None while it is being fitted (waits up to `timeout` seconds, None: for ever)."""
        umap = self._umap
        if umap is None or isinstance(umap, UmapMap):
            return umap
        projection, keep = umap.ready(timeout)
        if not keep:
            self._umap, self.umap_note = None, umap.failure
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
        side = "adapted" if adapt else "base"
        online = self._online_user(query, user, notes)
        embedded = self._embed(query, adapt, (online, side) if online else None)
        timings = {"embed": _ms(start)}
        searched = time.perf_counter()
        base, how = self._search(base_space, embedded.base, k, query)
        processing = {"base": how}
        adapted = None
        if adapt:
            adapted, processing["adapted"] = self._search(adapted_space, embedded.adapted, k, query)
        reranked, expanded = RERANKED in processing.values(), EXPANDED in processing.values()
        if query.rerank:
            notes += self._rerank_notes(processing, query)
        timings["search"] = _ms(searched)
        vectors = {"base": embedded.base} | ({"adapted": embedded.adapted} if adapt else {})
        tracked = self._served_online.find(online, side) if online else None
        response = SearchResponse(base, adapted, embedded.parts, embedded.explanations, embedded.offsets,
                                  vectors, reranked=reranked, expanded=expanded, leaned=embedded.leaned, notes=notes,
                                  timings=timings,
                                  online=None if tracked is None else tracked.status(embedded.observed),
                                  processing=processing)
        guessed = time.perf_counter()
        self._guess(response, embedded.images, base_space)
        timings["guesses"] = _ms(guessed)
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
                response.notes.append(f"{self.umap_waiting_note.rstrip('…')}; it appears with a later search")
            return
        vectors = [response.vectors["base"]] + ([response.vectors["adapted"]] if "adapted" in response.vectors
                                                 else [])
        coords = projection.place(np.stack(vectors))
        points = [(float(x), float(y)) for x, y in coords]
        response.placement = Placement(points[0], points[1] if len(points) > 1 else None)
        response.timings["umap"] = _ms(started)

    def _search(self, space: Space, vector: np.ndarray, k: int, query: Query) -> tuple[list[Result], str]:
        """The space's top k for `vector`, and how they were found (`RERANKED`, `EXPANDED` or `PLAIN`). QuARI
        re-ranking, where asked and available, re-scores the plain candidates in place of query expansion."""
        reranker = space.reranker if query.rerank else None
        expansion = self.config.expansion if query.expand and reranker is None else None
        result = space.index.search(vector, k, reranker=reranker, candidates=self.candidates, expansion=expansion)
        hits = space.index.hits(result)
        captions = space.captions or {}
        how = RERANKED if reranker is not None else EXPANDED if expansion is not None else PLAIN
        return [Result(h.rank, h.score, h.row, h.path, h.relpath, space.classes[h.row], captions.get(h.row, ""))
                for h in hits], how

    def _rerank_notes(self, processing: dict[str, str], query: Query) -> list[str]:
        """What a person asking for re-ranking should know: which side was not re-ranked and why, and that QuARI's
        scores are not cosines."""
        notes = []
        for side, how in processing.items():
            if how != RERANKED:
                name = "the base side" if side == "base" else "the Hystar side"
                notes.append(f"{name} is not re-ranked ({self._space(side).rerank_note}): its results are "
                             f"{'query-expanded' if how == EXPANDED else 'plain nearest neighbours'}")
        if RERANKED in processing.values():
            notes.append("re-ranked scores are QuARI's own (a blend with the cosine), lower than cosines: "
                         "compare ranks, not the numbers, across the two sides")
        return notes

    # -- what the image part reads as -----------------------------------------------------------------

    def vocabulary(self, space: Space | None = None) -> Vocabulary:
        space = space or self.base
        return vocabulary_for(space.classes if space is not None else [], self.config.guesses or GuessConfig())

    def _guesser(self, space: Space | None = None):
        return self._guessers.get(self.encoder.fingerprint, self.vocabulary(space),
                                  lambda texts: self._gpu.query("_embed_texts", texts))

    def _warm_guesses(self, space: Space) -> None:
        """The vocabulary's embeddings, once the gallery is ready (a second or two, in the background): the first
        search does not wait for them, or waits for what is left."""
        if self.config.guesses is not None:
            try:
                self._guesser(space)
            except Exception:  # noqa: BLE001 - the guesses are a view: searching works without them
                log.exception("the guesses' vocabulary could not be embedded")

    def _guess(self, response: SearchResponse, images: np.ndarray | None, space: Space) -> None:
        """What the image part reads as, into `response` (nothing without images, or when it cannot be had)."""
        if images is None or self.config.guesses is None:
            return
        try:
            guesser = self._guesser(space)
        except Exception:  # noqa: BLE001 - the guesses are a view: the search stands without them
            log.exception("no guesses: the vocabulary could not be embedded")
            return
        response.guesses = guesser.guess(images)
        response.vocabulary = guesser.vocabulary.source

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        """GPU work (`hystar.zerogpu`): texts to normalised vectors."""
        return embed_texts(self.encoder, texts)

    # -- online adaptation ----------------------------------------------------------------------------

    def reset_online(self, user: str | None) -> bool:
        """`user`'s online sessions back to the shared model; False when there was none to reset."""
        return self._served_online.reset(user)

    def drop_online(self, user: str | None) -> None:
        """Forget `user`'s online sessions (their app session closed)."""
        self._served_online.drop(user)

    def _online_user(self, query: Query, user: str | None, notes: list[str]) -> str | None:
        """The user whose session embeds this query; None (with a note when asked for) when none does."""
        if not query.online:
            return None
        if not self.can_online:
            notes.append(f"online adaptation is unavailable: {self.online_note}")
            return None
        if not user:
            notes.append("online adaptation needs a user session: this search used the shared model")
            return None
        return user

    # -- embedding ----------------------------------------------------------------------------------

    def _embed(self, query: Query, adapt: bool, online: tuple[str, str] | None = None) -> _Embedded:
        """The query's vectors: its parts prepared here, encoded in one GPU call, fused per side."""
        parts = query_parts(query)
        encoded = self._gpu.query("_encode", pixels_of(self.encoder, parts), texts_to_encode(parts),
                                  adapt, online)
        side = "adapted" if adapt else "base"
        explanations = self._shifts.explanations([n for n, _, _ in parts.images], encoded.delta_s) \
            if encoded.delta_s else []
        offsets = self._shifts.offsets(encoded.static) if encoded.static else []
        images = fused(parts, encoded, side, images_only=True)   # what the guesses read: the drawing as it is
        leaned = self._lean_drawings(parts, encoded) if query.name_prior else encoded
        return _Embedded(fused(parts, leaned, "base"), fused(parts, leaned, "adapted") if adapt else None,
                         parts.names, explanations, offsets, images, observed=encoded.observed,
                         leaned=leaned is not encoded)

    def _lean_drawings(self, parts: Parts, encoded: Encoded) -> Encoded:
        """The drawings' vectors leaned toward the names they read as (`NamePrior`), when there are drawings, a
        vocabulary it leans on, and a drawing sure enough of its first guess; else `encoded` itself. A query with a
        search text has no prior: a person who names what they drew (a clicked guess too) is not overruled by what
        the drawing alone reads as."""
        prior = self.config.name_prior
        if prior is None or not any(parts.drawings) or any(name == "text" for name, _, _ in parts.texts):
            return encoded
        try:
            guesser = self._guesser()
        except Exception:  # noqa: BLE001 - the prior sharpens a search that stands without it
            log.exception("drawings searched as they are: the vocabulary could not be embedded")
            return encoded
        any_leaned = False

        def lean(vectors: np.ndarray) -> np.ndarray:
            nonlocal any_leaned
            vectors, sure = prior.lean_where_sure(vectors, guesser)
            any_leaned |= bool(sure.any())
            return vectors

        leaned = lean_drawings(parts, encoded, lean)
        return leaned if any_leaned else encoded   # else no drawing read as anything surely enough

    def _encode(self, pixels: torch.Tensor | None, texts: list[str], adapt: bool,
                online: tuple[str, str] | None) -> Encoded:
        """GPU work (`hystar.zerogpu`): one query's images and texts to arrays; `online` (user, side): that
        user's session of that side embeds the images and adapts."""
        session = self._served_online.session(*online) if online else None
        return encode(self.encoder, self.adapter, pixels, texts, adapt, session)


ONLINE_ON_ZEROGPU = ("not on ZeroGPU: each GPU call runs in a separate worker process, where a session's steps "
                     "would be lost")


# ---------------------------------------------------------------------------------------------- helpers

def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def default_adapter() -> Path | None:
    """The trained hystar-mini adapter, when it has been trained."""
    return DEFAULT_ADAPTER if DEFAULT_ADAPTER.is_file() else None


__all__ = ["AddReport", "AdapterMismatchError", "DEFAULT_ADAPTER", "EMPTY_GALLERY", "GalleryDamagedError",
           "GalleryIndexingError",
           "ImageError", "IndexingStatus", "MAX_K", "RERANK_DEPTH",
           "OnlineServiceConfig", "OnlineSessions", "OnlineStatus", "Query", "QueryError", "Result", "SearchResponse",
           "SearchService", "ServiceConfig", "Space", "TrackedSession", "default_adapter", "fuse", "gallery_classes",
           "Guess", "GALLERY"]
