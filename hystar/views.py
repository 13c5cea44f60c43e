"""What the app shows besides results: the ΔS bar chart of a query and the UMAP map of its style shift.

- `delta_figure`: per adapted attention layer, the query's dynamic ΔS (‖ΔS‖ relative to ‖S‖, the largest
  shifts on hover) and, beside it, the static MLP offsets of every block; built from `HystarEncoder.explain`
  as summarised by `hystar.service`.
- `UmapMap`: a UMAP of a sample of gallery embeddings, fitted once per gallery and cached beside its index
  (`<index folder>.umap.pkl`); queries are placed with `transform`. `umap_figure` draws the sample coloured by
  class and the query's base embedding joined to its adapted embedding by an arrow.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .guesses import display_name
from .io import atomic_write_bytes

# numba's default OpenMP threading layer resets the process's OpenMP thread count after a UMAP fit: torch, sharing
# that runtime, then runs every query with all cores' threads and slows down tenfold on a busy machine. The
# workqueue layer leaves OpenMP alone (it must be chosen before numba is imported; see also `_torch_threads_kept`).
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Set2
DELTA_TITLES = ("this query: attention, adapted per image", "fixed: MLP offsets, every query")
DELTA_AXIS = "change of the layer's singular values, ‖ΔS‖ / ‖S‖ in %"
DELTA_HELP = ("How much Hystar changes the encoder for this query. Each bar: how far one layer's singular values S "
              "move (‖ΔS‖), as a share of their size (‖S‖). Left, the attention layers, adapted to each query image "
              "(block 0 is left as it is); right, the MLP layers' fixed offsets (c_fc: into the MLP, c_proj: out of "
              "it), the same for every query. One scale for both. A bigger bar is neither better nor worse: it says "
              "how far Hystar takes this image from the base encoder; drawings and paintings, far from photos, "
              "usually move it most.")
TEXT_ONLY_DELTA = ("a text query is not adapted: the text tower is left as it is;\n"
                   "ΔS shows for sketches and images")
DYNAMIC_NAMES = {"sketch": "this sketch", "image": "this image"}
STATIC_NAMES = {"c_fc": "fixed · MLP c_fc", "c_proj": "fixed · MLP c_proj"}
UMAP_TITLE = "the query among the gallery's photos (UMAP)"
UMAP_HELP = ("Each dot is a gallery photo (a sample of up to 2,000), coloured by class, placed so that photos the "
             "encoder finds alike lie close together (a UMAP of their embeddings). ○ **base**: where the base "
             "encoder puts your query. ★ **Hystar**: where it lands once adapted to the query's style; the arrow "
             "between them is that *style shift*. It helps when it points into the photos of what you meant.")
UMAP_BASE = "query · base encoder (no adaptation)"
UMAP_ADAPTED = "query · Hystar-adapted (arrow: its style shift)"
LEGEND_CLASSES = 12           # more classes than this: no legend, the classes near the query named on the map
NAMED_CLASSES = 8             # how many
SAME_PLACE = 0.02             # base and adapted closer than this share of the map's size: "no visible shift"
FIGURE_HEIGHT = 400
UMAP_CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------- ΔS chart

@dataclass(frozen=True)
class LayerShift:
    """The dynamic ΔS of one adapted attention layer for one query image."""
    block: int
    norm: float                                   # ‖ΔS‖
    relative: float                               # ‖ΔS‖ / ‖S‖ of the layer's QKV projection (nan: unknown)
    top: tuple[tuple[int, float], ...] = ()       # the largest shifts: (singular value index, ΔS)


@dataclass(frozen=True)
class MlpOffset:
    """The static, gated singular-value offset of one MLP projection (the same for every query)."""
    block: int
    layer: str                                    # "c_fc" or "c_proj"
    norm: float
    relative: float


@dataclass(frozen=True)
class Explanation:
    source: str                                   # which query image: "sketch" or "image"
    layers: tuple[LayerShift, ...]


def _percent(value: float, norm: float) -> float:
    return 100.0 * value if np.isfinite(value) else norm


def _top_text(layer: LayerShift) -> str:
    shifts = "<br>".join(f"  σ{index}: {value:+.4f}" for index, value in layer.top)
    return f"‖ΔS‖ = {layer.norm:.4f}<br>largest shifts:<br>{shifts}"


def delta_figure(explanations: Sequence[Explanation], offsets: Sequence[MlpOffset], note: str = "") -> go.Figure:
    """Dynamic ΔS per adapted attention layer (one bar per query image) beside the static MLP offsets, on the same
    blocks and the same scale; without query images, only a note (the offsets alone would say nothing new)."""
    if not explanations:
        return _message(note or TEXT_ONLY_DELTA)
    blocks = sorted({layer.block for e in explanations for layer in e.layers} | {o.block for o in offsets})
    categories = [f"block {b}" for b in range(min(blocks), max(blocks) + 1)] if blocks else []
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.18, shared_yaxes=True,
                        subplot_titles=DELTA_TITLES)
    fig.update_annotations(font_size=12)  # the two subplot titles: short, each over its own panel
    for number, explanation in enumerate(explanations):
        layers = explanation.layers
        fig.add_trace(go.Bar(
            x=[f"block {layer.block}" for layer in layers],
            y=[_percent(layer.relative, layer.norm) for layer in layers],
            name=DYNAMIC_NAMES.get(explanation.source, explanation.source), marker_color=PALETTE[number],
            hovertext=[_top_text(layer) for layer in layers], hoverinfo="text+name", legendgroup="dynamic",
        ), row=1, col=1)
    for number, layer in enumerate(("c_fc", "c_proj")):
        rows = [offset for offset in offsets if offset.layer == layer]
        fig.add_trace(go.Bar(
            x=[f"block {offset.block}" for offset in rows], y=[_percent(o.relative, o.norm) for o in rows],
            name=STATIC_NAMES[layer], marker_color=PALETTE[len(explanations) + number + 2],
            hovertext=[f"‖δs‖ = {offset.norm:.4f}" for offset in rows], hoverinfo="text+name+y",
        ), row=1, col=2)
    adapted = {layer.block for e in explanations for layer in e.layers}
    for category in categories:
        if int(category.split()[1]) not in adapted:
            fig.add_annotation(x=category, y=0, xref="x", yref="y", text="not<br>adapted", showarrow=False,
                               yanchor="bottom", font=dict(size=10, color="#777"))
    fig.update_xaxes(categoryorder="array", categoryarray=categories, type="category")
    fig.update_yaxes(title_text=DELTA_AXIS, title_font_size=11, rangemode="tozero", row=1, col=1)
    fig.update_layout(barmode="group", height=FIGURE_HEIGHT, margin=dict(l=55, r=10, t=60, b=40),
                      legend=dict(orientation="h", y=-0.15), template="plotly_white")
    if note:
        _annotate(fig, note)
    return fig


def _annotate(fig: go.Figure, note: str) -> None:
    fig.add_annotation(text=note, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=13, color="#555"), bgcolor="rgba(255,255,255,0.85)")


def _message(note: str) -> go.Figure:
    """A figure that only says why there is nothing to plot."""
    fig = go.Figure()
    fig.update_layout(height=FIGURE_HEIGHT, template="plotly_white", xaxis=dict(visible=False),
                      yaxis=dict(visible=False), margin=dict(l=10, r=10, t=40, b=10))
    _annotate(fig, note)
    return fig


# ---------------------------------------------------------------------------------------------- UMAP

@dataclass(frozen=True)
class UmapConfig:
    sample: int = 2000            # gallery rows the map is fitted on
    neighbors: int = 15
    min_dist: float = 0.1
    epochs: int = 200
    seed: int = 0


@dataclass
class Placement:
    """A query on the map: its base embedding, and its adapted embedding when there is one."""
    base: tuple[float, float]
    adapted: tuple[float, float] | None = None


@dataclass
class UmapMap:
    """A fitted UMAP of a gallery sample: the model (for `place`), the sample's coordinates and classes."""
    model: Any
    coords: np.ndarray                 # (n, 2)
    rows: np.ndarray                   # (n,) index rows of the sample
    classes: list[str]                 # (n,) class of each sample row, "" when unknown
    key: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) embeddings -> (n, 2) coordinates on the fitted map."""
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.model.transform(np.atleast_2d(vectors).astype(np.float32)), np.float64)

    def save(self, path: Path) -> None:
        """A pickle (the fitted UMAP model has no other format), signed with this installation's secret."""
        body = pickle.dumps({"model": self.model, "coords": self.coords, "rows": self.rows,
                             "classes": self.classes, "key": self.key}, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write_bytes(path, UMAP_MAGIC + _signature(body) + body)

    @classmethod
    def load(cls, path: Path, key: dict[str, Any]) -> UmapMap | None:
        """The cached map when it was fitted for `key` (same gallery generation, sample and settings). Only a
        file that `save` wrote on this installation is unpickled: any other (planted, copied from elsewhere,
        damaged) is never unpickled, and the map is fitted again."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        signature, body = raw[len(UMAP_MAGIC):len(UMAP_MAGIC) + 32], raw[len(UMAP_MAGIC) + 32:]
        if not raw.startswith(UMAP_MAGIC) or not hmac.compare_digest(signature, _signature(body)):
            return None
        try:
            data = pickle.loads(body)  # noqa: S301 - signed above: written by `save` on this installation
        except (EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return None
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        return cls(data["model"], data["coords"], data["rows"], data["classes"], key)


UMAP_MAGIC = b"hystar-umap-v1\n"
CACHE_SECRET_ENV = "HYSTAR_CACHE_SECRET"
_secret: bytes | None = None
_secret_lock = threading.Lock()


def cache_secret() -> bytes:
    """32 random bytes kept for this installation, outside every index folder (`$HYSTAR_CACHE_SECRET`, default
    ~/.cache/hystar/cache.secret, owner-only); a per-process secret when that file cannot be written."""
    global _secret
    with _secret_lock:
        if _secret is None:
            path = Path(os.environ.get(CACHE_SECRET_ENV) or Path.home() / ".cache" / "hystar" / "cache.secret")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                    handle.write(secrets.token_bytes(32))
            except FileExistsError:
                pass
            except OSError as error:
                warnings.warn(f"no place for the cache secret ({error}): caches last one process", stacklevel=2)
                _secret = secrets.token_bytes(32)
            if _secret is None:
                stored = path.read_bytes() if path.is_file() else b""
                _secret = stored if len(stored) == 32 else secrets.token_bytes(32)
        return _secret


def _signature(body: bytes) -> bytes:
    return hmac.new(cache_secret(), body, hashlib.sha256).digest()


def umap_cache_path(index_folder: Path) -> Path:
    """Beside the index folder, so that rebuilding or deleting the index never trips over it."""
    index_folder = Path(index_folder)
    return index_folder.with_name(f"{index_folder.name}.umap.pkl")


def umap_key(generation: str, count: int, config: UmapConfig) -> dict[str, Any]:
    import umap

    return {"version": UMAP_CACHE_VERSION, "generation": generation, "count": count, "sample": config.sample,
            "neighbors": config.neighbors, "min_dist": config.min_dist, "epochs": config.epochs,
            "seed": config.seed, "umap": umap.__version__}


def fit_umap(vectors: np.ndarray, classes: Sequence[str], config: UmapConfig, key: dict[str, Any]) -> UmapMap:
    """Fit on a seeded sample of `vectors` (float16 memmap welcome), cosine metric, then compile `transform`."""
    import umap

    rows = np.arange(len(vectors))
    if len(rows) > config.sample:
        rows = np.sort(np.random.default_rng(config.seed).choice(len(rows), config.sample, replace=False))
    sample = np.asarray(vectors[rows], np.float32)
    neighbors = max(2, min(config.neighbors, len(rows) - 1))
    with warnings.catch_warnings(), _torch_threads_kept():
        warnings.simplefilter("ignore")
        model = umap.UMAP(n_neighbors=neighbors, min_dist=config.min_dist, metric="cosine",
                          n_epochs=config.epochs, random_state=config.seed, n_jobs=1, low_memory=True,
                          init="spectral" if len(rows) > neighbors + 2 else "random")
        coords = model.fit_transform(sample)
    fitted = UmapMap(model, np.asarray(coords, np.float64), rows, [classes[r] for r in rows], key)
    _compile(fitted, sample)
    return fitted


def _compile(projection: UmapMap, sample: np.ndarray) -> None:
    """numba compiles `transform` for one and for several rows on first use: now, not on the first query."""
    projection.place(sample[:1])
    projection.place(sample[:2])


@contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """Restore torch's thread count should numba (imported before our choice of layer) have changed it."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def load_or_fit_umap(vectors: np.ndarray, classes: Sequence[str], cache: Path, key: dict[str, Any],
                     config: UmapConfig) -> UmapMap:
    cached = UmapMap.load(cache, key)
    if cached is not None:
        return compile_map(cached, vectors)
    return fit_and_cache_umap(vectors, classes, cache, key, config)


def compile_map(cached: UmapMap, vectors: np.ndarray) -> UmapMap:
    """A map loaded from its cache, ready to place queries (numba compiles `transform` now)."""
    _compile(cached, np.asarray(vectors[cached.rows[:2]], np.float32))
    return cached


def fit_and_cache_umap(vectors: np.ndarray, classes: Sequence[str], cache: Path, key: dict[str, Any],
                       config: UmapConfig) -> UmapMap:
    fitted = fit_umap(vectors, classes, config, key)
    try:
        fitted.save(cache)
    except OSError as error:
        warnings.warn(f"could not cache the UMAP at {cache}: {error}", stacklevel=2)
    return fitted


def _class_colours(classes: Sequence[str]) -> dict[str, str]:
    names = sorted(set(classes) - {""})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    colours[""] = "#b0b0b0"
    return colours


def _bounds(coords: np.ndarray, extra: Sequence[tuple[float, float]] = ()) -> tuple[list[float], list[float]]:
    """x and y ranges of the sample (and of `extra` points), 6 % padded: the map fills its panel."""
    points = np.vstack([coords] + [np.asarray(extra, np.float64).reshape(-1, 2)] if len(extra) else [coords])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = np.maximum((high - low) * 0.06, 1e-3)
    return [float(low[0] - pad[0]), float(high[0] + pad[0])], [float(low[1] - pad[1]), float(high[1] + pad[1])]


def _named_classes(projection: UmapMap, near: tuple[float, float] | None, count: int,
                   keep_clear: Sequence[tuple[float, float]] = ()) -> list[tuple[str, float, float]]:
    """(class, x, y) at the middle of each class's dots: the `count` classes nearest `near`, else the largest; none
    where its name would sit on another's or on the query's markers (`keep_clear`)."""
    classes = np.asarray(projection.classes)
    middles = []
    for name in sorted(set(projection.classes) - {""}):
        points = projection.coords[classes == name]
        x, y = np.median(points, axis=0)
        middles.append((name, float(x), float(y), len(points)))
    if near is not None:
        middles.sort(key=lambda m: (m[1] - near[0]) ** 2 + (m[2] - near[1]) ** 2)
    else:
        middles.sort(key=lambda m: -m[3])
    width, height = np.ptp(projection.coords, axis=0) + 1e-9
    taken = [(x, y, 0.07 if i < 2 else 0.25) for i, (x, y) in enumerate(keep_clear)]  # (x, y, half-width share)
    named = []
    for name, x, y, _ in middles:
        half = 0.008 * len(display_name(name)) + 0.02
        if any(abs(x - tx) / width < half + other and abs(y - ty) / height < 0.05 for tx, ty, other in taken):
            continue
        named.append((name, x, y))
        taken.append((x, y, half))
        if len(named) == count:
            break
    return named


def umap_figure(projection: UmapMap | None, placement: Placement | None = None, note: str = "") -> go.Figure:
    """The gallery sample coloured by class (a legend up to `LEGEND_CLASSES` classes, else the classes near the
    query named on the map); the query's base embedding, an arrow, its adapted embedding, each labelled beside it."""
    if projection is None:
        return _message(note or "no UMAP view")
    fig = go.Figure()
    colours = _class_colours(projection.classes)
    classes = np.asarray([display_name(c) or "(no class)" for c in projection.classes])
    with_legend = len(colours) - 1 <= LEGEND_CLASSES
    groups = sorted(set(projection.classes)) if with_legend else [None]
    for name in groups:
        mask = np.asarray(projection.classes) == name if name is not None else np.ones(len(classes), bool)
        fig.add_trace(go.Scatter(
            x=projection.coords[mask, 0], y=projection.coords[mask, 1], mode="markers",
            name=display_name(name) or "(no class)" if name is not None else "gallery", showlegend=with_legend,
            hovertext=classes[mask], hoverinfo="text",
            marker=dict(size=5, opacity=0.55,
                        color=[colours.get(c, colours[""]) for c in np.asarray(projection.classes)[mask]]),
        ))
    points = [] if placement is None else [placement.base] + ([placement.adapted] if placement.adapted else [])
    x_range, y_range = _bounds(projection.coords, points)
    if not with_legend:
        near = None if placement is None else (placement.adapted or placement.base)
        clear = list(points)
        if placement is not None and placement.adapted is not None and not _apart(placement, x_range, y_range):
            left = _label_side(placement.adapted[0], False, x_range)  # the two-line label beside the markers
            shift = (-0.25 if left else 0.25) * (x_range[1] - x_range[0])
            clear += [(placement.adapted[0] + shift, placement.adapted[1] + 0.04 * (y_range[1] - y_range[0]))] * 2
        for name, x, y in _named_classes(projection, near, NAMED_CLASSES, clear):
            fig.add_annotation(x=x, y=y, text=display_name(name), showarrow=False, font=dict(size=10, color="#333"),
                               bgcolor="rgba(255,255,255,0.7)")
    if placement is not None:
        _add_query(fig, placement, x_range, y_range)
    count = len(set(projection.classes) - {""})
    subtitle = "" if with_legend else f"<br><sup>{count} classes by colour: hover a dot for its class</sup>"
    fig.update_layout(height=FIGURE_HEIGHT, margin=dict(l=10, r=10, t=50 if subtitle else 40, b=10),
                      template="plotly_white", showlegend=with_legend,
                      title=dict(text=UMAP_TITLE + subtitle, x=0.02, font=dict(size=14)),
                      xaxis=dict(visible=False, range=x_range), yaxis=dict(visible=False, range=y_range),
                      legend=dict(itemsizing="constant", font=dict(size=10)))
    if note:
        _annotate(fig, note)
    return fig


def _apart(placement: Placement, x_range: Sequence[float], y_range: Sequence[float]) -> bool:
    """Whether base and adapted are far enough apart on the map for an arrow to show."""
    size = max(x_range[1] - x_range[0], y_range[1] - y_range[0])
    (bx, by), (ax, ay) = placement.base, placement.adapted
    return float(np.hypot(ax - bx, ay - by)) > SAME_PLACE * size


def _label_side(x: float, prefer_left: bool, x_range: Sequence[float]) -> bool:
    """Whether a label goes left of its marker: as preferred, unless that side's edge is too near to hold it."""
    share = (x - x_range[0]) / (x_range[1] - x_range[0])
    if prefer_left and share < 0.3:
        return False
    if not prefer_left and share > 0.7:
        return True
    return prefer_left


def _add_query(fig: go.Figure, placement: Placement, x_range: Sequence[float], y_range: Sequence[float]) -> None:
    """Both query markers (in no legend: each is named beside it, inside the panel), and the arrow when they are
    apart; when they are not, one label says so."""
    bx, by = placement.base
    label = dict(showarrow=False, font=dict(size=12, color="#222"), bgcolor="rgba(255,255,255,0.85)")

    def name(x: float, y: float, text: str, left: bool, up: bool) -> None:
        fig.add_annotation(x=x, y=y, text=text, xanchor="right" if left else "left", xshift=-12 if left else 12,
                           yshift=12 if up else -12, **label)

    fig.add_trace(go.Scatter(x=[bx], y=[by], mode="markers", name=UMAP_BASE, showlegend=False, hoverinfo="name",
                             marker=dict(size=15, symbol="circle-open", color="#222", line=dict(width=3))))
    if placement.adapted is None:
        name(bx, by, "your query", _label_side(bx, False, x_range), False)
        return
    ax, ay = placement.adapted
    fig.add_trace(go.Scatter(x=[ax], y=[ay], mode="markers", name=UMAP_ADAPTED, showlegend=False, hoverinfo="name",
                             marker=dict(size=17, symbol="star", color="#d62728", line=dict(width=1, color="#222"))))
    if not _apart(placement, x_range, y_range):
        name(ax, ay, "base and Hystar: about the same place<br>(no visible shift)", _label_side(ax, False, x_range),
             True)
        return
    left = bx <= ax  # each label on the far side of its marker from the other, unless an edge is in the way
    name(bx, by, "base", _label_side(bx, left, x_range), by > ay)
    name(ax, ay, "Hystar", _label_side(ax, not left, x_range), ay >= by)
    fig.add_annotation(x=ax, y=ay, ax=bx, ay=by, xref="x", yref="y", axref="x", ayref="y", text="",
                       showarrow=True, arrowhead=3, arrowsize=1.6, arrowwidth=2.5, arrowcolor="#d62728",
                       standoff=9, startstandoff=8)
