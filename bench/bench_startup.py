"""First start of the app as a new user meets it, in one run on a fresh index root:

1. seconds from `python app.py` to HTTP 200 on its page (goal <= 15 s);
2. seconds to a searchable demo gallery: a text search through the app's API that returns results instead of
   "indexing: N %" (goal <= 6 min on 2 cores);
3. the second start on the same index root: seconds to HTTP 200 (goal <= 15 s) and to searchable.

The load average is printed before and after: the machine is shared, and indexing is CPU-bound.

    python bench/bench_startup.py                    # the demo photos under $HYSTAR_DATA, hystar-mini + adapter
    python bench/bench_startup.py --gallery DIR      # any folder of images instead
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class App:
    """`python app.py` in a subprocess; its log is kept (the indexing progress bar is in it)."""

    def __init__(self, index_root: Path, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        command = [sys.executable, str(ROOT / "app.py"), "--index-root", str(index_root), "--port", str(self.port),
                   *extra]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.log.extend(part for part in line.rstrip("\n").split("\r") if part.strip())

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def wait_http(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"app.py exited with {self.process.returncode}:\n" + "\n".join(self.log[-20:]))
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    if answer.status == 200:
                        return self.seconds()
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"no HTTP 200 within {timeout:.0f} s")

    def wait_searchable(self, timeout: float) -> tuple[float, list[str]]:
        """Seconds until a search returns results; the "indexing: N %" answers seen on the way."""
        from gradio_client import Client

        client = Client(self.url, verbose=False)
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = client.predict(None, None, "a photo of a dog", "", 1.0, 1.0, 1.0, 0.5, True, False, 12, False,
                                    api_name="/search")[0]
            if "results" in status and "indexing" not in status:
                return self.seconds(), seen
            seen.append(status)
            time.sleep(2.0)
        raise SystemExit(f"not searchable within {timeout:.0f} s; last answer: {seen[-1] if seen else None}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=Path, help="folder of images (default: the demo photos)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to a searchable gallery")
    parser.add_argument("--keep", action="store_true", help="keep the temporary index root")
    parser.add_argument("--second-start", type=Path, metavar="ROOT",
                        help="only the second start, on the index root a --keep run left")
    args = parser.parse_args(argv)
    extra = ["--gallery", str(args.gallery)] if args.gallery else []
    if args.second_start:
        print(f"index root {args.second_start}; {os.cpu_count()} cores; load average before: {load()}")
        second_start(args.second_start, extra)
        return 0
    root = Path(tempfile.mkdtemp(prefix="hystar-startup-"))
    print(f"fresh index root {root}; {os.cpu_count()} cores; load average before: {load()}")
    try:
        app = App(root, extra)
        http = app.wait_http(120)
        print(f"first start:  HTTP 200 after {http:6.1f} s (goal <= 15 s)")
        searchable, seen = app.wait_searchable(args.timeout)
        print(f"first start:  searchable after {searchable:6.1f} s (goal <= 360 s); meanwhile a search answered "
              f"{seen[len(seen) // 2] if seen else '(never asked while indexing)'!r}")
        bars = [line for line in app.log if "one pass" in line and "img" in line]
        print(f"server log (last progress line): {bars[-1].strip() if bars else '(none)'}")
        print(f"load average after indexing: {load()}")
        app.stop()
        second_start(root, extra)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def second_start(root: Path, extra: list[str]) -> None:
    again = App(root, extra)
    http = again.wait_http(120)
    searchable, _ = again.wait_searchable(120)
    print(f"second start: HTTP 200 after {http:6.1f} s (goal <= 15 s); searchable after {searchable:6.1f} s")
    again.stop()
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    sys.exit(main())
