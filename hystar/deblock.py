"""Pixelated queries brought back to what they hold: a nearest-neighbour enlargement (a mosaic, a "pixel art"
zoom, FreestyleRet's low-res queries) is a small image drawn with square blocks. The blocks' edges are not in the
photo; the encoder reads them as strong structure and matches the wrong photos. `deblock` finds the block grid,
reads one pixel per block and enlarges that native image smoothly, as any other small upload is enlarged.

A grid is only accepted when both axes are piecewise constant with nearly regular runs: photos, paintings and flat
cartoons have edges at irregular places and pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class BlockTest:
    flat_tolerance: float = 6.0   # neighbour difference (0-255) under which two columns/rows count as equal
    flat_rows: float = 0.9        # share of the other axis' pixels that must be equal for a line to be in a block
    min_block: float = 3.0        # block side in pixels at least: a finer grid is not a visible mosaic
    min_blocks: int = 4           # native pixels per axis at least
    seen_edges: float = 0.5       # share of a grid's block edges that must show (equal neighbours hide the rest)
    max_off_pixels: float = 0.01  # share of pixels that may differ from their block's pixel by more than tolerance


def _source_index(size: int, blocks: int) -> np.ndarray:
    """The source pixel of each of `size` pixels in a nearest-neighbour enlargement from `blocks` pixels."""
    return np.floor((np.arange(size) + 0.5) * blocks / size).astype(int)


def _block_index(image: np.ndarray, test: BlockTest) -> np.ndarray | None:
    """Each column's block along axis 1 of `image` (H, W, C), or None when it has no block grid: the coarsest
    regular grid whose lines hold every edge seen, with most of its lines seen."""
    width = image.shape[1]
    step = np.abs(np.diff(image, axis=1)).max(axis=2)                 # (H, W-1)
    edges = np.flatnonzero((step <= test.flat_tolerance).mean(axis=0) < test.flat_rows) + 1
    if len(edges) + 1 < test.min_blocks:
        return None
    for blocks in range(max(test.min_blocks, len(edges) + 1), int(width / test.min_block) + 1):
        source = _source_index(width, blocks)
        grid = np.flatnonzero(np.diff(source)) + 1
        near = np.abs(edges[:, None] - grid[None, :]).min(axis=1) <= 1
        if near.all() and len(edges) >= test.seen_edges * len(grid):
            return source
    return None


def _centres(index: np.ndarray) -> np.ndarray:
    """The middle position of each block of a block index (0, 0, 0, 1, 1, 1, ...)."""
    starts = np.flatnonzero(np.diff(index, prepend=-1))
    ends = np.append(starts[1:], len(index))
    return (starts + ends - 1) // 2


def native_pixels(image: Image.Image, test: BlockTest = BlockTest()) -> Image.Image | None:
    """The small image a nearest-neighbour enlargement was made from (one pixel per block), or None: a grid is
    accepted when enlarging its pixels again gives back (almost) every pixel of `image`."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    columns = _block_index(rgb, test)
    rows = _block_index(rgb.transpose(1, 0, 2), test) if columns is not None else None
    if columns is None or rows is None:
        return None
    small = rgb[np.ix_(_centres(rows), _centres(columns))]
    off = np.abs(small[np.ix_(rows, columns)] - rgb).max(axis=2) > test.flat_tolerance
    if off.mean() > test.max_off_pixels:
        return None
    return Image.fromarray(small.astype(np.uint8))


def deblock(image: Image.Image, test: BlockTest = BlockTest()) -> Image.Image:
    """`image` with its block grid smoothed away (bicubic from its native pixels, same size); unchanged if it has
    no block grid."""
    small = native_pixels(image, test)
    if small is None:
        return image
    return small.resize(image.size, Image.BICUBIC)
