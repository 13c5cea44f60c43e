"""The state of the gallery indexing a service runs in the background: images done of total, time left, ready or
failed. Thread-safe: the indexing thread writes it, requests and the page's timer read it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class IndexingStatus:
    done: int = 0
    total: int = 0
    eta: float | None = None     # seconds left; None until the first images are done
    ready: bool = False          # the gallery is searchable
    error: str = ""              # why indexing failed ("" while it runs or once it is done)

    @property
    def percent(self) -> int:
        return 100 if self.ready or not self.total else int(100 * self.done / self.total)

    def line(self) -> str:
        """One line for a person: what is happening and how long it will take."""
        if self.error:
            return f"indexing the gallery failed: {self.error}"
        if self.ready:
            return f"gallery ready: {self.total:,} images indexed" if self.total else "gallery ready"
        if not self.total:
            return "indexing: 0 % (listing the gallery's photos)"
        left = "" if self.eta is None else f", about {_duration(self.eta)} left"
        return f"indexing: {self.percent} % of the gallery ({self.done:,} / {self.total:,} images{left})"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


class IndexingProgress:
    def __init__(self, ready: bool = False):
        self._lock = threading.Lock()
        self._status = IndexingStatus(ready=ready)
        self._started = time.perf_counter()
        self._first: tuple[float, int] | None = None   # (time, done) of the first report: model warm-up excluded

    def update(self, done: int, total: int) -> None:
        now = time.perf_counter()
        with self._lock:
            if self._first is None or done < self._first[1]:
                self._first = (now, done)
            eta = None
            since, base = self._first
            if done > base and now > since:
                eta = (total - done) * (now - since) / (done - base)
            self._status = IndexingStatus(done, total, eta)

    def finish(self, total: int | None = None) -> None:
        with self._lock:
            total = self._status.total if total is None else total
            self._status = IndexingStatus(total, total, 0.0, ready=True)

    def fail(self, error: str) -> None:
        with self._lock:
            self._status = IndexingStatus(self._status.done, self._status.total, None, error=error)

    def status(self) -> IndexingStatus:
        with self._lock:
            return self._status
