"""Specification of query preparation (`hystar.query`, `hystar.deblock`): a pixelated upload is read as the small
image it was enlarged from and enlarged smoothly; photos, paintings, drawings and smooth thumbnails pass untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hystar.data import DATA_ENV, data_root, load_dataset
from hystar.deblock import deblock, native_pixels
from hystar.embed import embed_image
from hystar.encoder import load_encoder
from hystar.images import open_image
from hystar.query import prepare_query
from hystar.query_embedding import Parts, text_prompt, texts_to_encode
from hystar.synthetic import MOSAIC_FACTOR, mosaic, synthesize

needs_data = pytest.mark.skipif(not (data_root() / "pacs" / "manifest.csv").is_file(),
                                reason=f"datasets not found; set {DATA_ENV}")


def smooth_photo(size: tuple[int, int] = (227, 227), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize(size, Image.BICUBIC)
    noise = rng.normal(0, 4, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(photo) + noise, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(227, 227), (256, 256), (640, 480), (300, 200)])
def test_a_mosaic_is_read_back_as_its_native_pixels(size):
    photo = smooth_photo(size)
    native = native_pixels(mosaic(photo))
    assert native is not None
    assert native.size == (size[0] // MOSAIC_FACTOR, size[1] // MOSAIC_FACTOR)
    expected = np.asarray(photo.resize(native.size, Image.BILINEAR), dtype=int)
    assert np.abs(np.asarray(native, dtype=int) - expected).max() <= 1


def test_a_pixel_art_zoom_of_any_integer_factor_is_found():
    small = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 12, 3), dtype=np.uint8))
    for factor in (3, 5, 8, 20):
        zoomed = small.resize((12 * factor, 9 * factor), Image.NEAREST)
        assert np.array_equal(np.asarray(native_pixels(zoomed)), np.asarray(small)), factor


def largest_step(image: Image.Image) -> int:
    return int(np.abs(np.diff(np.asarray(image, dtype=int), axis=1)).max())


def test_deblocking_keeps_the_size_and_removes_the_block_edges():
    blocky = mosaic(smooth_photo())
    smooth = deblock(blocky)
    assert smooth.size == blocky.size
    assert largest_step(smooth) < largest_step(blocky) / 2


def flat_cartoon() -> Image.Image:
    image = Image.new("RGB", (256, 256), (250, 240, 200))
    draw = ImageDraw.Draw(image)
    draw.rectangle((30, 40, 150, 200), fill=(200, 30, 30))
    draw.ellipse((120, 20, 230, 130), fill=(30, 90, 200))
    draw.polygon([(10, 250), (128, 150), (250, 250)], fill=(40, 160, 60))
    return image


@pytest.mark.parametrize("image", [smooth_photo(), flat_cartoon(), Image.new("RGB", (200, 200), "white"),
                                   smooth_photo().resize((48, 48)).resize((227, 227), Image.BICUBIC)],
                         ids=["photo", "flat cartoon", "blank", "smooth thumbnail"])
def test_images_without_a_block_grid_pass_through_unchanged(image):
    assert native_pixels(image) is None
    assert deblock(image) is image
    assert prepare_query(image) is image


def test_a_drawing_is_normalised_as_a_sketch_not_deblocked():
    drawing = Image.new("RGB", (512, 512), "white")
    ImageDraw.Draw(drawing).rectangle((100, 100, 400, 400), outline="black", width=16)
    prepared = prepare_query(drawing, drawn=True)
    assert prepared.size == (224, 224)
    assert prepare_query(drawing).size == (224, 224)  # an upload: found to be a line drawing
    assert prepare_query(drawing, drawn=False) is drawing  # decided already (`query_parts`): not tested again


@needs_data
def test_no_stored_photo_painting_or_sketch_is_taken_for_a_mosaic_and_every_mosaic_is():
    pacs = load_dataset("pacs")
    for style in ("photo", "art_painting", "cartoon", "sketch"):
        for item in pacs.select(style=style, split="test")[:25]:
            assert native_pixels(open_image(item.path)) is None, item.path
    for item in pacs.photos("test")[:25]:
        photo = open_image(item.path).convert("RGB")
        assert native_pixels(synthesize(photo, "mosaic", item.key)) is not None, item.path
        for style in ("art", "pencil", "lowres"):
            assert native_pixels(synthesize(photo, style, item.key)) is None, (item.path, style)


@needs_data
def test_a_deblocked_mosaic_embeds_closer_to_its_own_photo():
    encoder = load_encoder()
    photos = load_dataset("pacs").photos("val")[:16]
    raw, prepared = [], []
    for item in photos:
        photo = open_image(item.path).convert("RGB")
        target = embed_image(encoder, photo)
        blocky = mosaic(photo)
        raw.append(float(embed_image(encoder, blocky) @ target))
        prepared.append(float(embed_image(encoder, prepare_query(blocky)) @ target))
    assert np.mean(prepared) > np.mean(raw) + 0.02


def test_a_bare_name_in_the_text_is_read_as_the_class_prompt_and_a_sentence_as_typed():
    assert text_prompt("person") == "a photo of a person"          # a clicked guess, a typed class name
    assert text_prompt("red car") == "a photo of a red car"
    assert text_prompt("a dog on a beach") == "a dog on a beach"   # starts with an article: a description
    assert text_prompt("dogs running on the beach at dusk") == "dogs running on the beach at dusk"
    assert text_prompt("Guitar.") == "Guitar."                     # a sentence
    parts = Parts(images=[], texts=[("text", 1.0, "person"), ("negative text", -0.5, "blurry")])
    assert texts_to_encode(parts) == ["a photo of a person", "blurry"]  # what to push away stays as typed
