"""A trained QuARI on the CPU, numpy in and out; saving, loading, and the default re-ranker of an encoder.

Scores are s(d) = <q', d T>: the gallery row d is transformed by T; q' is QuARI's own adapted query and
is not transformed again (as in the paper). With similarity "dot" this is <w, d> for the effective query
w = q' Tᵀ, so a full re-rank of a float16 gallery is one streamed GEMV per query: the work of a flat
search. "cosine" (the paper's choice) also divides by ‖d T‖, which needs d U and d V for every row: 2r more
products per row, fine for a top-k, slow for a whole gallery.

Note that with "dot", T acts only through w: QuARI is then a learned, query-dependent rewrite of the query
(w = q' + α (q' V) Uᵀ), and a full re-rank could as well be an ordinary (even approximate) search with w.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..io import load_tensors, read_metadata, save_with_metadata
from ..paths import RERANKER_DIR
from ..ranking import top_k
from .model import QuARI, QuARIConfig, effective_query, transformed_norms

METADATA_KEY = "hystar-quari"
RERANK_DEPTH = 100            # candidates re-ranked per query: the app, `hystar search` and `hystar eval` default
BLOCK_ROWS = 16384            # 16k float32 rows of 384 to 512: a block that stays in cache
ROW_NORM_BOUND = 1.01         # gallery rows are L2-normalised; float16 storage moves them by < 1e-3


class QuARIMismatchError(ValueError):
    """A re-ranker trained for another encoder."""


class NoRerankerError(FileNotFoundError):
    """No re-ranker trained for this encoder."""


@dataclass
class Adaptation:
    """QuARI's output for a batch of queries, as float32 numpy arrays."""
    q_prime: np.ndarray           # (b, d) L2-normalised
    U: np.ndarray                 # (b, d, r)
    V: np.ndarray                 # (b, d, r)
    alpha: float
    query: np.ndarray | None = None   # (b, d) the queries as given, for blending
    blend: float = 1.0                # weight of QuARI's score; 1 - blend goes to the plain <q, d>

    @property
    def transformed_queries(self) -> np.ndarray:
        """Effective queries w = q' Tᵀ (b, d): <w, d> = <q', d T>."""
        return effective_query(self.q_prime[:, None], self.U, self.V, self.alpha)[:, 0]

    @property
    def queries(self) -> np.ndarray:
        """Effective queries of the blended "dot" score: blend·<q', d T> + (1 - blend)·<q, d> = <w_blend, d>."""
        if self.blend == 1.0:
            return self.transformed_queries
        return self.blend * self.transformed_queries + (1 - self.blend) * self.query


@dataclass
class RerankerFile:
    config: QuARIConfig
    encoder_fingerprint: str
    encoder_spec: str = "?"
    training: dict = field(default_factory=dict)
    blend: float = 1.0


class Reranker:
    """`rerank` a query's candidates, or `score_gallery` / `search` a whole (memmapped) gallery."""

    def __init__(self, model: QuARI, encoder_fingerprint: str, encoder_spec: str = "?",
                 alpha: float | None = None, blend: float = 1.0):
        if not 0.0 <= blend <= 1.0:
            raise ValueError(f"blend must lie in [0, 1], got {blend}")
        self.model = model.cpu().eval()
        self.cfg = model.cfg
        self.encoder_fingerprint = encoder_fingerprint
        self.encoder_spec = encoder_spec
        self.alpha = self.cfg.alpha if alpha is None else alpha  # another α: an ablation, no retraining
        self.blend = blend  # 1: QuARI's score alone (the paper); below 1, part of the first-stage cosine is kept

    def with_blend(self, blend: float) -> Reranker:
        """The same trained QuARI scoring with another blend (an ablation; no retraining)."""
        return Reranker(self.model, self.encoder_fingerprint, self.encoder_spec, self.alpha, blend)

    @torch.inference_mode()
    def adapt(self, query_vecs: np.ndarray) -> Adaptation:
        """Run the hypernetwork on (b, d) or (d,) queries."""
        q = torch.from_numpy(np.ascontiguousarray(np.atleast_2d(query_vecs), dtype=np.float32))
        if q.shape[1] != self.cfg.dim:
            raise ValueError(f"query has dimension {q.shape[1]}, this re-ranker expects {self.cfg.dim}")
        U, V, q_prime = self.model(q)
        return Adaptation(q_prime.numpy(), U.numpy(), V.numpy(), self.alpha, q.numpy(), self.blend)

    def rerank(self, query_vec: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(d,), (n, d) → (n,) float32 scores, higher is better."""
        return self.rerank_batch(query_vec[None], np.asarray(candidates)[None])[0]

    def rerank_batch(self, query_vecs: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(b, d), (b, n, d) → (b, n): every query against its own candidates."""
        return self.score(self.adapt(query_vecs), candidates)

    def score(self, adapted: Adaptation, candidates: np.ndarray) -> np.ndarray:
        """Adapted queries against their own candidates (b, n, d) → (b, n)."""
        rows = np.asarray(candidates, dtype=np.float32)
        if self.cfg.similarity == "dot":
            return np.matmul(rows, adapted.queries[:, :, None])[..., 0]
        scores = np.matmul(rows, adapted.transformed_queries[:, :, None])[..., 0]
        scores /= transformed_norms(rows, adapted.U, adapted.V, adapted.alpha)
        if adapted.blend != 1.0:
            scores = adapted.blend * scores + (1 - adapted.blend) * np.matmul(rows, adapted.query[:, :, None])[..., 0]
        return scores

    def score_gallery(self, query_vecs: np.ndarray, gallery: np.ndarray, block_rows: int = BLOCK_ROWS
                      ) -> np.ndarray:
        """Queries (b, d) against every row of a float16/float32 gallery (N, d), memmap welcome → (b, N).

        A single query (d,) gives (N,). The gallery is read block by block, never loaded or transformed whole.
        """
        adapted = self.adapt(query_vecs)
        scores = np.empty((len(adapted.q_prime), len(gallery)), dtype=np.float32)
        for start in range(0, len(gallery), block_rows):
            block = _tensor(gallery[start:start + block_rows]).float()
            scores[:, start:start + len(block)] = _block_scores(adapted, block, self.cfg.similarity)
        return scores[0] if np.ndim(query_vecs) == 1 else scores

    def search(self, query_vec: np.ndarray, gallery: np.ndarray, k: int = 100
               ) -> tuple[np.ndarray, np.ndarray]:
        """Full re-rank of a gallery for one query: (indices, scores) of its best k, best first.

        On a float16 gallery with "dot" scores a first pass scores every row in float16 arithmetic (float32
        accumulation; about half the time of a float32 flat search), then every row that float16 rounding
        could have kept out of the top k is re-scored in float32: the same top k as `score_gallery`.
        """
        if gallery.dtype != np.float16 or self.cfg.similarity != "dot":
            return top_k(self.score_gallery(query_vec, gallery), k)
        w = self.adapt(query_vec).queries[0]
        coarse = _half_scores(w, gallery)
        k = min(k, len(coarse))
        # w rounded to float16, then the score rounded to float16: |coarse - exact| ≤ 2^-10 ‖w‖ ‖d‖
        slack = 2 * 2.0 ** -10 * float(np.linalg.norm(w)) * ROW_NORM_BOUND
        contenders = np.flatnonzero(coarse >= np.partition(coarse, len(coarse) - k)[len(coarse) - k] - slack)
        exact = np.asarray(gallery[contenders], dtype=np.float32) @ w
        if np.abs(exact - coarse[contenders]).max() > slack / 2:    # a CPU whose float16 kernel is coarser
            return top_k(self.score_gallery(query_vec, gallery), k)
        top, scores = top_k(exact, k)
        return contenders[top], scores


def _tensor(block: np.ndarray) -> torch.Tensor:
    """A tensor view of a (maybe read-only, memmapped) block; nothing here writes to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(block))


@torch.inference_mode()
def _block_scores(adapted: Adaptation, block: torch.Tensor, kind: str) -> np.ndarray:
    if kind == "dot":
        return (torch.from_numpy(adapted.queries) @ block.T).numpy()
    scores = torch.from_numpy(adapted.transformed_queries) @ block.T
    scores /= transformed_norms(block, torch.from_numpy(adapted.U), torch.from_numpy(adapted.V), adapted.alpha)
    if adapted.blend != 1.0:
        scores = adapted.blend * scores + (1 - adapted.blend) * (torch.from_numpy(adapted.query) @ block.T)
    return scores.numpy()


@torch.inference_mode()
def _half_scores(w: np.ndarray, gallery: np.ndarray, block_rows: int = BLOCK_ROWS) -> np.ndarray:
    query = torch.from_numpy(w).half()
    out = torch.empty(len(gallery), dtype=torch.float32)
    for start in range(0, len(gallery), block_rows):
        block = _tensor(gallery[start:start + block_rows])
        out[start:start + len(block)] = block @ query
    return out.numpy()


def save_reranker(model: QuARI, path: Path | str, encoder_fingerprint: str, encoder_spec: str = "?",
                  training: dict | None = None, blend: float = 1.0) -> Path:
    """Weights as safetensors, the config and encoder fingerprint in its metadata and in a .json beside it."""
    meta = {"config": asdict(model.cfg), "encoder_fingerprint": encoder_fingerprint,
            "encoder_spec": encoder_spec, "training": training or {}, "blend": blend}
    return save_with_metadata(model.state_dict(), path, METADATA_KEY, meta)


def read_reranker_meta(path: Path | str) -> RerankerFile:
    meta = read_metadata(path, METADATA_KEY, "re-ranker")
    if meta is None:
        raise ValueError(f"{path} is not a QuARI re-ranker (no '{METADATA_KEY}' metadata)")
    return RerankerFile(QuARIConfig(**meta["config"]), meta["encoder_fingerprint"],
                        meta.get("encoder_spec", "?"), meta.get("training", {}), float(meta.get("blend", 1.0)))


def load_reranker(path: Path | str, encoder_fingerprint: str | None = None) -> Reranker:
    """Load a re-ranker; given `encoder_fingerprint`, refuse one trained for another encoder."""
    meta = read_reranker_meta(path)
    if encoder_fingerprint is not None and meta.encoder_fingerprint != encoder_fingerprint:
        raise QuARIMismatchError(
            f"re-ranker {Path(path).name} was trained for {meta.encoder_spec} (fingerprint "
            f"{meta.encoder_fingerprint}) and means nothing for embeddings of encoder fingerprint "
            f"{encoder_fingerprint}; train one for it with `hystar train-quari`")
    model = QuARI(meta.config)
    model.load_state_dict(load_tensors(path))
    return Reranker(model, meta.encoder_fingerprint, meta.encoder_spec, blend=meta.blend)


def default_path(encoder_name: str, encoder_fingerprint: str, folder: Path | str = RERANKER_DIR) -> Path:
    """Where `hystar train-quari` saves, so that `load_default_reranker` finds it."""
    return Path(folder) / f"{encoder_name.replace('/', '_')}-{encoder_fingerprint}.safetensors"


def load_default_reranker(encoder_fingerprint: str, folder: Path | str = RERANKER_DIR) -> Reranker:
    """The re-ranker in `folder` trained for this encoder; each file version is loaded once."""
    folder = Path(folder)
    trained_for = []
    for path in sorted(folder.glob("*.safetensors")):
        try:
            meta = read_reranker_meta(path)
        except ValueError:
            continue
        if meta.encoder_fingerprint == encoder_fingerprint:
            return _load_cached(path, path.stat().st_mtime_ns)
        trained_for.append(f"{path.name} for {meta.encoder_spec} ({meta.encoder_fingerprint})")
    raise NoRerankerError(
        f"no QuARI re-ranker is trained for encoder fingerprint {encoder_fingerprint} "
        f"({folder} holds {', '.join(trained_for) or 'none'}); train one with `hystar train-quari`, "
        f"or search without re-ranking")


@lru_cache(maxsize=4)
def _load_cached(path: Path, mtime_ns: int) -> Reranker:
    return load_reranker(path)
