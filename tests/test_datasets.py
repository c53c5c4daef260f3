"""Dataset adapters, check_dataset and the `datasets` CLI on tiny fake trees."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import fake_trees as ft
from keyreid.data.datasets import build_dataset, dataset_names
from keyreid.data.datasets.base import relabel
from keyreid.data.datasets.check import check_dataset, official_counts
from keyreid.data.keypoints import write_sidecar
from keyreid.errors import DataError


def names(samples):
    return [Path(s.path).name for s in samples]


def labels(samples):
    return [(Path(s.path).name, s.pid, s.camid) for s in samples]


def test_all_adapters_registered():
    assert {"market1501", "dukemtmc", "msmt17", "veri776", "cub200", "cars196",
            "folder"} <= set(dataset_names())
    for name in ("market1501", "dukemtmc", "msmt17", "veri776", "cub200", "cars196"):
        counts = official_counts(name)
        assert set(counts) == {"train", "query", "gallery"}
    assert official_counts("market1501")["gallery"] == {"ids": 751, "images": 15913, "cameras": 6}
    assert official_counts("folder") is None


# ------------------------------------------------------------------------------------ Market

@pytest.mark.parametrize("release_dir", [False, True])
def test_market_parses_labels_drops_junk_keeps_distractors(tmp_path, release_dir):
    data = ft.make_market(tmp_path, release_dir=release_dir)
    ds = build_dataset("market1501", tmp_path)
    assert ds.root == data.resolve() and ds.protocol == "reid" and ds.problems == []
    assert labels(ds.train) == [("0002_c1s1_000451_03.jpg", 2, 0), ("0002_c2s1_000551_01.jpg", 2, 1),
                                ("0007_c3s1_000101_01.jpg", 7, 2), ("0007_c6s2_004001_02.jpg", 7, 5)]
    assert labels(ds.query) == [("0003_c1s1_000201_00.jpg", 3, 0), ("0005_c4s1_000301_00.jpg", 5, 3)]
    # junk (-1) gone, the distractor (pid 0) stays in the gallery
    assert sorted(labels(ds.gallery)) == [("0000_c1s1_000001_01.jpg", 0, 0),
                                          ("0003_c1s1_000299_02.jpg", 3, 0),
                                          ("0003_c2s1_000211_01.jpg", 3, 1),
                                          ("0005_c5s1_000311_01.jpg", 5, 4)]
    assert all(s.split == "gallery" for s in ds.gallery)
    assert ds.train[3].meta == {"seq": 2, "frame": 4001, "box": 2}
    assert ds.summary()["gallery"] == {"ids": 3, "images": 4, "cameras": 3}


def test_market_malformed_name_raises_or_skips(tmp_path):
    data = ft.make_market(tmp_path)
    ft.write_jpeg(data / "query" / "0003_c1_000201.jpg")
    ft.write_jpeg(data / "query" / "0004_c9s1_000201_00.jpg")  # camera 9 does not exist
    with pytest.raises(DataError, match=r"0003_c1_000201\.jpg.*malformed file name"):
        build_dataset("market1501", tmp_path)
    ds = build_dataset("market1501", tmp_path, on_error="skip")
    assert names(ds.query) == ["0003_c1s1_000201_00.jpg", "0005_c4s1_000301_00.jpg"]
    assert len(ds.problems) == 2
    assert any("0004_c9s1_000201_00.jpg" in p and "camera 9" in p for p in ds.problems)


def test_market_wrong_root_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_dataset("market1501", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*bounding_box_train"):
        build_dataset("market1501", tmp_path / "empty")
    data = ft.make_market(tmp_path / "m")
    for p in (data / "query").iterdir():
        p.unlink()
    (data / "query").rmdir()
    with pytest.raises(DataError, match=r"query.*missing folder"):
        build_dataset("market1501", data)


def test_market_attach_sidecar_keypoints(tmp_path):
    data = ft.make_market(tmp_path)
    ds = build_dataset("market1501", tmp_path)
    kp = np.tile(np.array([[1.0, 2.0, 1.0]], np.float32), (17, 1))
    entries = {f"{Path(s.path).parent.name}/{Path(s.path).name}": kp
               for s in (*ds.train, *ds.query, *ds.gallery)}
    write_sidecar(data / "kp.jsonl", "coco17", entries)
    ds = build_dataset("market1501", tmp_path, keypoints=data / "kp.jsonl")
    assert ds.skeleton == "coco17"
    assert all(np.array_equal(s.keypoints, kp) for s in ds.gallery)


def test_relabel_keeps_original_pids(tmp_path):
    ft.make_market(tmp_path)
    ds = build_dataset("market1501", tmp_path)
    new, mapping = relabel(ds.train)
    assert mapping == {2: 0, 7: 1}
    assert [s.pid for s in new] == [0, 0, 1, 1]
    assert [s.pid for s in ds.train] == [2, 2, 7, 7]  # untouched
    assert new[2].meta["orig_pid"] == 7


# ------------------------------------------------------------------------------------ Duke

def test_duke_parses_labels(tmp_path):
    ft.make_duke(tmp_path)
    ds = build_dataset("dukemtmc", tmp_path)
    assert labels(ds.train) == [("0001_c2_f0046182.jpg", 1, 1), ("0001_c5_f0051341.jpg", 1, 4),
                                ("0008_c8_f0000001.jpg", 8, 7)]
    assert labels(ds.query) == [("0005_c1_f0001234.jpg", 5, 0)]
    assert sorted(labels(ds.gallery)) == [("0005_c1_f0001299.jpg", 5, 0),
                                          ("0005_c3_f0001300.jpg", 5, 2),
                                          ("0412_c7_f0000003.jpg", 412, 6)]
    assert ds.train[0].meta == {"frame": 46182}


def test_duke_malformed_name(tmp_path):
    data = ft.make_duke(tmp_path)
    ft.write_jpeg(data / "bounding_box_test" / "0005_c3_f12.jpg")
    with pytest.raises(DataError, match=r"0005_c3_f12\.jpg.*PPPP_cC_fFFFFFFF"):
        build_dataset("dukemtmc", tmp_path)


# ------------------------------------------------------------------------------------ MSMT17

@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_lists_and_val(tmp_path, version):
    ft.make_msmt17(tmp_path, version)
    ds = build_dataset("msmt17", tmp_path)
    assert ds.version == version and ds.val == []
    assert labels(ds.train) == [("0000_000_01_0303morning_0015_0.jpg", 0, 0),
                                ("0000_001_03_0303morning_0017_1.jpg", 0, 2),
                                ("0001_000_15_0303noon_0100_0.jpg", 1, 14),
                                ("0002_000_07_0303noon_0200_0.jpg", 2, 6)]  # val merged
    assert labels(ds.query) == [("0000_000_02_0303afternoon_0001_0.jpg", 0, 1)]
    assert labels(ds.gallery) == [("0000_001_04_0303afternoon_0002_0.jpg", 0, 3),
                                  ("0001_000_05_0303afternoon_0003_0.jpg", 1, 4)]
    test_dir = "test" if version == "V1" else "mask_test_v2"
    assert Path(ds.query[0].path).parent.parent.name == test_dir
    sep = build_dataset("msmt17", tmp_path, keep_val_separate=True)
    assert len(sep.train) == 3 and names(sep.val) == ["0002_000_07_0303noon_0200_0.jpg"]


def test_msmt17_jpeg_extension_fallback_and_errors(tmp_path):
    data = ft.make_msmt17(tmp_path, "V2")
    old = data / "mask_test_v2/0000/0000_000_02_0303afternoon_0001_0.jpg"
    old.rename(old.with_suffix(".jpeg"))
    ds = build_dataset("msmt17", data)
    assert ds.query[0].path.endswith(".jpeg")
    with open(data / "list_gallery.txt", "a") as f:
        f.write("0001/0001_000_05_0303afternoon_0099_0.jpg 1\n")  # not on disk
    with pytest.raises(DataError, match=r"0099_0\.jpg.*list_gallery\.txt line 3 but missing"):
        build_dataset("msmt17", data)
    with open(data / "list_query.txt", "a") as f:
        f.write("0001/0001_000_x_bad.jpg\n")
    ds = build_dataset("msmt17", data, on_error="skip")
    assert len(ds.problems) == 2
    assert any("list_query.txt" in p and "line 2" in p for p in ds.problems)


def test_msmt17_missing_layout(tmp_path):
    data = ft.make_msmt17(tmp_path, "V1")
    (data / "train").rename(data / "elsewhere")
    with pytest.raises(DataError, match="train/, mask_train_v2/"):
        build_dataset("msmt17", tmp_path)


# ------------------------------------------------------------------------------------ VeRi

def test_veri_labels_tracks_keypoints(tmp_path):
    data = ft.make_veri(tmp_path)
    ds = build_dataset("veri776", tmp_path)
    assert ds.root == data.resolve() and ds.skeleton == "veri20"
    assert labels(ds.train) == [("0001_c001_00016450_0.jpg", 1, 0), ("0001_c002_00016460_1.jpg", 1, 1),
                                ("0002_c020_00020000_0.jpg", 2, 19)]
    assert labels(ds.query) == [("0003_c004_00030600_0.jpg", 3, 3)]
    assert [s.pid for s in ds.gallery] == [3, 3, 4]
    assert ds.train[0].meta == {"frame": 16450, "index": 0, "orientation": 3}
    # tracks
    assert ds.tracks == [["0003_c005_00030700_0.jpg", "0003_c005_00030705_1.jpg"],
                         ["0004_c004_00030800_0.jpg"]]
    assert [s.meta["track"] for s in ds.gallery] == [0, 0, 1]
    assert "track" not in ds.query[0].meta
    # keypoints: values from the file, -1 -1 -> invisible
    line = ft.veri_keypoint_line("x", "0001_c001_00016450_0.jpg", 0).split()
    xy = np.array(line[1:41], dtype=float).reshape(20, 2)
    kp = ds.train[0].keypoints
    assert kp.shape == (20, 3) and kp.dtype == np.float32
    assert kp[5].tolist() == [0, 0, 0]
    mask = np.arange(20) != 5
    assert np.array_equal(kp[mask, :2], xy[mask]) and (kp[mask, 2] == 1).all()
    # the query's keypoints come from keypoint_test.txt
    assert ds.query[0].keypoints is not None
    assert build_dataset("veri776", tmp_path, keypoints=False).train[0].keypoints is None


def test_veri_keypoint_file_problems(tmp_path):
    data = ft.make_veri(tmp_path)
    lines = (data / "keypoint_train.txt").read_text().splitlines(keepends=True)
    (data / "keypoint_train.txt").write_text("".join(lines[:2]))  # third image has no entry
    with pytest.raises(DataError, match=r"keypoint_train\.txt.*missing entry for 0002_c020"):
        build_dataset("veri776", data)
    bad = lines[2].split()
    bad[3] = "-7"  # x of keypoint 2
    (data / "keypoint_train.txt").write_text("".join(lines[:2]) + " ".join(bad) + "\n")
    with pytest.raises(DataError, match=r"keypoint_train\.txt: line 3: keypoint 2 .* out of range"):
        build_dataset("veri776", data)
    (data / "keypoint_train.txt").write_text("".join(lines[:2]) + lines[2].rsplit(" ", 3)[0] + "\n")
    with pytest.raises(DataError, match=r"keypoint_train\.txt: line 3: expected an image path"):
        build_dataset("veri776", data)


def test_veri_name_list_and_malformed_name(tmp_path):
    data = ft.make_veri(tmp_path, keypoints=False)
    with open(data / "name_test.txt", "a") as f:
        f.write("0004_c004_00030900_0.jpg\n")
    with pytest.raises(DataError, match=r"image_test/0004_c004_00030900_0\.jpg.*name_test\.txt line 4"):
        build_dataset("veri776", data)
    (data / "name_test.txt").unlink()  # without the list the folder decides
    ft.write_jpeg(data / "image_test" / "0004_c4_1.jpg")
    with pytest.raises(DataError, match=r"0004_c4_1\.jpg.*VVVV_cCCC_FFFFFFFF_N"):
        build_dataset("veri776", data)


# ------------------------------------------------------------------------------------ CUB

def test_cub_retrieval_split_parts_boxes(tmp_path):
    data = ft.make_cub(tmp_path)
    ds = build_dataset("cub200", tmp_path)
    assert ds.protocol == "retrieval" and ds.skeleton == "cub15" and ds.root == data.resolve()
    assert [(s.meta["image_id"], s.pid, s.camid) for s in ds.train] == [(1, 1, 0), (2, 1, 0), (3, 100, 0)]
    assert [(s.meta["image_id"], s.pid) for s in ds.query] == [(4, 101), (5, 101), (6, 200)]
    assert [s.path for s in ds.query] == [s.path for s in ds.gallery]
    assert {s.split for s in ds.gallery} == {"gallery"}
    for s in (*ds.train, *ds.query):
        img = s.meta["image_id"]
        want = np.array([ft.cub_part(img, p) for p in range(1, 16)], dtype=np.float32)
        assert np.array_equal(s.keypoints, want)  # 0-based pixel positions, used as given
        assert s.bbox == (1.0, 0.0, 6.0, 3.0)
    assert ds.summary()["query"] == {"ids": 2, "images": 3, "cameras": 1}


def test_cub_part_problems(tmp_path):
    data = ft.make_cub(tmp_path)
    locs = (data / "parts" / "part_locs.txt").read_text().splitlines(keepends=True)
    (data / "parts" / "part_locs.txt").write_text("".join(locs[:-1]))  # image 6 lacks part 15
    with pytest.raises(DataError, match=r"part_locs\.txt: image id 6 .*missing part\(s\) \[15\]"):
        build_dataset("cub200", data)
    locs[1] = "1 2 -5.0 3.0 1\n"
    (data / "parts" / "part_locs.txt").write_text("".join(locs))
    with pytest.raises(DataError, match=r"part_locs\.txt: line 2: part 2 at \(-5, 3\) is out of range"):
        build_dataset("cub200", data)
    ds = build_dataset("cub200", data, on_error="skip")
    assert [s.meta["image_id"] for s in ds.train] == [2, 3]  # image 1 skipped
    assert len(ds.problems) == 2


def test_cub_missing_image(tmp_path):
    data = ft.make_cub(tmp_path)
    (data / "images" / ft.CUB_IMAGES[2][1]).unlink()
    with pytest.raises(DataError, match=r"Brown_Pelican_0001_1\.jpg: listed in images\.txt line 3"):
        build_dataset("cub200", data)


# ------------------------------------------------------------------------------------ Cars196

def test_cars196_mat_split_and_boxes(tmp_path):
    data = ft.make_cars(tmp_path)
    ds = build_dataset("cars196", data)
    assert ds.protocol == "retrieval"
    assert [(Path(s.path).name, s.pid, s.camid) for s in ds.train] == [
        ("000001.jpg", 1, 0), ("000002.jpg", 1, 0), ("000003.jpg", 98, 0)]
    assert [(Path(s.path).name, s.pid) for s in ds.query] == [("000004.jpg", 99), ("000005.jpg", 196)]
    assert [s.path for s in ds.gallery] == [s.path for s in ds.query]
    # 1-based inclusive MATLAB boxes -> 0-based (x, y, w, h)
    assert ds.train[0].bbox == (0.0, 0.0, 8.0, 4.0)
    assert ds.train[1].bbox == (1.0, 0.0, 6.0, 3.0)
    assert [s.meta["test"] for s in ds.train] == [0, 1, 0]


def test_cars196_problems(tmp_path):
    data = ft.make_cars(tmp_path)
    (data / "car_ims" / "000003.jpg").unlink()
    with pytest.raises(DataError, match=r"000003\.jpg: annotation 3 in cars_annos\.mat: image missing"):
        build_dataset("cars196", data)
    (data / "cars_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"cars_annos\.mat: cannot read"):
        build_dataset("cars196", data)
    (data / "cars_annos.mat").unlink()
    with pytest.raises(DataError, match="expected cars_annos.mat"):
        build_dataset("cars196", data)


# ------------------------------------------------------------------------------------ folder

IDS = {"alice": ["a1.jpg", "a2.jpg", "a3.jpg"], "bob": ["b1.jpg", "b2.jpg"],
       "carol": ["c1.png"], "dave": ["d1.jpg", "d2.jpg"]}


def test_folder_pool_split_is_seeded(tmp_path):
    ft.make_folder(tmp_path, IDS)
    (tmp_path / "notes.txt").write_text("ignored")
    a = build_dataset("folder", tmp_path, seed=3)
    b = build_dataset("folder", tmp_path, seed=3)
    assert labels(a.train + a.query + a.gallery) == labels(b.train + b.query + b.gallery)
    everything = a.train + a.query + a.gallery
    assert len(everything) == 8
    assert {s.meta["identity"]: s.pid for s in everything} == {"alice": 0, "bob": 1, "carol": 2, "dave": 3}
    train_ids = {s.pid for s in a.train}
    test_ids = {s.pid for s in a.query + a.gallery}
    assert len(train_ids) == 2 and not train_ids & test_ids
    for pid in {s.pid for s in a.query}:
        assert sum(s.pid == pid for s in a.query) == 1
    # without cameras: query camid 0, everything else 1 -> no gallery item is "same camera"
    assert {s.camid for s in a.query} <= {0} and {s.camid for s in a.gallery + a.train} == {1}
    assert all(not s.meta["camera_known"] for s in everything)
    all_train = build_dataset("folder", tmp_path, test_fraction=0)
    assert len(all_train.train) == 8 and all_train.query == []


def test_folder_explicit_splits_and_camera_regex(tmp_path):
    ft.make_folder(tmp_path / "train", {"x": ["x_c1_1.jpg", "x_c2_2.jpg"]})
    ft.make_folder(tmp_path / "query", {"y": ["y_c1_1.jpg"]})
    ft.make_folder(tmp_path / "gallery", {"y": ["y_c2_2.jpg", "y_c3_3.jpg"], "z": ["z_c1_1.jpg"]})
    ds = build_dataset("folder", tmp_path, cam_pattern=r"_c(?P<cam>\d+)_")
    assert labels(ds.train) == [("x_c1_1.jpg", 0, 1), ("x_c2_2.jpg", 0, 2)]
    assert labels(ds.query) == [("y_c1_1.jpg", 1, 1)]
    assert labels(ds.gallery) == [("y_c2_2.jpg", 1, 2), ("y_c3_3.jpg", 1, 3), ("z_c1_1.jpg", 2, 1)]
    ft.write_jpeg(tmp_path / "gallery" / "z" / "nocam.jpg")
    with pytest.raises(DataError, match=r"nocam\.jpg: file name does not match cam_pattern"):
        build_dataset("folder", tmp_path, cam_pattern=r"_c(?P<cam>\d+)_")


def test_folder_train_test_layout(tmp_path):
    ft.make_folder(tmp_path / "train", {"x": ["1.jpg", "2.jpg"]})
    ft.make_folder(tmp_path / "test", {"y": ["1.jpg", "2.jpg", "3.jpg"], "z": ["1.jpg"]})
    ds = build_dataset("folder", tmp_path, query_per_id=2)
    assert len(ds.train) == 2
    assert [s.meta["identity"] for s in ds.query] == ["y", "y"]
    assert sorted(s.meta["identity"] for s in ds.gallery) == ["y", "z"]


def test_folder_manifest(tmp_path):
    ft.make_folder(tmp_path, {"imgs": ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]})
    rows = [("imgs/1.jpg", 10, 0, "train"), ("imgs/2.jpg", 11, 1, "query"),
            ("imgs/3.jpg", 11, 2, "gallery"), ("imgs/4.jpg", 12, 3, "gallery")]
    with open(tmp_path / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "pid", "camid", "split"])
        w.writerows(rows)
    ds = build_dataset("folder", tmp_path, manifest="data.csv")
    assert labels(ds.train) == [("1.jpg", 10, 0)]
    assert labels(ds.query) == [("2.jpg", 11, 1)]
    assert labels(ds.gallery) == [("3.jpg", 11, 2), ("4.jpg", 12, 3)]
    with open(tmp_path / "data.csv", "a", newline="") as f:
        csv.writer(f).writerow(["imgs/9.jpg", 12, 3, "gallery"])
    with pytest.raises(DataError, match=r"9\.jpg: listed in data\.csv line 6 but missing"):
        build_dataset("folder", tmp_path / "data.csv")


def test_folder_empty_root(tmp_path):
    with pytest.raises(DataError, match="no images found"):
        build_dataset("folder", tmp_path)


# ------------------------------------------------------------------------------------ check

def test_check_clean_tree_without_official(tmp_path):
    ft.make_market(tmp_path)
    report = check_dataset(tmp_path, "market1501", expect_official=False)
    assert report.ok, report.problems
    assert report.images_checked == 10
    assert report.counts["train"] == {"ids": 2, "images": 4, "cameras": 4}
    assert report.official == official_counts("market1501")
    assert ("train", "ids", 2, 751) in report.mismatches()


def test_check_reports_every_problem_at_once(tmp_path):
    data = ft.make_market(tmp_path)
    ft.truncate(data / "query" / "0005_c4s1_000301_00.jpg")
    (data / "bounding_box_test" / "0003_c2s1_000211_01.jpg").write_bytes(b"garbage")
    ft.write_jpeg(data / "bounding_box_train" / "bad_name.jpg")
    report = check_dataset(tmp_path, "market1501", expect_official=True)
    text = "\n".join(report.problems)
    assert not report.ok
    assert "bad_name.jpg: malformed file name" in text
    assert "0005_c4s1_000301_00.jpg: unreadable or truncated image" in text
    assert "0003_c2s1_000211_01.jpg: not a readable image" in text
    assert "train: 2 ids, the official release has 751" in text
    assert "gallery: 4 images, the official release has 15913" in text
    # counts are information unless the official release is required
    default = check_dataset(tmp_path, "market1501")
    assert default.problems == [p for p in report.problems if "official release" not in p]
    assert len(default.problems) == 3
    no_images = check_dataset(tmp_path, "market1501", verify_images=False)
    assert no_images.problems == [p for p in report.problems if "bad_name" in p]


def test_check_keypoints_against_image_size(tmp_path):
    data = ft.make_veri(tmp_path)
    lines = (data / "keypoint_train.txt").read_text().splitlines(keepends=True)
    bad = lines[0].split()
    bad[1] = "50"  # keypoint 1 x beyond the 8-pixel-wide image
    lines[0] = " ".join(bad) + "\n"
    lines.pop(1)  # and one entry missing
    (data / "keypoint_train.txt").write_text("".join(lines))
    report = check_dataset(data, "veri776", expect_official=False)
    text = "\n".join(report.problems)
    assert "0001_c001_00016450_0.jpg (keypoints): visible keypoint 0 at (50" in text
    assert "missing entry for 0001_c002_00016460_1.jpg" in text
    assert len(report.problems) == 2


def test_check_wrong_layout_is_one_problem(tmp_path):
    report = check_dataset(tmp_path, "dukemtmc")
    assert len(report.problems) == 1 and "bounding_box_train" in report.problems[0]


@pytest.mark.parametrize("name,make", [("dukemtmc", ft.make_duke), ("msmt17", ft.make_msmt17),
                                       ("cub200", ft.make_cub), ("cars196", ft.make_cars)])
def test_check_other_fakes_clean(tmp_path, name, make):
    data = make(tmp_path)
    report = check_dataset(data, name, expect_official=False)
    assert report.ok, report.problems
    assert report.images_checked > 0


# ------------------------------------------------------------------------------------ CLI

def test_cli_check_and_summary(tmp_path):
    from keyreid.commands.datasets import app

    ft.make_market(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["check", str(tmp_path), "--dataset", "market1501"])
    assert ok.exit_code == 0, ok.output
    assert "no problems" in ok.output
    assert "differ from the official release" in ok.output and "information" in ok.output
    bad = runner.invoke(app, ["check", str(tmp_path), "--dataset", "market1501", "--official"])
    assert bad.exit_code == 2
    assert "12,936" in bad.output and "9 problem(s)" in bad.output  # 3 splits x ids, images, cameras
    summary = runner.invoke(app, ["summary", str(tmp_path), "--dataset", "market1501"])
    assert summary.exit_code == 0, summary.output
    assert "gallery" in summary.output


def test_veri_keypoints_required_but_absent(tmp_path):
    data = ft.make_veri(tmp_path, keypoints=False)
    assert build_dataset("veri776", data).skeleton is None
    with pytest.raises(DataError, match=r"keypoint_train\.txt: missing file"):
        build_dataset("veri776", data, keypoints=True)
