"""QuARI re-ranking: a query-specific low-rank linear map of the embedding space (Xing et al., 2025).

- `model`:    `QuARIConfig`, the `QuARI` hypernetwork, the low-rank `transform` and scores.
- `reranker`: `Reranker` (numpy in/out, CPU), save/load with the encoder fingerprint, `load_default_reranker`.
- `train`:    `train_quari` on cached embeddings, semi-positive mining.
"""

from .model import QuARI, QuARIConfig, effective_query, explicit_matrix, transform
from .reranker import (
    ASSET_DIR,
    Adaptation,
    NoRerankerError,
    QuARIMismatchError,
    Reranker,
    default_path,
    load_default_reranker,
    load_reranker,
    save_reranker,
)
from .train import TrainConfig, TrainResult, mine_semi_positives, train_quari

__all__ = [
    "ASSET_DIR", "Adaptation", "NoRerankerError", "QuARI", "QuARIConfig", "QuARIMismatchError",
    "Reranker", "TrainConfig", "TrainResult", "default_path", "effective_query", "explicit_matrix",
    "load_default_reranker", "load_reranker", "mine_semi_positives", "save_reranker", "train_quari",
    "transform",
]
