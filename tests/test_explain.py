"""Similarity Grad-CAM: localises what a constructed model looks at, agrees with occlusion of the
feature map (ordering), equals classic Grad-CAM for average-pooled heads; `keyreid explain`
writes the side-by-side picture."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from keyreid.errors import KeyreidError
from keyreid.inference import load_model
from keyreid.models.output import ModelOutput
from keyreid.viz.gradcam import BAR_H, LABEL_H, PAD, picture_size, similarity_cam
from test_export import photo_folder, tiny_checkpoint


class BottomHalfHead(nn.Module):
    """Embeds only the lower half of the feature map (plus a bias, so the embedding is not a
    homogeneous function of the map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-0.3, 0.3, channels))

    def forward(self, fmap):
        e = fmap[:, :, fmap.shape[-2] // 2:].mean(dim=(-2, -1)) + self.bias
        return ModelOutput(embedding=e, feature=e)


class TinyModel(nn.Module):
    def __init__(self, head: nn.Module, channels: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU())
        self.head = head

    def forward(self, x):
        return self.head(self.backbone(x))


def test_map_is_where_the_only_region_that_matters_is():
    model = TinyModel(BottomHalfHead(6))
    g = torch.Generator().manual_seed(1)
    q, m = torch.rand(3, 32, 16, generator=g), torch.rand(3, 32, 16, generator=g)  # texture everywhere
    cam = similarity_cam(model, q, m)
    h = cam.signed.shape[1]
    assert cam.signed.shape == (2, 16, 8) and cam.cams.shape == (2, 32, 16)
    assert np.all(cam.signed[:, : h // 2] == 0)          # the upper half cannot change the similarity
    assert np.all(np.abs(cam.signed[:, h // 2:]).sum(axis=(1, 2)) > 0)
    for i in range(2):                                    # and the peak is in the lower half
        row = np.unravel_index(cam.cams[i].argmax(), cam.cams[i].shape)[0]
        assert row >= 16
    e = model(torch.stack([q, m])).embedding.detach()
    assert cam.similarity == pytest.approx(float(F.cosine_similarity(e[:1], e[1:])), abs=1e-6)


@pytest.fixture(scope="module")
def models128(tmp_path_factory) -> dict:
    """Checkpoints at 128x64 (an 8x4 feature map) and two photos, shared by the map tests."""
    root = tmp_path_factory.mktemp("explain")
    return {"bnneck": tiny_checkpoint(root / "bnneck.pt", "bnneck", height=128, width=64),
            "kae": tiny_checkpoint(root / "kae.pt", "kae", height=128, width=64, group_channels=4,
                                   global_channels=8, pooling="heatmap"),
            "photos": sorted(photo_folder(root / "photos", n=2).iterdir())}


def _removal(model, batch, image: int, fraction: float) -> np.ndarray:
    """(S(A) - S(A with the features of one cell of `image` scaled by 1 - fraction)) / fraction
    for every cell: fraction 1 is occlusion, a small fraction the finite-difference derivative."""
    fmap = model.backbone(batch)

    def sim(a):
        e = model.head(a).embedding
        return float(F.cosine_similarity(e[:1], e[1:]))

    base = sim(fmap)
    h, w = fmap.shape[-2:]
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            a = fmap.clone()
            a[image, :, y, x] *= 1 - fraction
            out[y, x] = (base - sim(a)) / fraction
    return out


@pytest.mark.parametrize("head", ["bnneck", "kae"])
def test_map_is_the_derivative_of_removing_each_feature_cell(models128, head):
    """The signed map at a cell is d S / d t for the cell's features scaled by (1 - t): equal to
    a central finite difference (float64), for a plain and a heatmap-pooled head."""
    loaded = load_model(models128[head], device="cpu")
    model = loaded.model.double()
    batch = loaded.preprocess(models128["photos"]).double()
    cam = similarity_cam(model, batch[0], batch[1])
    assert cam.signed.shape == (2, 8, 4)   # 128x64 at stride 16 (last_stride 1)
    with torch.no_grad():
        for i in range(2):
            eps = 1e-5
            fd = (_removal(model, batch, i, eps) + _removal(model, batch, i, -eps)) / 2
            np.testing.assert_allclose(cam.signed[i], fd, rtol=1e-3, atol=1e-4 * np.abs(fd).max())


def test_map_orders_feature_cells_like_occluding_them(models128):
    """On an average-pooled head, dimming a cell's features by half lowers the similarity in the
    order the map predicts, with the map's signs where the effect is large; removing the cell
    outright (full occlusion, far from first order on this untrained model) still ranks alike."""
    loaded = load_model(models128["bnneck"], device="cpu")
    batch = loaded.preprocess(models128["photos"])
    cam = similarity_cam(loaded.model, batch[0], batch[1])
    with torch.no_grad():
        for i in range(2):
            dimmed = _removal(loaded.model, batch, i, 0.5)
            assert spearmanr(cam.signed[i].ravel(), dimmed.ravel()).statistic > 0.9
            big = np.abs(dimmed) > 0.25 * np.abs(dimmed).max()
            assert np.all(np.sign(cam.signed[i][big]) == np.sign(dimmed[big]))
            occluded = _removal(loaded.model, batch, i, 1.0)
            assert spearmanr(cam.signed[i].ravel(), occluded.ravel()).statistic > 0.8


def test_average_pooled_head_gives_classic_gradcam(models128):
    loaded = load_model(models128["bnneck"], device="cpu")
    batch = loaded.preprocess(models128["photos"])
    a = similarity_cam(loaded.model, batch[0], batch[1], method="gradxact")
    b = similarity_cam(loaded.model, batch[0], batch[1], method="gradcam")
    np.testing.assert_allclose(a.signed, b.signed, rtol=1e-4, atol=1e-7 * np.abs(a.signed).max())
    assert a.heatmaps is None
    # the weights were left as they were: no gradients stored, eval mode kept
    assert all(p.grad is None for p in loaded.model.parameters())
    assert not loaded.model.training


def test_keyreid_explain_writes_the_side_by_side_picture(tmp_path):
    from keyreid.cli import app

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "kae", group_channels=4, global_channels=8)
    photos = sorted(photo_folder(tmp_path / "photos", n=2).iterdir())
    out = tmp_path / "cam.png"
    r = CliRunner().invoke(app, ["explain", str(ckpt), str(photos[0]), str(photos[1]), "-o", str(out)])
    assert r.exit_code == 0, r.output
    loaded = load_model(ckpt, device="cpu")
    e = loaded.embed(photos, normalize=True)
    printed = float(re.search(r"cosine similarity (-?[\d.]+)", r.output).group(1))
    assert printed == pytest.approx(float(e[0] @ e[1]), abs=1e-4)
    with Image.open(out) as im:
        # kae: query, two maps, match, and both images' predicted keypoint heatmaps (6 panels of
        # the 64x32 input scaled 4x)
        assert im.size[::-1] == picture_size((64, 32), 6, 4)
        assert im.size == (PAD + 6 * (128 + PAD), 2 * PAD + 3 * LABEL_H + BAR_H + 256)
        a = np.asarray(im.convert("RGB")).astype(int)
    # the colour scale under the two Grad-CAM maps: jet from its low end to its high end
    from matplotlib import colormaps

    bar = a[2 * PAD + 2 * LABEL_H + 256 + BAR_H // 2, 2 * PAD + 128:3 * PAD + 3 * 128]
    jet = (np.asarray(colormaps["jet"]([0.0, 1.0]))[:, :3] * 255).round()
    assert np.abs(bar[0] - jet[0]).max() <= 2 and np.abs(bar[-1] - jet[1]).max() <= 2
    y0 = PAD + 2 * LABEL_H
    query_panel = a[y0:y0 + 256, PAD:PAD + 128]
    query_map = a[y0:y0 + 256, 2 * PAD + 128:2 * PAD + 256]
    assert np.abs(query_panel - query_map).mean() > 5   # the overlay is drawn over the image


def test_keyreid_explain_refuses_bad_input_in_one_line(tmp_path):
    from keyreid.cli import app

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    photos = sorted(photo_folder(tmp_path / "photos", n=2).iterdir())
    keyreid = Path(sys.executable).parent / "keyreid"
    r = subprocess.run([str(keyreid), "explain", str(ckpt), str(tmp_path / "nope.jpg"), str(photos[1]),
                        "-o", str(tmp_path / "cam.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.jpg" in lines[0] and "not found" in lines[0], r.stderr
    for args, expected in [([str(tmp_path / "m.onnx"), str(photos[0]), str(photos[1]), "-o", "x.png"],
                            "needs gradients"),
                           ([str(ckpt), str(photos[0]), str(photos[1]), "-o", str(tmp_path / "x.png"),
                             "--method", "magic"], "--method must be one of"),
                           ([str(ckpt), str(photos[0]), str(photos[1]), "-o", str(tmp_path / "x.jpg")],
                            "must be a .png")]:
        result = CliRunner().invoke(app, ["explain", *args])
        assert isinstance(result.exception, KeyreidError) and expected in str(result.exception)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "photos"]


# ------------------------------------------------------------------------- keyreid viz ranked
def test_ranked_summary_matches_the_protocol():
    """Per-query AP and first-hit ranks average to evaluate()'s mAP and R1; top lists are the
    protocol's order (same-pid-same-camera items dropped)."""
    from keyreid.evaluation.reid import evaluate
    from keyreid.viz.ranking import rank_gallery, ranked_summary

    rng = np.random.default_rng(3)
    qp, qc = rng.integers(0, 6, 20), rng.integers(0, 3, 20)
    gp, gc = rng.integers(0, 8, 60), rng.integers(0, 3, 60)
    d = rng.random((20, 60)).astype(np.float32)
    d[:, 5] = d[:, 7]                                  # ties keep gallery order
    s = ranked_summary(d, qp, qc, gp, gc, top_k=15)
    m = evaluate(d, qp, gp, qc, gc)
    valid = ~np.isnan(s["ap"])
    assert valid.sum() == m.num_valid_queries
    assert np.nanmean(s["ap"]) == pytest.approx(m.mAP, abs=1e-9)
    assert np.mean(s["first_hit"][valid] == 1) == pytest.approx(m.rank(1), abs=1e-9)
    for i in range(20):
        assert list(s["index"][i]) == [it.index for it in rank_gallery(d[i], qp[i], qc[i], gp, gc, 15)]


def test_select_queries_worst_best_and_chosen():
    from keyreid.viz.ranking import select_queries

    ap = np.array([0.5, np.nan, 0.1, 1.0, 0.1, 1.0])
    first = np.array([2, 0, 9, 1, 3, 1])
    rows = select_queries(ap, first, worst=2, best=1, chosen=[1])
    # ties on AP: the later first true match is worse; then the lower index first
    assert rows == [(2, "worst AP 0.10"), (4, "worst AP 0.10"), (3, "best AP 1.00"), (1, "no true match")]


def test_keyreid_eval_then_viz_ranked(tiny_synth, tmp_path):
    from conftest import tiny_overrides
    from keyreid.cli import app
    from keyreid.viz.ranking import MATCH_RGB, MISMATCH_RGB, grid_layout, load_ranked

    run = tmp_path / "run"
    run.mkdir()
    ckpt = tiny_checkpoint(run / "best.pt", "bnneck")
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    sets = [a for o in tiny_overrides(tiny_synth, run) for a in ("--set", o)]
    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(config), *sets, "--checkpoint", str(ckpt)])
    assert r.exit_code == 0, r.output
    report = json.loads((run / "best.eval.json").read_text())
    data = load_ranked(report["ranked"])
    assert report["ranked"] == str(run / "best.eval.ranked.npz")
    assert np.nanmean(data["ap"]) == pytest.approx(report["metrics"]["mAP"], abs=1e-6)
    assert len(data["query_path"]) == report["queries"] and len(data["gallery_path"]) == report["gallery"]

    out = tmp_path / "ranked.png"
    r = runner.invoke(app, ["viz", "ranked", str(run / "best.eval.json"), "-o", str(out), "--worst", "2",
                            "--best", "1", "--queries", "0", "--top-k", "5"])
    assert r.exit_code == 0, r.output
    worst = int(np.nanargmin(np.where(np.isnan(data["ap"]), np.inf, data["ap"])))
    assert Path(str(data["query_path"][worst])).name in r.output.split(",")[0]
    layout = grid_layout(4, 5)
    with Image.open(out) as im:
        assert im.size == (layout.width, layout.height)
        a = np.asarray(im.convert("RGB"))
    rows = [worst, None, None, 0]
    for row, qi in enumerate(rows):
        if qi is None:
            continue
        for c in range(1, 6):   # each frame says whether that gallery image is the same identity
            x0, y0 = layout.boxes[(row, c)][:2]
            g = data["top_index"][qi][c - 1]
            same = data["gallery_pid"][g] == data["query_pid"][qi]
            assert tuple(a[y0 + 1, x0 + 1]) == (MATCH_RGB if same else MISMATCH_RGB)

    # the checkpoint stands for its report; bad input is one line and writes nothing
    r = runner.invoke(app, ["viz", "ranked", str(ckpt), "-o", str(tmp_path / "again.png")])
    assert r.exit_code == 0, r.output
    for args, expected in [([str(tmp_path / "none.eval.json"), "-o", str(tmp_path / "x.png")], "run `keyreid eval` first"),
                           ([str(ckpt), "-o", str(tmp_path / "x")], "must be a .png"),
                           ([str(ckpt), str(ckpt), "-o", str(tmp_path / "x.png")], "give a folder"),
                           ([str(ckpt), "-o", str(tmp_path / "x.png"), "--queries", "nope.jpg"], "'nope.jpg'")]:
        result = runner.invoke(app, ["viz", "ranked", *args])
        assert isinstance(result.exception, KeyreidError), result.output
        assert expected in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x").exists()
