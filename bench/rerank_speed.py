"""k-reciprocal re-ranking speed and memory: keyreid (sparse) vs torchreid and fast-reid (dense).

    .venv/bin/python bench/rerank_speed.py                    # small and Market-1501 sizes
    .venv/bin/python bench/rerank_speed.py --sizes msmt17     # keyreid only fits at this size

Every method starts from the same features (2048-d, identities as Gaussian clusters, made
from a seed in each subprocess) and ends with the re-ranked query x gallery matrix; the peers'
time includes the three distance matrices they take as input (computed with keyreid's
distance_matrix, the fastest we have, and handed over as sqrt so that their squaring gives the
same base distance). Each method runs in its own subprocess so peak memory is its own (the
peak-RSS mark is reset after the data are built). "max abs diff" compares with keyreid's matrix.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from eval_speed import _mem_available_gb, _reset_peak, _status_kb, machine
from peers import load_by_path, required_site_file

HERE = Path(__file__).resolve().parent
SIZES = {  # name: (queries, gallery, identities)
    "small": (500, 2500, 200),
    "market": (3368, 15913, 751),
    "msmt17": (11659, 82161, 3060),
}
METHODS = ("keyreid", "torchreid", "fastreid")
DIM = 2048


def make_features(size: str, seed: int = 0):
    nq, ng, ids = SIZES[size]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, DIM), dtype=np.float32)
    q = centres[rng.integers(0, ids, nq)] + 1.2 * rng.standard_normal((nq, DIM), dtype=np.float32)
    g = centres[rng.integers(0, ids, ng)] + 1.2 * rng.standard_normal((ng, DIM), dtype=np.float32)
    return q, g


def _runner(method: str):
    sys.path.insert(0, str(HERE.parent / "src"))
    from keyreid.evaluation.distance import distance_matrix
    from keyreid.evaluation.rerank import re_ranking

    if method == "keyreid":
        return lambda q, g: re_ranking(q, g, k1=20, k2=6, lambda_value=0.3)
    path = {"torchreid": ("torchreid", "reid", "utils", "rerank.py"),
            "fastreid": ("fastreid", "evaluation", "rerank.py")}[method]
    mod = load_by_path(f"_{method}_rerank", required_site_file(*path))

    def run(q, g):
        root = lambda a, b: np.sqrt(np.maximum(distance_matrix(a, b), 0))  # noqa: E731
        return mod.re_ranking(root(q, g), root(q, q), root(g, g), k1=20, k2=6, lambda_value=0.3)

    return run


def worker(method: str, size: str, out: Path) -> dict:
    run = _runner(method)
    q, g = make_features(size)
    if method == "keyreid":
        run(q[:50], g[:200])  # numba compile / cache load outside the timed call
    rss_before = _status_kb("VmRSS")
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    dist = run(q, g)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    np.save(out, dist.astype(np.float32))
    return {"method": method, "size": size, "seconds": seconds,
            "extra_gb": (peak - rss_before) / 2**20 if reset_ok else None}


def _estimated_need_gb(method: str, size: str) -> float:
    nq, ng, _ = SIZES[size]
    n = nq + ng
    if method == "keyreid":
        return 2 * nq * ng * 4 / 2**30 + 1.0
    return 6 * n * n * 4 / 2**30  # dist, its transpose/normalised copy, V, V_qe, argsort, jaccard


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "market"])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--tmp", type=Path, default=HERE / "_build" / "rerank")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        method, size, out = args.worker
        print(json.dumps(worker(method, size, Path(out))))
        return

    info = machine()
    print(f"# machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM; Python "
          f"{info['python']}, numpy {info['numpy']}, numba {info['numba']}; {info['date']}; load "
          f"average at start {info['load_avg'][0]:.2f}", flush=True)
    args.tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        ref = None
        for method in args.methods:
            need, avail = _estimated_need_gb(method, size), _mem_available_gb()
            if need > 0.85 * avail:
                rows.append((size, method, f"skipped: needs ~{need:.0f} GB, {avail:.0f} GB available", "", "", ""))
                print(f"  {size} {method}: {rows[-1][2]}", flush=True)
                continue
            out = args.tmp / f"{method}_{size}.npy"
            proc = subprocess.run([sys.executable, __file__, "--worker", method, size, str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append((size, method, f"failed: {proc.stderr.strip()[-200:]}", "", "", ""))
                print(f"  {size} {method}: {rows[-1][2]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            dist = np.load(out)
            if method == "keyreid":
                ref, ref_seconds, diff, speedup = dist, r["seconds"], "-", "-"
            else:
                diff = f"{float(np.abs(dist - ref).max()):.1e}" if ref is not None else "?"
                speedup = f"{r['seconds'] / ref_seconds:.1f}x" if ref is not None else "?"
            out.unlink()
            rows.append((size, method, f"{r['seconds']:.2f}", speedup,
                         f"{r['extra_gb']:.2f}" if r["extra_gb"] is not None else "?", diff))
            print(f"  {size} {method}: {r['seconds']:.2f} s, +{r['extra_gb']:.2f} GB", flush=True)
    print()
    print("| size (Q x G) | method | time (s) | keyreid speed-up | peak extra memory (GB) | max abs diff vs keyreid |")
    print("|---|---|---:|---:|---:|---:|")
    for size, method, *rest in rows:
        nq, ng, _ = SIZES[size]
        print(f"| {size} ({nq} x {ng}) | {method} | " + " | ".join(rest) + " |")
    print(f"\nload average at end {machine()['load_avg'][0]:.2f}")


if __name__ == "__main__":
    main()
