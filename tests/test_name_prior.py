"""Specification of the name prior: a drawing's search leans toward the names it reads as.

A drawing (the canvas, or an uploaded line drawing) is searched with its vector plus the mean of the gallery's
class-name vectors, each weighted by how likely the guesses find it (`hystar.guesses.NamePrior`). Photos, paintings
and low-res shots are searched as they are, and so is a drawing whose query names what it is in the search text.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_app import (  # noqa: F401 - fixtures
    EXAMPLES,
    app_dir,
    app_gallery,
    app_url,
    client,
    needs_data,
    service,
    test_adapter,
)
from test_guesses import unit

from hystar.eval.compare import models_to_compare
from hystar.eval.retrieval import DRAWN_STYLES, NamePriored
from hystar.guesses import GALLERY, SHIPPED, Guesser, NamePrior, Vocabulary
from hystar.query_embedding import Encoded, Parts, lean_drawings, query_parts
from hystar.ranking import QueryExpansion
from hystar.service import Query


def guesser(source: str = GALLERY) -> Guesser:
    names = Vocabulary(("cat", "clock", "tree"), source)
    return Guesser(names, unit([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]))


def test_a_drawing_leans_toward_the_name_it_most_likely_reads_as_and_stays_a_unit_vector():
    drawing = unit([0.6, 0.5, 0.1, 0.6])
    leaned = NamePrior(weight=1.0).lean(drawing, guesser())
    np.testing.assert_allclose(np.linalg.norm(leaned, axis=1), 1.0, rtol=1e-6)
    assert leaned[0, 0] > drawing[0, 0] and leaned[0, 2] < drawing[0, 2]  # toward "cat", away from "tree"
    assert leaned[0, 0] - leaned[0, 1] > drawing[0, 0] - drawing[0, 1]
    np.testing.assert_allclose(NamePrior(weight=0.0).lean(drawing, guesser()), drawing, rtol=1e-6)


def test_a_drawing_unsure_of_its_first_guess_is_searched_as_it_is():
    names = Vocabulary(tuple(f"class {k}" for k in range(8)), GALLERY)
    eight = Guesser(names, np.eye(8, dtype=np.float32))
    unsure = unit([1.0] * 7 + [1.05])              # reads as eight names nearly alike: at most 17 % sure
    sure = unit([1.0, 0.1, 0, 0, 0, 0, 0, 0])
    drawings = np.vstack([unsure, sure])
    np.testing.assert_array_equal(NamePrior().leaning(drawings, eight), [False, True])
    leaned = NamePrior().lean(drawings, eight)
    np.testing.assert_array_equal(leaned[0], unsure[0])
    assert leaned[1, 0] > sure[0, 0]
    assert not np.allclose(NamePrior(min_confidence=0.0).lean(unsure, eight), unsure)
    assert not NamePrior().leaning(sure, Guesser(Vocabulary(names.names, SHIPPED), np.eye(8, dtype=np.float32))).any()


def test_the_prior_leans_only_on_the_vocabularies_it_is_set_for():
    drawing = unit([0.6, 0.5, 0.1, 0.6])
    np.testing.assert_array_equal(NamePrior().lean(drawing, guesser(SHIPPED)), drawing)
    assert not np.allclose(NamePrior(sources=(GALLERY, SHIPPED)).lean(drawing, guesser(SHIPPED)), drawing)


def test_the_canvas_and_an_uploaded_line_drawing_are_drawings_a_photo_is_not():
    sketch = Image.open(EXAMPLES / "sketch_giraffe.png")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    assert query_parts(Query(sketch=sketch, image=photo)).drawings == [True, False]
    assert query_parts(Query(image=sketch)).drawings == [True]


def test_leaning_changes_the_drawings_vectors_on_both_sides_and_nothing_else():
    parts = Parts([("sketch", 1.0, None), ("image", 1.0, None)], [("text", 1.0, "x")], [True, False])
    encoded = Encoded(base=unit([1, 0], [0, 1]), adapted=unit([1, 1], [1, -1]), texts=unit([1, 2]))
    leaned = lean_drawings(parts, encoded, lambda vectors: vectors * 0 + 7)
    for side in ("base", "adapted"):
        assert (getattr(leaned, side)[0] == 7).all()
        np.testing.assert_array_equal(getattr(leaned, side)[1], getattr(encoded, side)[1])
    np.testing.assert_array_equal(leaned.texts, encoded.texts)
    assert encoded.base[0, 0] == 1.0  # the original is left as it was


def test_eval_adds_each_encoders_app_search_with_the_prior_on_drawings_only_for_each_expansion():
    args = SimpleNamespace(encoder="hystar-mini", adapter=[], no_base=False, rerank="none", expand=[],
                           name_prior=[], baseline="none")
    _, models = models_to_compare(args)
    assert list(models) == ["base", "base+qe", "base+qe+names"]
    assert isinstance(models["base+qe+names"], NamePriored) and models["base+qe+names"].model is models["base+qe"]
    _, models = models_to_compare(SimpleNamespace(**(vars(args) | {"expand": None,
                                                                  "name_prior": ["0.5", "1", "1:0"]})))
    assert list(models) == ["base", "base+names(0.5)", "base+names", "base+names(1:0)"]
    assert models["base+names(1:0)"].prior == NamePrior(min_confidence=0.0)
    _, models = models_to_compare(SimpleNamespace(**(vars(args) | {"expand": [QueryExpansion(), QueryExpansion(10)]})))
    assert list(models) == ["base", "base+qe", "base+qe(10:1.5:3:10:1)",
                            "base+qe+names", "base+qe(10:1.5:3:10:1)+names"]
    assert models["base+qe(10:1.5:3:10:1)+names"].model is models["base+qe(10:1.5:3:10:1)"]
    with pytest.raises(ValueError, match="WEIGHT:MIN_CONFIDENCE"):
        models_to_compare(SimpleNamespace(**(vars(args) | {"name_prior": ["heavy"]})))
    assert set(DRAWN_STYLES) == {"sketch", "doodle", "bitmap"}


@needs_data
def test_a_drawing_leans_unless_asked_not_to_a_photo_and_a_named_drawing_do_not(service, app_gallery, monkeypatch):  # noqa: F811
    sketch = Image.open(EXAMPLES / "sketch_giraffe.png")
    photo = sorted((app_gallery / "giraffe").iterdir())[0]
    queries = {"drawing": Query(sketch=sketch, k=3), "photo": Query(image=photo, k=3),
               "named drawing": Query(sketch=sketch, text="giraffe", k=3)}
    leaned = {name: service.search(query, place=False) for name, query in queries.items()}
    assert {name: response.leaned for name, response in leaned.items()} == \
        {"drawing": True, "photo": False, "named drawing": False}
    asked_off = service.search(Query(sketch=sketch, k=3, name_prior=False), place=False)
    assert not asked_off.leaned
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config, name_prior=None))
    plain = {name: service.search(query, place=False) for name, query in queries.items()}
    for side in ("base", "adapted"):
        assert not np.allclose(leaned["drawing"].vectors[side], plain["drawing"].vectors[side])
        np.testing.assert_allclose(asked_off.vectors[side], plain["drawing"].vectors[side], rtol=1e-6)
        np.testing.assert_allclose(leaned["photo"].vectors[side], plain["photo"].vectors[side], rtol=1e-6)
        np.testing.assert_allclose(leaned["named drawing"].vectors[side], plain["named drawing"].vectors[side],
                                   rtol=1e-6)
    monkeypatch.setattr(service, "config", dataclasses.replace(service.config,
                                                               name_prior=NamePrior(min_confidence=1.01)))
    unsure = service.search(queries["drawing"], place=False)     # no first guess is ever that sure
    assert not unsure.leaned
    for side in ("base", "adapted"):
        np.testing.assert_allclose(unsure.vectors[side], plain["drawing"].vectors[side], rtol=1e-6)
    assert [g.name for g in leaned["drawing"].guesses] == [g.name for g in plain["drawing"].guesses]
    giraffe = [g for g in leaned["drawing"].guesses if g.name == "giraffe"]
    assert giraffe, "the example giraffe reads as a giraffe among the three guesses"
    text = service._guesser().embeddings[service._guesser().vocabulary.names.index("giraffe")]
    assert leaned["drawing"].vectors["adapted"] @ text > plain["drawing"].vectors["adapted"] @ text


@needs_data
def test_the_name_prior_is_a_control_on_by_default_and_the_api_can_turn_it_off(client):  # noqa: F811
    from gradio_client import handle_file

    props = {c["props"].get("elem_id"): c["props"] for c in client.config["components"]}
    assert props["name-prior"]["value"] is True
    assert f"under {NamePrior().min_confidence * 100:g} % sure" in props["name-prior"]["info"]
    drawn = str(EXAMPLES / "sketch_giraffe.png")
    canvas = {"background": handle_file(drawn), "layers": [], "composite": handle_file(drawn)}
    on = client.predict(canvas, None, "", "", 1.0, 1.0, 1.0, 0.5, True, False, 6, False, True, api_name="/search")
    off = client.predict(canvas, None, "", "", 1.0, 1.0, 1.0, 0.5, True, False, 6, False, True, False,
                         api_name="/search")
    assert on[5]["name_prior"] is True and off[5]["name_prior"] is False


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
