"""Time and peak memory of `keyreid adapt`'s clustering step (k-reciprocal Jaccard + DBSCAN) on
random clustered unit vectors, printed as a markdown table.

    .venv/bin/python bench/adapt_clustering.py                      # 10k, 30k, 100k, 512-d
    .venv/bin/python bench/adapt_clustering.py --sizes 30000 --dim 2048 --exact-up-to 30000

Each size runs in its own process so that its peak resident memory (ru_maxrss) is its own; the
table gives that peak and the part of it the clustering added over the generated features.
Identities have geometric sizes (mean --per-id) and each its own spread, plus 5% distractor
singletons; "ARI" scores the labels against the true identities (outliers as singletons),
"vs exact" against the labels from the exact neighbour search (sizes up to --exact-up-to),
"recall" is the share of the exact k1 nearest that the search found (1,000 sampled images).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered_vectors(n: int, dim: int, per_id: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < 0.95 * n:
        sizes.append(int(rng.geometric(1.0 / per_id)))
    ids = np.repeat(np.arange(len(sizes)), sizes)[: int(0.95 * n)]
    truth = np.concatenate([ids, len(sizes) + np.arange(n - len(ids))])  # distractors: singletons
    centres = rng.standard_normal((len(sizes), dim), dtype=np.float32)
    spread = rng.uniform(0.5, 0.9, len(sizes)).astype(np.float32)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x[: len(ids)] = centres[ids] + spread[ids, None] * x[: len(ids)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(n)
    return x[perm], truth[perm]


def _singletons(labels: np.ndarray) -> np.ndarray:
    """Outliers (-1) as clusters of one, not as one cluster of all of them."""
    return np.where(labels < 0, labels.max() + 1 + np.arange(len(labels)), labels)


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(_singletons(a), _singletons(b)))


def recall(x: np.ndarray, k: int, search: str, seed: int) -> float:
    import torch

    from keyreid.adapt.jaccard import nearest_neighbours

    feats = torch.from_numpy(x)
    found = nearest_neighbours(feats, k, search)
    rows = np.random.default_rng(seed).choice(len(x), min(1000, len(x)), replace=False)
    true = torch.topk(feats[rows] @ feats.T, k, dim=1).indices.numpy()
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(true, found[rows])]))


def one(args) -> None:
    """Child process: one size, one search; a JSON line on stdout, labels to --labels-out."""
    import torch

    from keyreid.adapt.cluster import cluster

    torch.set_num_threads(args.threads) if args.threads else None
    x, truth = clustered_vectors(args.one, args.dim, args.per_id, args.seed)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    start = time.perf_counter()
    result = cluster(x, eps=args.eps, min_samples=args.min_samples, k1=args.k1, k2=args.k2,
                     search=args.search, strict=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    np.save(args.labels_out, result.labels)
    out = {"n": args.one, "search": args.search, "seconds": seconds, "stages": result.seconds,
           "peak_gb": peak, "base_gb": base, "clusters": result.num_clusters,
           "outliers": result.num_outliers, "ari": adjusted_rand(result.labels, truth),
           "problem": result.problem, "true_ids": int(len(np.unique(truth)))}
    if args.recall and args.search != "exact":
        out["recall"] = recall(x, args.k1, args.search, args.seed)
    print(json.dumps(out), flush=True)


def run(args, n: int, search: str, labels: Path, with_recall: bool) -> dict:
    cmd = [sys.executable, __file__, "--one", str(n), "--search", search, "--labels-out", str(labels)]
    for name in ("dim", "per_id", "eps", "min_samples", "k1", "k2", "seed", "threads"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--recall"] if with_recall else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"size {n} ({search}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (512: MobileNetV2 kae)")
    p.add_argument("--per-id", type=float, default=20.0, help="mean images per identity")
    p.add_argument("--eps", type=float, default=0.6)
    p.add_argument("--min-samples", type=int, default=4)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--search", default="auto", choices=["auto", "exact", "cells", "faiss"])
    p.add_argument("--exact-up-to", type=int, default=30_000,
                   help="also cluster with the exact search up to this size, to compare labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--labels-out", help=argparse.SUPPRESS)
    p.add_argument("--recall", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return one(args)

    from keyreid.adapt.jaccard import EXACT_MAX_IMAGES

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            search = args.search if args.search != "auto" else ("exact" if n <= EXACT_MAX_IMAGES else "cells")
            r = run(args, n, search, Path(tmp, f"{n}.npy"), with_recall=search != "exact")
            if search != "exact" and n <= args.exact_up_to:
                run(args, n, "exact", Path(tmp, f"{n}-exact.npy"), with_recall=False)
                r["vs_exact"] = adjusted_rand(np.load(Path(tmp, f"{n}.npy")), np.load(Path(tmp, f"{n}-exact.npy")))
            rows.append(r)
            print(f"# {n}: {json.dumps(r)}", file=sys.stderr, flush=True)

    print(f"\n{args.dim}-d, k1={args.k1}, k2={args.k2}, eps={args.eps}, min_samples={args.min_samples}, "
          f"~{args.per_id:g} images per identity\n")
    print("| images | search | total s | search s | encode s | jaccard s | dbscan s | peak GB (features) "
          "| clusters (true ids) | outliers | ARI | recall | vs exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        st = r["stages"]
        print(f"| {r['n']:,} | {r['search']} | {r['seconds']:.1f} | {st.get('search', 0):.1f} | "
              f"{st.get('encode', 0):.1f} | {st.get('jaccard', 0):.1f} | {st.get('dbscan', 0):.1f} | "
              f"{r['peak_gb']:.2f} ({r['base_gb']:.2f}) | {r['clusters']:,} ({r['true_ids']:,}) | "
              f"{r['outliers']:,} | {r['ari']:.3f} | {r.get('recall', 1.0):.3f} | "
              f"{r['vs_exact']:.3f} |" if "vs_exact" in r else
              f"| {r['n']:,} | {r['search']} | {r['seconds']:.1f} | {st.get('search', 0):.1f} | "
              f"{st.get('encode', 0):.1f} | {st.get('jaccard', 0):.1f} | {st.get('dbscan', 0):.1f} | "
              f"{r['peak_gb']:.2f} ({r['base_gb']:.2f}) | {r['clusters']:,} ({r['true_ids']:,}) | "
              f"{r['outliers']:,} | {r['ari']:.3f} | {r.get('recall', 1.0):.3f} | - |")


if __name__ == "__main__":
    main()
