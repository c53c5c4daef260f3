"""Gallery search speed: build time, query latency (single and batched) and recall@10 against
exact search, for faiss flat / IVF / HNSW and Qdrant's local mode, on clustered synthetic vectors.

    .venv/bin/python bench/search_speed.py                     # 100k and 1M, Qdrant local at 20k
    .venv/bin/python bench/search_speed.py --sizes 100000      # quicker

Data: `--dim`-d unit vectors in clusters of ~20 (like identities in a re-ID gallery): a random
centre per cluster plus Gaussian noise, normalised; queries are fresh draws from the same
clusters, never in the gallery. Everything goes through keyreid's GalleryIndex (the path
`keyreid search` takes: faiss or Qdrant, then SQLite / payload metadata, then Hit objects), so
latencies include metadata look-ups. Single-query latency: `--single` queries one at a time
(p50 / p99); batched: all `--batched` queries in one call, per-query time. The `auto` rows are
what `keyreid index build --type auto` picks for that gallery size, with its build-time tuning
(flat up to 20k vectors, pq above: 4-bit PQ fast-scan over every vector, k_factor x 10 candidates
re-scored exactly, k_factor tuned); `ivf fp16 tuned` (auto before session 3) and HNSW M 32 /
efConstruction 64 (auto in session 3) are kept for contrast.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from keyreid.search.index import BACKENDS, add_calibrated

CLUSTER = 20


def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = centres[rng.integers(0, len(centres), m)] + noise * rng.standard_normal((m, dim), dtype=np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top10(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    _, ids = flat.search(queries, 10)
    del flat
    return ids


def recall(hits, truth) -> float:
    return float(np.mean([len({h.id for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth)]))


def latency(index, queries: np.ndarray, single: int, batched: int) -> dict:
    index.search(queries[:2], 10)  # warm: lazy loads, caches
    times = []
    for q in queries[:single]:
        t = time.perf_counter()
        index.search(q[None], 10)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    hits = index.search(queries[:batched], 10)
    per_query = (time.perf_counter() - t) / batched
    return {"p50": 1e3 * np.percentile(times, 50), "p99": 1e3 * np.percentile(times, 99),
            "batched": 1e3 * per_query, "hits": hits}


def build(backend: str, folder: Path, gallery: np.ndarray, index_type: str, **opts):
    t = time.perf_counter()
    index = BACKENDS.get(backend).create(folder, index_type=index_type, fingerprint="bench", dim=gallery.shape[1],
                                         normalized=True, distance="cosine", vectors=gallery, **opts)
    meta = [{"path": f"g/{i}.jpg", "pid": i // CLUSTER, "camid": i % 6, "timestamp": float(i), "track": None}
            for i in range(len(gallery))]
    add_calibrated(index, gallery, meta, "bench")
    index.save()
    return index, time.perf_counter() - t


def run_size(n: int, args, console: Console, rows: list) -> None:
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((max(1, n // CLUSTER), args.dim), dtype=np.float32) / np.sqrt(args.dim)
    t = time.perf_counter()
    gallery = clustered(n, args.dim, centres, rng, args.noise / np.sqrt(args.dim))
    queries = clustered(max(args.single, args.batched), args.dim, centres, rng, args.noise / np.sqrt(args.dim))
    truth = exact_top10(gallery, queries[:args.batched])
    console.print(f"[{n:,}] data + exact ground truth: {time.perf_counter() - t:.1f} s", highlight=False)
    configs = [("faiss flat", "faiss", "flat", {}), ("faiss auto", "faiss", "auto", {})]
    for nprobe in args.nprobe:
        configs.append((f"faiss ivf nprobe {nprobe}", "faiss", "ivf", {"nprobe": nprobe}))
    if args.ivf_tuned:
        configs.append(("faiss ivf fp16 tuned (old auto)", "faiss", "ivf", {"storage": "fp16"}))
    configs.append(("faiss pq k_factor 4", "faiss", "pq", {"k_factor": 4}))
    if n <= args.hnsw_max:
        configs.append(("faiss hnsw M32 efC64 (tuned efSearch)", "faiss", "hnsw",
                        {"hnsw_m": 32, "ef_construction": 64}))
    for name, backend, kind, opts in configs:
        folder = Path(tempfile.mkdtemp(prefix="search-bench-", dir=args.tmp))
        try:
            index, took = build(backend, folder, gallery, kind, **opts)
            lat = latency(index, queries, args.single if kind != "flat" or n < 500_000 else args.single // 4,
                          args.batched)
            rec = recall(lat["hits"], truth)
            p = index.manifest.get("params", {})
            setting = ", ".join(f"{k} {v}" for k, v in p.items() if v is not None) or "-"
            rows.append((f"{n:,}", name, index.manifest["type"], setting, f"{took:.1f}", f"{lat['p50']:.2f}",
                         f"{lat['p99']:.2f}", f"{lat['batched']:.3f}", f"{rec:.3f}"))
            console.print(" | ".join(rows[-1]), highlight=False)
            if index.build_report.get("tried"):
                console.print(f"    build-time tuning on {index.build_report['held_out']} held-out vectors "
                              f"(setting: recall@10): {index.build_report['tried']}", highlight=False)
            index.close()
            del index
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            gc.collect()


def run_qdrant(n: int, args, console: Console, rows: list) -> None:
    rng = np.random.default_rng(n + 1)
    centres = rng.standard_normal((max(1, n // CLUSTER), args.dim), dtype=np.float32) / np.sqrt(args.dim)
    gallery = clustered(n, args.dim, centres, rng, args.noise / np.sqrt(args.dim))
    queries = clustered(max(args.single, args.batched), args.dim, centres, rng, args.noise / np.sqrt(args.dim))
    truth = exact_top10(gallery, queries[:args.batched])
    for name, backend in (("faiss flat", "faiss"), ("qdrant local (exact)", "qdrant")):
        folder = Path(tempfile.mkdtemp(prefix="search-bench-", dir=args.tmp))
        try:
            index, took = build(backend, folder, gallery, "flat")
            lat = latency(index, queries, args.single, args.batched)
            rows.append((f"{n:,}", name, "flat", "-", f"{took:.1f}", f"{lat['p50']:.2f}", f"{lat['p99']:.2f}",
                         f"{lat['batched']:.3f}", f"{recall(lat['hits'], truth):.3f}"))
            console.print(" | ".join(rows[-1]), highlight=False)
            index.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the centre's (~1)")
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--batched", type=int, default=1000)
    ap.add_argument("--nprobe", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--ivf-tuned", action=argparse.BooleanOptionalAction, default=True,
                    help="the IVF fp16 row with nprobe tuned at build time (what auto built before)")
    ap.add_argument("--hnsw-max", type=int, default=100_000,
                    help="the M32 / efConstruction 64 HNSW row only up to this size (its build is slow)")
    ap.add_argument("--qdrant-size", type=int, default=20_000, help="0 to skip")
    ap.add_argument("--tmp", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
                    help="where indexes are built (Qdrant's local mode fsyncs every point: on a disk its "
                         "build takes ~20 ms per vector here)")
    args = ap.parse_args()
    console = Console()
    import faiss

    console.print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs; "
                  f"dim {args.dim}, clusters of {CLUSTER}, noise {args.noise}", highlight=False)
    rows: list = []
    if args.qdrant_size:
        run_qdrant(args.qdrant_size, args, console, rows)
    for n in args.sizes:
        run_size(n, args, console, rows)
    table = Table(title="gallery search (GalleryIndex end to end, top-10)")
    for col in ("gallery", "setting", "type", "parameters", "build s", "p50 ms", "p99 ms", "batched ms/query",
                "recall@10"):
        table.add_column(col, justify="left" if col in ("setting", "parameters") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)


if __name__ == "__main__":
    main()
