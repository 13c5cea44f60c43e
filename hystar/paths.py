"""Every default location, in one place. Environment variables (HYSTAR_DATA, HYSTAR_CACHE) override where named."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
ASSETS = REPO_ROOT / "assets"

MINI_DIR = ASSETS / "hystar-mini"                              # the shipped hystar-mini encoder (v2.4)
MINI_V1_DIR = ASSETS / "hystar-mini-v1"                        # v1 (frozen trunk): where v2.0 training started
MINI_V2_0_DIR = ASSETS / "hystar-mini-v2.0"                    # v2.0 (no thumbnail): where v2.2 training started
# Earlier versions whose weights left the working tree (their config and model card stay): the commit that holds each
# folder's `weights.safetensors`; `git show COMMIT:assets/NAME/weights.safetensors > assets/NAME/weights.safetensors`
# puts it back (docs/training.md).
WEIGHTS_IN_HISTORY = {
    MINI_V1_DIR: "ccc830cbff4efa10886927e207880febcd9950ea",
    MINI_V2_0_DIR: "4b3caa950e5f8b9cea3f591fed219dca710a3355",
}
ADAPTER_PATH = ASSETS / "hystar-mini-adapter.safetensors"      # the shipped Hystar adapter of hystar-mini
RERANKER_DIR = ASSETS / "quari"                                # QuARI re-rankers, one file per search encoder
EXAMPLES_DIR = ASSETS / "examples"                             # the app's example queries

GALLERY_INDEX_ROOT = REPO_ROOT / "gallery" / "index"           # the app's gallery indexes (and upload folder)
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"            # datasets, unless $HYSTAR_DATA says otherwise
DEFAULT_CACHE = REPO_ROOT / ".cache"                           # cached trunk features, unless $HYSTAR_CACHE
