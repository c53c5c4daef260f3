"""The tracking suite's pieces (`keyreid demo --suite tracking`, bench/tracking.py): a video set made
once and reused, the ImageNet encoder, and one table row that carries TrackEval's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keyreid.demo.tracking import TRACKING_ROWS, ensure_video, imagenet_checkpoint, run_row, table

SMALL = {"cameras": 2, "seconds": 3.0, "fps": 5, "width": 192, "height": 108, "identities": 6, "supersample": 1}


def test_rows_pair_every_encoder_with_the_same_tracker_on_motion_alone():
    trackers = {t for t, e in TRACKING_ROWS if e is not None}
    assert trackers == {"botsort", "deepocsort"}
    for t in trackers:  # the fair baseline of each encoder is in the table
        assert (t, None) in TRACKING_ROWS
    assert ("bytetrack", None) in TRACKING_ROWS and ("ocsort", None) in TRACKING_ROWS


def test_a_video_set_is_made_once_and_remade_for_another_config(tmp_path):
    root = ensure_video(tmp_path / "video", 4, SMALL, workers=1)
    stamp = (root / "c1" / "img1" / "000001.jpg").stat().st_mtime_ns
    assert ensure_video(tmp_path / "video", 4, SMALL, workers=1) == root
    assert (root / "c1" / "img1" / "000001.jpg").stat().st_mtime_ns == stamp  # reused, not re-rendered
    ensure_video(tmp_path / "video", 5, SMALL, workers=1)
    assert json.loads((root / "scene.json").read_text())["config"]["seed"] == 5


def test_the_imagenet_encoder_is_the_demo_backbone_with_an_untrained_head(tmp_path, tiny_synth):
    from keyreid.inference import load_model

    ckpt = imagenet_checkpoint(tmp_path / "imagenet.pt", tiny_synth)
    model = load_model(ckpt)
    assert model.card["model"]["backbone"] == "mobilenetv2" and model.input_size == (128, 64)
    f = model.embed([np.full((128, 64, 3), 120, np.uint8), np.zeros((128, 64, 3), np.uint8)])
    assert f.shape == (2, model.dim) and np.isfinite(f).all()
    assert imagenet_checkpoint(tmp_path / "imagenet.pt", tiny_synth) == ckpt  # reused


def test_a_row_reports_trackevals_numbers(tmp_path, adapt_source):
    video = ensure_video(tmp_path / "video", 4, SMALL, workers=1)
    row = run_row(video, tmp_path / "tracks", "botsort", "kae", {"kae": adapt_source})
    saved = json.loads((tmp_path / "tracks" / "metrics.json").read_text())["metrics"]
    assert row.idf1 == pytest.approx(saved["COMBINED_SEQ"]["IDF1"])
    assert row.cross_idf1 == pytest.approx(saved["cross-camera"]["IDF1"])
    assert row.fps > 0 and 0 <= row.idf1 <= 100
    base = run_row(video, tmp_path / "none", "botsort", None, {})
    assert base.cross_idf1 is None
    assert json.loads((tmp_path / "none" / "track.json").read_text())["settings"]["options"] == {"use_embeddings": False}
    assert "cross-camera IDF1" in [c.header for c in table([row, base], "t").columns]
