"""`keyreid adapt`: the adaptation method on the one training loop (exact resume after a kill,
sealed truth), pseudo-label quality against hand-computed values, adapted checkpoints through
the one loading path, the unlabelled adapter, the target-site synth config, and the CLI's
one-line refusals that leave the user's files as they were."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from keyreid.adapt.config import load_adapt_config
from keyreid.adapt.method import Adaptation
from keyreid.adapt.target import _SealedTruth, pseudo_label_quality
from keyreid.data.datasets import build_dataset
from keyreid.data.synthetic import SynthConfig, generate
from keyreid.config import ConfigError
from keyreid.errors import DataError
from keyreid.inference import load_model

ROOT = Path(__file__).resolve().parents[1]
KEYREID = [sys.executable, "-m", "keyreid.cli"]
# the tiny set has 10 training identities of 4-6 images: small neighbourhoods, pairs of pseudo-ids
SMALL = ["p=2", "k=2", "cluster.k1=10", "cluster.k2=3", "cluster.min_samples=2", "workers=0", "device=cpu"]


@pytest.fixture
def source(adapt_source):
    return adapt_source


def _cfg(source, target, out, *extra):
    return load_adapt_config(None, [f"checkpoint={source}", f"target.root={target}", "target.dataset=market1501",
                                    f"output_dir={out}", "epochs=2", *SMALL, *extra])


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Killed(Exception):
    pass


# ---------------------------------------------------------------------- the method on the loop
@pytest.mark.parametrize("kind", ["cluster", "camera"])
def test_resume_after_kill_mid_epoch_is_exact(kind, source, tiny_synth, tmp_path, monkeypatch):
    ref = Adaptation(_cfg(source, tiny_synth, tmp_path / "a", f"memory.kind={kind}"), resume=False, show_progress=False,
                     notify=lambda s: None)
    ref.fit()
    expected, memory = _params(ref.model), _params(ref.memory)
    # epochs differ in length (each re-clusters): the first one's from its row
    steps_per_epoch = ref.state.history[0]["images"] // (2 * 2)
    assert steps_per_epoch >= 2 and ref.state.global_step > steps_per_epoch + 1

    victim = Adaptation(_cfg(source, tiny_synth, tmp_path / "b", f"memory.kind={kind}"), resume=False, show_progress=False,
                        checkpoint_every_steps=1, notify=lambda s: None)
    original = Adaptation.step
    calls = {"n": 0}

    def dying_step(self, *args):
        if calls["n"] == steps_per_epoch + 1:   # killed in the second epoch, after its first step
            raise Killed()
        calls["n"] += 1
        return original(self, *args)

    monkeypatch.setattr(Adaptation, "step", dying_step)
    with pytest.raises(Killed):
        victim.fit()
    monkeypatch.setattr(Adaptation, "step", original)

    resumed = Adaptation(_cfg(source, tiny_synth, tmp_path / "b", f"memory.kind={kind}"), resume=True, show_progress=False,
                         notify=lambda s: None)
    assert (resumed.state.epoch, resumed.state.step_in_epoch) == (1, 1)
    resumed.fit()
    got = _params(resumed.model)
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    assert resumed.memory_kind == kind
    for k, v in memory.items():
        assert torch.equal(v, resumed.memory.state_dict()[k]), k
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    ref_rows = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    for got_row, ref_row in zip(rows, ref_rows):
        for key in ("loss", "memory", "heatmap", "clusters", "outliers", "truth_ari"):
            assert float(got_row[key]) == pytest.approx(float(ref_row[key]), rel=1e-9), key
    assert "test_mAP" in rows[-1] and float(rows[-1]["test_mAP"]) > 0


def test_true_labels_never_reach_training(source, tiny_synth, tmp_path, monkeypatch):
    """Permuting the target's true identities changes the logged pseudo-label quality and not
    one weight: the truth is only audited."""
    plain = Adaptation(_cfg(source, tiny_synth, tmp_path / "a", "epochs=1"), resume=False, show_progress=False,
                       notify=lambda s: None)
    plain.fit()
    original = _SealedTruth.__init__

    def shuffled(self, pids):
        original(self, np.random.default_rng(3).permutation(np.asarray(pids)))

    monkeypatch.setattr(_SealedTruth, "__init__", shuffled)
    permuted = Adaptation(_cfg(source, tiny_synth, tmp_path / "b", "epochs=1"), resume=False,
                          show_progress=False, notify=lambda s: None)
    permuted.fit()
    for k, v in _params(plain.model).items():
        assert torch.equal(v, _params(permuted.model)[k]), k
    assert plain.state.history[-1]["truth_ari"] != permuted.state.history[-1]["truth_ari"]
    # what training reads has no identity at all
    assert {s.pid for s in plain.target.images} == {-1}
    assert all("identity" not in s.meta for s in plain.target.images)


def test_runs_written_before_a_setting_existed_resume(source, tiny_synth, tmp_path):
    """A setting added to keyreid after a run was written compares at its default on resume."""
    from keyreid.utils.checkpoint import load_checkpoint, save_checkpoint

    cfg = _cfg(source, tiny_synth, tmp_path / "run", "epochs=1")
    Adaptation(cfg, resume=False, show_progress=False, notify=lambda s: None).fit()
    ck = load_checkpoint(tmp_path / "run" / "last.pt", "cpu")
    for key in ("inter_weight", "hard_negatives"):
        del ck["adapt_config"]["memory"][key]
    save_checkpoint(tmp_path / "run" / "last.pt", ck)
    again = Adaptation(cfg, resume=True, show_progress=False, notify=lambda s: None)
    assert again.config_changes == [] and again.loop.done
    changed = Adaptation(_cfg(source, tiny_synth, tmp_path / "run", "epochs=1", "memory.inter_weight=0.7"),
                         resume=True, show_progress=False, allow_config_change=True, notify=lambda s: None)
    assert changed.config_changes == ["memory.inter_weight: 0.5 (checkpoint) -> 0.7 (now)"]
    # before memory.kind existed every run had one centroid per cluster: that is what it compares as
    ck = load_checkpoint(tmp_path / "run" / "last.pt", "cpu")
    del ck["adapt_config"]["memory"]["kind"]
    save_checkpoint(tmp_path / "run" / "last.pt", ck)
    with pytest.raises(ConfigError, match="memory.kind: 'cluster' \\(checkpoint\\) -> 'auto' \\(now\\)"):
        Adaptation(cfg, resume=True, show_progress=False, notify=lambda s: None)


def test_adapted_checkpoint_loads_like_any_model(source, tiny_synth, tmp_path):
    run = Adaptation(_cfg(source, tiny_synth, tmp_path / "run", "epochs=1"), resume=False, show_progress=False,
                     notify=lambda s: None)
    run.fit()
    before, after = load_model(source, "cpu"), load_model(tmp_path / "run" / "best.pt", "cpu")
    assert after.card["model"] == before.card["model"] and after.skeleton.name == "coco17"
    assert after.fingerprint != before.fingerprint          # other weights, another index
    image = sorted((Path(tiny_synth) / "query").glob("*.jpg"))[0]
    got = after.embed([image])
    assert got.shape == (1, before.dim) and np.isclose(np.linalg.norm(got), 1.0, atol=1e-5)
    for k, v in after.model.state_dict().items():
        assert torch.equal(v, run.model.state_dict()[k].cpu()), k


# ---------------------------------------------------------------------- pseudo-label quality
def test_pseudo_label_quality_matches_hand_counts():
    from sklearn.metrics import adjusted_rand_score

    labels = np.array([0, 0, 1, 1, -1, 2, 2])
    truth = np.array([5, 5, 5, 6, 6, 7, 7])
    q = pseudo_label_quality(labels, truth)
    # same-cluster pairs: (0,1) one person, (2,3) two, (5,6) one -> 2 of 3; one person's pairs:
    # 5: 3 pairs, 6: 1, 7: 1 -> the clusters keep (0,1) and (5,6): 2 of 5
    assert q["pair_precision"] == pytest.approx(2 / 3)
    assert q["pair_recall"] == pytest.approx(2 / 5)
    assert q["true_ids"] == 3
    # the outlier is a cluster of its own for ARI / NMI
    assert q["ari"] == pytest.approx(adjusted_rand_score(truth, [0, 0, 1, 1, 3, 2, 2]))
    perfect = pseudo_label_quality(np.array([1, 1, 0, 0]), np.array([8, 8, 9, 9]))
    assert perfect["ari"] == 1.0 and perfect["pair_precision"] == 1.0 and perfect["pair_recall"] == 1.0


# ---------------------------------------------------------------------- the unlabelled adapter
def _jpeg(path, shade=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 64), (shade, 40, 200 - shade)).save(path)


def test_unlabelled_folder_reads_every_image_without_identities(tmp_path):
    _jpeg(tmp_path / "0001" / "a_c1.jpg")
    _jpeg(tmp_path / "0001" / "b_c2.png")
    _jpeg(tmp_path / "day2" / "deep" / "c_c2.jpg")
    _jpeg(tmp_path / ".thumbs" / "x_c1.jpg")            # hidden: left out
    (tmp_path / "notes.txt").write_text("not an image")
    ds = build_dataset("unlabelled", tmp_path)
    assert [Path(s.path).name for s in ds.train] == ["a_c1.jpg", "b_c2.png", "c_c2.jpg"]
    assert {s.pid for s in ds.train} == {-1} and not ds.query and not ds.gallery
    assert all(s.meta["camera_known"] is False for s in ds.train)
    cams = build_dataset("unlabelled", tmp_path, cam_pattern=r"_c(?P<cam>\d)")
    assert [s.camid for s in cams.train] == [1, 2, 2] and all(s.meta["camera_known"] for s in cams.train)
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("unlabelled", tmp_path / "0001" / "missing")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    _jpeg(tmp_path / "empty" / ".hidden" / "x.jpg")
    with pytest.raises(DataError, match="no images found"):
        build_dataset("unlabelled", tmp_path / "empty")


# ---------------------------------------------------------------------- the target site
def test_target_site_config_changes_what_a_new_site_changes(tmp_path):
    values = yaml.safe_load((ROOT / "configs" / "synth" / "target_site.yaml").read_text())
    cfg = SynthConfig.from_dict({**values, "train_identities": 3, "test_identities": 2, "distractors": 2,
                                 "junk": 1})
    assert set(values) <= {f for f in SynthConfig.__dataclass_fields__}   # no key silently ignored
    generate(tmp_path / "t", cfg, workers=1)
    meta = json.loads((tmp_path / "t" / "synth.json").read_text())
    cams = meta["cameras"]
    assert {c["background"] for c in cams} <= {"foliage", "glass"}
    assert all(15 <= c["elevation"] <= 35 and 0.5 <= c["blur"] <= 1.2 for c in cams)
    default = SynthConfig()
    assert default.seed != cfg.seed and not set(cfg.background_styles) & set(default.background_styles)
    with pytest.raises(ValueError, match="background_styles"):
        SynthConfig(background_styles=("marble",))


# ---------------------------------------------------------------------- the CLI
def _run(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("KEYREID_DEBUG", None)
    return subprocess.run([*KEYREID, "adapt", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def _one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*")) if folder.exists() else []


def _small_flags():
    return [x for s in SMALL for x in ("--set", s)]


def test_cli_adapts_and_resumes(source, tiny_synth, tmp_path):
    out = tmp_path / "run"
    first = _run(source, "--target", tiny_synth / "bounding_box_train", "-o", out, "--epochs", "1", *_small_flags())
    assert first.returncode == 0, first.stderr + first.stdout
    assert "clusters" in first.stdout and (out / "best.pt").is_file()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and int(rows[0]["clusters"]) >= 2
    assert "truth_ari" not in rows[0]      # an unlabelled folder has no truth to audit
    # one more epoch resumes the run; another target is refused in one line
    more = _run(source, "--target", tiny_synth / "bounding_box_train", "-o", out, "--epochs", "2",
                "--allow-config-change", *_small_flags())
    assert more.returncode == 0, more.stderr
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 2
    before = _tree(out)
    other = _run(source, "--target", tiny_synth / "query", "-o", out, *_small_flags())
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.startswith("error: ") and "cannot resume" in other.stderr and "target.root" in other.stderr
    assert _tree(out) == before


@pytest.mark.parametrize("case", ["empty", "unreadable", "too_few", "all_outliers", "one_cluster", "skeleton",
                                  "no_checkpoint"])
def test_cli_refuses_bad_targets_in_one_line(case, source, tiny_synth, tmp_path):
    target = tmp_path / "target"
    train = sorted((Path(tiny_synth) / "bounding_box_train").glob("*.jpg"))
    target.mkdir()
    if case != "empty":
        for p in train:
            (target / p.name).write_bytes(p.read_bytes())
    flags = _small_flags()
    ckpt = source
    if case == "unreadable":
        (target / "0099_c1s1_000001_00.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    elif case == "too_few":
        for p in sorted(target.glob("*.jpg"))[3:]:
            p.unlink()
    elif case == "all_outliers":
        flags += ["--eps", "0.001", "--set", "cluster.min_samples=5"]
    elif case == "one_cluster":
        flags += ["--eps", "0.99", "--min-samples", "2"]
    elif case == "skeleton":   # a sidecar of car keypoints for a person model's target
        lines = [json.dumps({"format": "keyreid-keypoints", "version": 1, "skeleton": "veri20"})]
        lines += [json.dumps({"path": p.name, "keypoints": [[10.0, 10.0, 1.0]] * 20}) for p in train]
        (target / "keypoints.jsonl").write_text("\n".join(lines) + "\n")
    elif case == "no_checkpoint":
        ckpt = tmp_path / "nowhere" / "best.pt"
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")        # a folder the user already has
    before_target, before_out = _tree(target), _tree(out)
    result = _run(ckpt, "--target", target, "-o", out, *flags)
    expected = {"empty": ("no images found",), "unreadable": ("0099_c1s1_000001_00.jpg",),
                "too_few": ("3 target images", "fewer than"), "all_outliers": ("outliers", "raise --eps"),
                "one_cluster": ("one cluster", "lower --eps"), "skeleton": ("veri20", "coco17"),
                "no_checkpoint": ("not found",)}[case]
    _one_line_error(result, *expected)
    assert _tree(target) == before_target and _tree(out) == before_out
