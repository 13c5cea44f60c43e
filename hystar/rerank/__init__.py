"""QuARI re-ranking: a query-specific low-rank linear map of the embedding space (Xing et al., 2025).

- `model`:    `QuARIConfig`, the `QuARI` hypernetwork, the low-rank `transform` and scores.
- `reranker`: `Reranker` (numpy in/out, CPU), save/load with the encoder fingerprint, `load_default_reranker`.
Training (`train_quari` on cached embeddings, semi-positive mining) is `hystar.train.quari`.
"""

from .model import QuARI, QuARIConfig, effective_query, explicit_matrix, transform
from .reranker import (
    RERANK_DEPTH,
    Adaptation,
    NoRerankerError,
    QuARIMismatchError,
    Reranker,
    default_path,
    load_default_reranker,
    load_reranker,
    save_reranker,
)

__all__ = [
    "Adaptation", "NoRerankerError", "QuARI", "QuARIConfig", "QuARIMismatchError", "RERANK_DEPTH", "Reranker",
    "default_path",
    "effective_query", "explicit_matrix", "load_default_reranker", "load_reranker", "save_reranker", "transform",
]
