"""k-reciprocal re-ranking speed and memory: keyreid (sparse; default bf16-candidate neighbour
pass, and the exact float32 pass) vs torchreid and fast-reid (dense).

    .venv/bin/python bench/rerank_speed.py                    # small and Market-1501 sizes
    .venv/bin/python bench/rerank_speed.py --sizes msmt17 --methods keyreid   # only keyreid fits

Every method starts from the same features (2048-d, identities as Gaussian clusters, made
from a seed in each subprocess) and ends with the re-ranked query x gallery matrix; the peers'
time includes the three distance matrices they take as input (computed with keyreid's
distance_matrix, the fastest we have, and handed over as sqrt so that their squaring gives the
same base distance). Each method runs in its own subprocess so peak memory is its own (the
peak-RSS mark is reset after the data are built). "max abs diff" compares with keyreid's matrix;
mAP and R1 are the re-id metrics of each re-ranked matrix (identities from the same seed, 6
cameras at random), so the fast and exact keyreid rows can be compared to 1e-4.
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
METHODS = ("keyreid", "keyreid-exact", "torchreid", "fastreid")
DIM = 2048
# Per-dimension noise around each identity's centre: 3.5 makes the base mAP about that of a
# real re-ID model (1.2, used before, separated every identity perfectly: mAP 100 %, so the
# fast and exact passes could not differ in it).
NOISE = 3.5


def make_features(size: str, seed: int = 0):
    q, g, _ = make_labelled(size, seed)
    return q, g


def make_labelled(size: str, seed: int = 0):
    """Features and (pids, cameras) of queries and gallery, all from the seed."""
    nq, ng, ids = SIZES[size]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, DIM), dtype=np.float32)
    qp, gp = rng.integers(0, ids, nq), rng.integers(0, ids, ng)
    q = centres[qp] + NOISE * rng.standard_normal((nq, DIM), dtype=np.float32)
    g = centres[gp] + NOISE * rng.standard_normal((ng, DIM), dtype=np.float32)
    cams = np.random.default_rng(seed + 1)
    return q, g, (qp, gp, cams.integers(0, 6, nq), cams.integers(0, 6, ng))


def _runner(method: str):
    sys.path.insert(0, str(HERE.parent / "src"))
    from keyreid.evaluation.distance import distance_matrix
    from keyreid.evaluation.rerank import re_ranking

    if method.startswith("keyreid"):
        exact = True if method == "keyreid-exact" else None
        return lambda q, g: re_ranking(q, g, k1=20, k2=6, lambda_value=0.3, exact=exact)
    path = {"torchreid": ("torchreid", "reid", "utils", "rerank.py"),
            "fastreid": ("fastreid", "evaluation", "rerank.py")}[method]
    mod = load_by_path(f"_{method}_rerank", required_site_file(*path))

    def run(q, g):
        root = lambda a, b: np.sqrt(np.maximum(distance_matrix(a, b), 0))  # noqa: E731
        return mod.re_ranking(root(q, g), root(q, q), root(g, g), k1=20, k2=6, lambda_value=0.3)

    return run


def worker(method: str, size: str, out: Path) -> dict:
    run = _runner(method)
    q, g, labels = make_labelled(size)
    if method.startswith("keyreid"):
        run(q[:500], g[:4000])  # numba compile / cache load (both passes) outside the timed call
    rss_before = _status_kb("VmRSS")
    reset_ok = _reset_peak()
    t0 = time.perf_counter()
    dist = run(q, g)
    seconds = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    from keyreid.evaluation.reid import evaluate

    m = evaluate(dist, *labels)
    if out is not None:
        np.save(out, dist.astype(np.float32))
    return {"method": method, "size": size, "seconds": seconds, "mAP": float(m.mAP),
            "R1": float(m.cmc[0]), "R5": float(m.cmc[4]),
            "extra_gb": (peak - rss_before) / 2**20 if reset_ok else None}


def _estimated_need_gb(method: str, size: str) -> float:
    nq, ng, _ = SIZES[size]
    n = nq + ng
    if method.startswith("keyreid"):
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
    blank = ("",) * 6
    for size in args.sizes:
        ref, exact_metrics = None, None
        for method in args.methods:
            need, avail = _estimated_need_gb(method, size), _mem_available_gb()
            if need > 0.85 * avail:
                rows.append((size, method, f"skipped: needs ~{need:.0f} GB, {avail:.0f} GB available", *blank))
                print(f"  {size} {method}: {rows[-1][2]}", flush=True)
                continue
            out = args.tmp / f"{method}_{size}.npy"
            proc = subprocess.run([sys.executable, __file__, "--worker", method, size, str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append((size, method, f"failed: {proc.stderr.strip()[-200:]}", *blank))
                print(f"  {size} {method}: {rows[-1][2]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            dist = np.load(out)
            if method == "keyreid":
                ref, ref_seconds, diff, speedup = dist, r["seconds"], "-", "-"
            else:
                diff = f"{float(np.abs(dist - ref).max()):.1e}" if ref is not None else "?"
                speedup = f"{r['seconds'] / ref_seconds:.1f}x" if ref is not None else "?"
            del dist
            out.unlink()
            if method == "keyreid-exact":
                exact_metrics = r
            rows.append([size, method, f"{r['seconds']:.2f}", speedup,
                         f"{r['extra_gb']:.2f}" if r["extra_gb"] is not None else "?", diff,
                         f"{100 * r['mAP']:.4f}", f"{100 * r['R1']:.4f}", r])
            print(f"  {size} {method}: {r['seconds']:.2f} s, +{r['extra_gb']:.2f} GB, mAP {r['mAP']:.6f}, "
                  f"R1 {r['R1']:.6f}", flush=True)
        for row in rows:  # metric differences to the exact pass, once it has run
            if row[0] == size and isinstance(row[-1], dict):
                r = row.pop()
                row.append("-" if exact_metrics is None else
                           f"{max(abs(r[m] - exact_metrics[m]) for m in ('mAP', 'R1', 'R5')):.1e}")
    print()
    print("| size (Q x G) | method | time (s) | keyreid speed-up | peak extra memory (GB) | max abs diff vs keyreid "
          "| mAP (%) | R1 (%) | max abs mAP/R1/R5 diff vs keyreid-exact |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, method, *rest in rows:
        nq, ng, _ = SIZES[size]
        print(f"| {size} ({nq} x {ng}) | {method} | " + " | ".join(rest) + " |")
    print(f"\nload average at end {machine()['load_avg'][0]:.2f}")


if __name__ == "__main__":
    main()
