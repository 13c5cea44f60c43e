"""What the image part of a query reads as: the text tower's zero-shot guesses over a vocabulary, shown as guesses.

The vocabulary is the gallery's class names when it has some, else the names shipped in `hystar/vocab/` (Quick,
Draw!'s 345 categories, CC BY 4.0 Google, and common photo subjects). Each name is embedded once per encoder, the
mean of its prompts ("a drawing of a {}", "a photo of a {}"), normalised. A guess is then one matrix product with
the query's image embedding, already computed for the search, and a softmax over cosine / temperature: nothing is
encoded again per query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
SHIPPED_FILES = ("quickdraw.txt", "photo.txt")
GALLERY = "the gallery's class names"
SHIPPED = "a general vocabulary (Quick, Draw!'s 345 categories and common photo subjects)"


@dataclass(frozen=True)
class GuessConfig:
    top: int = 3
    temperature: float = 0.05          # the lowest NLL of the true class on Sketchy's val sketches (CLIP's 0.01 made
                                       # the first guess 92 % sure where it is right 54 % of the time; 0.05: see
                                       # `hystar eval --guesses --split val`)
    prompts: tuple[str, ...] = ("a drawing of a {}", "a photo of a {}")
    min_gallery_classes: int = 2       # fewer class names: the shipped vocabulary instead


@dataclass(frozen=True)
class Guess:
    name: str
    probability: float                 # softmax over the whole vocabulary, 0..1


@dataclass(frozen=True)
class Vocabulary:
    names: tuple[str, ...]             # as shown and as added to the text: "alarm clock", not "alarm_clock"
    source: str                        # `GALLERY` or `SHIPPED`


def display_name(label: str) -> str:
    """A class label as a person reads it (and types it): underscores as spaces."""
    return " ".join(label.replace("_", " ").split())


def shipped_vocabulary() -> Vocabulary:
    names: dict[str, None] = {}
    for file in SHIPPED_FILES:
        for line in (VOCAB_DIR / file).read_text().splitlines():
            if line.strip():
                names.setdefault(display_name(line), None)
    return Vocabulary(tuple(names), SHIPPED)


def vocabulary_for(classes: Sequence[str], config: GuessConfig = GuessConfig()) -> Vocabulary:
    """The gallery's class names (each once, sorted) when it has at least `min_gallery_classes`, else the shipped
    vocabulary."""
    names = sorted({display_name(c) for c in classes if c and c.strip()})
    if len(names) >= config.min_gallery_classes:
        return Vocabulary(tuple(names), GALLERY)
    return shipped_vocabulary()


TextEmbedder = Callable[[list[str]], np.ndarray]   # texts -> (n, d) normalised float32


class Guesser:
    """Zero-shot guesses over one vocabulary, from its cached name embeddings."""

    def __init__(self, vocabulary: Vocabulary, embeddings: np.ndarray, config: GuessConfig = GuessConfig()):
        if len(embeddings) != len(vocabulary.names):
            raise ValueError(f"{len(embeddings)} embeddings for {len(vocabulary.names)} names")
        self.vocabulary, self.embeddings, self.config = vocabulary, np.asarray(embeddings, np.float32), config

    @classmethod
    def build(cls, vocabulary: Vocabulary, embed_texts: TextEmbedder, config: GuessConfig = GuessConfig()) -> Guesser:
        names = list(vocabulary.names)
        prompts = [prompt.format(name) for prompt in config.prompts for name in names]
        vectors = np.asarray(embed_texts(prompts), np.float32).reshape(len(config.prompts), len(names), -1).mean(0)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return cls(vocabulary, vectors, config)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) image embeddings -> (n, names) probabilities."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        logits = vectors @ self.embeddings.T / self.config.temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def guess(self, vector: np.ndarray) -> list[Guess]:
        """The `top` most likely names for one image embedding, most likely first."""
        probabilities = self.probabilities(vector)[0]
        top = min(self.config.top, len(probabilities))
        order = np.argsort(-probabilities, kind="stable")[:top]
        return [Guess(self.vocabulary.names[i], float(probabilities[i])) for i in order]


@dataclass(frozen=True)
class NamePrior:
    """What a drawing reads as steers its search: the drawing's vector plus `weight` times the mean of the
    vocabulary's name vectors, each weighted by its guess probability (a soft zero-shot class prior), then
    normalised. For drawings only (the canvas, an uploaded line drawing): photos and low-res shots are searched for
    themselves, and there it costs instance search (val, weight 1: PACS mosaic R@1 89.2 -> 75.8). The weight is
    chosen on val (`hystar eval --split val --name-prior`). A drawing whose first guess is unsure (under
    `min_confidence`) is searched as it is: on val, leaning toward such unsure guesses cost doodles their search
    (the gate chosen there, `assets/eval/val-gate.md`)."""
    weight: float = 1.0
    sources: tuple[str, ...] = (GALLERY,)   # the vocabularies it leans on (`GALLERY`, `SHIPPED`)
    min_confidence: float = 0.2             # the first guess's probability below which a drawing does not lean

    def leans_on(self, guesser: Guesser) -> bool:
        return guesser.vocabulary.source in self.sources

    def lean_where_sure(self, vectors: np.ndarray, guesser: Guesser) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) drawing embeddings -> (n, d) vectors, each a unit vector leaning toward what it reads as where it
        leans, else as it is; and (n,) bool, which leaned (a vocabulary it leans on, a sure first guess)."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if not self.leans_on(guesser):
            return vectors, np.zeros(len(vectors), bool)
        probabilities = guesser.probabilities(vectors)
        leaned = vectors + self.weight * probabilities @ guesser.embeddings
        leaned /= np.maximum(np.linalg.norm(leaned, axis=1, keepdims=True), 1e-12)
        sure = probabilities.max(axis=1) >= self.min_confidence
        return np.where(sure[:, None], leaned, vectors).astype(np.float32), sure

    def leaning(self, vectors: np.ndarray, guesser: Guesser) -> np.ndarray:
        """(n,) bool: which of the (n, d) drawing embeddings lean."""
        return self.lean_where_sure(vectors, guesser)[1]

    def lean(self, vectors: np.ndarray, guesser: Guesser) -> np.ndarray:
        """(n, d) drawing embeddings -> (n, d) vectors, each leaning toward what it reads as where it leans."""
        return self.lean_where_sure(vectors, guesser)[0]


class GuesserCache:
    """One `Guesser` per (encoder, vocabulary), built on first use: a gallery that grows keeps its names' vectors."""

    def __init__(self, config: GuessConfig = GuessConfig()):
        self.config = config
        self._built: dict[tuple[str, tuple[str, ...]], Guesser] = {}
        self._lock = threading.Lock()

    def get(self, encoder_key: str, vocabulary: Vocabulary, embed_texts: TextEmbedder) -> Guesser:
        key = (encoder_key, vocabulary.names)
        with self._lock:   # one build at a time: two first searches do not embed the vocabulary twice
            if key not in self._built:
                self._built[key] = Guesser.build(vocabulary, embed_texts, self.config)
            return self._built[key]


def guess_line(guesses: Sequence[Guess]) -> str:
    """"cat 41 % · clock 12 % · dog 9 %" (a guess under 1 % reads "<1 %")."""
    return " · ".join(f"{g.name} {round(100 * g.probability)} %" if g.probability >= 0.005 else f"{g.name} <1 %"
                      for g in guesses)
