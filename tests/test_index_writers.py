"""One writer at a time on an index: two real `keyreid index add` processes at once, and a CLI
add under a running service followed by the service's own admin add (issue 21, item 1)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from keyreid.cli import app
from keyreid.search.features import FeatureWriter
from keyreid.search.index import index_lock, open_index
from tests.serve_helpers import Server, build_index_for_tests, encode, noise_image

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# `keyreid index add` whose add lingers inside the writer's critical section (after reading the
# manifest, before saving), so two of them started together overlap for certain
SLOW_ADD = """
import sys, time
from keyreid.search.faiss_backend import FaissIndex
real = FaissIndex.add
def add(self, *a, **k):
    time.sleep(3)
    return real(self, *a, **k)
FaissIndex.add = add
from keyreid.cli import main
sys.argv = ["keyreid"] + sys.argv[1:]
main()
"""


def write_features(folder: Path, n: int, seed: int, fingerprint: str = "fp-writers", dim: int = 8,
                   paths: list[str] | None = None) -> Path:
    """A complete features folder of `n` unit vectors, written the way `keyreid extract` does."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    w = FeatureWriter(folder, fingerprint=fingerprint, dim=dim, total=n, normalized=True, distance="cosine",
                      source={"seed": seed})
    rows = [{"path": paths[i % len(paths)] if paths else f"/gallery/{seed}/{i:04d}.jpg", "pid": i % 5,
             "camid": i % 3, "timestamp": float(i), "track": None} for i in range(n)]
    w.commit(v, rows, images=n)
    return folder


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def all_rows(index_path: Path) -> list[dict]:
    index = open_index(index_path)
    ids = index.meta.all_ids()
    rows = index.get_metadata(ids)
    assert len(index) == len(ids)
    index.close()
    return rows


def test_two_processes_adding_at_once_both_land_with_unique_ids(tmp_path):
    a = write_features(tmp_path / "a", 20, seed=1)
    b = write_features(tmp_path / "b", 30, seed=2)
    c = write_features(tmp_path / "c", 40, seed=3)
    cli("index", "build", a, "-o", tmp_path / "index")
    procs = [subprocess.Popen([sys.executable, "-c", SLOW_ADD, "index", "add", str(tmp_path / "index"), str(f)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in (b, c)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    # they overlapped: the second one waited for the first instead of saving over it
    assert sum("waiting up to" in err for _, err in outs) == 1, outs
    rows = all_rows(tmp_path / "index")
    assert len(rows) == 90 and len({r["id"] for r in rows}) == 90
    for seed, n in ((1, 20), (2, 30), (3, 40)):
        assert sum(r["path"].startswith(f"/gallery/{seed}/") for r in rows) == n
    ranges = sorted((min(ids), max(ids)) for ids in
                    ([r["id"] for r in rows if r["path"].startswith(f"/gallery/{s}/")] for s in (2, 3)))
    assert ranges[0][1] < ranges[1][0]  # each add got its own block of fresh ids


def test_the_loser_gives_up_after_wait_in_one_line(tmp_path, monkeypatch, capsys):
    from keyreid.cli import main

    a, b = write_features(tmp_path / "a", 10, seed=1), write_features(tmp_path / "b", 10, seed=2)
    cli("index", "build", a, "-o", tmp_path / "index")
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "index").iterdir())
    with index_lock(tmp_path / "index"):  # another writer at work
        for cmd in (["index", "add", tmp_path / "index", b], ["index", "remove", tmp_path / "index", "--ids", "1"]):
            capsys.readouterr()
            monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, cmd), "--wait", "0.3"])
            with pytest.raises(SystemExit) as e:
                main()
            err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
            assert e.value.code == 2 and err[-1].startswith("error:") and "another keyreid process" in err[-1]
            assert str(tmp_path / "index") in err[-1] and "--wait" in err[-1]
            assert not any(ln.startswith("Traceback") for ln in err)
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "index").iterdir()) == before


@pytest.fixture(scope="module")
def built(tiny_synth, tmp_path_factory):
    return build_index_for_tests(tmp_path_factory.mktemp("writers_index"), tiny_synth)


def test_cli_add_under_a_running_service_then_admin_add_reuses_no_id(built, tmp_path):
    from keyreid.inference import load_model
    from keyreid.serve import SearchService, ServeSettings, create_app
    from keyreid.serve.service import SearchOptions

    shutil.copytree(built["index"], tmp_path / "index")
    model = load_model(built["checkpoint"], device="cpu")
    service = SearchService(model, open_index(tmp_path / "index"), uploads_dir=tmp_path / "uploads")
    before = len(service.index)
    query = np.asarray(service.index.get_vectors([0]))[0]
    assert service.search_vector(query, SearchOptions(top_k=1))[0][0].id == 0  # the service has it loaded

    extra = write_features(tmp_path / "extra", 12, seed=7, fingerprint=model.fingerprint, dim=model.dim,
                           paths=built["gallery"])
    cli("index", "add", tmp_path / "index", extra)
    cli_ids = list(range(before, before + 12))

    with Server(create_app(service, ServeSettings(admin_token="t"))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        new = encode(noise_image(64, 128, seed=5), "PNG")
        r = client.post("/api/gallery", files={"image": ("n.png", new)}, data={"camid": "4"},
                        headers={"Authorization": "Bearer t"})
        assert r.status_code == 200, r.text
        new_id = r.json()["id"]
        assert new_id not in cli_ids and new_id >= before + 12
        assert r.json()["size"] == before + 13
        # the service now serves the CLI's additions too
        v = np.load(extra / "features.npy")[3]
        assert service.search_vector(v, SearchOptions(top_k=1))[0][0].id == before + 3

        # a writer holding the index: the admin add is refused as JSON 503, nothing changes
        service.write_wait_s = 0.2
        with index_lock(tmp_path / "index"):
            r = client.post("/api/gallery", content=new, headers={"Authorization": "Bearer t"})
        assert r.status_code == 503 and r.json()["reason"] == "index_locked" and "Retry-After" in r.headers
        assert "another keyreid process" in r.json()["error"]
    service.close()

    rows = all_rows(tmp_path / "index")
    assert len(rows) == before + 13 and len({r["id"] for r in rows}) == before + 13
    by_id = {r["id"]: r for r in rows}
    assert [by_id[i]["path"] for i in cli_ids] == [built["gallery"][i % len(built["gallery"])] for i in range(12)]
    assert by_id[new_id]["camid"] == 4 and Path(by_id[new_id]["path"]).is_file()
    assert len(list((tmp_path / "uploads").iterdir())) == 1  # the refused add left no copy behind


def test_huge_ids_and_cameras_are_refused_by_the_cli_and_the_api(built, tmp_path, monkeypatch, capsys):
    from keyreid.cli import main
    from keyreid.inference import load_model
    from keyreid.serve import SearchService, ServeSettings, create_app

    big = str(2 ** 63)
    shutil.copytree(built["index"], tmp_path / "index")
    for cmd, needle in [(["index", "remove", tmp_path / "index", "--ids", f"1,{big}"], "--ids"),
                        (["index", "remove", tmp_path / "index", "--ids", "-1"], "--ids"),
                        (["index", "remove", tmp_path / "index", "--camera", big], "--camera"),
                        (["search", tmp_path / "index", built["queries"][0], "--checkpoint", built["checkpoint"],
                          "--device", "cpu", "--camera", big], "cameras"),
                        (["search", tmp_path / "index", built["queries"][0], "--checkpoint", built["checkpoint"],
                          "--device", "cpu", "--camera-not", f"-{big}1"], "cameras")]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, cmd)])
        with pytest.raises(SystemExit) as e:
            main()
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:"), err
        assert needle in err[0] and "out of range" in err[0], err
    assert len(open_index(tmp_path / "index")) == len(open_index(built["index"]))

    service = SearchService(load_model(built["checkpoint"], device="cpu"), open_index(tmp_path / "index"),
                            uploads_dir=tmp_path / "uploads")
    query = Path(built["queries"][0]).read_bytes()
    auth = {"Authorization": "Bearer t"}
    with Server(create_app(service, ServeSettings(admin_token="t"))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        for method, url, kw, field in [
                ("GET", f"/api/gallery/{big}/thumbnail", {}, "gallery_id"),
                ("GET", f"/api/gallery/{big}/image", {}, "gallery_id"),
                ("DELETE", f"/api/gallery/{big}", {"headers": auth}, "gallery_id"),
                ("POST", f"/api/explain?gallery_id={big}", {"content": query}, "gallery_id"),
                ("POST", f"/api/search?cameras=1,{big}", {"content": query}, "cameras"),
                ("POST", f"/api/search?exclude_cameras={big}", {"content": query}, "exclude_cameras"),
                ("POST", f"/api/gallery?camid={big}", {"content": query, "headers": auth}, "camid"),
                ("POST", "/api/gallery", {"files": {"image": ("q.png", query)}, "data": {"pid": f"-{big}1"},
                                          "headers": auth}, "pid")]:
            r = client.request(method, url, **kw)
            assert r.status_code == 422, (url, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json", url
            assert r.json()["field"] == field and r.json()["reason"] == "invalid_option", (url, r.json())
        assert client.post("/api/search?top_k=3", content=query).status_code == 200
    service.close()
    assert len(open_index(tmp_path / "index")) == len(open_index(built["index"]))
    assert not (tmp_path / "uploads").exists() or not list((tmp_path / "uploads").iterdir())


def test_searches_of_a_running_service_see_a_cli_add_without_a_restart(built, tmp_path):
    """A real `keyreid index add` process finishes while a service holds the index: the
    service's next search answers from the extended index (it looks at the manifest per search)."""
    from keyreid.inference import load_model
    from keyreid.serve import SearchService
    from keyreid.serve.service import SearchOptions

    shutil.copytree(built["index"], tmp_path / "index")
    model = load_model(built["checkpoint"], device="cpu")
    service = SearchService(model, open_index(tmp_path / "index"), uploads_dir=tmp_path / "uploads")
    before = len(service.index)
    query = np.asarray(service.index.get_vectors([0]))[0]
    assert service.search_vector(query, SearchOptions(top_k=1))[0][0].id == 0
    extra = write_features(tmp_path / "extra", 6, seed=11, fingerprint=model.fingerprint, dim=model.dim,
                           paths=built["gallery"])
    r = subprocess.run([str(Path(sys.executable).with_name("keyreid")), "index", "add", str(tmp_path / "index"),
                        str(extra)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    v = np.load(extra / "features.npy")
    for k in range(6):
        assert service.search_vector(v[k], SearchOptions(top_k=1))[0][0].id == before + k
    assert len(service.index) == before + 6
    service.close()
