"""Keypoint estimation on real re-ID-like crops and on the synthetic benchmark, per preprocessing.

    .venv/bin/python bench/keypoints_real.py                     # generates the synthetic set (~40 s)
    .venv/bin/python bench/keypoints_real.py --synth data/synth  # or reuses one
    .venv/bin/python bench/keypoints_real.py --rows square-black,tall-edge+retry

Real crops: tests/real_people.py cuts re-ID-like crops (detector box, squashed to 64x128,
mirrored, blurred, JPEG 25-90) from the three photos of real people that ship in installed
packages (scikit-image's astronaut and cameraman, matplotlib's Grace Hopper; head and torso
only, so partial bodies), with hand-marked keypoints. Synthetic: the first N training images of
the default `keyreid synth` benchmark (seed 0), the set the README's PCK table was measured on.

Everything runs through `keyreid.pose.estimate_dataset` (what `keyreid keypoints estimate`
does). Columns: person found; plausible (found and passing keyreid.pose.quality's checks);
PCK@0.1 over all images (nobody found = all wrong) and over the images with a person found.
mediapipe is deterministic on CPU, so the table repeats exactly.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from real_people import write_real_crops  # noqa: E402  (one real-crop builder for tests and benches)

# label -> (first layout, retry layout or None)
ROWS = {
    "raw": ("raw", None),
    "crop": ("crop", None),
    "square-black": ("square-black", None),
    "square-edge": ("square-edge", None),
    "tall-black": ("tall-black", None),
    "tall-edge": ("tall-edge", None),
    "tall-edge+square-edge": ("tall-edge", "square-edge"),
    "tall-edge+retry": ("tall-edge", "tall-edge-1.5"),
}
DESCRIPTION = {
    "raw": "raw 64x128 crop",
    "crop": "upscale to 256, no padding",
    "square-black": "upscale to 256, square canvas, 25% margin, black (old default)",
    "square-edge": "upscale to 256, square canvas, 25% margin, edge-replicated",
    "tall-black": "upscale to 256, canvas 2x the height, black",
    "tall-edge": "upscale to 256, canvas 2x the height, edge-replicated",
    "tall-edge+square-edge": "tall-edge, then square-edge where nobody is found",
    "tall-edge+retry": "tall-edge, then a canvas 1.5x the height where nobody is found (default)",
}


def measure(ds, reference, first, retry, workdir: Path, tag: str, limit=None) -> dict:
    from keyreid.pose import build_estimator, estimate_dataset, pck

    out = workdir / f"{tag}.jsonl"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with build_estimator("mediapipe", preprocess=first, retry=retry) as est:
        s = estimate_dataset(ds, out, est, limit=limit, progress=False)
    seconds = time.perf_counter() - t0
    p = pck(out, reference)
    return dict(images=s.images, found=s.found, plausible=s.found - s.implausible,
                pck=p.overall, pck_found=p.overall_detected, keypoints=p.counted,
                ms=1000 * seconds / max(1, s.images))


def fmt(r: dict) -> str:
    return (f"{r['found']} / {r['images']} ({100 * r['found'] / r['images']:.1f}%) | "
            f"{r['plausible']} | {100 * r['pck']:.1f}% | {100 * r['pck_found']:.1f}% | "
            f"{r['ms']:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", type=Path, help="synthetic benchmark root (default: generate one)")
    ap.add_argument("--n-synth", type=int, default=400, help="first N training images")
    ap.add_argument("--per-person", type=int, default=20, help="real crops per photo")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated row labels")
    ap.add_argument("--no-synth", action="store_true", help="real crops only")
    args = ap.parse_args()
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")

    from keyreid.data.datasets.base import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real_root = tmp / "real"
        write_real_crops(real_root, args.per_person)
        real = build_dataset("folder", real_root)
        synth = None
        if not args.no_synth:
            root = args.synth
            if root is None:
                from keyreid.data.synthetic import SynthConfig, generate

                root = tmp / "synth"
                print("generating the default synthetic benchmark ...", flush=True)
                generate(root, SynthConfig())
            synth = build_dataset("market1501", root)
        results = {}
        for label in rows:
            first, retry = ROWS[label]
            r = measure(real, real_root / "reference.jsonl", first, retry, tmp, f"real-{label}")
            s = (measure(synth, Path(synth.root) / "keypoints.jsonl", first, retry, tmp,
                         f"synth-{label}", limit=args.n_synth) if synth is not None else None)
            results[label] = (r, s)
            print(f"{label}: real {fmt(r)}" + (f" | synth {fmt(s)}" if s else ""), flush=True)

    r0 = next(iter(results.values()))[0]
    print(f"\nReal crops: {r0['images']} crops of 64x128 from 3 photos, {r0['keypoints']} "
          "hand-marked visible keypoints (head and shoulders)\n")
    print("| preprocessing | person found | plausible | PCK@0.1 | PCK@0.1 (found only) | ms/image |")
    print("|---|---|---|---|---|---|")
    for label, (r, _) in results.items():
        print(f"| {DESCRIPTION[label]} | {fmt(r)} |")
    if synth is not None:
        s0 = next(iter(results.values()))[1]
        print(f"\nSynthetic benchmark: first {s0['images']} training crops of 64x128, "
              f"{s0['keypoints']} visible true keypoints\n")
        print("| preprocessing | person found | plausible | PCK@0.1 | PCK@0.1 (found only) | ms/image |")
        print("|---|---|---|---|---|---|")
        for label, (_, s) in results.items():
            print(f"| {DESCRIPTION[label]} | {fmt(s)} |")


if __name__ == "__main__":
    main()
