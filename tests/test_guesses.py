"""Specification of "reads as": the text tower's zero-shot guesses of what the image part of a query depicts.

Guesses are names from a vocabulary (the gallery's class names, else the one shipped in hystar/vocab/), each with
a probability; they come from the query's image embedding already computed for the search (one matrix product,
no second image encode), and a click on one adds it to the text and searches again.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_app import (  # noqa: F401 - fixtures
    CLASSES,
    EXAMPLES,
    app_dir,
    app_gallery,
    app_url,
    ask,
    client,
    labels,
    needs_data,
    service,
    test_adapter,
)

from hystar.guesses import (
    GALLERY,
    SHIPPED,
    VOCAB_DIR,
    Guess,
    GuessConfig,
    GuesserCache,
    Vocabulary,
    display_name,
    guess_line,
    shipped_vocabulary,
    vocabulary_for,
)
from hystar.service import Query
from hystar.ui import make_pick
from hystar.ui_text import details, guesses_text


def unit(*rows) -> np.ndarray:
    vectors = np.asarray(rows, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fake_embedder(table: dict[str, np.ndarray], calls: list[int]):
    """Text embeddings from a table keyed by the name in the prompt (every prompt of a name alike)."""
    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.stack([table[text.rsplit(" ", 1)[-1]] for text in texts])

    return embed


def test_the_shipped_vocabulary_holds_quick_draws_345_categories_and_photo_subjects_with_the_credit():
    vocabulary = shipped_vocabulary()
    quickdraw = [line for line in (VOCAB_DIR / "quickdraw.txt").read_text().splitlines() if line]
    assert len(quickdraw) == 345 and vocabulary.source == SHIPPED
    assert {"cat", "alarm clock", "The Eiffel Tower", "giraffe", "person", "beach"} <= set(vocabulary.names)
    assert len(set(vocabulary.names)) == len(vocabulary.names) > 345
    credit = (VOCAB_DIR / "README.md").read_text()
    assert "Quick, Draw! dataset, Google" in credit and "CC BY 4.0" in credit


def test_the_gallerys_class_names_are_the_vocabulary_when_it_has_some():
    assert vocabulary_for(["alarm_clock", "cat", "cat", ""]) == Vocabulary(("alarm clock", "cat"), GALLERY)
    assert vocabulary_for(["", ""]).source == SHIPPED and vocabulary_for(["cat"]).source == SHIPPED
    assert display_name("alarm_clock") == "alarm clock"


def test_a_guess_is_a_softmax_over_the_vocabulary_most_likely_first_and_the_names_are_embedded_once():
    table = {"cat": unit([1, 0, 0])[0], "clock": unit([0, 1, 0])[0], "dog": unit([1, 1, 0])[0],
             "tree": unit([0, 0, 1])[0]}
    calls: list[int] = []
    cache = GuesserCache(GuessConfig(prompts=("a drawing of a {}", "a photo of a {}")))
    vocabulary = Vocabulary(tuple(table), GALLERY)
    guesser = cache.get("encoder-a", vocabulary, fake_embedder(table, calls))
    assert cache.get("encoder-a", vocabulary, fake_embedder(table, calls)) is guesser
    assert calls == [8]  # 4 names x 2 prompts, once
    guesses = guesser.guess(unit([0.9, 0.3, 0.1])[0])
    assert [g.name for g in guesses] == ["cat", "dog", "clock"]
    probabilities = guesser.probabilities(unit([0.9, 0.3, 0.1], [0, 0, 1]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert guesses[0].probability == pytest.approx(probabilities[0].max())
    assert guess_line([Guess("cat", 0.414), Guess("clock", 0.004)]) == "cat 41 % · clock <1 %"


@needs_data
def test_a_sketch_reads_as_three_of_the_gallerys_classes_and_a_text_query_as_nothing(service):  # noqa: F811
    response = service.search(Query(sketch=Image.open(EXAMPLES / "sketch_giraffe.png"), k=6))
    assert response.vocabulary == GALLERY and len(response.guesses) == 3
    assert {g.name for g in response.guesses} <= set(CLASSES)
    probabilities = [g.probability for g in response.guesses]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6
    shown = guesses_text(response)
    assert shown.startswith("**Reads as** (a guess") and "not a fact" in shown and " %" in shown
    assert details(response)["guesses"][0]["name"] == response.guesses[0].name
    assert service.search(Query(text="a photo of a dog", k=3)).guesses == []


@needs_data
def test_guesses_reuse_the_search_embedding_no_second_image_encode(service, monkeypatch):  # noqa: F811
    trunk, seen = service.encoder.visual.trunk, []
    monkeypatch.setattr(service.encoder.visual, "trunk", lambda pixels: seen.append(len(pixels)) or trunk(pixels))
    response = service.search(Query(sketch=Image.open(EXAMPLES / "sketch_house.png"), k=3), place=False)
    assert response.guesses and seen == [1]  # one image, through the trunk once: base, adapted and guesses
    assert response.timings["guesses"] < 50


@needs_data
def test_a_guess_clicked_into_the_text_finds_that_class(service):  # noqa: F811
    sketch = Image.open(EXAMPLES / "sketch_guitar.png")
    first = service.search(Query(sketch=sketch, k=6))
    names = [g.name for g in first.guesses]
    for number, name in enumerate(names):  # whichever guess a person clicks
        text = make_pick(number)(names, "")
        assert text == name
        again = service.search(Query(sketch=sketch, text=text, k=6))
        assert labels(again.adapted).count(name) >= 4, (name, labels(again.adapted))
    assert make_pick(0)(names, f"a photo, {names[0]}") == f"a photo, {names[0]}"  # twice: added once
    assert make_pick(1)(names, "a photo") == f"a photo, {names[1]}"


@needs_data
def test_the_api_returns_the_guesses_in_the_details(client):  # noqa: F811
    from gradio_client import handle_file

    sketch = str(EXAMPLES / "sketch_giraffe.png")
    info = ask(client, sketch={"background": handle_file(sketch), "layers": [], "composite": handle_file(sketch)})[5]
    assert info["guess_vocabulary"] == GALLERY and len(info["guesses"]) == 3
    assert {g["name"] for g in info["guesses"]} <= set(CLASSES) and 0 < info["guesses"][0]["probability"] <= 1
    assert ask(client, text="a photo of a dog")[5]["guesses"] == []
