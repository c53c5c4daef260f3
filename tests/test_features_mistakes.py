"""Features folders that would be silently wrong or crash: shards of two splits mixed, a
truncated features.npy, a damaged rows.jsonl, a disk too small for the memory-mapped file, -o
naming a file, a decompression bomb under --on-error skip. Each is one line (exit 2) through the
real CLI, and nothing the user has is changed."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

import keyreid.cli as cli
from tests.serve_helpers import build_index_for_tests


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    monkeypatch.setattr(cli, "_DEBUG", False)
    monkeypatch.delenv("KEYREID_DEBUG", raising=False)
    monkeypatch.setenv("KEYREID_PROGRESS", "plain")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out, err


def one_error_line(code: int, err: str, *needles: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def digest(root: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tiny_synth, tmp_path_factory):
    return build_index_for_tests(tmp_path_factory.mktemp("features_index"), tiny_synth)


@pytest.fixture(scope="module")
def images(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for p in built["gallery"][:12]:
        shutil.copy(p, folder / Path(p).name)
    return folder


def test_shards_of_two_splits_are_never_one_set(built, images, tmp_path, monkeypatch, capsys):
    out = tmp_path / "features"
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", out, "--shard", "0/2"], monkeypatch, capsys)
    assert code == 0, err
    before = digest(out)
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", out, "--shard", "1/3"], monkeypatch, capsys)
    one_error_line(code, err, "another split", "shard-00000-of-00002", "1/3")
    assert digest(out) == before
    # a set assembled by hand from two runs (0/2 copied beside 1/3 and 2/3) is refused when read
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", tmp_path / "three", "--shard", "1/3"],
                           monkeypatch, capsys)
    assert code == 0, err
    mixed = tmp_path / "mixed"
    shutil.copytree(out / "shard-00000-of-00002", mixed / "shard-00000-of-00002")
    shutil.copytree(tmp_path / "three" / "shard-00001-of-00003", mixed / "shard-00001-of-00003")
    code, _, err = run_cli(["index", "build", mixed, "-o", tmp_path / "index"], monkeypatch, capsys)
    one_error_line(code, err, "mixes shards of different splits")
    assert not (tmp_path / "index").exists()
    # one shard renamed to look like another is refused too
    lying = tmp_path / "lying"
    shutil.copytree(out / "shard-00000-of-00002", lying / "shard-00000-of-00002")
    shutil.copytree(out / "shard-00000-of-00002", lying / "shard-00001-of-00002")
    code, _, err = run_cli(["index", "build", lying, "-o", tmp_path / "index"], monkeypatch, capsys)
    one_error_line(code, err, "shard-00001-of-00002", "manifest says shard 0/2")
    # the complete 0/2 + 1/2 set still builds
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", out, "--shard", "1/2"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_cli(["index", "build", out, "-o", tmp_path / "good"], monkeypatch, capsys)
    assert code == 0, err


def test_damaged_features_files_are_one_line_naming_the_file(built, images, tmp_path, monkeypatch, capsys):
    good = tmp_path / "good"
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", good], monkeypatch, capsys)
    assert code == 0, err
    cases = {}
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    data = (cut / "features.npy").read_bytes()
    (cut / "features.npy").write_bytes(data[:len(data) // 2])
    cases[cut] = ("features.npy",)
    garbled = tmp_path / "garbled"
    shutil.copytree(good, garbled)
    lines = (garbled / "rows.jsonl").read_text().splitlines(keepends=True)
    lines[4] = '{"path": "x.jpg", "pid": \n'
    (garbled / "rows.jsonl").write_text("".join(lines))
    cases[garbled] = ("rows.jsonl", "line 5")
    notrow = tmp_path / "notrow"
    shutil.copytree(good, notrow)
    lines = (notrow / "rows.jsonl").read_text().splitlines(keepends=True)
    lines[2] = "[1, 2, 3]\n"
    (notrow / "rows.jsonl").write_text("".join(lines))
    cases[notrow] = ("rows.jsonl", "line 3")
    for folder, needles in cases.items():
        before = digest(folder)
        code, _, err = run_cli(["index", "build", folder, "-o", tmp_path / f"index_{folder.name}"], monkeypatch,
                               capsys)
        one_error_line(code, err, *needles)
        assert digest(folder) == before and not (tmp_path / f"index_{folder.name}").exists()


def test_a_disk_too_small_for_the_features_is_one_line_before_writing(built, images, tmp_path, monkeypatch,
                                                                      capsys):
    import collections

    import keyreid.search.features as features

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", tmp_path / "f"], monkeypatch, capsys)
    one_error_line(code, err, "features.npy", "MB free")
    assert not (tmp_path / "f" / "features.npy").exists()


def test_output_naming_a_file_is_refused_and_the_file_kept(built, images, tmp_path, monkeypatch, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run_cli(["extract", built["checkpoint"], images, "-o", target], monkeypatch, capsys)
    one_error_line(code, err, "notes.txt", "is a file, not a features folder")
    assert target.read_text() == "mine"


def test_a_bomb_is_never_skipped(built, images, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "with_bomb"
    shutil.copytree(images, folder)
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(folder / "zz_huge.jpg")
    Image.open(folder / "zz_huge.jpg").close()
    (folder / "broken.jpg").write_bytes(b"not an image")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 20_000)       # synthetic crops are 8,192
    code, _, err = run_cli(["extract", built["checkpoint"], folder, "-o", tmp_path / "f", "--on-error", "skip"],
                           monkeypatch, capsys)
    one_error_line(code, err, "zz_huge.jpg", "decompression-bomb")
