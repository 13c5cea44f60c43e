"""A deterministic corpus of malformed and odd inputs for the app and for `hystar index`.

Every case says what must happen to it:

- `refused`: a one-line message whose text matches `reason` (the app's ⚠ status, `hystar index`'s skip reason);
- `answered`: a valid, if odd, image or text that must be searched (CMYK, 16-bit, palette with transparency,
  animated GIF, 10 000 characters of text, emoji ...);
- `either`: damaged bytes that a tolerant decoder may still read (bit flips inside compressed data, a file cut
  just before its end marker): answered or refused in one line, never a crash.

The same bytes come out on every run (seeded generators, no clocks, no files read), so a failure names a case
that can be regenerated: `python tests/fuzz_corpus.py OUT_DIR` writes the file cases to OUT_DIR.
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

REFUSED, ANSWERED, EITHER = "refused", "answered", "either"

EMPTY = r"empty file"
NOT_IMAGE = r"not an image"
DAMAGED = r"damaged or truncated|not an image"
BOMB = r"MP limit|decompression bomb"
EMPTY_QUERY = r"empty query"


@dataclass(frozen=True)
class Case:
    name: str                     # unique; the file name (with its suffix) for file cases
    kind: str                     # the family of the case, for reports
    expect: str                   # REFUSED, ANSWERED or EITHER
    data: bytes | None = None     # the file's bytes (file cases)
    text: str | None = None       # the query text (text cases)
    reason: str = ""              # regex the one-line refusal must match

    @property
    def is_file(self) -> bool:
        return self.data is not None


# ---------------------------------------------------------------------------------------------- pictures

def picture(seed: int, size: tuple[int, int] = (96, 72), mode: str = "RGB") -> Image.Image:
    """Smooth colour gradients plus seeded blocks: real structure, so JPEG and PNG carry a real scan."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    channels = [127 + 120 * np.sin(x / (7 + 3 * c) + y / (11 + 2 * c) + phase[c]) for c in range(3)]
    array = np.stack(channels, -1)
    blocks = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    array = 0.6 * array + 0.4 * np.kron(blocks, np.ones((height // 4 + 1, width // 4 + 1, 1)))[:height, :width]
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: Iterator[bytes] | None = None,
            extra: bytes = b"") -> bytes:
    """A PNG written chunk by chunk: what PIL cannot save (16-bit RGB) and bombs that never exist in memory."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    body = b""
    if rows is not None:
        compressor = zlib.compressobj(9)
        body = b"".join(compressor.compress(b"\x00" + row) for row in rows) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + header + extra + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def png16(width: int, height: int, channels: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    array = (rng.random((height, width, channels)) * 65535).astype(">u2")
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    return raw_png(width, height, 16, colour_type, (row.tobytes() for row in array))


def zero_rows(width_bytes: int, height: int) -> Iterator[bytes]:
    row = bytes(width_bytes)
    for _ in range(height):
        yield row


# ---------------------------------------------------------------------------------------------- families

def empty_files() -> list[Case]:
    suffixes = [".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"]
    return [Case(f"empty{suffix}", "zero-byte", REFUSED, b"", reason=EMPTY) for suffix in suffixes]


def valid_sources() -> list[tuple[str, str, bytes]]:
    """(name, suffix, bytes) of good files that the truncation and bit-flip families damage."""
    images = [picture(seed, size) for seed, size in [(1, (96, 72)), (2, (160, 120)), (3, (64, 200))]]
    sources = []
    for number, image in enumerate(images):
        sources += [(f"base{number}", ".jpg", encode(image, "JPEG", quality=90)),
                    (f"prog{number}", ".jpg", encode(image, "JPEG", quality=80, progressive=True)),
                    (f"rgb{number}", ".png", encode(image, "PNG")),
                    (f"pal{number}", ".png", encode(image.convert("P"), "PNG"))]
    image = images[1]
    sources += [("gif", ".gif", encode(image.convert("P"), "GIF")),
                ("webp", ".webp", encode(image, "WEBP", quality=80)),
                ("bmp", ".bmp", encode(image, "BMP")),
                ("tiff", ".tiff", encode(image, "TIFF"))]
    return sources


def truncated_files() -> list[Case]:
    """Files cut short, from a few bytes into the header to most of the pixel data."""
    cases = []
    for name, suffix, data in valid_sources():
        fractions = (0.1, 0.3, 0.5, 0.7, 0.85) if suffix in (".jpg", ".png") else (0.2, 0.5, 0.8)
        cuts = sorted({4, 16, 40, *(int(len(data) * f) for f in fractions)})
        for cut in cuts:
            cases.append(Case(f"truncated-{name}-{cut}{suffix}", "truncated", REFUSED, data[:cut],
                              reason=DAMAGED))
        # Only the end marker (JPEG EOI, PNG IEND) missing: every pixel is there, a decoder may accept it.
        end = {".jpg": 2, ".png": 12}.get(suffix)
        if end:
            cases.append(Case(f"no-end-marker-{name}{suffix}", "truncated", EITHER, data[:-end], reason=DAMAGED))
    return cases


def bit_flipped_files(count: int = 40) -> list[Case]:
    """Seeded bit flips past the header: tolerant decoders often read them, strict ones refuse."""
    rng = random.Random(7)
    sources = valid_sources()
    cases = []
    for number in range(count):
        name, suffix, data = sources[number % len(sources)]
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(min(len(data) - 1, 64), len(data))
            damaged[position] ^= 1 << rng.randrange(8)
        cases.append(Case(f"bitflip-{number:02d}-{name}{suffix}", "bit flips", EITHER, bytes(damaged),
                          reason=DAMAGED))
    return cases


def bomb_files() -> list[Case]:
    """Headers that claim huge images (a few hundred bytes on disk), and real bombs: tiny files that would
    decompress to gigabytes."""
    claim = [
        ("png-100k", ".png", raw_png(100_000, 100_000, 8, 2)),
        ("png-65k-wide", ".png", raw_png(65_535, 4_000, 8, 2)),
        ("png-50mp", ".png", raw_png(10_000, 5_000, 8, 0)),
        ("png-2g-tall", ".png", raw_png(1, 2**31 - 1, 8, 0)),
        ("png-16bit-100k", ".png", raw_png(100_000, 100_000, 16, 6)),
        ("jpeg-65k", ".jpg", jpeg_header(65_500, 65_500)),
        ("jpeg-65k-wide", ".jpg", jpeg_header(65_500, 1_000)),
        ("gif-65k", ".gif", gif_header(65_535, 65_535)),
        ("bmp-100k", ".bmp", bmp_header(100_000, 100_000)),
        ("tiff-100k", ".tiff", tiff_header(100_000, 100_000)),
        ("webp-16k", ".webp", webp_header(16_384, 16_384)),
    ]
    cases = [Case(f"bomb-header-{name}{suffix}", "decompression bomb", REFUSED, data, reason=BOMB)
             for name, suffix, data in claim]
    real = [
        ("png-1bit-20k", raw_png(20_000, 20_000, 1, 0, zero_rows(2_500, 20_000))),
        ("png-1bit-9k", raw_png(9_000, 6_000, 1, 0, zero_rows(1_125, 6_000))),
        ("png-grey-7k", raw_png(7_000, 7_000, 8, 0, zero_rows(7_000, 7_000))),
    ]
    cases += [Case(f"bomb-real-{name}.png", "decompression bomb", REFUSED, data, reason=BOMB) for name, data in real]
    # A zlib bomb in a text chunk: the pixels are fine, the metadata would decompress to 100 MB.
    text = png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(bytes(100 * 2**20), 9))
    pixels = picture(4, (32, 32)).tobytes()
    rows = (pixels[y * 96:(y + 1) * 96] for y in range(32))
    cases.append(Case("bomb-ztxt.png", "decompression bomb", EITHER, raw_png(32, 32, 8, 2, rows, extra=text),
                      reason=DAMAGED + "|too large"))
    return cases


def jpeg_header(width: int, height: int) -> bytes:
    """A real baseline JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encode(picture(5, (32, 32)), "JPEG"))
    frame = data.find(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"," + struct.pack(
        "<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;"


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 64, 0, 0, 14 + len(info)) + info + bytes(64)


def tiff_header(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) if kind == 4 else struct.pack("<HHIHH", tag, kind, count,
                                                                                    value, 0)
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8 + 16) + bytes(16) + ifd


def webp_header(width: int, height: int) -> bytes:
    """A real lossless WebP whose VP8L header is patched to claim width x height (14 bits each)."""
    data = bytearray(encode(picture(6, (32, 32)), "WEBP", lossless=True))
    bits_at = data.find(b"VP8L") + 9  # chunk tag, chunk size, the 0x2f signature byte
    bits = struct.unpack("<I", data[bits_at:bits_at + 4])[0] & ~((1 << 28) - 1)
    data[bits_at:bits_at + 4] = struct.pack("<I", bits | (width - 1) | (height - 1) << 14)
    return bytes(data)


def foreign_files() -> list[Case]:
    """Bytes of other formats under image names: HTML, SVG, scripts, documents, archives, executables."""
    payloads = {
        "html": b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>",
        "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
               b'<script>alert(1)</script><rect width="64" height="64" fill="red"/></svg>',
        "svg-xxe": b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                   b'<svg xmlns="http://www.w3.org/2000/svg">&x;</svg>',
        "text": b"this is not a picture\n" * 20,
        "json": b'{"path": "../../etc/passwd", "meta": {"_type": "gradio.FileData"}}',
        "csv": b"path,style,class\nphoto/dog/1.jpg,photo,dog\n",
        "pdf": b"%PDF-1.7\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",
        "zip": b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18),
        "gzip": b"\x1f\x8b\x08\x00" + bytes(6) + zlib.compress(b"hello")[2:],
        "elf": b"\x7fELF\x02\x01\x01" + bytes(57),
        "pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",
        "shell": b"#!/bin/sh\nrm -rf /\n",
        "nul": bytes(512),
        "ff": b"\xff" * 512,
        "utf16": "not an image".encode("utf-16"),
        "magic-png-only": b"\x89PNG\r\n\x1a\n",
        "magic-jpeg-only": b"\xff\xd8\xff",
        "magic-gif-only": b"GIF89a",
        "magic-riff-only": b"RIFF\x00\x00\x00\x00WEBP",
    }
    others = [".jpg", ".gif", ".webp"]
    cases = []
    for number, (name, payload) in enumerate(payloads.items()):
        for suffix in (".png", others[number % 3]):  # every payload named .png, and one other image name
            reason = DAMAGED if name.startswith("magic") else NOT_IMAGE
            cases.append(Case(f"foreign-{name}{suffix}", "not an image", REFUSED, payload, reason=reason))
    return cases


def random_files(count: int = 24) -> list[Case]:
    rng = np.random.default_rng(11)
    suffixes = [".jpg", ".png", ".gif", ".webp", ".bmp", ".tiff"]
    cases = []
    for number in range(count):
        size = int(rng.choice([1, 3, 17, 256, 4096, 65536]))
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if data[:2] in (b"BM", b"\xff\xd8", b"II", b"MM", b"P1", b"P4"):  # a lucky magic number: not random
            data = b"\x00" + data[1:]
        cases.append(Case(f"random-{number:02d}-{size}{suffixes[number % 6]}", "random bytes", REFUSED, data,
                          reason=NOT_IMAGE))
    return cases


# ---------------------------------------------------------------------------------------------- odd but valid

def animated_gif(frames: int = 3) -> bytes:
    images = [picture(20 + i, (64, 48)).convert("P") for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)


def palette_with_transparency(fmt: str, per_entry: bool) -> bytes:
    image = picture(30, (80, 60)).convert("P")
    if per_entry:  # an alpha per palette entry (a tRNS chunk as long as the palette)
        return encode(image, fmt, transparency=bytes(range(0, 256)))
    return encode(image, fmt, transparency=0)


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return encode(picture(31, (120, 80)), "JPEG", exif=exif.tobytes())


def valid_odd_files() -> list[Case]:
    base = picture(40, (96, 72))
    grey16 = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16))
    floats = Image.fromarray(np.asarray(base.convert("L"), np.float32) / 255.0, "F")
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "ünïcödé 🖼")
    gamma = encode(base, "PNG", pnginfo=info)
    files: dict[str, bytes] = {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "cmyk.tiff": encode(base.convert("CMYK"), "TIFF"),
        "grey16.png": encode(grey16, "PNG"),
        "grey16.tiff": encode(grey16, "TIFF"),
        "rgb16.png": png16(64, 48, 3, 41),
        "rgba16.png": png16(64, 48, 4, 42),
        "grey16-raw.png": png16(64, 48, 1, 43),
        "float32.tiff": encode(floats, "TIFF"),
        "int32.tiff": encode(base.convert("L").convert("I"), "TIFF"),
        "palette-trns.png": palette_with_transparency("PNG", per_entry=False),
        "palette-alpha.png": palette_with_transparency("PNG", per_entry=True),
        "palette-trns.gif": palette_with_transparency("GIF", per_entry=False),
        "animated.gif": animated_gif(),
        "animated.webp": encode(picture(50, (64, 48)), "WEBP", save_all=True,
                                append_images=[picture(51, (64, 48))], duration=80),
        "animated.png": encode(picture(52, (64, 48)), "PNG", save_all=True, append_images=[picture(53, (64, 48))]),
        "la.png": encode(base.convert("LA"), "PNG"),
        "rgba.png": encode(base.convert("RGBA"), "PNG"),
        "rgba.webp": encode(base.convert("RGBA"), "WEBP", lossless=True),
        "rgba.tiff": encode(base.convert("RGBA"), "TIFF"),
        "rgba32.bmp": encode(base.convert("RGBA"), "BMP"),
        "bilevel.png": encode(base.convert("1"), "PNG"),
        "bilevel.tiff": encode(base.convert("1"), "TIFF", compression="group4"),
        "bilevel.bmp": encode(base.convert("1"), "BMP"),
        "grey.jpg": encode(base.convert("L"), "JPEG"),
        "progressive.jpg": encode(base, "JPEG", progressive=True, quality=70),
        "exif-rotated.jpg": exif_rotated(),
        "subsampling-444.jpg": encode(base, "JPEG", subsampling=0, quality=95),
        "lzw.tiff": encode(base, "TIFF", compression="tiff_lzw"),
        "ycbcr.jpg.tiff": encode(base, "TIFF", compression="jpeg"),
        "lossless.webp": encode(base, "WEBP", lossless=True),
        "text-chunk.png": gamma,
        "one-pixel.png": encode(picture(60, (1, 1)), "PNG"),
        "two-pixels.gif": encode(picture(61, (2, 1)).convert("P"), "GIF"),
        "wide.png": encode(picture(62, (4000, 3)), "PNG"),
        "tall.jpg": encode(picture(63, (8, 3000)), "JPEG"),
        "twelve-mp.jpg": encode(picture(64, (4000, 3000)), "JPEG", quality=60),
        "jpeg-named.png": encode(base, "JPEG"),
        "png-named.jpg": encode(base, "PNG"),
        "UPPER.JPG": encode(base, "JPEG"),
        "name with spaces & ünïcödé 🖼.png": encode(base, "PNG"),
    }
    return [Case(name, "odd but valid", ANSWERED, data) for name, data in files.items()]


# ---------------------------------------------------------------------------------------------- texts

def text_cases() -> list[Case]:
    rng = random.Random(5)
    words = ["giraffe", "guitar", "house", "horse", "dog", "elephant", "person", "painting", "sketch"]
    texts = {
        "10k-chars": ("a photo of a giraffe " * 500)[:10_000],
        "10k-one-word": "g" * 10_000,
        "10k-random-words": " ".join(rng.choice(words) for _ in range(2_000))[:10_000],
        "100k-chars": "house " * 16_667,
        "emoji": "🦒🎸🏠🐎🐕🐘🧑",
        "emoji-zwj": "👩‍👩‍👧‍👦 🏳️‍🌈 🧑🏽‍🎨",
        "emoji-10k": "🦒" * 10_000,
        "emoji-and-words": "a 🦒 giraffe next to a 🏠",
        "flags": "🇫🇷🇯🇵🇧🇷",
        "cjk": "长颈鹿的照片",
        "arabic": "صورة زرافة",
        "rtl-override": "\u202egiraffe a of photo a",
        "zero-width": "g\u200bi\u200br\u200ba\u200bf\u200bf\u200be",
        "combining": "g\u0301i\u0302r\u0303a\u0304f\u0305f\u0306e",
        "control-chars": "a photo\x01\x02\x07 of a\x1b[31m giraffe",
        "nul-inside": "a photo\x00of a giraffe",
        "newlines": "a photo\nof a\r\ngiraffe\n\n",
        "tabs": "\ta\tphoto\tof\ta\tgiraffe",
        "html": "<script>alert('x')</script><img src=x onerror=alert(1)>",
        "markdown": "**bold** [link](javascript:alert(1)) ![img](/etc/passwd)",
        "sql": "'; DROP TABLE photos; --",
        "path": "../../../../etc/passwd",
        "format-string": "%s%s%s%n {0} {__class__}",
        "surrogate-like": "\ufffd\ufffe\uffff",
        "math-symbols": "∑∫√∞≈≠ a photo of a horse",
        "one-char": "x",
        "digits": "1234567890" * 10,
        "punctuation": "!?.,;:()[]{}<>-_=+*&^%$#@~`|\\/\"'",
        "mixed-case": "A PhOtO oF a GiRaFfE",
        "long-line-no-spaces": "giraffe" * 1_500,
    }
    cases = [Case(f"text-{name}", "odd text", ANSWERED, text=text) for name, text in texts.items()]
    blanks = {"spaces": " " * 10_000, "tabs-newlines": "\t\n\r " * 100, "empty": "",
              "nbsp-only": "\u00a0\u2003\u3000"}
    cases += [Case(f"text-blank-{name}", "blank text", REFUSED, text=text, reason=EMPTY_QUERY)
              for name, text in blanks.items()]
    return cases


# ---------------------------------------------------------------------------------------------- corpus

FAMILIES: tuple[Callable[[], list[Case]], ...] = (
    empty_files, truncated_files, bit_flipped_files, bomb_files, foreign_files, random_files, valid_odd_files,
    text_cases)


def corpus() -> list[Case]:
    """Every case, in a fixed order, with unique names."""
    cases = [case for family in FAMILIES for case in family()]
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AssertionError(f"duplicate case names: {duplicates}")
    return cases


def write_files(cases: list[Case], folder: Path) -> dict[str, Path]:
    """Write the file cases into `folder`; case name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        if case.is_file:
            path = folder / case.name
            path.write_bytes(case.data)
            paths[case.name] = path
    return paths


if __name__ == "__main__":
    everything = corpus()
    written = write_files(everything, Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus"))
    print(f"{len(everything)} cases, {len(written)} files")
