"""Re-id evaluation speed and memory: keyreid vs torchreid (python) vs fast-reid (Cython).

    .venv/bin/python bench/eval_speed.py            # Market-1501 and MSMT17 sizes
    .venv/bin/python bench/eval_speed.py --quick    # small sizes, a smoke run

Each method runs in its own subprocess on the same synthetic data (regenerated there from
a seed), so peak memory is that method's own: the peak RSS mark is reset (Linux
/proc/self/clear_refs) after the data are built, and "extra" is the peak minus the RSS
just before the call.  fast-reid's rank_cy.pyx is compiled from the installed wheel into
bench/_build/ (git-ignored) with Cython + setuptools.

Synthetic distances are float32 integers ``level * num_gallery + column`` with random
levels (positives drawn from the lowest 5% of levels): no two entries of a row are equal,
so the peers' unstable np.argsort gives the protocol's order and every difference in the
table is numerical, not tie order (ties are covered by the unit tests).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUILD = HERE / "_build"
sys.path.insert(0, str(HERE.parent / "tests"))
from peers import compile_fastreid_rank_cy, load_by_path, required_site_file  # noqa: E402  (one peer loader for tests and benches)

SIZES = {
    # name: (queries, gallery, identities, cameras)
    "market": (3368, 15913, 751, 6),
    "msmt17": (11659, 82161, 3060, 15),
    "quick-a": (300, 1500, 100, 6),
    "quick-b": (800, 4000, 300, 15),
}
METHODS = ("keyreid", "torchreid-py", "fastreid-cy")


# ------------------------------------------------------------------------ data


def make_data(name: str, seed: int = 0):
    nq, ng, n_ids, n_cams = SIZES[name]
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, n_ids, nq)
    g_pids = rng.integers(0, n_ids, ng)  # pid 0 never queried: distractors
    q_cams = rng.integers(0, n_cams, nq)
    g_cams = rng.integers(0, n_cams, ng)
    levels = (1 << 24) // ng - 1  # level * ng + column < 2**24: exact, distinct float32
    col = np.arange(ng, dtype=np.int64)
    d = np.empty((nq, ng), np.float32)
    for s in range(0, nq, 256):
        e = min(s + 256, nq)
        lev = rng.integers(0, levels, (e - s, ng))
        same = q_pids[s:e, None] == g_pids[None, :]
        lev[same] = rng.integers(0, max(1, levels // 20), int(same.sum()))
        d[s:e] = lev * ng + col
    return d, q_pids, g_pids, q_cams, g_cams


# --------------------------------------------------------------------- helpers


def _status_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mem_available_gb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def build_fastreid_cython() -> Path:
    """Compile fast-reid's rank_cy.pyx into bench/_build; reuse it while the source is unchanged."""
    return compile_fastreid_rank_cy(BUILD)


# ---------------------------------------------------------------------- worker


def _runner(method: str):
    """A function (distmat, q_pids, g_pids, q_cams, g_cams) -> (cmc, mAP, mINP, n_valid)."""
    if method == "keyreid":
        sys.path.insert(0, str(HERE.parent / "src"))
        from keyreid.evaluation.reid import evaluate

        def run(*args):
            r = evaluate(*args, max_rank=50)
            return r.cmc, r.mAP, r.mINP, r.num_valid_queries

    elif method == "torchreid-py":
        mod = load_by_path("_torchreid_rank", required_site_file("torchreid", "reid", "metrics", "rank.py"))

        def run(*args):
            cmc, mAP = mod.evaluate_rank(*args, max_rank=50, use_cython=False)
            return cmc, mAP, None, None  # torchreid reports no mINP

    elif method == "fastreid-cy":
        so = next(BUILD.glob("rank_cy*.so"))
        mod = load_by_path("rank_cy", so)

        def run(*args):
            cmc, aps, inps = mod.evaluate_cy(*args, 50)
            return cmc, float(np.mean(aps)), float(np.mean(inps)), len(aps)

    else:
        raise ValueError(method)
    return run


def worker(method: str, size: str, repeats: int) -> dict:
    run = _runner(method)
    data = make_data(size)
    rss_before = _status_kb("VmRSS")
    reset_ok = _reset_peak()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cmc, mAP, mINP, n_valid = run(*data)
        times.append(time.perf_counter() - t0)
    peak = _status_kb("VmHWM") if reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": method,
        "size": size,
        "times": times,
        "peak_rss_gb": peak / 2**20,
        "extra_gb": (peak - rss_before) / 2**20 if reset_ok else None,
        "distmat_gb": data[0].nbytes / 2**30,
        "cmc": np.asarray(cmc, np.float64).tolist(),
        "mAP": float(mAP),
        "mINP": None if mINP is None else float(mINP),
        "n_valid": n_valid,
    }


# ---------------------------------------------------------------------- parent


def _estimated_need_gb(method: str, size: str) -> float:
    nq, ng = SIZES[size][:2]
    dist = nq * ng * 4 / 2**30
    if method == "torchreid-py":
        # argsort int64 indices + g_pids[indices] int64 temporary + int32 matches + bool
        return dist + nq * ng * (8 + 8 + 4 + 1) / 2**30
    if method == "fastreid-cy":
        return dist + nq * ng * 8 / 2**30  # int64 argsort of the whole matrix
    return dist + 0.5


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    ram = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    import numba

    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(ram / 2**20, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "load_avg": os.getloadavg(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="override the sizes")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--repeats", type=int, default=5, help="timed calls of keyreid per size")
    p.add_argument("--peer-repeats", type=int, default=1, help="timed calls of each peer")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "SIZE", "REPEATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        method, size, repeats = args.worker
        print(json.dumps(worker(method, size, int(repeats))))
        return

    sizes = args.sizes or (["quick-a", "quick-b"] if args.quick else ["market", "msmt17"])
    info = machine()
    print(f"# machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM; "
          f"Python {info['python']}, numpy {info['numpy']}, numba {info['numba']}; {info['date']}; "
          f"load average at start {info['load_avg'][0]:.2f}", flush=True)
    if "fastreid-cy" in args.methods:
        build_fastreid_cython()

    results = []
    for size in sizes:
        for method in args.methods:
            need, avail = _estimated_need_gb(method, size), _mem_available_gb()
            if need > 0.85 * avail:
                results.append({"method": method, "size": size,
                                "skipped": f"needs ~{need:.1f} GB, {avail:.1f} GB available"})
                print(f"  {size:8s} {method:13s} skipped: {results[-1]['skipped']}", flush=True)
                continue
            reps = args.repeats if method == "keyreid" else args.peer_repeats
            # keyreid: one untimed call first (numba cache load, thread pool), so steady
            # state is what repeats measure; its cold time is the first of an extra run.
            cmd = [sys.executable, __file__, "--worker", method, size, str(reps + (method == "keyreid"))]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                results.append({"method": method, "size": size,
                                "skipped": f"failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"})
                print(f"  {size:8s} {method:13s} {results[-1]['skipped']}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if method == "keyreid":
                r["cold"] = r["times"][0]
                r["times"] = r["times"][1:]
            r["wall_s"] = time.perf_counter() - t0
            results.append(r)
            print(f"  {size:8s} {method:13s} median {np.median(r['times']):8.3f} s, "
                  f"peak RSS {r['peak_rss_gb']:.2f} GB (subprocess wall {r['wall_s']:.0f} s)", flush=True)
    info["load_avg_end"] = os.getloadavg()

    print()
    print(table(results))
    print(f"\nload average at end {info['load_avg_end'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1))


def table(results: list[dict]) -> str:
    """Markdown table: time, memory and max |difference| of each metric vs keyreid."""
    head = ("| size | method | time (s, median) | keyreid speed-up | peak RSS (GB) | extra over inputs (GB) "
            "| max abs diff CMC@1..50 | abs diff mAP | abs diff mINP |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by_size: dict[str, dict] = {}
    for r in results:
        by_size.setdefault(r["size"], {})[r["method"]] = r
    for size, rs in by_size.items():
        nq, ng = SIZES[size][:2]
        ref = rs.get("keyreid")
        ref_t = np.median(ref["times"]) if ref and "times" in ref else None
        for method in METHODS:
            r = rs.get(method)
            if r is None:
                continue
            label = f"{size} ({nq:,} x {ng:,})"
            if "skipped" in r:
                lines.append(f"| {label} | {method} | skipped: {r['skipped']} | | | | | | |")
                continue
            t = float(np.median(r["times"]))
            tcol = f"{t:.3f}" + (f" (first call {r['cold']:.3f})" if "cold" in r else "")
            speed = "1" if method == "keyreid" else (f"{t / ref_t:.1f}x" if ref_t else "")
            extra = "" if r["extra_gb"] is None else f"{r['extra_gb']:.2f}"
            if method == "keyreid" or not ref or "cmc" not in ref:
                diffs = ["-", "-", "-"]
            else:
                dc = np.max(np.abs(np.asarray(r["cmc"]) - np.asarray(ref["cmc"])))
                dm = abs(r["mAP"] - ref["mAP"])
                di = "n/a" if r["mINP"] is None else f"{abs(r['mINP'] - ref['mINP']):.1e}"
                diffs = [f"{dc:.1e}", f"{dm:.1e}", di]
            lines.append(f"| {label} | {method} | {tcol} | {speed} | {r['peak_rss_gb']:.2f} | {extra} | "
                         + " | ".join(diffs) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
