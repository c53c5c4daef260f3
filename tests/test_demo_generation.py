"""The generation demo's code path at toy size: the default demo's kae / bnneck runs (made here,
reused when there), each method trained, measured against the truth, a grid per method, one table,
a report; a second call trains nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from keyreid.demo import generation as G


TOY = ("model.backbone=resnet18", "model.pretrained=null", "data.height=64", "data.width=32", "data.p=4",
       "data.k=2", "data.workers=0", "optim.epochs=1", "optim.warmup_epochs=0", "data.val_identities=0.3",
       "eval.every=1", "device=cpu")


class _Copy(torch.nn.Module):
    """A 'generator' that hands back its source image (the control), or the target image."""

    def __init__(self, give: str):
        super().__init__()
        self.give = give

    def render(self, source, target_kp=None, other=None):
        return (source if self.give == "source" else other).clone()


@pytest.fixture(scope="module")
def reid_runs(tiny_synth, tmp_path_factory) -> Path:
    """OUTPUT with the default demo's kae and bnneck runs at toy size (seed 3)."""
    out = tmp_path_factory.mktemp("demo")
    for name in ("kae", "bnneck"):
        G.demo_reid_run(name, out, tiny_synth, 3, TOY)
    return out


def test_generation_demo_measures_reports_and_resumes(tiny_synth, reid_runs):
    tmp_path = reid_runs
    trained = []

    def fake_train(method, out, data_root, seed, reid_checkpoint, overrides, show_progress):
        assert Path(reid_checkpoint).name == "best.pt" and "kae" in str(reid_checkpoint)
        trained.append(method)
        out.mkdir(parents=True, exist_ok=True)
        (out / "last.pt").write_text(method)
        return out / "last.pt", 1.5

    def fake_load(ckpt):
        return _Copy("source" if Path(ckpt).read_text() == "pngan" else "target"), None

    results = G.run_generation_demo(tmp_path, tiny_synth, seed=3, overrides=TOY, methods=["pngan", "ipgan"],
                                    pairs=10, show_progress=False, train=fake_train, load=fake_load)
    assert trained == ["pngan", "ipgan"]
    assert (tmp_path / "seed3" / "kae" / "best.pt").is_file() and (tmp_path / "seed3" / "bnneck" / "best.pt").is_file()
    by = {r.method: r.numbers for r in results}
    copy, target = by["pngan"], by["ipgan"]
    # the copy of the source scores exactly the control; the copy of the target image does not
    assert copy["l1_gt"] == pytest.approx(copy["control_l1_gt"]) and copy["l1_source"] == 0
    assert copy["pck_target"] == pytest.approx(copy["control_pck_target"])
    assert target["l1_source"] > 0.02 and target["l1_gt"] != pytest.approx(target["control_l1_gt"])
    assert copy["train_seconds"] == 1.5 and copy["pairs"] == 10
    gen = tmp_path / "seed3" / "generation"
    for r in results:
        grid = np.asarray(Image.open(r.grid))
        assert grid.shape == (12 + 8 * (128 + 2), 5 * (64 + 2) - 2, 3)      # 8 rows of 5 columns at 128x64
    report = (gen / "report.md").read_text()
    for name in ("pngan", "ipgan", "source image (control)", "true image (ceiling)"):
        assert f"| {name} |" in report
    control_row = next(l for l in report.splitlines() if l.startswith("| source image (control) |"))
    pngan_row = next(l for l in report.splitlines() if l.startswith("| pngan |"))
    assert control_row.split("|")[2:10] == pngan_row.split("|")[2:10]   # same numbers, L1 vs source 0
    assert "| kae |" in report and "| bnneck |" in report                 # the re-ID numbers beside
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (gen / link).is_file()
    summary = json.loads((gen / "results.json").read_text())
    assert set(summary) == {"pngan", "ipgan"}

    # a second call reads everything: no training, the same numbers
    again = G.run_generation_demo(tmp_path, tiny_synth, seed=3, overrides=TOY, methods=["pngan", "ipgan"],
                                  pairs=10, show_progress=False, train=fake_train, load=fake_load, report=False)
    assert trained == ["pngan", "ipgan"]
    assert [r.numbers for r in again] == [r.numbers for r in results]


def test_quality_table_rows_hand_made():
    numbers = {"l1_gt": 0.1, "l1_gt_masked": 0.2, "l1_source": 0.05, "ssim_gt": 0.5, "ssim_gt_masked": 0.4,
               "pck_target": 0.5, "pck_source": 0.25, "id_rank1": 0.75, "train_seconds": 12.3,
               "control_l1_gt": 0.08, "control_l1_gt_masked": 0.3, "control_ssim_gt": 0.6,
               "control_ssim_gt_masked": 0.3, "control_pck_target": 0.2, "control_pck_source": 0.9,
               "control_id_rank1": 0.9, "gt_pck_target": 0.8, "gt_pck_source": 0.3, "gt_id_rank1": 0.85}
    rows = G.quality_rows({"m": numbers})
    assert rows[0] == ["m", "0.100", "0.200", "0.050", "0.500", "0.400", "50.0", "25.0", "75.0", "12"]
    assert rows[1] == ["source image (control)", "0.080", "0.300", "0.000", "0.600", "0.300", "20.0", "90.0", "90.0", ""]
    assert rows[2] == ["true image (ceiling)", "0.000", "0.000", "0.080", "1.000", "1.000", "80.0", "30.0", "85.0", ""]


def test_verdict_says_above_or_below_the_source():
    base = {"l1_gt_masked": 0.2, "control_l1_gt_masked": 0.3, "ssim_gt_masked": 0.4, "control_ssim_gt_masked": 0.3,
            "gt_pck_target": 0.8, "id_rank1": 0.0, "control_id_rank1": 0.7, "gt_id_rank1": 0.8}
    worse = G._verdict([G.GenerationResult("m", {**base, "pck_target": 0.21, "control_pck_target": 0.26})])
    better = G._verdict([G.GenerationResult("m", {**base, "pck_target": 0.30, "control_pck_target": 0.26})])
    assert "21% of the joints, 5 points below the source image's 26%" in worse
    assert "30% of the joints, 4 points above the source image's 26%" in better


def test_demo_suite_option(tmp_path):
    from keyreid.cli import app

    result = CliRunner().invoke(app, ["demo", "--suite", "nosuch", "--output", str(tmp_path)])
    assert result.exit_code != 0 and "nosuch" in (result.output + str(result.exception))
    with pytest.raises(Exception, match="unknown generation method"):
        G.run_generation_demo(tmp_path, tmp_path / "data", methods=["stylegan"])


def test_generation_demo_trains_a_real_method_at_toy_size(tiny_synth, reid_runs, tmp_path):
    """PN-GAN through the real trainer and loader (tiny nets, 8 pairs, one epoch)."""
    for name in ("kae", "bnneck"):
        shutil.copytree(reid_runs / "seed3" / name, tmp_path / "seed3" / name)
    tiny = ["method_options.ngf=8", "method_options.n_blocks=1", "method_options.ndf=8", "data.max_pairs_per_epoch=8",
            "data.batch_size=4", "data.workers=0", "optim.epochs=1", "optim.decay_epochs=0", "log.sample_count=2",
            "log.tensorboard=false", "device=cpu"]
    (r,) = G.run_generation_demo(tmp_path, tiny_synth, seed=3, methods=["pngan"], gen_overrides=tiny, pairs=6,
                                 show_progress=False, report=False)
    n = r.numbers
    assert r.checkpoint == tmp_path / "seed3" / "generation" / "pngan" / "last.pt" and r.checkpoint.is_file()
    assert torch.load(r.checkpoint, map_location="cpu", weights_only=False)["format"] == "keyreid-gan"
    assert 0 < n["l1_gt"] < 1 and 0 < n["l1_source"] < 1 and -1 <= n["ssim_gt"] <= 1
    assert n["train_seconds"] > 0 and n["pairs"] == 6
    assert r.grid.is_file()
    stamp = r.checkpoint.stat().st_mtime_ns
    (again,) = G.run_generation_demo(tmp_path, tiny_synth, seed=3, methods=["pngan"], gen_overrides=tiny, pairs=6,
                                     show_progress=False, report=False)
    assert again.numbers == n and r.checkpoint.stat().st_mtime_ns == stamp
