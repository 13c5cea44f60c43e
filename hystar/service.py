"""The search service behind the app: one fused query in; base and adapted results, ΔS data and UMAP places out.

A query is any combination of a sketch (the flattened canvas), an uploaded image, a text and a negative text.
Each part is embedded and L2-normalised; the query vector is the normalised weighted sum, the negative text
subtracted. With an adapter, the image parts go through the trunk once and come out twice
(`HystarEncoder.explain`): the base embedding searches the base gallery index, the adapted one the gallery index
built with the adapter. Text parts use the text tower, which adapters leave untouched.

After construction the service is read-only (encoders in eval mode, memory-mapped indexes, a fitted UMAP behind a
lock), so requests may run concurrently; nothing is shared between them.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .adapters import AdapterMismatchError, HystarEncoder
from .data import DATASETS, DataNotFoundError, load_dataset
from .embed import embed_pixels, embed_texts
from .encoder import DEFAULT_ENCODER, Encoder
from .gallery import GALLERY_INDEX_ROOT, ensure_demo_index
from .images import ImageError, is_blank, open_image
from .index import GalleryIndex, Reranker, open_search_encoder
from .rerank import ASSET_DIR as RERANKER_DIR
from .rerank import NoRerankerError, load_default_reranker
from .train import ADAPTER_PATH as DEFAULT_ADAPTER
from .views import (
    Explanation,
    LayerShift,
    MlpOffset,
    Placement,
    UmapConfig,
    UmapMap,
    load_or_fit_umap,
    umap_cache_path,
    umap_key,
)

log = logging.getLogger(__name__)

MAX_K = 50
TOP_SHIFTS = 5


class QueryError(ValueError):
    """A query with nothing to search for; the message is one line for the user."""


@dataclass(frozen=True)
class ServiceConfig:
    encoder: str = DEFAULT_ENCODER
    adapter: Path | None = None        # None: base encoder only
    gallery: Path | None = None        # None: the demo photos under $HYSTAR_DATA
    index_root: Path = GALLERY_INDEX_ROOT
    reranker_dir: Path = RERANKER_DIR
    candidates: int = 100              # what the re-ranker re-scores
    umap: UmapConfig | None = field(default_factory=UmapConfig)   # None: no UMAP view
    device: str | None = None          # None: CUDA when present, else the CPU
    progress: bool = True


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
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)   # milliseconds


@dataclass
class Space:
    """One side of the side-by-side: a gallery index, the classes of its rows, and its re-ranker."""
    name: str
    index: GalleryIndex
    classes: list[str]
    reranker: Reranker | None = None
    rerank_note: str = ""              # why there is no re-ranker


@dataclass
class _Embedded:
    base: np.ndarray                   # fused and normalised
    adapted: np.ndarray | None
    parts: list[str]
    explanations: list[Explanation]
    offsets: list[MlpOffset]


# ---------------------------------------------------------------------------------------------- labels

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


# ---------------------------------------------------------------------------------------------- fusion

def fuse(parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Normalised weighted sum of normalised embeddings; a negative weight subtracts."""
    total = sum(weight * vector / max(float(np.linalg.norm(vector)), 1e-12) for vector, weight in parts)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise QueryError("the query's parts cancel out: change the weights")
    return (total / norm).astype(np.float32)


def _top_shifts(delta: np.ndarray, count: int = TOP_SHIFTS) -> tuple[tuple[int, float], ...]:
    order = np.argsort(-np.abs(delta), kind="stable")[:count]
    return tuple((int(i), float(delta[i])) for i in order)


# ---------------------------------------------------------------------------------------------- service

class SearchService:
    """Fused queries against a gallery, with and without style adaptation, optionally re-ranked."""

    def __init__(self, encoder: Encoder, base: Space, adapter: HystarEncoder | None = None,
                 adapted: Space | None = None, candidates: int = 100, umap: Future | UmapMap | None = None):
        if (adapter is None) != (adapted is None):
            raise ValueError("an adapted encoder and its gallery space come together")
        self.encoder, self.base, self.adapter, self.adapted = encoder, base, adapter, adapted
        self.candidates = candidates
        self._umap = umap
        self._qkv_norms, self._mlp_norms = _singular_value_norms(adapter)

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def open(cls, config: ServiceConfig) -> SearchService:
        """Load the encoder, the adapter (if any), the gallery indexes (built on first use) and re-rankers;
        UMAP is fitted (or loaded from its cache) in the background."""
        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        adapter = None
        if config.adapter is not None:
            adapter, _ = open_search_encoder(config.encoder, config.adapter)
            adapter = adapter if device == "cpu" else copy.deepcopy(adapter).to(device)
            encoder = adapter.base
        else:
            encoder, _ = open_search_encoder(config.encoder)
            encoder = encoder if device == "cpu" else copy.deepcopy(encoder).to(device)
        base_index = ensure_demo_index(config.encoder, config.gallery, None, config.index_root,
                                       progress=config.progress)
        base = _space("base", base_index, encoder.fingerprint, config.reranker_dir)
        adapted = None
        if adapter is not None:
            adapted_index = ensure_demo_index(config.encoder, config.gallery, config.adapter, config.index_root,
                                              progress=config.progress)
            adapted = _space("adapted", adapted_index, adapter.fingerprint, config.reranker_dir)
        umap = None
        if config.umap is not None:
            umap = _in_background(
                load_or_fit_umap, base_index.vectors, base.classes, umap_cache_path(base_index.folder),
                umap_key(base_index.meta.generation, len(base_index), config.umap), config.umap)
        return cls(encoder, base, adapter, adapted, config.candidates, umap)

    # -- state --------------------------------------------------------------------------------------

    @property
    def can_adapt(self) -> bool:
        return self.adapter is not None

    @property
    def can_rerank(self) -> bool:
        return any(space.reranker is not None for space in self.spaces)

    @property
    def spaces(self) -> list[Space]:
        return [self.base] + ([self.adapted] if self.adapted is not None else [])

    @property
    def has_umap(self) -> bool:
        return self._umap is not None

    @property
    def gallery_size(self) -> int:
        return len(self.base.index)

    def umap_map(self, timeout: float | None = 0.0) -> UmapMap | None:
        """The fitted map; None while it is being fitted (waits up to `timeout` seconds, None: for ever)."""
        if self._umap is None or isinstance(self._umap, UmapMap):
            return self._umap
        try:
            return self._umap.result(timeout=timeout)
        except TimeoutError:
            return None
        except Exception as error:  # noqa: BLE001 - the map is a view: the search works without it
            log.warning("UMAP unavailable: %s", error)
            self._umap = None
            return None

    # -- search -------------------------------------------------------------------------------------

    def search(self, query: Query, place: bool = True) -> SearchResponse:
        """Top-k for `query` in the base space and, when asked and available, the adapted space.
        Raises `QueryError` (nothing to search for) or `ImageError` (an image that cannot be read)."""
        k = int(min(max(query.k, 1), MAX_K))
        adapt = query.adapt and self.adapter is not None
        notes = []
        start = time.perf_counter()
        embedded = self._embed(query, adapt)
        timings = {"embed": _ms(start)}
        searched = time.perf_counter()
        base, reranked = self._search(self.base, embedded.base, k, query.rerank, notes)
        adapted = None
        if adapt:
            adapted, also = self._search(self.adapted, embedded.adapted, k, query.rerank, notes)
            reranked = reranked or also
        timings["search"] = _ms(searched)
        vectors = {"base": embedded.base} | ({"adapted": embedded.adapted} if adapt else {})
        response = SearchResponse(base, adapted, embedded.parts, embedded.explanations, embedded.offsets,
                                  vectors, reranked=reranked, notes=notes, timings=timings)
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

    def _search(self, space: Space, vector: np.ndarray, k: int, rerank: bool, notes: list[str]
                ) -> tuple[list[Result], bool]:
        reranker = space.reranker if rerank else None
        if rerank and reranker is None:
            notes.append(f"no re-ranking for {space.name} results: {space.rerank_note}")
        result = space.index.search(vector, k, reranker=reranker, candidates=self.candidates)
        hits = space.index.hits(result)
        return [Result(h.rank, h.score, h.row, h.path, h.relpath, space.classes[h.row]) for h in hits], \
            reranker is not None

    # -- embedding ----------------------------------------------------------------------------------

    def _embed(self, query: Query, adapt: bool) -> _Embedded:
        images, texts = self._parts(query)
        if not images and not any(weight > 0 for _, weight, _ in texts):
            raise QueryError(_empty_message(query))
        base_parts: list[tuple[np.ndarray, float]] = []
        adapted_parts: list[tuple[np.ndarray, float]] = []
        explanations: list[Explanation] = []
        offsets: list[MlpOffset] = []
        if images:
            pixels = torch.stack([self.encoder.preprocess(image) for _, _, image in images])
            pixels = pixels.to(self.encoder.device)
            if adapt:
                explained = self.adapter.explain(pixels)
                base_vectors = explained["base"].float().cpu().numpy()
                adapted_vectors = explained["adapted"].float().cpu().numpy()
                explanations = self._explanations([name for name, _, _ in images], explained["delta_s"])
                offsets = self._offsets(explained["static"])
            else:
                base_vectors = adapted_vectors = embed_pixels(self.encoder, pixels)
            for (_, weight, _), b, a in zip(images, base_vectors, adapted_vectors, strict=True):
                base_parts.append((b, weight))
                adapted_parts.append((a, weight))
        if texts:
            vectors = embed_texts(self.encoder, [text for _, _, text in texts])
            for (_, weight, _), vector in zip(texts, vectors, strict=True):
                base_parts.append((vector, weight))
                adapted_parts.append((vector, weight))
        parts = [name for name, _, _ in images] + [name for name, _, _ in texts]
        return _Embedded(fuse(base_parts), fuse(adapted_parts) if adapt else None, parts, explanations, offsets)

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

    def _explanations(self, sources: list[str], deltas: dict[int, torch.Tensor]) -> list[Explanation]:
        out = []
        for position, source in enumerate(sources):
            layers = []
            for block, delta in sorted(deltas.items()):
                values = delta[position].float().cpu().numpy()
                norm = float(np.linalg.norm(values))
                reference = self._qkv_norms.get(block, float("nan"))
                layers.append(LayerShift(block, norm, norm / reference, _top_shifts(values)))
            out.append(Explanation(source, tuple(layers)))
        return out

    def _offsets(self, static: dict[str, torch.Tensor]) -> list[MlpOffset]:
        out = []
        for name, shift in static.items():
            block, layer = name.split(".", 1)
            norm = float(shift.float().norm())
            out.append(MlpOffset(int(block.removeprefix("block")), layer, norm,
                                 norm / self._mlp_norms.get(name, float("nan"))))
        return out


# ---------------------------------------------------------------------------------------------- helpers

def _in_background(fn: Callable[..., Any], *args: Any) -> Future:
    """`fn(*args)` in a daemon thread: a slow view never holds up the app, nor its exit."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001 - handed to whoever asks for the result
            future.set_exception(error)

    threading.Thread(target=run, name=f"hystar-{fn.__name__}", daemon=True).start()
    return future


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _empty_message(query: Query) -> str:
    if query.negative.strip() and query.negative_weight > 0:
        return "a negative text alone is not a query: add a sketch, an image or a text to search for"
    if query.sketch is not None:
        return "the canvas is blank and there is nothing else to search for: draw, upload an image or type a text"
    return "empty query: draw on the canvas, upload an image or type a text"


def _singular_value_norms(adapter: HystarEncoder | None) -> tuple[dict[int, float], dict[str, float]]:
    """‖S‖ of each adapted QKV projection and of each MLP projection: the scale ΔS is shown against."""
    module = getattr(adapter, "adapter", None)
    qkv = {int(i): float(f.s.norm()) for i, f in getattr(module, "qkv", {}).items()}
    mlp = {}
    for layer in ("fc", "proj"):
        for block, shift in enumerate(getattr(module, layer, None) or []):
            mlp[f"block{block}.c_{layer}"] = float(shift.factors.s.norm())
    return qkv, mlp


def _space(name: str, index: GalleryIndex, fingerprint: str, reranker_dir: Path) -> Space:
    try:
        reranker, note = load_default_reranker(fingerprint, reranker_dir), ""
    except NoRerankerError:
        reranker, note = None, "no QuARI re-ranker is trained for this encoder yet (`hystar train-quari`)"
    except (ValueError, OSError) as error:
        reranker, note = None, f"the QuARI re-ranker could not be loaded ({error})"
    return Space(name, index, gallery_classes(index), reranker, note)


def default_adapter() -> Path | None:
    """The trained hystar-mini adapter, when it has been trained."""
    return DEFAULT_ADAPTER if DEFAULT_ADAPTER.is_file() else None


__all__ = ["AdapterMismatchError", "DEFAULT_ADAPTER", "ImageError", "MAX_K", "Query", "QueryError", "Result",
           "SearchResponse", "SearchService", "ServiceConfig", "Space", "default_adapter", "fuse",
           "gallery_classes"]
