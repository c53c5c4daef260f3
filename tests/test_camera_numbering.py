"""One camera numbering everywhere (README "Cameras"): a gallery file named ``..._c2s1_...`` is
camera 2 in the search table and JSON, the --render labels, `index info`, the HTTP API and the
page, and `--camera 2` / `--camera c2` / `cameras=c2` keep exactly those files, whether its
features came from the dataset adapter (whose Sample.camid is 0-based) or from --pattern, and
whether the index and features folders were written before the rule (no camera_base recorded:
adapter folders then stored the 0-based id) or after."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from keyreid.cli import app
from keyreid.config import load_config
from keyreid.engine.trainer import Trainer
from keyreid.search.features import read_features
from keyreid.search.index import features_digest, open_index
from tests.conftest import tiny_overrides
from tests.serve_helpers import image_bytes, serving

ROOT = Path(__file__).resolve().parents[1]
KEYREID = ROOT / ".venv" / "bin" / "keyreid"
PATTERN = r"(?P<pid>-?\d+)_c(?P<cam>\d+)"
NAMED = re.compile(r"_c(\d+)s\d")
runner = CliRunner()

NEW = ("adapter", "pattern", "both")
OLD = ("old_adapter", "old_pattern", "old_both", "old_orphan")
# what an index's manifest records, or open_index works out for one from before the rule
BASES = {"adapter": 0, "pattern": 0, "both": 0, "old_adapter": 1, "old_pattern": 0, "old_both": 0, "old_orphan": 1}


def file_camera(path) -> int:
    """The camera as the file name writes it: 0012_c2s1_000422_00.jpg -> 2."""
    return int(NAMED.search(Path(path).name).group(1))


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def keyreid(*args):
    p = subprocess.run([str(KEYREID), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "COLUMNS": "300"}, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


# ---------------------------------------------------------------------------- what keyreid wrote before
def make_old_features(folder: Path, shift: int) -> None:
    """A features folder as keyreid wrote it before the camera rule: rows hold camid - shift (the
    adapter's 0-based id: shift 1; --pattern's number: 0), the manifest no camera_base."""
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    (folder / "rows.jsonl").write_text("".join(
        json.dumps(dict(r, camid=None if r["camid"] is None else r["camid"] - shift)) + "\n" for r in rows))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["camera_base"]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def make_old_index(folder: Path, sources: list[tuple[Path, int, str]]) -> None:
    """An index as keyreid wrote it before the camera rule: each source's cameras stored as its
    old features folder held them, no camera_base; sources are (old features folder, shift,
    the digest the old keyreid recorded)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["camera_base"]
    con = sqlite3.connect(folder / manifest["files"]["metadata"])
    with con:
        for s, (features, shift, digest) in zip(manifest["sources"], sources):
            s["features"], s["digest"] = str(features), digest
            con.execute("UPDATE meta SET camid = camid - ? WHERE id BETWEEN ? AND ? AND camid IS NOT NULL",
                        (shift, s["first_id"], s["last_id"]))
    con.close()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


@pytest.fixture(scope="module")
def ckpt(tiny_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("camera_run")
    over = tiny_overrides(tiny_synth, out, head="kae", **{"optim.epochs": 1, "optim.milestones": "[]",
                                                            "optim.warmup_epochs": 0})
    Trainer(load_config(None, over), resume=False, show_progress=False).fit()
    return out / "best.pt" if (out / "best.pt").exists() else out / "last.pt"


@pytest.fixture(scope="module")
def work(ckpt, tiny_synth, tmp_path_factory):
    w = tmp_path_factory.mktemp("cameras")
    cli("extract", ckpt, "--dataset", "market1501", "--root", tiny_synth, "--split", "gallery",
        "-o", w / "f_adapter", "--device", "cpu")
    cli("extract", ckpt, tiny_synth / "bounding_box_test", "--pattern", PATTERN, "-o", w / "f_pattern",
        "--device", "cpu")
    cli("index", "build", w / "f_adapter", "-o", w / "adapter")
    cli("index", "build", w / "f_pattern", "-o", w / "pattern")
    cli("index", "build", w / "f_adapter", w / "f_pattern", "-o", w / "both")

    old_digest = {"adapter": features_digest(read_features(w / "f_adapter"), -1),
                  "pattern": features_digest(read_features(w / "f_pattern"))}
    for name, shift in (("adapter", 1), ("pattern", 0)):
        shutil.copytree(w / f"f_{name}", w / f"old_f_{name}")
        make_old_features(w / f"old_f_{name}", shift)
    for name, sources in (("adapter", [("adapter", 1)]), ("pattern", [("pattern", 0)]),
                          ("both", [("adapter", 1), ("pattern", 0)])):
        shutil.copytree(w / name, w / f"old_{name}")
        make_old_index(w / f"old_{name}", [(w / f"old_f_{s}", shift, old_digest[s]) for s, shift in sources])
    # an old adapter index whose features folder is gone: told from the rows' file names
    shutil.copytree(w / "old_adapter", w / "old_orphan")
    manifest = json.loads((w / "old_orphan" / "manifest.json").read_text())
    manifest["sources"][0]["features"] = str(w / "deleted_features")
    (w / "old_orphan" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return w


@pytest.fixture(scope="module")
def query(tiny_synth) -> Path:
    """A query image of camera 2."""
    return next(p for p in sorted((tiny_synth / "query").iterdir()) if file_camera(p) == 2)


def search_json(index: Path, query: Path, *args) -> list[dict]:
    return json.loads(cli("search", index, query, "--top-k", 100, "--json", "--device", "cpu", *args).stdout)[0]["hits"]


def gallery_paths(index: Path) -> list[str]:
    ix = open_index(index)
    try:
        return [m["path"] for m in ix.get_metadata(range(int(ix.manifest["next_id"])))]
    finally:
        ix.close()


# ---------------------------------------------------------------------------- features folders
def test_features_folders_hold_the_file_names_cameras_old_ones_are_read_so(work):
    for name in ("f_adapter", "f_pattern", "old_f_adapter", "old_f_pattern"):
        fs = read_features(work / name)
        assert fs.rows and all(r["camid"] == file_camera(r["path"]) for r in fs.rows), name
    for name in ("f_adapter", "f_pattern"):
        assert json.loads((work / name / "manifest.json").read_text())["camera_base"] == 0
        assert all(json.loads(line)["camid"] == file_camera(json.loads(line)["path"])
                   for line in (work / name / "rows.jsonl").read_text().splitlines())
    # the old adapter folder really is the old layout: 0-based on disk
    raw = [json.loads(line) for line in (work / "old_f_adapter" / "rows.jsonl").read_text().splitlines()]
    assert all(r["camid"] == file_camera(r["path"]) - 1 for r in raw)


def test_an_old_adapter_folder_continued_keeps_its_own_numbering(work, ckpt, tiny_synth, tmp_path):
    """A run begun before the rule and continued now writes its remaining rows as it began them."""
    import keyreid.search.extract as ex
    from keyreid.inference import load_model

    folder = tmp_path / "half"
    items, source = ex.list_dataset("market1501", tiny_synth, "gallery")
    model = load_model(ckpt, device="cpu")
    calls = []

    def stop_after_first(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ex.extract(model, items, source, folder, batch_size=8, progress=stop_after_first)
    make_old_features(folder, 1)   # what the older keyreid would have left
    ex.extract(model, items, source, folder, batch_size=8)
    raw = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert len(raw) == len(items) and all(r["camid"] == file_camera(r["path"]) - 1 for r in raw)
    assert all(r["camid"] == file_camera(r["path"]) for r in read_features(folder).rows)


# ---------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("kind", NEW + OLD)
def test_search_shows_and_filters_the_file_names_cameras(work, query, kind):
    index = work / kind
    everything = gallery_paths(index)
    hits = search_json(index, query)
    assert sorted(h["path"] for h in hits) == sorted(everything)
    assert all(h["camid"] == file_camera(h["path"]) for h in hits)
    cam2 = sorted(p for p in everything if file_camera(p) == 2)
    assert cam2
    for spelled in ("2", "c2", "C2"):
        assert sorted(h["path"] for h in search_json(index, query, "--camera", spelled)) == cam2
    assert sorted(h["path"] for h in search_json(index, query, "--camera-not", "c2")) == \
        sorted(p for p in everything if file_camera(p) != 2)
    assert sorted(h["path"] for h in search_json(index, query, "--camera", "c1,3")) == \
        sorted(p for p in everything if file_camera(p) in (1, 3))


@pytest.mark.parametrize("kind", ("adapter", "old_adapter", "old_both"))
def test_the_table_labels_cameras_as_the_file_names(work, query, kind):
    out = keyreid("search", work / kind, query, "--top-k", 5, "--device", "cpu")
    cells = [[c.strip() for c in re.split("[│┃]", line)[1:-1]] for line in out.splitlines() if line[:1] in "│┃"]
    header, body = cells[0], cells[1:]
    path, camera = header.index("path"), header.index("camera")
    assert len(body) == 5
    assert all(r[camera] == f"c{file_camera(r[path])}" for r in body), body


@pytest.mark.parametrize("kind", NEW + OLD)
def test_render_labels_name_the_file_names_cameras(work, query, kind, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    texts = []
    original = Figure.text

    def record(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Figure, "text", record)
    hits = search_json(work / kind, query)[:6]
    cli("search", work / kind, query, "--top-k", 6, "--render", tmp_path / "ranked.png", "--device", "cpu")
    labels = [t for t in texts if t.startswith("#")]
    assert len(labels) == 6
    assert [int(re.search(r"/c(\d+)$", t).group(1)) for t in labels] == [file_camera(h["path"]) for h in hits]


@pytest.mark.parametrize("kind", NEW + OLD)
def test_index_info_lists_the_file_names_cameras(work, kind):
    info = json.loads(cli("index", "info", work / kind, "--json").stdout)
    assert info["cameras"] == sorted({file_camera(p) for p in gallery_paths(work / kind)}) == [1, 2, 3]
    assert info["camera_base"] == BASES[kind]
    assert "c1 c2 c3" in cli("index", "info", work / kind).stdout


def test_old_index_remove_add_and_save_keep_the_numbering(work, query, tmp_path):
    index = tmp_path / "old"
    shutil.copytree(work / "old_adapter", index)
    everything = gallery_paths(index)
    cam2 = [p for p in everything if file_camera(p) == 2]
    out = cli("index", "remove", index, "--camera", "c2").stdout
    assert f"removed {len(cam2)} vectors" in out
    assert json.loads((index / "manifest.json").read_text())["camera_base"] == 1   # recorded by the save
    hits = search_json(index, query)
    assert sorted(h["path"] for h in hits) == sorted(p for p in everything if file_camera(p) != 2)
    assert all(h["camid"] == file_camera(h["path"]) for h in hits)
    # the old adapter folder again is a duplicate, whatever numbering it was hashed in
    for same in ("old_f_adapter", "f_adapter"):
        again = runner.invoke(app, ["index", "add", str(index), str(work / same)])
        assert again.exit_code != 0 and "already in the index" in str(again.exception), same
    # features written now go in numbered like the rest
    cli("index", "add", index, work / "f_pattern")
    hits = search_json(index, query)
    assert len(hits) == len(everything) - len(cam2) + len(read_features(work / "f_pattern").rows)
    assert all(h["camid"] == file_camera(h["path"]) for h in hits)
    assert sorted(h["path"] for h in search_json(index, query, "--camera", "2")) == \
        sorted(r["path"] for r in read_features(work / "f_pattern").rows if r["camid"] == 2)


def test_qdrant_indexes_number_cameras_alike_old_ones_too(work, query, tmp_path):
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient

    cli("index", "build", work / "old_f_adapter", "-o", tmp_path / "q", "--backend", "qdrant")
    cli("index", "build", work / "f_adapter", "-o", tmp_path / "old_q", "--backend", "qdrant")
    # the second as an older keyreid left it: payload cameras 0-based, no camera_base
    manifest = json.loads((tmp_path / "old_q" / "manifest.json").read_text())
    del manifest["camera_base"]
    manifest["sources"][0]["features"] = str(work / "old_f_adapter")
    (tmp_path / "old_q" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    client = QdrantClient(path=str(tmp_path / "old_q" / "qdrant"))
    points, _ = client.scroll(manifest["params"]["collection"], limit=1000, with_payload=True)
    for point in points:
        client.set_payload(manifest["params"]["collection"], {"camid": point.payload["camid"] - 1}, [point.id])
    client.close()
    for name, base in (("q", 0), ("old_q", 1)):
        hits = search_json(tmp_path / name, query)
        assert len(hits) == len(read_features(work / "f_adapter").rows)
        assert all(h["camid"] == file_camera(h["path"]) for h in hits)
        assert sorted(h["path"] for h in search_json(tmp_path / name, query, "--camera", "c2")) == \
            sorted(h["path"] for h in hits if file_camera(h["path"]) == 2)
        info = json.loads(cli("index", "info", tmp_path / name, "--json").stdout)
        assert info["camera_base"] == base and info["cameras"] == [1, 2, 3]


# ---------------------------------------------------------------------------- the HTTP API
@pytest.mark.parametrize("kind", ("adapter", "pattern", "old_adapter", "old_both"))
def test_api_shows_and_filters_the_file_names_cameras(work, ckpt, query, kind, tmp_path):
    paths = dict(enumerate(gallery_paths(work / kind)))
    body = image_bytes(str(query))
    with serving({"checkpoint": ckpt, "index": work / kind}, tmp_path) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        results = client.post("/api/search?top_k=100", content=body).json()["results"]
        assert sorted(h["id"] for h in results) == sorted(paths)
        assert all(h["camera"] == file_camera(paths[h["id"]]) for h in results)
        cam2 = sorted(i for i, p in paths.items() if file_camera(p) == 2)
        for spelled in ("2", "c2"):
            only = client.post(f"/api/search?top_k=100&cameras={spelled}", content=body).json()
            assert sorted(h["id"] for h in only["results"]) == cam2 and only["options"]["cameras"] == [2]
        drop = client.post("/api/search?top_k=100&exclude_cameras=c2", content=body).json()["results"]
        assert sorted(h["id"] for h in drop) == sorted(set(paths) - set(cam2))
        items = client.get("/api/gallery?limit=200").json()["items"]
        assert items and all(it["camid"] == file_camera(paths[it["id"]]) for it in items)
        bad = client.post("/api/search?cameras=cx", content=body)
        assert bad.status_code == 422 and bad.json()["field"] == "cameras"


# ---------------------------------------------------------------------------- the page
def test_page_labels_and_filters_cameras_as_the_file_names(work, ckpt, query, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser_setup import start_chrome

    paths = dict(enumerate(gallery_paths(work / "old_adapter")))
    upload = tmp_path / "query.png"
    upload.write_bytes(image_bytes(str(query)))
    browser = start_chrome(tmp_path / "profile")
    try:
        with serving({"checkpoint": ckpt, "index": work / "old_adapter"}, tmp_path) as server:
            wait = WebDriverWait(browser, 60)
            browser.get(server.url + "/")
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery li img")) > 0)
            strip = browser.find_elements(By.CSS_SELECTOR, "#gallery li.gallery-item")
            assert all(li.get_attribute("title").endswith(f"camera c{file_camera(paths[int(li.get_attribute('data-id'))])}")
                       for li in strip)
            top_k = browser.find_element(By.ID, "top-k")
            top_k.clear()
            top_k.send_keys("50")
            browser.find_element(By.ID, "file-input").send_keys(str(upload))

            def cards():   # read at once: the list is replaced while a search runs
                return [(int(i), meta) for i, meta in browser.execute_script(
                    "return [...document.querySelectorAll('#results li.result')]"
                    ".map(li => [li.dataset.id, li.querySelector('.meta').textContent]);")]

            wait.until(lambda d: len(cards()) == len(paths))
            assert all(f" · c{file_camera(paths[i])}" in meta for i, meta in cards())
            browser.find_element(By.ID, "cameras").send_keys("c2")
            browser.find_element(By.ID, "search-again").click()
            cam2 = sorted(i for i, p in paths.items() if file_camera(p) == 2)
            wait.until(lambda d: sorted(i for i, _ in cards()) == cam2)
            assert all(" · c2" in meta for _, meta in cards())
    finally:
        browser.quit()


# ---------------------------------------------------------------------------- evaluation pictures
def test_ranked_list_pictures_label_the_file_names_cameras(tiny_synth, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from keyreid.data.datasets import build_dataset
    from keyreid.viz.ranking import load_ranked, plot_ranked_lists, plot_saved_ranking, save_ranked, select_queries

    ds = build_dataset("market1501", tiny_synth)
    assert all(s.camid == file_camera(s.path) - 1 and s.camera == file_camera(s.path) for s in ds.query)
    texts = []
    original = Figure.text

    def record(self, x, y, s, *args, **kwargs):
        texts.append(s)
        return original(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Figure, "text", record)
    dist = np.random.default_rng(0).random((len(ds.query), len(ds.gallery)))
    plot_ranked_lists(ds.query, ds.gallery, dist, tmp_path / "a.png", num_queries=3, top_k=4)
    data = load_ranked(save_ranked(tmp_path / "r.npz", dist, ds.query, ds.gallery))
    plot_saved_ranking(data, select_queries(data["ap"], data["first_hit"], 2, 2), tmp_path / "b.png", top_k=4)
    shown = [re.search(r"(-?\d+)/c(\d+)$", t) for t in texts]
    assert len([m for m in shown if m]) >= 3 * 5 + 2 * 5
    names = {(int(Path(s.path).name.split("_")[0]), file_camera(s.path)) for s in ds.query + ds.gallery}
    assert all((int(m.group(1)), int(m.group(2))) in names for m in shown if m)
