"""Style adaptation of a frozen encoder.

- `codes`:   style codes (Gram statistics of early tokens, ...).
- `hystar`:  the Hystar adapter (per-input ΔS of attention, static gated MLP offsets).
- `prompts`: the Gram-prompt baseline (FreestyleRet-style deep style prompts).
- `kinds`:   the one registry of adapter kinds and the `Adapter` protocol.
- `files`:   adapter files (save, read, load onto a base encoder).
- `encoder`: `HystarEncoder`, base + adapter as a search encoder; built by `hystar.encoder.search`.
"""

from .codes import STYLE_CODES, gram_code
from .encoder import HystarEncoder
from .files import AdapterFile, AdapterMismatchError, load_adapter, read_adapter_meta, save_adapter
from .hystar import AdapterConfig, HystarAdapter, StaticShift, SVDFactors, default_dynamic_blocks
from .kinds import ADAPTER_KINDS, Adapter, AdapterKind, CachesDerivedWeights, adapter_kind, build_adapter
from .prompts import GramPromptAdapter, PromptConfig

__all__ = ["ADAPTER_KINDS", "STYLE_CODES", "Adapter", "AdapterConfig", "AdapterFile", "AdapterKind",
           "AdapterMismatchError", "CachesDerivedWeights", "GramPromptAdapter", "HystarAdapter", "HystarEncoder",
           "PromptConfig", "StaticShift", "SVDFactors", "adapter_kind", "build_adapter", "default_dynamic_blocks",
           "gram_code", "load_adapter", "read_adapter_meta", "save_adapter"]
