"""Evaluation (never imported by serving code).

- `metrics`:   Recall@K, mAP, relevance, zero-shot accuracy.
- `retrieval`: full-gallery retrieval per query style, the DSR protocol, zero-shot classification, tables.
- `online`:    a query stream through an online session vs the static encoder (`hystar eval --online`).
"""
