"""`keyreid track SEQ_OR_DIR` and `keyreid eval-tracks RESULTS GT`: BoxMOT trackers with keyreid
appearance, MOTChallenge results, TrackEval metrics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _options(pairs: list[str]) -> dict:
    """KEY=VALUE strings -> {key: number | bool | string} for BoxMOT's TrackerSpec."""
    import yaml

    from keyreid.errors import KeyreidError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KeyreidError(f"--tracker-option {pair!r}: expected KEY=VALUE, e.g. track_buffer=60")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise KeyreidError(f"--tracker-option {pair!r}: the value is not valid YAML (a number, true/false "
                               "or a word)") from None
    return out


def _threshold(value: str):
    from keyreid.errors import KeyreidError

    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise KeyreidError(f"--link-threshold {value!r}: auto, or a cosine distance in [0, 2]") from None


def print_metrics(metrics: dict, title: str) -> None:
    from rich.table import Table

    from keyreid.tracking.metrics import COLUMNS

    table = Table(title=title)
    table.add_column("sequence")
    for c in COLUMNS:
        table.add_column(c, justify="right")
    for name, m in metrics.items():
        table.add_row(name, *[("" if m.get(c) is None else f"{m[c]:.1f}" if isinstance(m[c], float) else str(m[c]))
                              for c in COLUMNS])
    Console().print(table)


def track(
    sequences: Path = typer.Argument(..., help="A MOTChallenge sequence (folder with seqinfo.ini, img1/, "
                                               "det/det.txt) or a folder of them (one per camera)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-m", help="keyreid model for appearance: "
                                              "best.pt / last.pt, MODEL.onnx or MODEL.xml."),
    tracker: str = typer.Option("botsort", "--tracker", "-t",
                                help="botsort | deepocsort | strongsort (appearance) | bytetrack | ocsort (motion)."),
    output: Path = typer.Option(Path("tracks"), "--output", "-o", help="Results folder: OUT/<sequence>.txt "
                                "(an unfinished one is continued)."),
    static_camera: bool = typer.Option(False, "--static-camera", help="Turn off camera-motion compensation "
                                       "(BoT-SORT, DeepOCSORT): faster, and right for fixed cameras."),
    tracker_option: list[str] = typer.Option([], "--tracker-option", help="KEY=VALUE passed to BoxMOT's tracker "
                                             "(repeatable), e.g. track_buffer=60."),
    evaluate: bool = typer.Option(False, "--eval", help="Print HOTA, IDF1, MOTA... against each sequence's "
                                  "gt/gt.txt (TrackEval)."),
    cross_camera: bool = typer.Option(False, "--cross-camera", help="Link every camera's tracks into global "
                                      "identities (needs --checkpoint): OUT/global/<sequence>.txt, "
                                      "OUT/identities.csv; with --eval, cross-camera IDF1."),
    link_threshold: str = typer.Option("auto", "--link-threshold",
                                       help="Cross-camera: largest mean cosine distance at which two groups of "
                                            "tracklets are one person; auto: a low quantile of the distances "
                                            "between people the video proves different."),
    tracklet_samples: int = typer.Option(8, "--tracklet-samples", min=1,
                                         help="Cross-camera: crops embedded per tracklet, spread along it."),
    relink_same_camera: bool = typer.Option(False, "--relink-same-camera", help="Cross-camera: also re-join one "
                                            "camera's fragments of a person by appearance (off: the tracker "
                                            "decides within a camera)."),
    render_kind: Optional[str] = typer.Option(None, "--render", help="sheet: OUT/render/<sequence>.png, 12 frames "
                                              "with the tracks drawn; video: OUT/render/<sequence>.mp4, every "
                                              "frame (global ids with --cross-camera)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results in OUT made with other settings."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (torch checkpoints)."),
) -> None:
    """Track people through each camera's detections with a BoxMOT tracker and keyreid embeddings."""
    from keyreid.tracking.pipeline import TrackRequest, track_folder
    from keyreid.utils.progress import progress_bar

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    req = TrackRequest(sequences, output, tracker, checkpoint, static_camera, _options(tracker_option), cross_camera,
                       _threshold(link_threshold), tracklet_samples, relink_same_camera, render_kind, evaluate,
                       overwrite, batch_size, device)
    with progress_bar(stream=sys.stderr) as bar:
        summary = track_folder(req, bar, say)
    for info in summary.sequences:
        e = summary.done[info.name]
        skipped = ", ".join(f"{n} {why}" for why, n in e.get("skipped", {}).items())
        say(f"{info.name}: {e['tracks']} tracks over {e['frames']} frames at {e['fps']:.1f} frames/s "
            f"-> {output / (info.name + '.txt')}" + (f" (skipped: {skipped})" if skipped else "")
            + (f" ({e['clipped']} boxes clipped to the frame)" if e.get("clipped") else ""))
    if summary.identities is not None:
        say(f"across {len(summary.sequences)} cameras: {summary.tracklets} tracklets -> {summary.identities} "
            f"identities (link threshold {summary.threshold:.3f}) -> {output / 'global'}/, "
            f"{output / 'identities.csv'}")
    for path in summary.rendered:
        say(f"drew {path}")
    if summary.metrics is not None:
        print_metrics(summary.metrics, f"{tracker}, "
                                       f"{'keyreid ' + checkpoint.name if summary.appearance else 'no appearance'}")


def eval_tracks(
    results: Path = typer.Argument(..., help="Folder of MOT result files named <sequence>.txt."),
    gt: Path = typer.Argument(..., help="A MOTChallenge sequence with gt/gt.txt, or a folder of them."),
    cross_camera: bool = typer.Option(False, "--cross-camera", help="Also cross-camera IDF1: ids in the results "
                                      "and gt are global across the sequences."),
) -> None:
    """TrackEval's HOTA, DetA, AssA, IDF1, MOTA and ID switches of results made elsewhere."""
    from keyreid.errors import DataError
    from keyreid.tracking.metrics import cross_camera_idf1, evaluate_tracks
    from keyreid.tracking.mot import find_sequences

    seqs = find_sequences(gt)
    files = {}
    for info in seqs:
        path = results / f"{info.name}.txt"
        if not path.is_file():
            raise DataError(path, f"missing: RESULTS needs one file per sequence of GT ({info.name}.txt)")
        files[info.name] = path
    metrics = evaluate_tracks(seqs, files)
    if cross_camera:
        metrics["cross-camera"] = cross_camera_idf1(seqs, files)
    print_metrics(metrics, f"{results}")
