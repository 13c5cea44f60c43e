"""Load test of the app: start `app.py` on loopback, drive it with concurrent `gradio_client` clients.

    python bench/load_test.py [--clients 16] [--queries 500] [--pool 60] [--k 12] [--json] [-- APP.PY OPTIONS]

Everything after `--` goes to app.py (e.g. `-- --gallery DIR --adapter FILE --index-root DIR --no-umap`); without
it the app serves its defaults (the demo gallery under $HYSTAR_DATA with the shipped adapter).

The queries are a seeded mix of the three kinds of the app, a third each: text (class prompts and COCO captions),
upload (PACS paintings and cartoons, the example paintings and low-res shots) and sketch (PACS and Sketchy
sketches, the example sketches, sent as the canvas). They are drawn from a pool of `--pool` distinct queries, which
is first asked once, one query at a time: that is the warm-up and the reference. During the load every answer must
be the reference's answer (same top-k names on the base and the adapted side), so an answer mixed up between
concurrent requests counts as an error, as do exceptions and warnings.

Printed: p50 / p95 / p99 latency (client side: upload + queue + search + answer), throughput, errors, and the
server process's resident memory (RSS): after start, after warm-up, its peak during the load (sampled every 0.2 s),
at the end, and its peak since start (VmHWM, which includes indexing the gallery and fitting the UMAP).
Exit status 1 when there was any error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hystar.data import DataNotFoundError, load_dataset  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
KINDS = ("text", "upload", "sketch")
WEIGHTS = (1.0, 1.0, 1.0, 0.5)        # sketch, image, text, negative: the app's defaults


@dataclass(frozen=True)
class LoadQuery:
    kind: str                         # text, upload or sketch
    value: str                        # the text, or the image file's path

    def describe(self) -> str:
        return f"{self.kind}:{self.value if self.kind == 'text' else Path(self.value).name}"


@dataclass
class Answer:
    seconds: float
    base: list[str] | None = None     # top-k names, base side
    adapted: list[str] | None = None  # top-k names, adapted side (None: no adapted side)
    error: str = ""                   # what went wrong; "" when the query was answered
    failure: str = ""                 # "exception", "warning" (the app's ⚠ line or too few results), "wrong"


@dataclass
class LoadReport:
    url: str
    clients: int
    queries: int
    by_kind: dict[str, int]
    adapted: bool
    wall_s: float
    latency_ms: dict[str, float]                      # p50, p95, p99, max, mean
    latency_ms_by_kind: dict[str, dict[str, float]]   # kind -> p50, p95
    throughput_qps: float
    errors: int
    exceptions: int
    warnings: int
    wrong_answers: int
    examples_of_errors: list[str]
    rss_mib: dict[str, float]                         # start, warm, peak (during the load), end, growth, hwm
    rss_mib_by_progress: list[float] = field(default_factory=list)   # after each 10 % of the queries

    def summary(self) -> str:
        lat, rss = self.latency_ms, self.rss_mib
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.by_kind.items())
        per_kind = "; ".join(f"{kind} p50 {v['p50']:.0f} / p95 {v['p95']:.0f}"
                             for kind, v in self.latency_ms_by_kind.items())
        lines = [
            f"load test: {self.clients} clients, {self.queries} queries ({kinds}) against {self.url} "
            f"(adapted side: {'yes' if self.adapted else 'no'})",
            f"latency ms: p50 {lat['p50']:.0f}  p95 {lat['p95']:.0f}  p99 {lat['p99']:.0f}  max {lat['max']:.0f}  "
            f"mean {lat['mean']:.0f}   ({per_kind})",
            f"throughput: {self.throughput_qps:.2f} queries/s over {self.wall_s:.1f} s",
            f"errors: {self.errors} (exceptions {self.exceptions}, warnings {self.warnings}, "
            f"answers differing from the reference {self.wrong_answers})",
            f"server RSS MiB: start {rss['start']:.0f}, after warm-up {rss['warm']:.0f}, peak during the load "
            f"{rss['peak']:.0f}, end {rss['end']:.0f} (growth over the load {rss['growth']:+.0f}); peak since "
            f"start (VmHWM, includes indexing and UMAP fitting) {rss['hwm']:.0f}",
            "server RSS MiB after each 10 % of the queries: "
            + " ".join(f"{value:.0f}" for value in self.rss_mib_by_progress),
        ]
        lines += [f"  error: {example}" for example in self.examples_of_errors]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- queries

def query_pool(size: int, seed: int = 0) -> list[LoadQuery]:
    """`size` distinct queries, a third of each kind, from the data sets when present, else the examples."""
    rng = random.Random(seed)
    texts, uploads, sketches = [], [], []
    try:
        pacs = load_dataset("pacs")
        texts += [f"a photo of a {c}" for c in pacs.classes] + [f"a drawing of a {c}" for c in pacs.classes]
        uploads += [str(i.path) for i in pacs.items if i.style in ("art_painting", "cartoon")]
        sketches += [str(i.path) for i in pacs.items if i.style == "sketch"]
    except DataNotFoundError:
        pass
    for name, pick in (("sketchy", lambda d: [str(i.path) for i in d.items if i.style == "sketch"]),
                       ("coco_mini", lambda d: [t.text for t in d.texts])):
        try:
            (sketches if name == "sketchy" else texts).extend(pick(load_dataset(name)))
        except DataNotFoundError:
            pass
    examples = sorted(EXAMPLES.glob("*_*.*"))
    uploads += [str(p) for p in examples if p.name.startswith(("painting_", "lowres_"))]
    sketches += [str(p) for p in examples if p.name.startswith("sketch_")]
    texts += ["a photo of a giraffe", "a guitar", "a house"]
    per_kind = {kind: size // 3 + (1 if i < size % 3 else 0) for i, kind in enumerate(KINDS)}
    pool = []
    for kind, values in zip(KINDS, (texts, uploads, sketches), strict=True):
        chosen = rng.sample(sorted(set(values)), min(per_kind[kind], len(set(values))))
        pool += [LoadQuery(kind, value) for value in chosen]
    return pool


def query_plan(pool: Sequence[LoadQuery], count: int, seed: int = 1) -> list[LoadQuery]:
    """`count` queries drawn from the pool, the kinds taking turns."""
    rng = random.Random(seed)
    by_kind = {kind: [q for q in pool if q.kind == kind] for kind in KINDS}
    kinds = [kind for kind in KINDS if by_kind[kind]]
    return [rng.choice(by_kind[kinds[i % len(kinds)]]) for i in range(count)]


def ask(client: Any, query: LoadQuery, k: int) -> Answer:
    """One search through the app's API, as the page sends it."""
    from gradio_client import handle_file

    sketch = image = None
    text = ""
    if query.kind == "text":
        text = query.value
    elif query.kind == "upload":
        image = handle_file(query.value)
    else:
        sketch = {"background": handle_file(query.value), "layers": [], "composite": handle_file(query.value)}
    start = time.perf_counter()
    try:
        status, *_, info = client.predict(sketch, image, text, "", *WEIGHTS, True, False, k, False,
                                          api_name="/search")[:6]
    except Exception as error:  # noqa: BLE001 - counted and reported, the load goes on
        return Answer(time.perf_counter() - start, error=f"{type(error).__name__}: {str(error)[:200]}",
                      failure="exception")
    seconds = time.perf_counter() - start
    if not isinstance(info, dict) or not str(status).startswith("**"):
        return Answer(seconds, error=f"warning: {str(status)[:200]}", failure="warning")
    names = {side: None if info.get(side) is None else [row["name"] for row in info[side]]
             for side in ("base", "adapted")}
    if len(names["base"] or []) != k:
        return Answer(seconds, error=f"{len(names['base'] or [])} results instead of {k}", failure="warning")
    return Answer(seconds, names["base"], names["adapted"])


# ---------------------------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """A field of /proc/PID/status in MiB (VmRSS: resident now, VmHWM: the peak); 0 when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class AppServer:
    """`python app.py --port P APP_ARGS` on loopback, its output in a log file."""

    def __init__(self, app_args: Sequence[str], start_timeout: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="hystar-load-app-", suffix=".log", delete=False)
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, str(ROOT / "app.py"), "--port", str(self.port), "--host", "127.0.0.1",
                   *app_args]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(start_timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log_tail()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app.py did not listen within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- the load

def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run_load(app_args: Sequence[str], clients: int = 16, queries: int = 500, pool_size: int = 60, k: int = 12,
             seed: int = 0, start_timeout: float = 3600) -> LoadReport:
    from gradio_client import Client

    pool = query_pool(pool_size, seed)
    plan = query_plan(pool, queries, seed + 1)
    server = AppServer(app_args, start_timeout)
    try:
        pid = server.process.pid
        rss_start = rss_mib(pid)
        reference_client = Client(server.url, verbose=False, download_files=False)
        reference = {query: ask(reference_client, query, k) for query in pool}   # warm-up, one at a time
        broken = [f"{q.describe()} (reference): {a.error}" for q, a in reference.items() if a.error]
        rss_warm = rss_mib(pid)
        adapted = any(a.adapted is not None for a in reference.values())
        local = threading.local()
        done = [0]
        lock = threading.Lock()
        progress: list[float] = []

        def one(query: LoadQuery) -> Answer:
            if not hasattr(local, "client"):
                local.client = Client(server.url, verbose=False, download_files=False)
            answer = ask(local.client, query, k)
            expected = reference[query]
            if not answer.error and not expected.error and (answer.base, answer.adapted) != (expected.base,
                                                                                             expected.adapted):
                answer.error = f"wrong answer: {answer.base[:3]} instead of {expected.base[:3]}"
                answer.failure = "wrong"
            with lock:
                done[0] += 1
                if done[0] * 10 // len(plan) > len(progress):
                    progress.append(rss_mib(pid))
            return answer

        with RssSampler(pid) as sampler, ThreadPoolExecutor(clients) as executor:
            start = time.perf_counter()
            answers = list(executor.map(one, plan))
            wall = time.perf_counter() - start
        rss_end, rss_peak, rss_hwm = rss_mib(pid), max(sampler.peak, rss_mib(pid)), rss_mib(pid, "VmHWM")
        if server.process.poll() is not None:
            broken.append(f"the server died during the load: {server.log_tail(500)}")
    finally:
        server.stop()
    seconds = [a.seconds * 1000 for a in answers]
    failed = [(q, a) for q, a in zip(plan, answers, strict=True) if a.error]
    failures = [a.failure for _, a in failed]
    by_kind = {kind: [s for q, s in zip(plan, seconds, strict=True) if q.kind == kind] for kind in KINDS}
    return LoadReport(
        url=server.url, clients=clients, queries=len(plan),
        by_kind={kind: len(values) for kind, values in by_kind.items()}, adapted=adapted, wall_s=wall,
        latency_ms={"p50": percentile(seconds, 50), "p95": percentile(seconds, 95),
                    "p99": percentile(seconds, 99), "max": max(seconds), "mean": statistics.fmean(seconds)},
        latency_ms_by_kind={kind: {"p50": percentile(v, 50), "p95": percentile(v, 95)}
                            for kind, v in by_kind.items() if v},
        throughput_qps=len(plan) / wall, errors=len(failed) + len(broken),
        exceptions=failures.count("exception") + len(broken), warnings=failures.count("warning"),
        wrong_answers=failures.count("wrong"),
        examples_of_errors=(broken + [f"{q.describe()}: {a.error}" for q, a in failed])[:10],
        rss_mib={"start": rss_start, "warm": rss_warm, "peak": rss_peak, "end": rss_end,
                 "growth": rss_end - rss_warm, "hwm": rss_hwm},
        rss_mib_by_progress=progress)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--queries", type=int, default=500, help="queries in all")
    parser.add_argument("--pool", type=int, default=60, help="distinct queries (asked once first: warm-up)")
    parser.add_argument("--k", type=int, default=12, help="results per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-timeout", type=float, default=3600, help="seconds for app.py to listen "
                                                                          "(a first start indexes the gallery)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(own)
    report = run_load(app_args, args.clients, args.queries, args.pool, args.k, args.seed, args.start_timeout)
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
