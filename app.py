"""Hystar app (Hugging Face Spaces entry point): sketch, image or text to photos, with style adaptation.

    python app.py [--gallery DIR] [--encoder SPEC] [--adapter FILE] [--port N]

The page opens at once. Without --gallery the demo photos under $HYSTAR_DATA are indexed on first start, in the
background with every core (the page and the log show the progress; later starts load the index in seconds).
With neither (a fresh Hugging Face Space) the app starts on an empty gallery of its own that photos are uploaded to.
Runs on the CPU, or on a GPU when there is one.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Only light modules here: `python app.py --help` answers without loading torch or gradio (see `main`).
from hystar.defaults import CONCURRENCY, DEFAULT_ENCODER, UPLOAD_MAX_BYTES, UPLOAD_MAX_FILES
from hystar.paths import ADAPTER_PATH, GALLERY_INDEX_ROOT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=Path, help="folder of images to search (default: the demo photos)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"encoder spec (default: {DEFAULT_ENCODER})")
    parser.add_argument("--adapter", type=Path, help="adapter file (default: the trained hystar-mini adapter, "
                                                     "when the encoder is hystar-mini and it exists)")
    parser.add_argument("--no-adapter", action="store_true", help="base encoder only")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME"),
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 to serve a network)")
    parser.add_argument("--index-root", type=Path, default=GALLERY_INDEX_ROOT, help="where gallery indexes live")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--threads", type=int, help="torch threads for searching (default: cores / concurrent "
                                                    "searches; indexing uses every core)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="searches run at once")
    parser.add_argument("--no-umap", action="store_true", help="skip the UMAP view")
    parser.add_argument("--max-upload-files", type=int, default=UPLOAD_MAX_FILES,
                        help="images per upload into the app's own gallery, zip members included")
    parser.add_argument("--max-upload-mb", type=float, default=UPLOAD_MAX_BYTES / 2**20,
                        help="total uncompressed size of one upload, in MB")
    return parser.parse_args(argv)


def adapter_path(args: argparse.Namespace) -> Path | None:
    if args.no_adapter:
        return None
    if args.adapter is not None:
        return args.adapter
    return ADAPTER_PATH if args.encoder == DEFAULT_ENCODER and ADAPTER_PATH.is_file() else None


def service_config(args: argparse.Namespace):
    from hystar.gallery import UploadLimits
    from hystar.service import ServiceConfig
    from hystar.views import UmapConfig

    limits = UploadLimits(max_files=args.max_upload_files, max_bytes=int(args.max_upload_mb * 2**20))
    return ServiceConfig(encoder=args.encoder, adapter=adapter_path(args), gallery=args.gallery,
                         index_root=args.index_root, device=args.device,
                         umap=None if args.no_umap else UmapConfig(), upload_limits=limits,
                         threads=args.threads or max(1, (os.cpu_count() or 1) // args.concurrency))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hystar import zerogpu  # noqa: F401 - first: on ZeroGPU, `spaces` comes before anything touches CUDA
    from hystar.gallery import GalleryNotFoundError
    from hystar.service import SearchService
    from hystar.ui import UiConfig, build_app, launch

    try:  # indexing (every core) runs in the background; the serving threads are set once it is done
        service = SearchService.open(service_config(args), background=True)
    except (GalleryNotFoundError, FileNotFoundError, ValueError) as error:
        print(f"hystar app: {error}", file=sys.stderr)
        return 2
    launch(build_app(service, UiConfig(concurrency=args.concurrency)), port=args.port, host=args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
