"""keyreid.viz: reports, training curves, lambdas, ranked lists and heatmap overlays."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from keyreid.data.keypoints import COCO17, Skeleton, render_heatmaps
from keyreid.data.records import Sample
from keyreid.engine.logs import CSVLog
from keyreid.viz import curves, heatmaps, ranking, report


def _png(path, min_wh=(100, 80), max_wh=(4000, 4000)) -> np.ndarray:
    """Open a written PNG, check its size range and that it is not blank; return RGB pixels."""
    assert path.is_file() and path.suffix == ".png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    assert min_wh[0] <= w <= max_wh[0] and min_wh[1] <= h <= max_wh[1], (w, h)
    assert rgb.astype(np.float64).std() > 5.0  # not a blank canvas
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())  # atomic write
    return rgb


# --------------------------------------------------------------------------------------------
# report


def test_markdown_table_exact():
    text = report.markdown_table(["model", "mAP", "note"],
                                 [["kae", 0.123456, None], ["a|b", np.float32(2.5), "x\ny"]])
    assert text == ("| model | mAP | note |\n"
                    "| --- | --- | --- |\n"
                    "| kae | 0.1235 |  |\n"
                    "| a\\|b | 2.5 | x y |\n")
    aligned = report.markdown_table(["a", "b", "c"], [[1, 2, 3]], align=["l", "r", "c"])
    assert aligned.splitlines()[1] == "| :--- | ---: | :---: |"
    with pytest.raises(ValueError):
        report.markdown_table(["a", "b"], [[1]])


def test_report_links_are_relative_and_write_is_atomic(tmp_path):
    out = tmp_path / "reports" / "demo.md"
    figs = tmp_path / "reports" / "figs"
    figs.mkdir(parents=True)
    (figs / "curves.png").write_bytes(b"png")
    elsewhere = tmp_path / "runs" / "kae" / "ranked lists.png"
    table = report.markdown_table(["run", "R1"], [["kae", 0.5]])
    path = report.write_markdown_report(out, "Demo", [
        ("Training", "Loss and accuracy.", [figs / "curves.png"]),
        ("Results", table),
        ("Ranking", "", [elsewhere]),
    ])
    assert path == out
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Demo\n\n## Training\n\nLoss and accuracy.\n\n")
    assert "![curves](figs/curves.png)" in text
    assert "![ranked lists](../runs/kae/ranked%20lists.png)" in text
    assert "| kae | 0.5 |" in text
    assert str(tmp_path) not in text  # no absolute paths
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo.md", "figs"]
    with pytest.raises(ValueError):
        report.write_markdown_report(out, "Bad", [("only a heading",)])


# --------------------------------------------------------------------------------------------
# curves


def _write_metrics(path, epochs, parts, val_every=0, regularizer=False, resume_at=None):
    log = CSVLog(path)  # the trainer's own writer, so the columns match what it writes
    for e in range(epochs):
        row = {"epoch": e, "lr": 3.5e-4, "seconds": 1.0, "images": 64}
        for i, p in enumerate(parts):
            row[p] = (i + 1) * np.exp(-e / 4)
        row["acc"] = 1 - np.exp(-e / 3)
        row["loss"] = sum(row[p] for p in parts)
        if regularizer:
            row.update(lambda_mean=1.0, lambda_min=0.1, lambda_max=3.0)
        if val_every:
            on = (e + 1) % val_every == 0
            row.update(val_R1=0.5 + e / 100 if on else "", val_mAP=0.3 + e / 100 if on else "")
        log.write(row)
    if resume_at is not None:  # a resumed run re-logs an epoch: its last row must win
        log.write({"epoch": resume_at, "lr": 1.0, "seconds": 1.0, "images": 64, "loss": 99.0})
    return path


def test_read_metrics_and_parts(tmp_path):
    p = _write_metrics(tmp_path / "m.csv", 6, ["id", "metric", "heatmap", "l2"], val_every=3,
                       regularizer=True, resume_at=2)
    t = curves.read_metrics(p)
    np.testing.assert_array_equal(t["epoch"], np.arange(6))
    assert t["loss"][2] == 99.0 and t["lr"][2] == 1.0
    assert np.isnan(t["val_mAP"][0]) and t["val_mAP"][5] == pytest.approx(0.35)
    assert curves.loss_parts(t) == ["id", "metric", "heatmap", "l2"]


def test_plot_training_curves(tmp_path):
    runs = {
        "bnneck": _write_metrics(tmp_path / "a.csv", 5, ["id", "metric"]),
        "kae": _write_metrics(tmp_path / "b.csv", 5, ["id", "metric", "heatmap"], val_every=2),
        "kae+adaptiveL2": _write_metrics(tmp_path / "c.csv", 5, ["id", "metric", "heatmap", "l2"],
                                         val_every=2, regularizer=True),
    }
    out = curves.plot_training_curves(runs, tmp_path / "out" / "curves.png", title="demo")
    rgb = _png(out, min_wh=(600, 400))
    # several colours: more than one run was drawn
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50
    # a single run without validation still plots
    _png(curves.plot_training_curves({"x": runs["bnneck"]}, tmp_path / "one.png"))


def _write_lambdas(path, names, epochs, rng):
    log = CSVLog(path)
    base = np.exp(rng.normal(0, 1, len(names)))
    for e in range(epochs):
        for n, b in zip(names, base):
            log.write({"epoch": e, "parameter": n, "lambda": float(b * (1 + 0.05 * e))})
    return path


def test_lambdas(tmp_path):
    names = ["backbone.conv1.weight"] + [f"backbone.layer{i}.conv.weight" for i in range(1, 9)] \
        + ["head.classifier.weight"]
    p = _write_lambdas(tmp_path / "lambdas.csv", names, 4, np.random.default_rng(0))
    CSVLog(p).write({"epoch": 3, "parameter": names[0], "lambda": 1e-3})  # re-logged after resume
    epochs, params, table = curves.read_lambdas(p)
    np.testing.assert_array_equal(epochs, np.arange(4))
    assert params == names and table.shape == (4, 10)
    assert table[3, 0] == 1e-3

    final = np.ones(10)
    final[4], final[6] = 1e4, 2.0
    chosen = curves.select_lambda_tensors(names, final, top=3)
    assert chosen == [0, 9, 4]  # first, last, then the most extreme
    assert curves.select_lambda_tensors(names, final, top=1) == [0]

    _png(curves.plot_lambdas(p, tmp_path / "lambdas.png", top=4), min_wh=(400, 250))
    _png(curves.plot_lambdas(p, tmp_path / "named.png", names=[names[3]]))
    with pytest.raises(KeyError):
        curves.plot_lambdas(p, tmp_path / "x.png", names=["nope"])


# --------------------------------------------------------------------------------------------
# ranking


def test_rank_gallery_protocol():
    d = np.array([0.1, 0.2, 0.2, 0.05, 0.3])
    g_pids = np.array([1, 2, 1, 1, 3])
    g_cams = np.array([2, 1, 1, 0, 1])
    # query pid 1 cam 0: gallery 3 (pid 1 cam 0, the nearest) is junk
    items = ranking.rank_gallery(d, 1, 0, g_pids, g_cams, top_k=3)
    assert [i.index for i in items] == [0, 1, 2]  # ties (0.2) keep gallery order
    assert [i.match for i in items] == [True, False, True]
    grey = ranking.rank_gallery(torch.tensor(d), 1, 0, g_pids, g_cams, top_k=2, junk="grey")
    assert [(i.index, i.junk) for i in grey] == [(3, True), (0, False)]


def _solid(colour, h=40, w=20):
    return Image.fromarray(np.full((h, w, 3), colour, dtype=np.uint8))


def test_plot_ranked_lists_borders(tmp_path):
    # pid -> a solid image colour, so each cell's content is recognisable too
    pid_colour = {0: (250, 250, 0), 1: (0, 250, 250), 2: (250, 0, 250)}
    queries = [Sample(f"q{i}.jpg", pid=i, camid=0, split="query") for i in range(3)]
    gallery = [Sample(f"g{j}.jpg", pid=j % 3, camid=1 + j % 2, split="gallery") for j in range(9)]
    gallery.append(Sample("junk.jpg", pid=0, camid=0, split="gallery"))  # same pid and camera
    d = np.random.default_rng(0).uniform(1.0, 2.0, (3, 10))
    d[0, 9] = 0.0   # the junk item is nearest to query 0 but must be dropped
    d[0, 3] = 0.1   # then pid 0: a correct match
    d[0, 1] = 0.2   # then pid 1: a wrong match
    out = ranking.plot_ranked_lists(queries, gallery, d, tmp_path / "ranked.png",
                                    query_indices=[0, 2], top_k=4, cell_hw=(48, 24),
                                    load_image=lambda s: _solid(pid_colour[s.pid]))
    rgb = _png(out)
    layout = ranking.grid_layout(2, 4, (48, 24))
    assert rgb.shape[:2] == (layout.height, layout.width)

    def border(r, c):
        x0, y0, x1, y1 = layout.boxes[(r, c)]
        return rgb[y0 + ranking.BORDER // 2, (x0 + x1) // 2]  # middle of the top edge

    def centre(r, c):
        x0, y0, x1, y1 = layout.boxes[(r, c)]
        return rgb[(y0 + y1) // 2, (x0 + x1) // 2]

    close = lambda a, b: np.abs(a.astype(int) - np.array(b)).max() <= 3  # noqa: E731
    assert close(border(0, 0), ranking.QUERY_RGB)
    assert close(border(0, 1), ranking.MATCH_RGB)      # rank 1: same pid, other camera
    assert close(centre(0, 1), pid_colour[0])
    assert close(border(0, 2), ranking.MISMATCH_RGB)   # rank 2: pid 1
    assert close(centre(0, 2), pid_colour[1])
    green = border(0, 1)
    assert green[1] > 150 and green[0] < 60 and green[2] < 60

    grey = ranking.plot_ranked_lists(queries, gallery, d, tmp_path / "grey.png", query_indices=[0],
                                     top_k=3, cell_hw=(48, 24), junk="grey",
                                     load_image=lambda s: _solid(pid_colour[s.pid]))
    rgb = _png(grey, min_wh=(100, 50))
    layout = ranking.grid_layout(1, 3, (48, 24))
    assert close(border(0, 1), ranking.JUNK_RGB)
    assert close(border(0, 2), ranking.MATCH_RGB)


def test_plot_ranked_lists_from_files(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(1)
    samples = []
    for j in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(root / f"{j}.png")
        samples.append(Sample(f"{j}.png", pid=j % 4, camid=j % 2, split="query"))
    d = rng.random((8, 8))
    missing = samples[:7] + [Sample("missing.png", pid=3, camid=0, split="gallery")]
    out = ranking.plot_ranked_lists(samples, missing, d, tmp_path / "r.png", root=root,
                                    num_queries=3, top_k=5, seed=3)
    layout = ranking.grid_layout(3, 5)  # 2 evaluable queries, filled up with a third
    assert _png(out).shape[:2] == (layout.height, layout.width)
    with pytest.raises(ValueError):
        ranking.plot_ranked_lists(samples, missing, d[:, :5], tmp_path / "bad.png", root=root)


# --------------------------------------------------------------------------------------------
# heatmaps


def test_heatmap_argmax_pixel_centres():
    hm = np.zeros((2, 3, 8, 6), dtype=np.float32)
    hm[0, 0, 3, 5] = 1.0   # row 3, column 5
    hm[0, 1, 0, 0] = 2.0
    hm[1, 2, 7, 2] = 0.5
    xy = heatmaps.heatmap_argmax_xy(torch.from_numpy(hm), image_hw=(32, 24))  # stride 4
    # cell j's centre -> (j + 0.5) * stride - 0.5
    np.testing.assert_allclose(xy[0, 0], [5.5 * 4 - 0.5, 3.5 * 4 - 0.5, 1.0])
    np.testing.assert_allclose(xy[0, 1], [1.5, 1.5, 2.0])
    np.testing.assert_allclose(xy[1, 2], [2.5 * 4 - 0.5, 7.5 * 4 - 0.5, 0.5])
    # unequal strides per axis, and an explicit stride
    xy = heatmaps.heatmap_argmax_xy(hm[0, 0], image_hw=(16, 24))
    np.testing.assert_allclose(xy[:2], [5.5 * 4 - 0.5, 3.5 * 2 - 0.5])
    xy = heatmaps.heatmap_argmax_xy(hm[0, 0], image_hw=(999, 999), stride=8)
    np.testing.assert_allclose(xy[:2], [5.5 * 8 - 0.5, 3.5 * 8 - 0.5])


def test_heatmap_argmax_inverts_render():
    # keypoints at cell centres come back exactly from the rendered Gaussian heatmaps
    kp = np.array([[(c + 0.5) * 4 - 0.5, (r + 0.5) * 4 - 0.5, 1.0]
                   for r, c in [(0, 0), (5, 3), (15, 7), (9, 1)]], dtype=np.float32)
    maps, _ = render_heatmaps(kp, (64, 32), stride=4, sigma=1.5)
    xy = heatmaps.heatmap_argmax_xy(maps, (64, 32))
    np.testing.assert_allclose(xy[:, :2], kp[:, :2])
    np.testing.assert_allclose(xy[:, 2], 1.0)


def test_denormalize_images():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    rgb = np.random.default_rng(0).random((2, 8, 4, 3)).astype(np.float32)
    norm = (rgb.transpose(0, 3, 1, 2) - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    back = heatmaps.denormalize_images(torch.from_numpy(norm.astype(np.float32)), mean, std)
    np.testing.assert_allclose(back, rgb, atol=1e-5)


_TINY = Skeleton("tiny5", ("head", "left_hand", "right_hand", "left_foot", "right_foot"),
                 flip_pairs=((1, 2), (3, 4)), limbs=((0, 1), (0, 2), (0, 3), (0, 4)))


def test_plot_heatmap_overlays(tmp_path):
    rng = np.random.default_rng(0)
    n, h, w = 2, 64, 32
    kp = np.zeros((n, 5, 3), dtype=np.float32)
    kp[..., 0] = rng.uniform(2, w - 3, (n, 5))
    kp[..., 1] = rng.uniform(2, h - 3, (n, 5))
    kp[..., 2] = 1.0
    kp[1, 4, 2] = 0.0  # an invisible true keypoint is not drawn
    hm = np.stack([render_heatmaps(k, (h, w), stride=4, sigma=1.5)[0] for k in kp])
    hm += rng.normal(0, 0.02, hm.shape).astype(np.float32)
    images = torch.randn(n, 3, h, w)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    out = heatmaps.plot_heatmap_overlays(images, torch.from_numpy(hm), _TINY,
                                         tmp_path / "hm.png", mean, std, keypoints=kp)
    _png(out, min_wh=(200, 200))

    pil = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in range(n)]
    out = heatmaps.plot_heatmap_overlays(pil, hm, _TINY, tmp_path / "pil.png", reduce="sum",
                                         detail=None)
    _png(out)
    with pytest.raises(ValueError):  # 5 maps, 17 keypoints
        heatmaps.plot_heatmap_overlays(pil, hm, COCO17, tmp_path / "bad.png")
    with pytest.raises(ValueError):  # normalised tensors need mean and std
        heatmaps.plot_heatmap_overlays(images, hm, _TINY, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    assert sorted(os.listdir(tmp_path)) == ["hm.png", "pil.png"]


def test_sub_pixel_peaks_recover_a_gaussian_centre_off_the_grid():
    """A Gaussian blob centred between map cells: the argmax snaps to the nearest cell (up to half
    a cell off, 4 image pixels at stride 8); the log-parabola refinement recovers the centre
    exactly (a sampled Gaussian is a parabola in log space), in image pixels at the map's stride."""
    from keyreid.viz.heatmaps import heatmap_argmax_xy, heatmap_peaks_xy

    h, w, sigma = 16, 8, 1.3
    centres = [(5.3, 7.8), (2.0, 3.0), (6.45, 12.2)]            # (x, y) in map cells
    ys, xs = np.mgrid[0:h, 0:w]
    maps = np.stack([np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2)) for cx, cy in centres])
    image_hw = (128, 64)                                          # stride 8 in both axes
    fine = heatmap_peaks_xy(maps, image_hw)
    coarse = heatmap_argmax_xy(maps, image_hw)
    for (cx, cy), got, snapped in zip(centres, fine, coarse):
        want = ((cx + 0.5) * 8 - 0.5, (cy + 0.5) * 8 - 0.5)      # pixel-centre convention
        assert got[0] == pytest.approx(want[0], abs=1e-9) and got[1] == pytest.approx(want[1], abs=1e-9)
        assert got[2] == snapped[2]                               # the peak value is kept
    assert abs(coarse[0][0] - ((5.3 + 0.5) * 8 - 0.5)) > 2       # what the grid alone gives
    # a peak on the border and a flat map keep the grid position
    flat = np.zeros((1, h, w))
    assert np.array_equal(heatmap_peaks_xy(flat, image_hw), heatmap_argmax_xy(flat, image_hw))
