"""Data mistakes a new user makes, through the real `keyreid` CLI: each is exit code 2 with one
line naming the file or key and the problem, and nothing the user owns is changed or deleted.

`run` calls keyreid.cli.main() in this process (the entry point of the installed command, so
its one-line error rule is what is tested); `run_installed` runs the installed command in a
subprocess, for the data-loss cases."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tests.fake_trees as ft
from keyreid.data.keypoints import COCO17, read_sidecar, write_sidecar
from keyreid.data.synthetic import SynthConfig
from tests.conftest import tiny_overrides

KEYREID = Path(sys.executable).parent / "keyreid"


def run(capsys, *args) -> tuple[int, str, str]:
    from keyreid.cli import main

    argv, sys.argv = sys.argv, ["keyreid", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def run_installed(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(KEYREID), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def one_error_line(text: str) -> str:
    """The single `error: ...` line of a failed command (and proof that there is no traceback)."""
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, text
    return lines[0]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (through links) and its bytes."""
    out = {}
    for dirpath, _, files in os.walk(root, followlinks=True):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def real_market_with_sidecar(root: Path) -> Path:
    """A small real-looking Market-1501 tree (no keyreid marker) with a keypoint sidecar."""
    data = ft.make_market(root)
    kp = np.zeros((17, 3), np.float32)
    kp[:, :2], kp[:, 2] = (3.0, 2.0), 1.0
    write_sidecar(data / "keypoints.jsonl", COCO17,
                  {f"bounding_box_train/{n}": kp for n in ft.MARKET_FILES["bounding_box_train"]})
    return data


def train_sets(root, out, **extra) -> list[str]:
    values = {"optim.epochs": 1, **extra}
    if values.get("head") == "kae":
        values["model.head_options"] = "{group_channels: 8}"
    return [a for o in tiny_overrides(root, out, **values) for a in ("--set", o)]


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\n")
    return path


@pytest.fixture
def tree(tiny_synth, tmp_path) -> Path:
    """A private copy of the tiny synthetic tree (keypoints.jsonl included) to spoil."""
    return Path(shutil.copytree(tiny_synth, tmp_path / "data"))


def rewrite_sidecar(root: Path, change) -> tuple[int, list[str]]:
    """Apply change(entries) to ROOT/keypoints.jsonl; returns (training images, train keys)."""
    skel, entries = read_sidecar(root / "keypoints.jsonl")
    entries = change(dict(entries))
    write_sidecar(root / "keypoints.jsonl", skel, entries)
    train = sorted(p.name for p in (root / "bounding_box_train").iterdir())
    return len(train), [f"bounding_box_train/{n}" for n in train]


# ------------------------------------------------------------------- 1, 2: nothing is deleted

def test_demo_never_touches_a_real_dataset(tmp_path):
    data = real_market_with_sidecar(tmp_path / "market")
    before = snapshot(data)
    r = run_installed("demo", "--data-root", data, "--output", tmp_path / "runs")
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert str(data) in line and "not a keyreid synthetic set" in line and "bounding_box_train" in line
    assert snapshot(data) == before
    assert not (data / ".keyreid-synth").exists()


def test_synth_overwrite_never_deletes_a_real_dataset(tmp_path):
    data = real_market_with_sidecar(tmp_path / "market")
    before = snapshot(data)
    for extra in ([], ["--overwrite"]):
        r = run_installed("synth", data, "-n", "2", "-c", "2", "--distractors", "0", "--junk", "0",
                          "-j", "1", *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "not a keyreid synthetic set" in one_error_line(r.stderr)
        assert snapshot(data) == before


def test_synth_overwrite_replaces_only_its_own_set_and_never_follows_links(tmp_path, capsys):
    out, args = tmp_path / "synth", ["-n", "2", "-c", "2", "--distractors", "0", "--junk", "0", "-j", "1"]
    assert run(capsys, "synth", out, *args)[0] == 0
    code, _, err = run(capsys, "synth", out, *args)
    assert code == 2 and "pass --overwrite" in one_error_line(err)
    # a run killed before synth.json was written still carries the marker: it can be replaced
    (out / "synth.json").unlink()
    # a user's folder linked in as a split folder: the link goes, the folder stays
    mine = tmp_path / "mine"
    ft.write_jpeg(mine / "keep.jpg")
    shutil.rmtree(out / "query")
    (out / "query").symlink_to(mine, target_is_directory=True)
    code, _, err = run(capsys, "synth", out, *args, "--overwrite")
    assert code == 0, err
    assert (mine / "keep.jpg").read_bytes() == ft.jpeg_bytes()
    assert not (out / "query").is_symlink() and any((out / "query").iterdir())
    assert json.loads((out / "synth.json").read_text())["format"] == "keyreid-synth"


# ------------------------------------------------------------------- 3: sidecar coverage

@pytest.mark.parametrize("spoil,expect", [
    (lambda k: k.replace("/", "\\"), "backslashes"),
    (lambda k: "Market-1501/" + k, "matched keys in"),
])
def test_sidecar_keys_that_match_no_image(tree, tmp_path, config, capsys, spoil, expect):
    n, keys = rewrite_sidecar(tree, lambda e: {spoil(k): v for k, v in e.items()})
    before = snapshot(tree)
    code, _, err = run(capsys, "train", config, *train_sets(tree, tmp_path / "run", head="kae"))
    assert code == 2
    line = one_error_line(err)
    assert f"0 of {n} training images matched keys in {tree / 'keypoints.jsonl'}" in line
    assert f"first image '{keys[0]}'" in line and expect in line
    assert snapshot(tree) == before
    assert not (tmp_path / "run" / "last.pt").exists()


def test_training_images_without_sidecar_entries_are_an_error(tree, tmp_path, config, capsys):
    _, keys = rewrite_sidecar(tree, lambda e: e)
    n, _ = rewrite_sidecar(tree, lambda e: {k: v for k, v in e.items() if k not in keys[:3]})
    code, _, err = run(capsys, "train", config, *train_sets(tree, tmp_path / "run", head="kae"))
    assert code == 2
    line = one_error_line(err)
    assert f"3 of {n} training images have no entry in {tree / 'keypoints.jsonl'}" in line
    assert keys[0] in line and "data.allow_missing_keypoints=true" in line


def test_keypoints_for_other_images_are_an_error(tree, tmp_path, config, capsys):
    def scale(entries):  # coordinates of images ten times larger
        return {k: np.column_stack([v[:, :2] * 10, v[:, 2]]) for k, v in entries.items()}

    rewrite_sidecar(tree, scale)
    code, _, err = run(capsys, "train", config, *train_sets(tree, tmp_path / "run", head="kae"))
    assert code == 2
    line = one_error_line(err)
    assert "lie outside their image" in line and "do not fit these images" in line


# ------------------------------------------------------------------- 11: unreadable images

def test_unreadable_image_found_before_training(tree, tmp_path, config, capsys):
    bad = [p for p in sorted((tree / "bounding_box_test").iterdir()) if not p.name.startswith("-1")][0]
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "train", config, *train_sets(tree, tmp_path / "run"))
    assert code == 2
    line = one_error_line(err)
    assert f"1 unreadable image(s) in {tree}, first: {bad}: not a readable image" in line
    assert "on_error=skip" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_truncated_image_in_a_loader_worker_is_one_line(tree, tmp_path, config, capsys):
    first = sorted((tree / "bounding_box_train").iterdir())
    same_id = [p for p in first if p.name[:4] == first[0].name[:4]]
    for p in same_id:  # every image of one identity, so that the epoch's batches draw one
        ft.truncate(p)  # the header is intact: only decoding finds it, in a worker process
    code, _, err = run(capsys, "train", config, *train_sets(tree, tmp_path / "run", **{"data.workers": 2}))
    assert code == 2
    line = one_error_line(err)
    assert any(f"{p}: unreadable or truncated image" in line for p in same_id), line
    assert "DataLoader" not in err and "Caught" not in err


# ------------------------------------------------------------------- 3, 10, 11: a messy tree trains

def test_messy_real_tree_trains_and_evaluates(tree, tmp_path, config, capsys, monkeypatch):
    """Split folders linked from another disk, the auto-detected sidecar missing two training
    entries (opted in), one keypoint outside its image, one broken gallery image (skipped)."""
    elsewhere = tmp_path / "disk2"
    elsewhere.mkdir()
    for d in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.move(tree / d, elsewhere / d)
        (tree / d).symlink_to(elsewhere / d, target_is_directory=True)
    n, keys = rewrite_sidecar(tree, lambda e: e)
    i = int(np.flatnonzero(read_sidecar(tree / "keypoints.jsonl")[1][keys[5]][:, 2] > 0)[0])

    def spoil(entries):
        entries = {k: v for k, v in entries.items() if k not in keys[:2]}
        entries[keys[5]] = entries[keys[5]].copy()
        entries[keys[5]][i, 0] = 500.0
        return entries

    rewrite_sidecar(tree, spoil)
    untouched = snapshot(tree)
    # keypoints check and estimate read the same linked tree
    code, out, err = run(capsys, "keypoints", "check", tree / "keypoints.jsonl", "--root", tree,
                         "-d", "market1501")
    assert "Traceback" not in err and "subpath" not in out + err
    assert "coverage:" in out and "dataset images" in out
    from keyreid.pose.estimators import ESTIMATORS, PoseEstimator, register_estimator

    class Centre(PoseEstimator):
        name, skeleton, batch_size = "centre", COCO17, 8

        def estimate(self, images):
            return [np.array([[im.width / 2, im.height / 2, 0.9]] * 17, np.float32) for im in images]

    if "test-centre" not in ESTIMATORS:
        register_estimator("test-centre")(lambda batch_size=8: Centre())
    est = tmp_path / "est.jsonl"
    code, out, err = run(capsys, "keypoints", "estimate", tree, "-d", "market1501", "-o", est,
                         "-e", "test-centre", "--limit", "4", "--no-progress")
    assert code == 0, out + err
    assert sorted(read_sidecar(est)[1]) == keys[:4]
    assert snapshot(tree) == untouched
    broken = [p for p in sorted((tree / "bounding_box_test").iterdir()) if not p.name.startswith("-1")][0]
    broken.write_bytes(b"\x00" * 10)
    before = snapshot(tree)
    sets = train_sets(tree, tmp_path / "run", head="kae", **{
        "data.allow_missing_keypoints": "true", "data.options": "{on_error: skip}"})
    code, out, err = run(capsys, "train", config, *sets)
    assert code == 0, out + err
    assert f"warning: 2 of {n} training images have no entry in {tree / 'keypoints.jsonl'}" in err
    assert f"note: 1 of " in err and f"{keys[5].split('/')[1]} keypoint {i} at (500" in err
    assert "skipped 1 item(s)" in err and "1 unreadable image(s)" in err
    code, out, err = run(capsys, "eval", config, *sets, "--checkpoint", tmp_path / "run" / "best.pt")
    assert code == 0, out + err
    report = json.loads((tmp_path / "run" / "best.eval.json").read_text())
    assert report["gallery"] == len(list((tree / "bounding_box_test").iterdir())) - 1 - 2  # broken, 2 junk
    assert snapshot(tree) == before


# ------------------------------------------------------------------- 12: folder data, no cameras

def test_folder_data_without_cameras_validates(tiny_synth, tmp_path, config, capsys):
    root = tmp_path / "people"
    for p in sorted((tiny_synth / "bounding_box_train").iterdir()):
        ident = p.name.split("_")[0]
        (root / ident).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / ident / p.name)
    sets = train_sets(root, tmp_path / "run", **{"data.dataset": "folder", "data.val_identities": 0.3,
                                                 "eval.every": 1, "data.p": 2})
    code, out, err = run(capsys, "train", config, *sets)
    assert code == 0, out + err
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    val = [float(v) for k, v in rows[-1].items() if k.startswith("val") and "mAP" in k and v]
    assert val and 0 < val[0] <= 1


# ------------------------------------------------------------------- 6, 14: datasets check / summary

def write_manifest(root: Path, rows: list[str]) -> Path:
    for i in range(4):
        ft.write_jpeg(root / f"img{i}.jpg")
    path = root / "list.csv"
    path.write_text("path,pid,split\n" + "\n".join(rows) + "\n")
    return path


def test_manifest_mistakes_name_file_and_line(tmp_path, capsys):
    manifest = write_manifest(tmp_path, [
        "img0.jpg,1,query", "img1.jpg,1,gallery", "img2.jpg,2,gallery", "img3.jpg,2x,gallery",
        "img1.jpg,1,gallery", "img2.jpg,3,train"])
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "datasets", "check", tmp_path, "-d", "folder", "-o", f"manifest={manifest}")
    assert code == 2
    text = " ".join(out.split())
    assert f"{manifest}: line 5: pid '2x' is not an integer (the other pids are)" in text
    assert f"{manifest}: line 6: img1.jpg is listed twice (also on line 3)" in text
    assert f"{manifest}: line 7: img2.jpg is listed under pid '3' here and under pid '2' on line 4" in text
    code, out, err = run(capsys, "datasets", "summary", tmp_path, "-d", "folder", "-o", f"manifest={manifest}")
    assert code == 2
    assert one_error_line(err) == f"error: {manifest}: line 6: img1.jpg is listed twice (also on line 3)"
    assert snapshot(tmp_path) == before


def test_manifest_pids_are_kept_as_given(tmp_path):
    from keyreid.data.datasets import build_dataset

    manifest = write_manifest(tmp_path, ["img0.jpg,7,query", "img1.jpg,7,gallery", "img2.jpg,12,gallery"])
    ds = build_dataset("folder", tmp_path, manifest=str(manifest))
    assert [s.pid for s in ds.query + ds.gallery] == [7, 7, 12]


def test_check_empty_query_split_and_counts_are_information(tiny_synth, tmp_path, capsys):
    ft.make_folder(tmp_path / "f", {"a": ["1.jpg", "2.jpg"], "b": ["3.jpg", "4.jpg"]})
    code, out, _ = run(capsys, "datasets", "check", tmp_path / "f", "-d", "folder", "-o", "test_fraction=0")
    assert code == 2 and "the query split is empty" in " ".join(out.split())
    # the synthetic benchmark is a correct tree that is not the official release
    code, out, _ = run(capsys, "datasets", "check", tiny_synth, "-d", "market1501")
    assert code == 0 and "no problems found" in out
    assert "differ from the official release" in " ".join(out.split())
    code, out, _ = run(capsys, "datasets", "check", tiny_synth, "-d", "market1501", "--official")
    assert code == 2 and "the official release has 751" in " ".join(out.split())


@pytest.mark.parametrize("args,expect", [
    (["nope"], "does not exist"),
    (["ROOT", "--option", "colour=1"], "has no option(s) colour; its options: on_error, keypoints, num_cameras"),
])
def test_check_and_summary_agree_on_errors(tmp_path, capsys, args, expect):
    data = ft.make_market(tmp_path / "m")
    args = [str(data) if a == "ROOT" else (str(tmp_path / a) if a == "nope" else a) for a in args]
    lines = []
    for cmd in ("check", "summary"):
        code, out, err = run(capsys, "datasets", cmd, args[0], "-d", "market1501", *args[1:])
        assert code == 2, out + err
        lines.append(one_error_line(err))
    assert lines[0] == lines[1] and expect in lines[0]


def test_check_and_summary_agree_on_an_unknown_dataset(tmp_path, capsys):
    results = [run(capsys, "datasets", cmd, tmp_path, "-d", "market1502") for cmd in ("check", "summary")]
    assert [code for code, _, _ in results] == [2, 2]
    lines = [one_error_line(err) for _, _, err in results]
    assert lines[0] == lines[1] and "market1502" in lines[0]


def test_synth_help_keeps_its_defaults():
    r = run_installed("synth", "--help")
    text = " ".join(r.stdout.split())
    d = SynthConfig()
    for flag, value in (("Training identities", d.train_identities), ("Cameras", d.cameras),
                        ("Image height", d.height), ("Image width", d.width),
                        ("pid 0000", d.distractors), ("pid -1", d.junk), ("Random seed", d.seed)):
        assert f"{flag}" in text and f"(default: {value})" in text.split(flag, 1)[1][:40], (flag, text)
