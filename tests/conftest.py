"""Shared fixtures: a random-init hystar-mini saved to disk, a tiny fast encoder, generated image folders."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from hystar import cli
from hystar.encoder import Encoder, TextTower, VisionTower
from hystar.encoder.mini import build_mini, save_mini

# --- encoders -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mini_spec(tmp_path_factory) -> str:
    """`hystar-mini:<folder>` of a seeded, untrained hystar-mini (the trained assets are not in git)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hystar-mini")
    save_mini(build_mini(), folder)
    return f"hystar-mini:{folder}"


class TinyVision(VisionTower):
    """4x4 mean colours -> linear: cheap, deterministic, and it tells different images apart."""

    def __init__(self, dim: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.proj = nn.Linear(48, dim)
        self.images_seen = 0  # lets tests count what went through the encoder

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        self.images_seen += len(pixels)
        return F.adaptive_avg_pool2d(pixels, 4).flatten(1)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features - 0.5)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


class TinyText(TextTower):
    def __init__(self, dim: int):
        super().__init__()
        self.table = nn.Embedding(997, dim)

    def tokenize(self, texts):
        return torch.tensor([sum(map(ord, text)) % 997 for text in texts])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens)


def tiny_encoder(seed: int = 0, dim: int = 16) -> Encoder:
    torch.manual_seed(seed)
    preprocess = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    return Encoder("tiny", TinyVision(dim), TinyText(dim), preprocess, dim).eval()


@pytest.fixture
def tiny() -> Encoder:
    return tiny_encoder()


# --- images ---------------------------------------------------------------------------------------

def random_image(seed: int, size: tuple[int, int] = (40, 32)) -> Image.Image:
    """A random picture of 4x4 colour patches with sensor-like noise (so not a pixel-art zoom, which queries
    de-block); different seeds give clearly different embeddings."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    patches = np.asarray(Image.fromarray(blocks).resize(size, Image.NEAREST), dtype=np.float32)
    noise = rng.normal(0.0, 10.0, patches.shape)
    return Image.fromarray(np.clip(patches + noise, 0, 255).astype(np.uint8))


FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tiff": "TIFF", ".gif": "GIF"}


def write_image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(seed).save(path, FORMATS[path.suffix.lower()])
    return path


def make_gallery(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` images spread over nested folders in every supported format."""
    suffixes = list(FORMATS)
    paths = []
    for i in range(count):
        sub = folder / f"set{i % 3}" / ("deep" if i % 5 == 0 else "")
        paths.append(write_image(sub / f"img{i:03d}{suffixes[i % len(suffixes)]}", seed * 1000 + i))
    return paths


def write_bad_files(folder: Path) -> dict[str, str]:
    """One of each kind of file that must be skipped; name -> a word its reason contains."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    buffer = io.BytesIO()
    random_image(7, (256, 256)).save(buffer, "PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "notes.jpg").write_text("this is not a picture\n")
    Image.new("1", (8000, 6000)).save(folder / "bomb.png")  # 48 MP: over the 40 MP cap, tiny on disk
    return {"empty.jpg": "empty", "truncated.png": "truncated", "notes.jpg": "not an image", "bomb.png": "MP"}


# --- the command line -----------------------------------------------------------------------------

@dataclass
class CliRun:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(monkeypatch, capsys) -> Callable[..., CliRun]:
    """`hystar ARGS...` in-process, with only the index and search commands registered."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["hystar.cli.search"])

    def run(*argv: str | Path) -> CliRun:
        capsys.readouterr()
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


# What `python -m hystar.cli` runs, restricted to the commands under test.
CLI_SCRIPT = ("import sys; from hystar import cli; cli.COMMAND_MODULES = ['hystar.cli.search']; "
              "sys.exit(cli.main(sys.argv[1:]))")
PYTHON = sys.executable


# --- adapters ---------------------------------------------------------------------------------------

def seeded_adapter_file(encoder_spec: str, path: Path, seed: int = 0) -> Path:
    """A Hystar adapter of `encoder_spec` with small seeded weights (ΔS ≠ 0, results near the base), saved."""
    from hystar.adapt.files import save_adapter
    from hystar.adapt.hystar import HystarAdapter
    from hystar.encoder import shared_encoder

    adapter = HystarAdapter(shared_encoder(encoder_spec))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for hyper in adapter.hyper.values():
            hyper.net[-1].weight.normal_(0, 0.02, generator=generator)
        for shift in [*adapter.fc, *adapter.proj]:
            shift.delta.normal_(0, 0.05, generator=generator)
    return save_adapter(adapter, path, encoder_spec, {"note": "test adapter, random weights"})
