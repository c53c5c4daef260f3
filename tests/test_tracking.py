"""`keyreid track` / `eval-tracks`: MOTChallenge files, the BoxMOT encoder, TrackEval's metrics
against hand-computed values, resume after a kill and one writer at a time (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from keyreid.errors import DataError
from keyreid.tracking.mot import find_sequences, format_mot, read_mot, read_seqinfo, write_mot
from tests.test_user_mistakes_data import KEYREID, one_error_line, run
from tests.tracking_helpers import read_rows, seqinfo, two_walkers, write_sequence


# ----------------------------------------------------------------------------- MOT files
def test_read_mot_converts_to_zero_based_xyxy_clips_and_counts(tmp_path):
    seq = two_walkers(tmp_path)
    info = read_seqinfo(seq)
    assert (info.name, info.length, info.width, info.height, info.frame_rate) == ("c1", 30, 200, 90, 10.0)
    det = seq / "det" / "det.txt"
    det.write_text("2,-1,11,21,20,40,0.8,-1,-1,-1\n"
                   "1,-1,1,1,10,10,0.5,-1,-1,-1\n"
                   "\n"
                   "1,-1,190,80,30,30,0.7,-1,-1,-1\n"     # crosses the right and bottom edges: clipped
                   "1,-1,300,10,20,20,0.7,-1,-1,-1\n"     # wholly outside: skipped
                   "3,-1,5,5,0,20,0.7,-1,-1,-1\n")       # zero width: skipped
    rows = read_mot(det, "det", info)
    assert rows.frames.tolist() == [1, 1, 2]  # sorted by frame, stable
    np.testing.assert_allclose(rows.boxes, [[0, 0, 10, 10], [189, 79, 200, 90], [10, 20, 30, 60]])
    np.testing.assert_allclose(rows.scores, [0.5, 0.7, 0.8])
    assert rows.skipped == {"zero or negative size": 1, "outside the frame": 1}
    assert rows.clipped == 1
    sl = rows.frame_slices(info.length)
    assert (sl[1], sl[2], sl[3]) == (slice(0, 2), slice(2, 3), slice(3, 3))


def test_write_then_read_is_the_same_boxes(tmp_path):
    boxes = np.array([[0, 0, 10.5, 20.25], [3.5, 4, 7, 9]], np.float32)
    path = tmp_path / "r.txt"
    write_mot(path, [1, 2], [4, 5], boxes, [0.9, 0.5])
    rows = read_mot(path, "results")
    np.testing.assert_allclose(rows.boxes, boxes, atol=1e-2)
    assert rows.ids.tolist() == [4, 5]
    assert path.read_text().splitlines()[0] == "1,4,1.00,1.00,10.50,20.25,0.9000,-1,-1,-1"
    assert format_mot(np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0)) == ""


def test_a_large_detection_file_is_read_in_one_vectorised_pass(tmp_path):
    """100k boxes: the same numbers as a line-by-line Python parse (speed is bench/tracking.py's)."""
    rng = np.random.default_rng(0)
    n = 100_000
    t = np.column_stack([np.sort(rng.integers(1, 1001, n)), -np.ones(n), rng.uniform(1, 300, (n, 2)),
                         rng.uniform(5, 50, (n, 2)), rng.uniform(0, 1, n), -np.ones((n, 3))])
    path = tmp_path / "det.txt"
    np.savetxt(path, t, delimiter=",", fmt="%.3f")
    rows = read_mot(path, "det")
    ref = [list(map(float, line.split(","))) for line in path.read_text().splitlines()]
    ref = np.array(ref)
    assert len(rows) == n
    np.testing.assert_allclose(rows.boxes[:, 0], ref[:, 2] - 1, atol=1e-3)
    np.testing.assert_allclose(rows.boxes[:, 3], ref[:, 3] - 1 + ref[:, 5], atol=1e-3)


@pytest.mark.parametrize("content, problem", [
    ("1,-1,1,1,10,10,0.9,-1,-1,-1\n1,-1,1,1\n", "line 2: expected at least 7 comma-separated numbers, got 4"),
    ("1,-1,1,1,10,10,0.9\n\n2,-1,1,x1,10,10,0.9\n", "line 3: 'x1' is not a number"),
    ("1,-1,1,1,10,10,0.9\n99,-1,1,1,10,10,0.9\n", "line 2: frame 99 is not a frame number from 1 to 30"),
    ("1.5,-1,1,1,10,10,0.9\n", "line 1: frame 1.5 is not a frame number"),
    ("1,-1,1,1,nan,10,0.9\n", "line 1: a value is not finite"),
])
def test_a_malformed_detection_line_is_named_by_file_and_line(tmp_path, capsys, content, problem):
    seq = two_walkers(tmp_path)
    (seq / "det" / "det.txt").write_text(content)
    code, out, err = run(capsys, "track", seq, "--tracker", "bytetrack", "-o", tmp_path / "out")
    line = one_error_line(err)
    assert code == 2
    assert str(seq / "det" / "det.txt") in line and problem in line, line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.txt"))


def test_sequence_mistakes_are_one_line_each(tmp_path, capsys):
    seq = two_walkers(tmp_path)
    out = tmp_path / "out"
    cases = []
    code, _, err = run(capsys, "track", seq, "--tracker", "sort", "-o", out)
    cases.append((code, one_error_line(err), "unknown tracker 'sort'; known: botsort, deepocsort, strongsort, "
                                             "bytetrack, ocsort"))
    code, _, err = run(capsys, "track", seq, "--tracker", "botsort", "-o", out)
    cases.append((code, one_error_line(err), "botsort matches people by appearance: pass --checkpoint"))
    code, _, err = run(capsys, "track", tmp_path / "nothing", "--tracker", "bytetrack", "-o", out)
    cases.append((code, one_error_line(err), "nothing: no such folder"))
    (seq / "img1" / "000017.jpg").unlink()
    code, _, err = run(capsys, "track", seq, "--tracker", "bytetrack", "-o", out)
    cases.append((code, one_error_line(err), "1 of 30 frames are missing (first: 000017.jpg)"))
    (seq / "seqinfo.ini").unlink()
    code, _, err = run(capsys, "track", seq, "--tracker", "bytetrack", "-o", out)
    cases.append((code, one_error_line(err), "holds no MOTChallenge sequence"))
    other = two_walkers(tmp_path / "b")
    (other / "seqinfo.ini").write_text(seqinfo("c1", 30, 200, 90).replace("seqLength=30\n", ""))
    code, _, err = run(capsys, "track", other, "--tracker", "bytetrack", "-o", out)
    cases.append((code, one_error_line(err), "seqinfo.ini: [Sequence] lacks seqLength"))
    third = two_walkers(tmp_path / "c")
    (third / "det" / "det.txt").unlink()
    code, _, err = run(capsys, "track", third, "--tracker", "bytetrack", "-o", out)
    cases.append((code, one_error_line(err), "det.txt: missing (a sequence needs its detections: MOTChallenge rows from your detector"))
    code, _, err = run(capsys, "track", third.parent / "c1", "--tracker", "bytetrack", "-o", out,
                       "--tracker-option", "buffer")
    cases.append((code, one_error_line(err), "--tracker-option 'buffer': expected KEY=VALUE"))
    code, _, err = run(capsys, "track", two_walkers(tmp_path / "d"), "--tracker", "ocsort", "-o", tmp_path / "o5",
                       "--tracker-option", "foo=1")
    cases.append((code, one_error_line(err), "tracker ocsort: "))  # BoxMOT's own words name the option
    assert "'foo'" in one_error_line(err)
    code, _, err = run(capsys, "track", tmp_path / "d" / "c1", "--tracker", "ocsort", "-o", tmp_path / "o6",
                       "--tracker-option", "track_buffer=[1")
    cases.append((code, one_error_line(err), "--tracker-option 'track_buffer=[1': the value is not valid YAML"))
    for code, line, expected in cases:
        assert code == 2 and expected in line, (line, expected)


# ----------------------------------------------------------------------------- the encoder
def test_the_encoder_is_a_boxmot_appearance_encoder_on_the_one_inference_path(adapt_source, tmp_path):
    from boxmot.reid.protocols import AppearanceEncoder
    from boxmot.structures import Boxes, Detections, Frame
    from PIL import Image

    from keyreid.inference import load_model
    from keyreid.tracking import KeyreidEncoder

    enc = KeyreidEncoder(adapt_source)
    assert isinstance(enc, AppearanceEncoder)
    assert enc.embedding_dim == load_model(adapt_source).dim and enc.requirements.masks is False
    seq = two_walkers(tmp_path)
    frames, dets, crops = [], [], []
    for f, boxes in ((1, [[7, 20, 27, 80], [168, 20, 188, 80]]), (2, [[9, 20, 29, 80]])):
        image = np.array(Image.open(seq / "img1" / f"{f:06d}.jpg").convert("RGB"))
        frames.append(Frame(image=torch.from_numpy(image).permute(2, 0, 1).contiguous(), sample_id=str(f)))
        dets.append(Detections(geometry=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                               scores=torch.ones(len(boxes)), class_ids=torch.zeros(len(boxes), dtype=torch.int64),
                               sample_id=str(f)))
        crops += [Image.fromarray(image[y1:y2, x1:x2]) for x1, y1, x2, y2 in boxes]
    out = enc.encode(frames, dets)
    assert [tuple(t.shape) for t in out] == [(2, enc.embedding_dim), (1, enc.embedding_dim)]
    assert all(t.dtype == torch.float32 for t in out)
    np.testing.assert_allclose(torch.cat(out).norm(dim=1).numpy(), 1.0, atol=1e-5)
    ref = load_model(adapt_source).embed(crops, normalize=True)  # the same crops through load_model
    np.testing.assert_allclose(torch.cat(out).numpy(), ref, atol=1e-5)
    assert enc.encode([frames[0]], [dets[0].select(torch.zeros(0, dtype=torch.int64))])[0].shape == (0, enc.embedding_dim)


def test_the_encoder_plugs_into_a_boxmot_tracker_directly(adapt_source, tmp_path):
    """BoxMOT's per-tracker hook: BotSort(reid_model=encoder) calls get_features(boxes, bgr)."""
    from boxmot import BotSort
    from PIL import Image

    from keyreid.tracking import KeyreidEncoder

    enc = KeyreidEncoder(adapt_source)
    calls = []
    original = enc.get_features

    def spy(boxes, image):
        calls.append((np.array(boxes), image.shape))
        return original(boxes, image)

    enc.get_features = spy
    tracker = BotSort(reid_model=enc, use_cmc=False, frame_rate=10)
    seq = two_walkers(tmp_path)
    for f in range(1, 6):
        rgb = np.array(Image.open(seq / "img1" / f"{f:06d}.jpg").convert("RGB"))
        dets = np.array([[5 + 2 * f, 20, 25 + 2 * f, 80, 0.9, 0], [170 - 2 * f, 20, 190 - 2 * f, 80, 0.9, 0]], np.float32)
        out = tracker.update(dets, np.ascontiguousarray(rgb[:, :, ::-1]))
    assert calls and calls[0][1] == (90, 200, 3)
    assert len(out) == 2 and len(set(out[:, 4].astype(int))) == 2  # two tracks, two ids
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_allclose(original(dets[:, :4], bgr), enc.embed_boxes(rgb, dets[:, :4]), atol=1e-6)


@pytest.fixture(scope="module")
def kae_onnx(adapt_source, tmp_path_factory):
    onnx = tmp_path_factory.mktemp("onnx") / "kae.onnx"
    r = subprocess.run([str(KEYREID), "export", str(adapt_source), "-o", str(onnx)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return onnx


def test_the_onnx_export_encodes_like_the_checkpoint(adapt_source, kae_onnx, tmp_path):
    from PIL import Image

    from keyreid.tracking import KeyreidEncoder

    seq = two_walkers(tmp_path)
    frame = Image.open(seq / "img1" / "000003.jpg").convert("RGB")
    boxes = np.array([[11, 20, 31, 80], [164, 20, 184, 80], [0, 0, 0.5, 90]])  # the last one is 0.5 px wide
    a = KeyreidEncoder(adapt_source).embed_boxes(frame, boxes)
    b = KeyreidEncoder(kae_onnx).embed_boxes(frame, boxes)
    assert a.shape == b.shape == (3, a.shape[1])
    assert float((a * b).sum(1).min()) > 0.999


def test_an_encoder_whose_input_size_does_not_match_its_graph_is_one_line(kae_onnx, tmp_path, capsys):
    """A hand-edited model card (another input size) beside an unchanged graph: refused before
    any frame, naming the file and both sizes."""
    import shutil

    edited = tmp_path / "edited.onnx"
    shutil.copyfile(kae_onnx, edited)
    meta = json.loads(Path(str(kae_onnx) + ".json").read_text())
    h, w = meta["card"]["input"]["height"], meta["card"]["input"]["width"]
    meta["card"]["input"]["height"] = 2 * h
    meta["input"]["height"] = 2 * h
    Path(str(edited) + ".json").write_text(json.dumps(meta))
    seq = two_walkers(tmp_path / "seqs")
    code, _, err = run(capsys, "track", seq, "-m", edited, "--tracker", "botsort", "-o", tmp_path / "out")
    line = one_error_line(err)
    assert code == 2 and str(edited) in line, line
    assert f"the graph takes {h}x{w} crops but its model card says {2 * h}x{w}" in line, line


# ----------------------------------------------------------------------------- metrics
def test_trackeval_metrics_match_hand_computed_values(tmp_path):
    """Two people, 30 frames each; the result swaps person 1's id at frame 21: IDF1 by hand =
    2 IDTP / (60 + 60) with IDTP = 20 + 30, one ID switch, MOTA = 1 - 1/60."""
    from keyreid.tracking.metrics import cross_camera_idf1, evaluate_tracks

    seq = two_walkers(tmp_path)
    gt = read_rows(seq / "gt" / "gt.txt")
    res = gt[:, :7].copy()
    res[:, 1] = np.where((gt[:, 1] == 1) & (gt[:, 0] > 20), 9, gt[:, 1])
    path = tmp_path / "res" / "c1.txt"
    path.parent.mkdir()
    np.savetxt(path, np.hstack([res, -np.ones((len(res), 3))]), delimiter=",", fmt="%g")
    m = evaluate_tracks(find_sequences(seq), {"c1": path})["c1"]
    assert m["IDF1"] == pytest.approx(100 * 2 * 50 / 120)
    assert m["IDSW"] == 1 and m["MOTA"] == pytest.approx(100 * (1 - 1 / 60))
    assert m["DetA"] == pytest.approx(100) and m["GT_IDs"] == 2 and m["IDs"] == 3
    # cross-camera: the same two people in a second camera; a result that calls them 1 and 2
    # there too is perfect, one that gives camera 2 new ids scores IDF1 by hand = 2 * 60 / 240
    cam2 = two_walkers(tmp_path, "c2")
    seqs = find_sequences(tmp_path)
    assert [s.name for s in seqs] == ["c1", "c2"]
    np.savetxt(tmp_path / "res" / "c1.txt", np.hstack([gt[:, :7], -np.ones((60, 3))]), delimiter=",", fmt="%g")
    same = read_rows(cam2 / "gt" / "gt.txt")[:, :7]
    np.savetxt(tmp_path / "res" / "c2.txt", np.hstack([same, -np.ones((60, 3))]), delimiter=",", fmt="%g")
    files = {"c1": tmp_path / "res" / "c1.txt", "c2": tmp_path / "res" / "c2.txt"}
    assert cross_camera_idf1(seqs, files)["IDF1"] == pytest.approx(100)
    same[:, 1] += 10
    np.savetxt(tmp_path / "res" / "c2.txt", np.hstack([same, -np.ones((60, 3))]), delimiter=",", fmt="%g")
    assert cross_camera_idf1(seqs, files)["IDF1"] == pytest.approx(100 * 2 * 60 / 240)


def test_eval_tracks_cli_and_its_mistakes(tmp_path, capsys):
    seq = two_walkers(tmp_path / "gt")
    res = tmp_path / "res"
    res.mkdir()
    code, _, err = run(capsys, "eval-tracks", res, seq)
    assert code == 2 and "c1.txt: missing: RESULTS needs one file per sequence" in one_error_line(err)
    (res / "c1.txt").write_text((seq / "gt" / "gt.txt").read_text())
    code, out, _ = run(capsys, "eval-tracks", res, seq)
    assert code == 0 and "│ c1" in out and "100.0" in out
    (res / "c1.txt").write_text("1,2,3\n")
    code, _, err = run(capsys, "eval-tracks", res, seq)
    assert code == 2 and "c1.txt: line 1: expected at least 6 comma-separated numbers" in one_error_line(err)


# ----------------------------------------------------------------------------- keyreid track
def test_track_writes_mot_results_and_metrics(tmp_path, capsys, adapt_source):
    seq = two_walkers(tmp_path / "seqs")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "track", seq, "-m", adapt_source, "--tracker", "botsort", "--static-camera",
                            "-o", out, "--eval")
    assert code == 0, err
    rows = read_rows(out / "c1.txt")
    assert rows.shape[1] == 10 and set(rows[:, 1].astype(int)) == {1, 2}  # ids numbered from 1
    manifest = json.loads((out / "track.json").read_text())
    assert manifest["settings"]["tracker"] == "botsort" and manifest["settings"]["static_camera"] is True
    assert manifest["sequences"]["c1"]["frames"] == 30 and manifest["sequences"]["c1"]["tracks"] == 2
    assert "frames/s" in err and "IDF1" in stdout
    idf1 = float([ln for ln in stdout.splitlines() if "│ c1" in ln][0].split("│")[4])
    assert idf1 > 95
    # other settings in the same folder: refused in one line; --overwrite replaces
    code, _, err = run(capsys, "track", seq, "--tracker", "ocsort", "-o", out)
    assert code == 2 and "holds tracks made with other settings (model, static_camera, tracker)" in one_error_line(err)
    code, _, err = run(capsys, "track", seq, "--tracker", "ocsort", "-o", out, "--overwrite")
    assert code == 0 and json.loads((out / "track.json").read_text())["settings"]["tracker"] == "ocsort"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "track", seq, "--tracker", "ocsort", "-o", foreign)
    assert code == 2 and "holds files but no track.json" in one_error_line(err)
    assert (foreign / "notes.txt").read_text() == "mine"


def _long_sequences(root: Path) -> Path:
    write_sequence(root, "a1", {1: lambda f: 5 + f % 50, 2: lambda f: 150 - f % 50}, 40, width=200)
    write_sequence(root, "b2", {1: lambda f: 5 + f % 50, 2: lambda f: 150 - f % 50}, 400, width=200)
    return root


def test_a_killed_track_resumes_where_it_stopped(tmp_path):
    seqs = _long_sequences(tmp_path / "seqs")
    out = tmp_path / "out"
    env = {**os.environ, "KEYREID_PROGRESS": "off"}
    cmd = [str(KEYREID), "track", str(seqs), "--tracker", "ocsort", "-o", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a1 done, b2 under way
        m = out / "track.json"
        if m.is_file() and "a1" in json.loads(m.read_text())["sequences"]:
            break
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the first run ended before it could be killed"
    assert sorted(p.name for p in out.iterdir()) == [".track.lock", "a1.txt", "track.json"]  # no half b2.txt
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing in" in again.stderr and "1 of 2 sequences already tracked" in again.stderr
    fresh = tmp_path / "fresh"
    whole = subprocess.run(cmd[:-1] + [str(fresh)], capture_output=True, text=True, env=env, timeout=300)
    assert whole.returncode == 0
    for name in ("a1.txt", "b2.txt"):
        assert (out / name).read_bytes() == (fresh / name).read_bytes()


def test_a_second_writer_into_the_same_output_fails_in_one_line(tmp_path):
    """Another process holds OUT's lock (as a running `keyreid track` does): a real second
    `keyreid track` into OUT exits 2 with one line and writes nothing."""
    seq = two_walkers(tmp_path / "seqs")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.track.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = subprocess.run([str(KEYREID), "track", str(seq), "--tracker", "ocsort", "-o", str(out)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2
        assert "another keyreid track is writing here" in one_error_line(r.stderr)
        assert sorted(p.name for p in out.iterdir()) == [".track.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_the_tracking_extra_is_declared_and_installed():
    """BoxMOT and TrackEval come from requirements-nodeps.txt (their opencv-python would clash
    with the headless build); their runtime deps from the `track` extra."""
    root = Path(__file__).resolve().parents[1]
    nodeps = (root / "requirements-nodeps.txt").read_text()
    assert "boxmot==25.0.0" in nodeps and "trackeval==1.3.0" in nodeps
    assert "'.[test,pose,openvino,track]'" in (root / "Makefile").read_text()
    import boxmot
    import cv2

    assert boxmot.__version__ == "25.0.0"
    from importlib.metadata import PackageNotFoundError, version

    with pytest.raises(PackageNotFoundError):
        version("opencv-python")  # only the headless build is installed
    assert cv2.__version__.startswith("4.")


# ----------------------------------------------------------------------------- across cameras
def _tracklet(camera, start, end, emb):
    from keyreid.tracking.tracklets import Tracklet

    frames = np.arange(start, end + 1)
    e = np.asarray(emb, np.float32)
    return Tracklet(camera, 0, frames, np.zeros((len(frames), 4), np.float32), e / np.linalg.norm(e))


def test_one_camera_never_holds_one_person_twice_at_one_time():
    from keyreid.tracking.associate import cannot_link, link_tracklets

    same = [1, 0, 0]
    ts = [_tracklet("c1", 1, 10, same), _tracklet("c1", 5, 15, same), _tracklet("c2", 1, 10, same),
          _tracklet("c1", 20, 30, same), _tracklet("c2", 40, 50, [0, 1, 0])]
    c = cannot_link(ts)
    assert c[0, 1] and c[1, 0] and c.sum() == 2  # only the two overlapping c1 tracklets
    # identical looks, same_camera: A, C and the later D are one person; B overlaps A in c1 and
    # stays apart; E looks different (cosine distance 1 > 0.5)
    assert link_tracklets(ts, threshold=0.5, same_camera=True).tolist() == [1, 2, 1, 1, 3]
    assert link_tracklets(ts, threshold=1.5, same_camera=True).tolist() == [1, 2, 1, 1, 1]  # B still apart
    # by default no two tracklets of one camera merge: C (c2) joins A; B, D (both c1) and E stay apart
    assert link_tracklets(ts, threshold=0.5).tolist() == [1, 2, 1, 3, 4]
    assert link_tracklets([], 0.5).tolist() == []


def test_the_auto_threshold_is_a_low_quantile_of_distances_between_people_proven_different():
    from keyreid.tracking.associate import AUTO_QUANTILE, FALLBACK_THRESHOLD, auto_threshold

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 8))
    ts = [_tracklet("c1", 1, 10, e) for e in emb]  # all at once in one camera: 66 pairs proven different
    e = np.stack([t.embedding for t in ts])
    d = (1 - e @ e.T)[np.triu_indices(12, 1)]
    assert auto_threshold(ts) == pytest.approx(np.quantile(d, AUTO_QUANTILE))
    few = [_tracklet("c1", 1, 10, emb[0]), _tracklet("c1", 5, 9, emb[1]), _tracklet("c2", 1, 10, emb[2])]
    assert auto_threshold(few) == FALLBACK_THRESHOLD  # one proven pair is no distribution


def test_unconstrained_linking_equals_scipy_average_linkage():
    """Without cannot-links (every tracklet in its own camera) the clusters are scipy's average
    linkage on cosine distance cut at the threshold."""
    from scipy.cluster.hierarchy import fcluster, linkage

    from keyreid.tracking.associate import link_tracklets

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 16))
    emb = np.concatenate([c + 0.6 * rng.normal(size=(6, 16)) for c in centres])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ts = [_tracklet(f"c{i}", 1, 5, e) for i, e in enumerate(emb)]
    for threshold in (0.2, 0.4, 0.7):
        ours = link_tracklets(ts, threshold)
        ref = fcluster(linkage(emb, method="average", metric="cosine"), t=threshold, criterion="distance")
        # the same partition (label numbers differ)
        assert len(set(zip(ours.tolist(), ref.tolist()))) == len(set(ours.tolist())) == len(set(ref.tolist()))


def test_track_cross_camera_links_the_same_people_in_two_cameras(tmp_path, capsys, adapt_source):
    seqs = tmp_path / "seqs"
    two_walkers(seqs, "c1")
    two_walkers(seqs, "c2")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "track", seqs, "-m", adapt_source, "--tracker", "ocsort", "-o", out,
                            "--cross-camera", "--eval")
    assert code == 0, err
    assert "4 tracklets -> 2 identities (link threshold 0.500)" in err  # too few proven pairs: the fallback
    table = (out / "identities.csv").read_text().splitlines()
    assert table[0] == "global_id,camera,track_id,first_frame,last_frame,boxes" and len(table) == 5
    row = [ln for ln in stdout.splitlines() if "cross-camera" in ln][0]
    assert float(row.split("│")[4]) == pytest.approx(100.0)  # IDF1 across cameras
    g1, g2 = read_rows(out / "global" / "c1.txt"), read_rows(out / "global" / "c2.txt")
    assert set(g1[:, 1]) == set(g2[:, 1]) == {1, 2}
    code, stdout, err = run(capsys, "track", seqs, "-m", adapt_source, "--tracker", "ocsort", "-o", tmp_path / "o4",
                            "--cross-camera", "--relink-same-camera", "--eval")
    assert code == 0, err
    saved = json.loads((tmp_path / "o4" / "metrics.json").read_text())["metrics"]
    assert saved["COMBINED_SEQ linked"]["IDF1"] == pytest.approx(100.0)
    code, _, err = run(capsys, "track", seqs, "--tracker", "ocsort", "-o", tmp_path / "o2", "--cross-camera")
    assert code == 2 and "--cross-camera matches tracks by appearance: pass --checkpoint" in one_error_line(err)
    code, _, err = run(capsys, "track", seqs, "-m", adapt_source, "--tracker", "ocsort", "-o", tmp_path / "o3",
                       "--cross-camera", "--link-threshold", "near")
    assert code == 2 and "--link-threshold 'near': auto, or a cosine distance in [0, 2]" in one_error_line(err)


def test_render_draws_each_track_in_its_colour_on_a_sheet_and_a_video(tmp_path, capsys):
    import cv2
    from PIL import Image

    from keyreid.tracking.render import id_colour

    seq = two_walkers(tmp_path / "seqs")
    out = tmp_path / "out"
    code, _, err = run(capsys, "track", seq, "--tracker", "ocsort", "-o", out, "--render", "sheet")
    assert code == 0, err
    sheet = np.asarray(Image.open(out / "render" / "c1.png"))
    assert sheet.shape == (3 * 90, 4 * 200, 3)  # 12 frames, 4 columns
    rows = read_rows(out / "c1.txt")
    first = rows[rows[:, 0] == 1]
    for tid, left, top in first[:, 1:4]:  # frame 1 is the first tile: its boxes' left edges in the id's colour
        x, y = int(round(left - 1)), int(round(top - 1)) + 30
        np.testing.assert_allclose(sheet[y, x], id_colour(int(tid)), atol=40)
    code, _, err = run(capsys, "track", seq, "--tracker", "ocsort", "-o", out, "--render", "video")
    assert code == 0, err
    video = cv2.VideoCapture(str(out / "render" / "c1.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 30 and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 200
    video.release()
    assert not [p for p in (out / "render").iterdir() if "partial" in p.name]
    code, _, err = run(capsys, "track", seq, "--tracker", "ocsort", "-o", out, "--render", "gif")
    assert code == 2 and "--render 'gif': one of sheet, video" in one_error_line(err)


def test_an_appearance_tracker_runs_on_motion_alone_with_use_embeddings_false(tmp_path, capsys):
    """BoT-SORT without appearance: the baseline an encoder is measured against; no model needed."""
    seq = two_walkers(tmp_path / "seqs")
    code, _, err = run(capsys, "track", seq, "--tracker", "botsort", "--tracker-option", "use_embeddings=false",
                       "--static-camera", "-o", tmp_path / "out")
    assert code == 0, err
    settings = json.loads((tmp_path / "out" / "track.json").read_text())["settings"]
    assert settings["options"] == {"use_embeddings": False} and settings["static_camera"] is True
    assert settings["model"] is None
    assert set(read_rows(tmp_path / "out" / "c1.txt")[:, 1].astype(int)) == {1, 2}


def test_a_tracklet_is_the_visibility_weighted_mean_of_crops_spread_along_it(adapt_source, kae_onnx, tmp_path):
    from PIL import Image

    from keyreid.tracking import KeyreidEncoder
    from keyreid.tracking.encoder import crop_boxes
    from keyreid.tracking.tracklets import crop_weights, embed_tracklets, sample_rows, split_tracklets

    seq = two_walkers(tmp_path)
    info = read_seqinfo(seq)
    rows = read_mot(seq / "gt" / "gt.txt", "gt", info)
    tracklets = split_tracklets("c1", rows)
    assert [t.track_id for t in tracklets] == [1, 2] and len(tracklets[0].frames) == 30
    picks = sample_rows(tracklets[0], 8)
    assert len(picks) == 8 and picks[0] == 0 and picks[-1] == 29  # from the first frame to the last
    enc = KeyreidEncoder(adapt_source)
    embed_tracklets(info, tracklets, enc, samples=8)
    t = tracklets[0]
    crops = [crop_boxes(Image.open(seq / "img1" / f"{int(t.frames[r]):06d}.jpg").convert("RGB"), t.boxes[r:r + 1])[0]
             for r in picks]
    emb, w = crop_weights(enc, crops)
    assert w.shape == (8,) and np.all((0 <= w) & (w <= 1)) and w.std() > 0  # kae: weights from its heatmaps
    mean = (emb * np.maximum(w, 1e-3)[:, None]).sum(0)
    np.testing.assert_allclose(t.embedding, mean / np.linalg.norm(mean), atol=1e-5)
    _, ones = crop_weights(KeyreidEncoder(kae_onnx), crops)  # no heatmaps in an export: equal weights
    np.testing.assert_array_equal(ones, np.ones(8, np.float32))
