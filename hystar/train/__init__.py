"""Training (never imported by serving code).

- `mini`:       hystar-mini on photos (`hystar train-mini`).
- `adapters`:   Hystar adapters and baselines on (styled query, photo) pairs (`hystar train`).
- `losses`:     StyleNCE, InfoNCE, triplet.
- `quari_data`, `quari`: the QuARI re-ranker's training data and training (`hystar train-quari`).
- `schedule`:   the one warmup-cosine learning-rate schedule.
"""
