"""Opening images from users and disks: every odd file becomes a clear `ImageError`, never a crash."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MAX_PIXELS = 40_000_000  # decompression-bomb cap: a 40 MP image is already larger than any real query
MAX_BYTES = 50 * 1024 * 1024


class ImageError(ValueError):
    """An input that cannot be used as an image; the message says why in one line."""


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (palette with transparency, CMYK, 16-bit, LA, ...) to RGB; transparency becomes white."""
    if getattr(image, "is_animated", False):
        image.seek(0)
    image = ImageOps.exif_transpose(image) if "exif" in image.info else image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        image = Image.fromarray(((array - lo) / ((hi - lo) or 1.0) * 255.0).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the {max_pixels / 1e6:.0f} MP limit"
        )


def open_image(source: str | os.PathLike | bytes | Image.Image | np.ndarray, *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_BYTES) -> Image.Image:
    """Decode a path, bytes, array or PIL image into a fully loaded RGB image, or raise `ImageError`."""
    if isinstance(source, Image.Image):
        _check_size(source, "image", max_pixels)
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, bytes):
        name, data = "upload", source
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        if size > max_bytes:
            raise ImageError(f"{name}: {size / 2**20:.0f} MB is over the {max_bytes / 2**20:.0f} MB limit")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data) / 2**20:.0f} MB is over the {max_bytes / 2**20:.0f} MB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image, name, max_pixels)
            image.load()
            return to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name}: refused as a decompression bomb ({error})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as error:
        raise ImageError(f"{name}: damaged or truncated image ({error})") from None


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    if array.ndim not in (2, 3) or array.size == 0:
        raise ImageError(f"image array has unusable shape {array.shape}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise ImageError(f"image array has {array.shape[2]} channels; expected 1, 3 or 4")
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageError(f"image array of {array.shape[0]}x{array.shape[1]} exceeds the pixel limit")
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float64)
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return to_rgb(Image.fromarray(array))


def is_blank(image: Image.Image, tolerance: float = 2.0) -> bool:
    """True for an image with (almost) no content: an empty canvas, a single flat colour."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    return float(grey.std()) < tolerance
