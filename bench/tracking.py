"""Tracking benchmark: BoxMOT's trackers x keyreid encoders on synthetic multi-camera video.

    .venv/bin/python bench/tracking.py [--seeds 0 1 2] [--runs runs/demo] [--video-root data/video]
                                       [--rows botsort deepocsort ...] [--link-threshold auto]

Rows (keyreid.demo.tracking.TRACKING_ROWS, the same code `keyreid demo --suite tracking` runs):
ByteTrack and OC-SORT (motion only); BoT-SORT and DeepOCSORT each on motion alone (BoxMOT's
use_embeddings=false: the same tracker without appearance, the fair baseline) and with four
encoders: ImageNet MobileNetV2 features (the demo's backbone, untrained head), the demo's bnneck,
the demo's kae, and kae exported to ONNX. Every row tracks the default `keyreid synth-video`
scene (4 cameras, 30 s at 10 fps, 40 people) of each video seed from its det.txt, static cameras
(camera-motion compensation off), and with an encoder also links the tracks across cameras
(`--cross-camera`, link threshold auto). Metrics are TrackEval's, over the 4 cameras together;
"cross-camera IDF1" is the IDF1 of one virtual sequence of all cameras (global ids).
Frames per second: per camera, reading the JPEG frames, embedding the boxes and the tracker,
timed inside `keyreid track` (the cross-camera step is not in it).

Also: how long reading a 100k-box det.txt takes (vectorised reader vs a line-by-line parse).
Needs `make demo` first (or trains the kae and bnneck runs itself, ~12 min).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def read_speed() -> tuple[float, float]:
    """(seconds of read_mot, seconds of a line-by-line float parse) for 100k detections."""
    from keyreid.tracking.mot import read_mot

    rng = np.random.default_rng(0)
    n = 100_000
    t = np.column_stack([np.sort(rng.integers(1, 3001, n)), -np.ones(n), rng.uniform(1, 300, (n, 2)),
                         rng.uniform(5, 50, (n, 2)), rng.uniform(0, 1, n), -np.ones((n, 3))])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "det.txt"
        np.savetxt(path, t, delimiter=",", fmt="%.2f")
        t0 = time.perf_counter()
        rows = read_mot(path, "det")
        fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        slow_rows = [[float(c) for c in line.split(",")] for line in path.read_text().splitlines()]
        slow = time.perf_counter() - t0
    assert len(rows) == len(slow_rows) == n
    return fast, slow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "demo", help="the demo's output (its seed0 runs)")
    ap.add_argument("--data-root", type=Path, default=ROOT / "data" / "synth")
    ap.add_argument("--video-root", type=Path, default=ROOT / "data" / "video")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_tracking")
    ap.add_argument("--rows", nargs="*", help="only rows whose tracker or encoder is named")
    ap.add_argument("--link-threshold", default="auto")
    ap.add_argument("--encoders", nargs="*", help="only rows with these encoders (and none)")
    ap.add_argument("--appearance-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a BoxMOT tracker option for the rows with an encoder, e.g. proximity_thresh=0.85")
    args = ap.parse_args()
    import yaml

    extra = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.appearance_option)}

    from keyreid.demo.tracking import TRACKING_ROWS, encoders, ensure_video, run_row

    threshold = args.link_threshold if args.link_threshold == "auto" else float(args.link_threshold)
    ckpts = encoders(args.runs, args.data_root, 0)
    results: dict[tuple, list] = {}
    t_all = time.time()
    for seed in args.seeds:
        video = ensure_video(args.video_root / f"seed{seed}", seed)
        for tracker, encoder in TRACKING_ROWS:
            if args.rows and tracker not in args.rows and (encoder or "none") not in args.rows:
                continue
            if args.encoders and encoder is not None and encoder not in args.encoders:
                continue
            tag = (f"{tracker}-{encoder or 'none'}" + ("" if threshold == "auto" else f"-t{threshold:g}")
                   + "".join(f"-{k}{v}" for k, v in sorted(extra.items()) if encoder is not None))
            r = run_row(video, args.out / f"seed{seed}" / tag, tracker, encoder, ckpts, threshold, extra)
            results.setdefault((tracker, encoder), []).append(r)
            print(f"seed {seed} {tracker:10s} {encoder or 'none':9s} HOTA {r.hota:5.1f} IDF1 {r.idf1:5.1f} "
                  f"cross {r.cross_idf1 or float('nan'):5.1f} "
                  f"IDsw {r.idsw:3d} {r.fps:5.1f} fps ({r.seconds:.0f} s)", file=sys.stderr, flush=True)

    def cell(values) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return ""
        return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"

    print(f"\nTracking on synthetic video, seeds {args.seeds} (mean ± std), link threshold {args.link_threshold}"
          + (f", appearance rows with {extra}" if extra else "") + "\n")
    print("| tracker | encoder | HOTA | IDF1 | AssA | ID switches | cross-camera IDF1 | frames/s per camera |")
    print("|---|---|---|---|---|---|---|---|")
    for (tracker, encoder), rs in results.items():
        print(f"| {tracker} | {encoder or 'none (motion only)'} | {cell([r.hota for r in rs])} | "
              f"{cell([r.idf1 for r in rs])} | {cell([r.assa for r in rs])} | {cell([r.idsw for r in rs])} | "
              f"{cell([r.cross_idf1 for r in rs])} | "
              f"{cell([r.fps for r in rs])} |")
    fast, slow = read_speed()
    print(f"\nReading a 100k-box det.txt: {fast:.2f} s vectorised (read_mot), {slow:.2f} s line by line in Python.")
    print(f"\nwall {(time.time() - t_all) / 60:.1f} min; {describe()}")


if __name__ == "__main__":
    main()
