"""Defaults the command lines show in their --help, importable without torch or gradio (`python app.py --help`
answers at once)."""

DEFAULT_ENCODER = "hystar-mini"
CONCURRENCY = 2                         # searches the app runs at once; the rest wait in its queue
UPLOAD_MAX_FILES = 500                  # images per upload into the app's own gallery, zip members included
UPLOAD_MAX_BYTES = 200 * 1024 * 1024    # their total size (uncompressed)
