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
        out[key.strip()] = yaml.safe_load(value)
    return out


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
    link_threshold: float = typer.Option(0.5, "--link-threshold", min=0.0, max=2.0,
                                         help="Cross-camera: largest mean cosine distance at which two groups "
                                              "of tracklets are one person."),
    tracklet_samples: int = typer.Option(8, "--tracklet-samples", min=1,
                                         help="Cross-camera: crops embedded per tracklet, spread along it."),
    render_kind: Optional[str] = typer.Option(None, "--render", help="sheet: OUT/render/<sequence>.png, 12 frames "
                                              "with the tracks drawn; video: OUT/render/<sequence>.mp4, every "
                                              "frame (global ids with --cross-camera)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace results in OUT made with other settings."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N (torch checkpoints)."),
) -> None:
    """Track people through each camera's detections with a BoxMOT tracker and keyreid embeddings."""
    from keyreid.errors import KeyreidError
    from keyreid.tracking.job import TrackOutput, locked_output, settings_of
    from keyreid.tracking.mot import find_sequences, read_mot, write_mot
    from keyreid.tracking.run import APPEARANCE_TRACKERS, check_tracker_name, require_boxmot, track_sequence
    from keyreid.utils.progress import progress_bar

    check_tracker_name(tracker)
    options = _options(tracker_option)
    if render_kind is not None and render_kind not in ("sheet", "video"):
        raise KeyreidError(f"--render {render_kind!r}: one of sheet, video")
    if tracker in APPEARANCE_TRACKERS and checkpoint is None:
        raise KeyreidError(f"{tracker} matches people by appearance: pass --checkpoint CKPT (a keyreid model), "
                           "or choose --tracker bytetrack / ocsort")
    if cross_camera and checkpoint is None:
        raise KeyreidError("--cross-camera matches tracks by appearance: pass --checkpoint CKPT (a keyreid model)")
    seqs = find_sequences(sequences)
    for info in seqs:  # every input problem before the first frame is tracked
        info.check_frames()
    dets = {info.name: read_mot(info.root / "det" / "det.txt", "det", info) for info in seqs}
    require_boxmot()
    encoder = None
    if checkpoint is not None and (tracker in APPEARANCE_TRACKERS or cross_camera):
        from keyreid.tracking.encoder import KeyreidEncoder

        encoder = KeyreidEncoder(checkpoint, batch_size=batch_size, device=device)
    elif checkpoint is not None:
        console.print(f"{tracker} uses motion only: --checkpoint is not used", markup=False)
    appearance = encoder if tracker in APPEARANCE_TRACKERS else None
    settings = settings_of(tracker, None if appearance is None else appearance.model, static_camera, options)
    with locked_output(output):
        out = TrackOutput(output, settings, overwrite=overwrite)
        todo = [info for info in seqs if info.name not in out.done]
        if len(todo) < len(seqs):
            console.print(f"continuing in {output}: {len(seqs) - len(todo)} of {len(seqs)} sequences already "
                          "tracked with these settings", markup=False, highlight=False)
        with progress_bar(stream=sys.stderr) as bar:
            for info in todo:
                d = dets[info.name]
                task = bar.add_task(f"{info.name} ({tracker})", total=info.length)
                res = track_sequence(info, d, tracker, appearance, static_camera, options,
                                     progress=lambda f, t=task: bar.update(t, completed=f))
                write_mot(out.result_path(info.name), res.frames, res.ids, res.boxes, res.scores)
                out.finished(info.name, {"frames": info.length, "fps": round(res.fps, 2), "boxes": int(len(res.ids)),
                                         "tracks": int(len(set(res.ids.tolist()))), "detections": int(len(d)),
                                         "skipped": d.skipped, "clipped": d.clipped})
        for info in seqs:
            e = out.done[info.name]
            skipped = ", ".join(f"{n} {why}" for why, n in e.get("skipped", {}).items())
            console.print(f"{info.name}: {e['tracks']} tracks over {e['frames']} frames at {e['fps']:.1f} frames/s "
                          f"-> {out.result_path(info.name)}" + (f" (skipped: {skipped})" if skipped else "")
                          + (f" ({e['clipped']} boxes clipped to the frame)" if e.get("clipped") else ""),
                          markup=False, highlight=False)
        results = {info.name: out.result_path(info.name) for info in seqs}
        if cross_camera:
            from keyreid.tracking.associate import associate_sequences

            tracklets, labels = associate_sequences(seqs, results, encoder, output, link_threshold, tracklet_samples)
            console.print(f"across {len(seqs)} cameras: {len(tracklets)} tracklets -> {len(set(labels.tolist()))} "
                          f"identities -> {output / 'global'}/, {output / 'identities.csv'}", markup=False,
                          highlight=False)
        if render_kind is not None:
            from keyreid.tracking.mot import read_mot
            from keyreid.tracking.render import render

            for info in seqs:
                drawn = output / "global" / f"{info.name}.txt" if cross_camera else results[info.name]
                path = render(render_kind, output / "render" / f"{info.name}.{'png' if render_kind == 'sheet' else 'mp4'}",
                              info, read_mot(drawn, "results", info))
                console.print(f"drew {info.name} -> {path}", markup=False, highlight=False)
    if evaluate:
        from keyreid.tracking.metrics import cross_camera_idf1, evaluate_tracks

        metrics = evaluate_tracks(seqs, results)
        if cross_camera:
            metrics["cross-camera"] = cross_camera_idf1(
                seqs, {info.name: output / "global" / f"{info.name}.txt" for info in seqs})
        print_metrics(metrics, f"{tracker}, {'keyreid ' + checkpoint.name if appearance else 'no appearance'}")


def eval_tracks(
    results: Path = typer.Argument(..., help="Folder of MOT result files named <sequence>.txt."),
    gt: Path = typer.Argument(..., help="A MOTChallenge sequence with gt/gt.txt, or a folder of them."),
    cross_camera: bool = typer.Option(False, "--cross-camera", help="Also cross-camera IDF1: ids in the results "
                                      "and gt are global across the sequences."),
) -> None:
    """TrackEval's HOTA, DetA, AssA, IDF1, MOTA and ID switches of results made elsewhere."""
    from keyreid.errors import DataError
    from keyreid.tracking.metrics import cross_camera_idf1, evaluate_tracks
    from keyreid.tracking.mot import find_sequences, read_mot

    seqs = find_sequences(gt)
    files = {}
    for info in seqs:
        path = results / f"{info.name}.txt"
        if not path.is_file():
            raise DataError(path, f"missing: RESULTS needs one file per sequence of GT ({info.name}.txt)")
        read_mot(path, "results", info)  # a malformed line is named here, not deep in TrackEval
        read_mot(info.root / "gt" / "gt.txt", "gt", info)
        files[info.name] = path
    metrics = evaluate_tracks(seqs, files)
    if cross_camera:
        metrics["cross-camera"] = cross_camera_idf1(seqs, files)
    print_metrics(metrics, f"{results}")
