"""Tracking metrics through TrackEval (HOTA, DetA, AssA, IDF1, MOTA, ID switches).

The numbers are TrackEval's own (`trackeval.metrics.HOTA`, `CLEAR`, `Identity` on its
MotChallenge2DBox dataset, MOT17 preprocessing); this file only lays the files out the way
TrackEval reads them, in a temporary folder, and picks the numbers out of its result tree.
Cross-camera IDF1 (the multi-camera measure of DukeMTMC / MTMC tracking) is TrackEval's IDF1 on
one virtual sequence: every camera's frames one after another, so a predicted id scores only if
it follows the same person through every camera it enters.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from keyreid.errors import KeyreidError
from keyreid.tracking.mot import SequenceInfo, read_mot

COLUMNS = ("HOTA", "DetA", "AssA", "IDF1", "MOTA", "IDSW", "GT_IDs", "IDs")


def _trackeval():
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints which optional datasets it lacks
            import trackeval
    except ImportError:
        raise KeyreidError("tracking metrics need TrackEval: pip install 'keyreid[track]' && "
                           "pip install --no-deps trackeval==1.3.0") from None
    return trackeval


def _mot_table(path: Path, columns: int) -> np.ndarray:
    try:
        t = np.loadtxt(path, delimiter=",", ndmin=2) if path.stat().st_size else np.zeros((0, columns))
    except ValueError as e:
        raise KeyreidError(f"{path}: not a MOTChallenge file ({str(e).splitlines()[0]})") from None
    if t.shape[1] < 6:
        raise KeyreidError(f"{path}: rows need at least 6 columns (frame,id,left,top,width,height)")
    if t.shape[1] < columns:  # gt without flag/class/visibility: every box counts, a pedestrian
        t = np.hstack([t, np.ones((len(t), columns - t.shape[1]))])
    return t


def _write(path: Path, table: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, table, delimiter=",", fmt="%.6g")


def _evaluate(tmp: Path, lengths: Mapping[str, int]) -> dict:
    trackeval = _trackeval()
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "DISPLAY_LESS_PROGRESS": True,
        "OUTPUT_EMPTY_CLASSES": False, "BREAK_ON_ERROR": True, "RETURN_ON_ERROR": False})
    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(tmp / "gt"), "TRACKERS_FOLDER": str(tmp / "trackers"), "TRACKERS_TO_EVAL": ["keyreid"],
        "OUTPUT_FOLDER": str(tmp / "out"), "SKIP_SPLIT_FOL": True, "TRACKER_SUB_FOLDER": "",
        "SEQ_INFO": dict(lengths), "GT_LOC_FORMAT": "{gt_folder}/{seq}/gt/gt.txt", "BENCHMARK": "MOT17",
        "SPLIT_TO_EVAL": "train", "PRINT_CONFIG": False, "DO_PREPROC": True})
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints its configs and progress
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR(), trackeval.metrics.Identity()]
        try:
            res, _ = evaluator.evaluate([dataset], metrics)
        except Exception as e:  # TrackEval's own TrackEvalException and whatever numpy raises
            raise KeyreidError(f"TrackEval could not evaluate: {e}") from None
    out = {}
    for seq, by_class in res["MotChallenge2DBox"]["keyreid"].items():
        r = by_class["pedestrian"]
        out[seq] = {"HOTA": 100 * float(np.mean(r["HOTA"]["HOTA"])), "DetA": 100 * float(np.mean(r["HOTA"]["DetA"])),
                    "AssA": 100 * float(np.mean(r["HOTA"]["AssA"])), "IDF1": 100 * float(r["Identity"]["IDF1"]),
                    "MOTA": 100 * float(r["CLEAR"]["MOTA"]), "IDSW": int(r["CLEAR"]["IDSW"]),
                    "GT_IDs": int(r["Count"]["GT_IDs"]) if "Count" in r else None,
                    "IDs": int(r["Count"]["IDs"]) if "Count" in r else None}
    return out


def evaluate_tracks(sequences: Sequence[SequenceInfo], results: Mapping[str, Path]) -> dict:
    """{sequence name: metrics, ..., "COMBINED_SEQ": metrics over all}: per-camera MOT metrics
    of `results[name]` (a MOT file) against each sequence's gt/gt.txt. Metrics in percent."""
    with tempfile.TemporaryDirectory(prefix="keyreid-trackeval-") as d:
        tmp = Path(d)
        for info in sequences:
            gt = info.root / "gt" / "gt.txt"
            if not gt.is_file():
                raise KeyreidError(f"{gt}: missing (evaluation needs the sequence's ground truth)")
            if info.name not in results:
                raise KeyreidError(f"no results for sequence {info.name}")
            read_mot(gt, "gt", info)  # a malformed line is named here, not deep inside TrackEval
            read_mot(results[info.name], "results", info)
            _write(tmp / "gt" / info.name / "gt" / "gt.txt", _mot_table(gt, 9))
            _write(tmp / "trackers" / "keyreid" / f"{info.name}.txt", _mot_table(Path(results[info.name]), 10))
        return _evaluate(tmp, {info.name: info.length for info in sequences})


def cross_camera_idf1(sequences: Sequence[SequenceInfo], results: Mapping[str, Path]) -> dict:
    """Metrics of one virtual sequence made of every camera in turn (frames offset by the
    cameras before): IDF1 there is cross-camera IDF1, ids must be global in gt and results."""
    gt_parts, res_parts, offset = [], [], 0
    for info in sequences:
        g = _mot_table(info.root / "gt" / "gt.txt", 9)
        r = _mot_table(Path(results[info.name]), 10)
        g[:, 0] += offset
        r[:, 0] += offset
        gt_parts.append(g)
        res_parts.append(r)
        offset += info.length
    with tempfile.TemporaryDirectory(prefix="keyreid-trackeval-") as d:
        tmp = Path(d)
        _write(tmp / "gt" / "all" / "gt" / "gt.txt", np.concatenate(gt_parts))
        _write(tmp / "trackers" / "keyreid" / "all.txt", np.concatenate(res_parts))
        return _evaluate(tmp, {"all": offset})["all"]
