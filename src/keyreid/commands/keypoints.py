"""`keyreid keypoints ...`: estimate keypoint sidecars, check them, draw them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from keyreid.commands.datasets import _parse_options
from keyreid.pose.estimators import PREPROCESS  # light: no estimator package is imported

PREPROCESS_NAMES = tuple(PREPROCESS)
SHOW_MISSING = 10  # images with nobody found listed on screen; all of them go to the file

app = typer.Typer(help="Estimate, check and draw keypoint sidecars.", no_args_is_help=True)


def _console():
    from rich.console import Console

    return Console(soft_wrap=True)  # long paths stay on one line in logs


def _fail(console, e: Exception, code: int = 2):
    console.print(f"error: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


@app.command()
def estimate(
    root: Path = typer.Argument(..., help="Dataset root folder."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Adapter name, e.g. market1501."),
    output: Path = typer.Option(..., "--output", "-o", help="Sidecar to write (or resume)."),
    estimator: str = typer.Option("mediapipe", "--estimator", "-e",
                                  help="mediapipe (offline) or rtmpose (downloads its model)."),
    model: Optional[str] = typer.Option(None, "--model",
                                        help="rtmpose: model name, URL or local .onnx file."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1,
                                        help="Only the first N images (train, query, gallery order)."),
    min_long_side: Optional[int] = typer.Option(
        None, "--min-long-side", min=0, help="Upscale crops to this long side first (0 = off)."),
    margin: Optional[float] = typer.Option(None, "--margin", min=0.0,
                                           help="Padding around the crop, fraction of its long side "
                                                "(square and crop layouts)."),
    preprocess: Optional[str] = typer.Option(
        None, "--preprocess", help="mediapipe: how a crop is laid out, one of "
        f"{', '.join(PREPROCESS_NAMES)} (default tall-edge; square-black was the old default)."),
    retry: Optional[str] = typer.Option(
        None, "--retry", help="mediapipe: a second layout for images where nobody is found, or "
        "'none' (default tall-edge-1.5)."),
    option: Optional[list[str]] = typer.Option(None, "--option",
                                               help="Adapter option KEY=VALUE (repeatable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run a pose estimator over every image; an interrupted run resumes where it stopped.

    Prints the detection rate and writes the images with nobody found to OUTPUT's .missing.txt
    (kp.jsonl -> kp.missing.txt); `keypoints show ROOT OUTPUT --missing` draws them."""
    from keyreid.data.datasets.base import build_dataset
    from keyreid.errors import KeyreidError
    from keyreid.pose import build_estimator, estimate_dataset

    console = _console()
    kwargs: dict = {"batch_size": batch_size}
    if min_long_side is not None:
        kwargs["min_long_side"] = min_long_side
    if margin is not None:
        kwargs["margin"] = margin
    if model is not None:
        if estimator != "rtmpose":
            raise typer.BadParameter("--model is for --estimator rtmpose", param_hint="--model")
        kwargs["model"] = model
    for flag, value, key in (("--preprocess", preprocess, "preprocess"), ("--retry", retry, "retry")):
        if value is None:
            continue
        if estimator != "mediapipe":
            raise typer.BadParameter(f"{flag} is for --estimator mediapipe", param_hint=flag)
        if value not in PREPROCESS_NAMES and not (key == "retry" and value == "none"):
            extra = ", none" if key == "retry" else ""
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(PREPROCESS_NAMES)}{extra}",
                                     param_hint=flag)
        kwargs[key] = None if value == "none" else value
    try:
        ds = build_dataset(dataset, root, **_parse_options(option))
        est = build_estimator(estimator, **kwargs)
        with est:
            summary = estimate_dataset(ds, output, est, batch_size=batch_size, limit=limit,
                                       progress=progress)
    except (KeyreidError, KeyError, TypeError, ValueError) as e:
        _fail(console, e)
    console.print(f"{summary.images:,} image(s): {summary.already_done:,} already in the sidecar, "
                  f"{summary.estimated:,} estimated now -> {summary.sidecar}", markup=False,
                  highlight=False)
    rate = _pct(summary.detection_rate) if summary.images else "-"
    line = f"person found in {summary.found:,} / {summary.images:,} images ({rate})"
    if summary.estimated:
        line += (f"; of the {summary.estimated - summary.no_person:,} found now, "
                 f"{summary.implausible:,} with an implausible skeleton")
    console.print(line, markup=False, highlight=False)
    if summary.implausible_items:
        console.print(f"implausible skeletons (kept in the sidecar; check them), listed with the reason in "
                      f"{summary.implausible_file}:", markup=False, highlight=False)
        for key, why in summary.implausible_items[:SHOW_MISSING]:
            console.print(f"  - {key}: {why}", markup=False, highlight=False)
        if len(summary.implausible_items) > SHOW_MISSING:
            console.print(f"  ... and {len(summary.implausible_items) - SHOW_MISSING:,} more", markup=False,
                          highlight=False)
    if summary.missing:
        console.print(f"nobody found in {len(summary.missing):,} image(s) (stored as "
                      f"all-invisible), listed in {summary.missing_file}:", markup=False,
                      highlight=False)
        for key in summary.missing[:SHOW_MISSING]:
            console.print(f"  - {key}", markup=False, highlight=False)
        if len(summary.missing) > SHOW_MISSING:
            console.print(f"  ... and {len(summary.missing) - SHOW_MISSING:,} more; draw them with "
                          f"`keyreid keypoints show {root} {output} --missing`", markup=False,
                          highlight=False)


@app.command()
def check(
    sidecar: Path = typer.Argument(..., help="Keypoint sidecar (JSON Lines)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset root (coverage, image bounds)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Adapter name."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r",
                                             help="Reference sidecar (annotations) for PCK."),
    threshold: float = typer.Option(0.1, "--threshold", min=0.0, help="PCK threshold."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", min=0.0, max=1.0,
                                         help="Predicted keypoints below this count as invisible."),
    option: Optional[list[str]] = typer.Option(None, "--option",
                                               help="Adapter option KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Coverage, visibility per keypoint, out-of-image points and PCK; exit 1 on problems."""
    from rich.table import Table

    from keyreid.data.datasets.base import build_dataset
    from keyreid.errors import KeyreidError
    from keyreid.pose import check_sidecar

    console = _console()
    if (root is None) != (dataset is None):
        raise typer.BadParameter("give both --root and --dataset, or neither")
    try:
        ds = build_dataset(dataset, root, **_parse_options(option)) if root is not None else None
        rep = check_sidecar(sidecar, ds, reference, threshold=threshold,
                            min_confidence=min_confidence)
    except (KeyreidError, KeyError, TypeError, ValueError) as e:
        _fail(console, e)
    if as_json:
        out = {k: v for k, v in rep.__dict__.items() if k != "pck"}
        out["coverage"] = rep.coverage
        out["pck"] = rep.pck.as_dict() if rep.pck else None
        typer.echo(json.dumps(out, indent=1, default=str))
    else:
        console.print(f"{rep.sidecar}: skeleton {rep.skeleton}, {rep.entries:,} entries, "
                      f"{rep.empty_entries:,} with nothing visible")
        if rep.dataset_images is not None:
            console.print(f"coverage: {rep.dataset_images - len(rep.missing):,} / "
                          f"{rep.dataset_images:,} dataset images ({_pct(rep.coverage)}); "
                          f"{len(rep.extra):,} entries for files not in the dataset")
        table = Table(title="per keypoint")
        for col in ("keypoint", "visible", "mean conf"):
            table.add_column(col, justify="left" if col == "keypoint" else "right")
        if rep.pck:
            table.add_column(f"PCK@{rep.pck.threshold:g}", justify="right")
        for name in rep.visibility:
            row = [name, _pct(rep.visibility[name]), f"{rep.mean_confidence[name]:.2f}"
                   if not math.isnan(rep.mean_confidence[name]) else "-"]
            if rep.pck:
                row.append(_pct(rep.pck.per_keypoint[name]))
            table.add_row(*row)
        console.print(table)
        if rep.pck:
            p = rep.pck
            console.print(f"PCK@{p.threshold:g}: {_pct(p.overall)} of {p.counted:,} reference "
                          f"keypoints in {p.images:,} images ({p.missing:,} images missing, "
                          f"{p.detected:,} with a detection; on those {_pct(p.overall_detected)})")
    if rep.missing or rep.out_of_image:
        if not as_json:
            for m in rep.missing[:10]:
                console.print(f"  - no entry: {m}", markup=False, highlight=False)
            if len(rep.missing) > 10:
                console.print(f"  ... and {len(rep.missing) - 10:,} more without an entry")
            for m in rep.out_of_image[:10]:
                console.print(f"  - {m}", markup=False, highlight=False)
            if len(rep.out_of_image) > 10:
                console.print(f"  ... and {len(rep.out_of_image) - 10:,} more points outside")
        raise typer.Exit(1)


@app.command()
def show(
    root: Path = typer.Argument(..., help="Dataset root the sidecar paths are relative to."),
    sidecar: Path = typer.Argument(..., help="Keypoint sidecar."),
    n: int = typer.Option(16, "--n", "-n", min=1, help="Number of images."),
    output: Path = typer.Option(Path("keypoints.png"), "--output", "-o", help="PNG to write."),
    seed: int = typer.Option(0, "--seed", help="Which images (random sample, reproducible)."),
    columns: int = typer.Option(8, "--columns", min=1),
    scale: float = typer.Option(3.0, "--scale", min=0.5, help="Upscale small crops for drawing."),
    min_confidence: float = typer.Option(0.0, "--min-confidence", min=0.0, max=1.0,
                                         help="Draw keypoints below this hollow."),
    detected_only: bool = typer.Option(False, "--detected-only",
                                       help="Skip entries with nothing visible."),
    missing: bool = typer.Option(False, "--missing",
                                 help="Only the images where nobody was found (nothing visible)."),
) -> None:
    """Draw skeletons over a sample of the sidecar's images into a PNG grid."""
    import numpy as np

    from keyreid.data.keypoints import get_skeleton, read_sidecar
    from keyreid.data.loader import read_image
    from keyreid.errors import DataError, KeyreidError
    from keyreid.pose.workflow import nobody_found
    from keyreid.viz.skeleton import save_skeleton_grid

    console = _console()
    try:
        if missing and detected_only:
            raise typer.BadParameter("--missing and --detected-only exclude each other")
        name, entries = read_sidecar(sidecar)
        empty = set(nobody_found(entries))
        keys = sorted(k for k in entries
                      if (k in empty if missing else not detected_only or k not in empty))
        if not keys and missing:
            # good news, not a mistake: say so and succeed (nothing is written)
            console.print(f"{sidecar}: somebody was found in every one of its {len(entries):,} image(s); "
                          "nothing to draw with --missing", markup=False, highlight=False)
            return
        if not keys:
            raise DataError(sidecar, "no entries to draw")
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(keys), size=min(n, len(keys)), replace=False))
        chosen = [keys[i] for i in pick]
        images = [read_image(str(Path(root) / k)) for k in chosen]
        path = save_skeleton_grid(output, images, [entries[k] for k in chosen], get_skeleton(name),
                                  columns=columns, scale=scale, min_confidence=min_confidence,
                                  captions=[Path(k).stem for k in chosen])
    except (KeyreidError, ValueError) as e:
        _fail(console, e)
    what = " with nobody found" if missing else ""
    console.print(f"wrote {path} ({len(chosen)} of {len(keys)} image(s){what})", markup=False,
                  highlight=False)
