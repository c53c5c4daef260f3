"""extract -> index build -> search through the real CLI, with a tiny trained checkpoint."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from keyreid.cli import app
from keyreid.config import load_config
from keyreid.engine.trainer import Trainer
from keyreid.search.features import read_features
from keyreid.search.index import open_index
from keyreid.viz.ranking import BORDER, MATCH_RGB, MISMATCH_RGB, QUERY_RGB, grid_layout
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
KEYREID = ROOT / ".venv" / "bin" / "keyreid"
PATTERN = r"(?P<pid>-?\d+)_c(?P<cam>\d+)"
runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    over = tiny_overrides(tiny_synth, out, head="bnneck", **{"optim.epochs": 1, "optim.milestones": "[]",
                                                               "optim.warmup_epochs": 0})
    Trainer(load_config(None, over), resume=False, show_progress=False).fit()
    return out / "best.pt"


@pytest.fixture(scope="module")
def other_ckpt(ckpt):
    """Another model: the same checkpoint with one weight changed (so another fingerprint)."""
    from keyreid.inference.card import weights_fingerprint

    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    name = next(k for k, v in ck["model"].items() if v.dtype.is_floating_point and v.numel() > 1)
    ck["model"][name] = ck["model"][name] + 0.01
    card = ck["card"]
    card["fingerprint"] = weights_fingerprint(ck["model"], {k: v for k, v in card.items()
                                                            if k not in ("format", "version", "fingerprint")})
    path = ckpt.parent / "other.pt"
    torch.save(ck, path)
    return path


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def keyreid(*args, env=None):
    return subprocess.run([str(KEYREID), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(ckpt, tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("search")
    gallery = tiny_synth / "bounding_box_test"
    cli("extract", ckpt, gallery, "-o", work / "features", "--pattern", PATTERN, "--batch-size", 16,
        "--device", "cpu")
    cli("index", "build", work / "features", "-o", work / "index")
    return work, gallery


def test_search_finds_the_image_itself_and_ranks_like_brute_force(built, ckpt):
    work, gallery = built
    fs = read_features(work / "features")
    q = 5
    out = cli("search", work / "index", fs.rows[q]["path"], "--top-k", 8, "--json", "--device", "cpu").stdout
    hits = json.loads(out)[0]["hits"]
    assert hits[0]["path"] == fs.rows[q]["path"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    scores = fs.vectors @ fs.vectors[q]
    expected = np.argsort(-scores, kind="stable")[:8]
    assert [h["id"] for h in hits] == expected.tolist()  # ids are row numbers of a fresh build
    np.testing.assert_allclose([h["score"] for h in hits], scores[expected], atol=1e-4)
    assert [h["rank"] for h in hits] == list(range(1, 9))
    assert {h["camid"] for h in hits} <= {r["camid"] for r in fs.rows}


def test_search_filters_rerank_and_table(built):
    work, _ = built
    fs = read_features(work / "features")
    query = fs.rows[3]["path"]
    out = json.loads(cli("search", work / "index", query, "--top-k", 10, "--camera-not", fs.rows[3]["camid"],
                         "--json", "--device", "cpu").stdout)[0]["hits"]
    assert out and all(h["camid"] != fs.rows[3]["camid"] for h in out)
    re = json.loads(cli("search", work / "index", query, "--top-k", 6, "--rerank", "--json",
                        "--device", "cpu").stdout)[0]["hits"]
    d = [h["rerank_distance"] for h in re]
    assert d == sorted(d) and re[0]["path"] == query and len(re) == 6
    table = cli("search", work / "index", query, "--top-k", 3, "--device", "cpu").stdout
    assert "rank" in table and "score" in table and "camera" in table


def test_render_frames_green_for_same_identity(built, tmp_path):
    work, _ = built
    fs = read_features(work / "features")
    query = fs.rows[2]["path"]
    cli("search", work / "index", query, "--top-k", 4, "--render", tmp_path / "ranked.png", "--pattern", PATTERN,
        "--device", "cpu", "--json")
    png = np.asarray(Image.open(tmp_path / "ranked.png").convert("RGB"))
    layout = grid_layout(1, 4)
    assert png.shape[:2] == (layout.height, layout.width)
    hits = json.loads(cli("search", work / "index", query, "--top-k", 4, "--json", "--device", "cpu").stdout)[0]["hits"]
    qpid = int(Path(query).name.split("_")[0])
    x0, y0, _, _ = layout.boxes[(0, 0)]
    assert tuple(png[y0 + BORDER // 2, x0 + 20]) == QUERY_RGB
    for c, h in enumerate(hits, start=1):
        x0, y0, _, _ = layout.boxes[(0, c)]
        want = MATCH_RGB if h["pid"] == qpid else MISMATCH_RGB
        assert tuple(png[y0 + BORDER // 2, x0 + 20]) == want


def test_render_writes_the_format_its_name_says(built, tmp_path, monkeypatch, capsys):
    """--render x.jpg holds JPEG bytes (it held PNG under .jpg), .png PNG; another suffix is one
    line before any work."""
    work, _ = built
    query = read_features(work / "features").rows[2]["path"]
    for name, magic in (("ranked.jpg", b"\xff\xd8\xff"), ("ranked.JPEG", b"\xff\xd8\xff"),
                        ("ranked.png", b"\x89PNG")):
        cli("search", work / "index", query, "--top-k", 2, "--render", tmp_path / name, "--device", "cpu")
        assert (tmp_path / name).read_bytes()[:len(magic)] == magic, name
        assert Image.open(tmp_path / name).format == ("PNG" if magic == b"\x89PNG" else "JPEG")
    one_error_line(main_error(monkeypatch, capsys, "search", work / "index", query, "--render",
                              tmp_path / "ranked.bmpx", "--device", "cpu"), "ranked.bmpx", "picture format")
    assert not (tmp_path / "ranked.bmpx").exists()


def test_a_time_window_on_a_gallery_without_timestamps_says_so(built):
    work, _ = built
    query = read_features(work / "features").rows[2]["path"]
    assert all(r.get("timestamp") is None for r in read_features(work / "features").rows)
    r = cli("search", work / "index", query, "--after", 0, "--json", "--device", "cpu")
    assert json.loads(r.stdout)[0]["hits"] == []
    assert "holds no timestamps" in " ".join(r.stderr.split())
    r = cli("search", work / "index", query, "--json", "--device", "cpu")   # no window: no note
    assert json.loads(r.stdout)[0]["hits"] and "timestamps" not in r.stderr


def test_index_info_add_remove(built, tmp_path):
    work, _ = built
    import shutil

    shutil.copytree(work / "index", tmp_path / "index")
    fs = read_features(work / "features")
    info = json.loads(cli("index", "info", tmp_path / "index", "--json").stdout)
    assert info["count"] == len(fs.rows) and info["fingerprint"] == fs.manifest["fingerprint"]
    assert info["metric"] == "ip" and info["normalized"] is True and info["dim"] == fs.vectors.shape[1]
    cli("index", "add", tmp_path / "index", work / "features", "--allow-duplicates")
    assert len(open_index(tmp_path / "index")) == 2 * len(fs.rows)
    cam1 = sum(r["camid"] == 1 for r in fs.rows)
    out = cli("index", "remove", tmp_path / "index", "--camera", 1).stdout
    assert f"removed {2 * cam1} vectors" in out
    cli("index", "remove", tmp_path / "index", "--ids", "0,2")
    index = open_index(tmp_path / "index")
    assert len(index) == 2 * (len(fs.rows) - cam1) - sum(fs.rows[i]["camid"] != 1 for i in (0, 2))


def test_qdrant_backend_through_the_cli(built, tmp_path):
    work, _ = built
    fs = read_features(work / "features")
    cli("index", "build", work / "features", "-o", tmp_path / "q", "--backend", "qdrant")
    a = json.loads(cli("search", work / "index", fs.rows[1]["path"], "--top-k", 5, "--json",
                       "--device", "cpu").stdout)[0]["hits"]
    b = json.loads(cli("search", tmp_path / "q", fs.rows[1]["path"], "--top-k", 5, "--json",
                       "--device", "cpu").stdout)[0]["hits"]
    assert [h["id"] for h in a] == [h["id"] for h in b]
    np.testing.assert_allclose([h["score"] for h in a], [h["score"] for h in b], atol=1e-5)


def one_error_line(result, *needles):
    assert result.returncode == 2, result.stderr + result.stdout
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def main_error(monkeypatch, capsys, *args):
    """keyreid.cli.main() in this process (a subprocess per case costs ~10 s of imports here)."""
    from keyreid.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    return subprocess.CompletedProcess(args, e.value.code, "", err)


def test_user_mistakes_are_one_line_and_change_nothing(built, other_ckpt, tmp_path, monkeypatch, capsys):
    work, gallery = built
    before_f, before_i = digest(work / "features"), digest(work / "index")
    one_error_line(keyreid("extract", other_ckpt, gallery, "-o", work / "features", "--pattern", PATTERN,
                           "--device", "cpu"), "another model")
    query = read_features(work / "features").rows[0]["path"]
    one_error_line(main_error(monkeypatch, capsys, "search", work / "index", query, "--checkpoint", other_ckpt,
                              "--device", "cpu"), "is not the index's model")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.png").write_bytes((Path(query)).read_bytes())
    cli("extract", other_ckpt, tmp_path / "other", "-o", tmp_path / "of", "--device", "cpu")
    one_error_line(main_error(monkeypatch, capsys, "index", "add", work / "index", tmp_path / "of"), "another model")
    one_error_line(main_error(monkeypatch, capsys, "index", "build", work / "features", "-o", work / "index"),
                   "already holds an index")
    one_error_line(main_error(monkeypatch, capsys, "search", work / "nowhere", query), "no index here")
    one_error_line(main_error(monkeypatch, capsys, "extract", other_ckpt, gallery, "--dataset", "market1501",
                              "-o", tmp_path / "x"), "either IMAGES_DIR or --dataset")
    assert digest(work / "features") == before_f and digest(work / "index") == before_i


KILLER = """
import os, sys
from keyreid.search.features import FeatureWriter
real, calls = FeatureWriter.commit, [0]
def commit(self, *a, **k):
    calls[0] += 1
    if calls[0] == 3:
        os._exit(9)  # dies like a SIGKILL: no cleanup, no finally
    return real(self, *a, **k)
FeatureWriter.commit = commit
from keyreid.cli import main
sys.argv = ["keyreid"] + sys.argv[1:]
main()
"""


def test_extract_killed_mid_run_resumes_byte_identical(ckpt, tiny_synth, tmp_path):
    gallery = tiny_synth / "bounding_box_test"
    args = [ckpt, gallery, "--pattern", PATTERN, "--batch-size", 8, "--device", "cpu"]
    cli("extract", *args, "-o", tmp_path / "ref")
    killed = subprocess.run([sys.executable, "-c", KILLER, "extract", *map(str, args), "-o", str(tmp_path / "f")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert killed.returncode == 9, killed.stderr
    assert json.loads((tmp_path / "f" / "manifest.json").read_text())["count"] == 16
    resumed = keyreid("extract", *args, "-o", tmp_path / "f")
    assert resumed.returncode == 0, resumed.stderr
    assert digest(tmp_path / "f") == digest(tmp_path / "ref")
