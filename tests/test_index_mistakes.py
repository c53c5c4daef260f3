"""What goes wrong around an index, through the real CLI (issue 21, items 2 to 5): the same
features folder added twice, writers killed mid-add or mid-build (faiss and embedded Qdrant),
and a full disk."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from keyreid.cli import app
from keyreid.search.index import open_index
from tests.test_index_writers import write_features

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# `keyreid ...` that dies like a SIGKILL (no cleanup, no finally) at a chosen point:
# KILL=faiss-write: right after faiss wrote its temporary file; KILL=upsert:N after the Nth
# Qdrant upsert of 4 points went through
KILLER = """
import os, sys
kill = os.environ["KILL"]
if kill == "faiss-write":
    import faiss
    real = faiss.write_index
    def write_index(index, path):
        real(index, path)
        os._exit(9)
    faiss.write_index = write_index
else:
    import keyreid.search.qdrant_backend as qb
    from qdrant_client import QdrantClient
    qb.UPSERT_BATCH = 4
    real, calls, at = QdrantClient.upsert, [0], int(kill.split(":")[1])
    def upsert(self, *a, **k):
        out = real(self, *a, **k)
        calls[0] += 1
        if calls[0] == at:
            os._exit(9)
        return out
    QdrantClient.upsert = upsert
from keyreid.cli import main
sys.argv = ["keyreid"] + sys.argv[1:]
main()
"""


def killed(kill: str, *args) -> None:
    r = subprocess.run([sys.executable, "-c", KILLER, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "KILL": kill}, timeout=120)
    assert r.returncode == 9, r.stderr


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def main_error(monkeypatch, capsys, *args) -> str:
    """keyreid.cli.main() in this process; the one `error:` line it printed (exit 2 checked)."""
    from keyreid.cli import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def info(index: Path) -> dict:
    return json.loads(cli("index", "info", index, "--json").stdout)


def paths_of(index: Path) -> list[str]:
    ix = open_index(index)
    rows = ix.get_metadata(_ids(ix))
    ix.close()
    return [r["path"] for r in rows]


def _ids(ix) -> list[int]:
    if ix.manifest["backend"] == "faiss":
        return ix.meta.all_ids().tolist()
    points, _ = ix.client.scroll(ix.collection, limit=100_000, with_payload=False, with_vectors=False)
    return sorted(int(p.id) for p in points)


# ---------------------------------------------------------------------------- item 2: duplicates
def test_the_same_features_folder_twice_is_refused_unless_allowed(tmp_path, monkeypatch, capsys):
    a, b = write_features(tmp_path / "a", 15, seed=1), write_features(tmp_path / "b", 10, seed=2)
    cli("index", "build", a, "-o", tmp_path / "index")
    before = files(tmp_path / "index")
    shutil.copytree(a, tmp_path / "copy_of_a")
    for again in (a, tmp_path / "copy_of_a"):
        line = main_error(monkeypatch, capsys, "index", "add", tmp_path / "index", again)
        assert str(again) in line and "already in the index" in line and "--allow-duplicates" in line
    assert files(tmp_path / "index") == before
    cli("index", "add", tmp_path / "index", b)
    line = main_error(monkeypatch, capsys, "index", "add", tmp_path / "index", b)
    assert "ids 15..24" in line
    cli("index", "add", tmp_path / "index", a, "--allow-duplicates")
    assert info(tmp_path / "index")["count"] == 40
    line = main_error(monkeypatch, capsys, "index", "build", a, tmp_path / "copy_of_a", "-o", tmp_path / "i2")
    assert str(tmp_path / "copy_of_a") in line and "same images" in line
    cli("index", "build", a, tmp_path / "copy_of_a", "-o", tmp_path / "i2", "--allow-duplicates")
    assert info(tmp_path / "i2")["count"] == 30


# ---------------------------------------------------------------------------- items 3, 4: killed writers
def test_killed_faiss_add_and_build_leave_nothing_that_lasts(tmp_path):
    a, b = write_features(tmp_path / "a", 12, seed=1), write_features(tmp_path / "b", 9, seed=2)
    cli("index", "build", a, "-o", tmp_path / "index")
    killed("faiss-write", "index", "add", tmp_path / "index", b)
    left = [p.name for p in (tmp_path / "index").glob("*.tmp")]
    assert len(left) == 1 and left[0].startswith("vectors-000002.faiss.")
    assert info(tmp_path / "index")["count"] == 12  # a reader tidies up once nobody writes
    assert not list((tmp_path / "index").glob("*.tmp"))
    killed("faiss-write", "index", "add", tmp_path / "index", b)
    cli("index", "add", tmp_path / "index", b)  # the rerun succeeds and clears the leftovers
    assert not list((tmp_path / "index").glob("*.tmp"))
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        ".keyreid-index.lock", "manifest.json", "metadata-000002.sqlite", "vectors-000002.faiss"]
    assert info(tmp_path / "index")["count"] == 21 and len(set(paths_of(tmp_path / "index"))) == 21

    killed("faiss-write", "index", "build", a, "-o", tmp_path / "fresh")
    assert list((tmp_path / "fresh").glob("*.tmp")) and not (tmp_path / "fresh" / "manifest.json").exists()
    cli("index", "build", a, "-o", tmp_path / "fresh")
    assert info(tmp_path / "fresh")["count"] == 12 and not list((tmp_path / "fresh").glob("*.tmp"))


def test_leftovers_that_are_not_provably_ours_are_kept(tmp_path, monkeypatch, capsys):
    a = write_features(tmp_path / "a", 5, seed=1)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (user / "manifest.json.abcd1234.tmp").write_text("looks like ours, but no keyreid lock file here")
    line = main_error(monkeypatch, capsys, "index", "build", a, "-o", user)
    assert "not an empty folder" in line and str(user) in line
    assert sorted(p.name for p in user.iterdir()) == ["manifest.json.abcd1234.tmp", "notes.txt"]
    # a user's own file beside a killed build's leftovers: refused, nothing deleted
    killed("faiss-write", "index", "build", a, "-o", tmp_path / "half")
    (tmp_path / "half" / "notes.txt").write_text("mine")
    names = sorted(p.name for p in (tmp_path / "half").iterdir())
    assert "not an empty folder" in main_error(monkeypatch, capsys, "index", "build", a, "-o", tmp_path / "half")
    assert sorted(p.name for p in (tmp_path / "half").iterdir()) == names


def test_killed_qdrant_build_and_add_leave_an_index_that_counts_right(tmp_path, monkeypatch, capsys):
    a, b = write_features(tmp_path / "a", 10, seed=1), write_features(tmp_path / "b", 14, seed=2)
    index = tmp_path / "q"
    killed("upsert:2", "index", "build", a, "-o", index, "--backend", "qdrant")
    assert "unfinished `keyreid index build`" in main_error(monkeypatch, capsys, "index", "info", index)
    cli("index", "build", a, "-o", index, "--backend", "qdrant")  # the rerun redoes it
    assert info(index)["count"] == 10 and len(paths_of(index)) == 10

    killed("upsert:2", "index", "add", index, b)  # 8 of b's 14 points upserted, then killed
    got = info(index)
    assert got["count"] == 10 and "pending" not in got
    assert sorted(paths_of(index)) == sorted(f"/gallery/1/{i:04d}.jpg" for i in range(10))
    query = np.load(b / "features.npy")[:1]
    ix = open_index(index)
    assert all(h.path.startswith("/gallery/1/") for h in ix.search(query, 20)[0])
    ix.close()
    cli("index", "add", index, b)  # neither refused as a duplicate nor for reused ids
    got = info(index)
    assert got["count"] == 24 and len(set(paths_of(index))) == 24
    assert got["next_id"] >= 24
    ix = open_index(index)
    assert ix.search(query, 1)[0][0].path == "/gallery/2/0000.jpg"
    ix.close()


# ---------------------------------------------------------------------------- item 5: a full disk
FAISS_ENOSPC = ("Error in void faiss::write_index(const Index*, IOWriter*, int) at /project/faiss/impl/"
                "index_write.cpp:499: Error: 'ret == (size * 4)' failed: write error in {path}: 262062 != 512000 "
                "(No space left on device)")


def test_full_disk_is_one_line_and_the_old_index_stays(tmp_path, monkeypatch, capsys):
    a, b = write_features(tmp_path / "a", 12, seed=1), write_features(tmp_path / "b", 9, seed=2)
    cli("index", "build", a, "-o", tmp_path / "index")
    before = files(tmp_path / "index")
    real_write, real_connect = faiss.write_index, sqlite3.connect

    def faiss_full(index, path):
        Path(path).write_bytes(b"\0" * 1000)  # part written, then the disk is full
        raise RuntimeError(FAISS_ENOSPC.format(path=path))

    def sqlite_full(target, *args, **kwargs):
        conn = real_connect(target, *args, **kwargs)
        if not kwargs.get("uri") and target != ":memory:":
            conn.execute("PRAGMA max_page_count = 1")  # SQLite's own 'database or disk is full'
        return conn

    for patch, cmd in [((faiss, "write_index", faiss_full), ("index", "add", tmp_path / "index", b)),
                       ((sqlite3, "connect", sqlite_full), ("index", "add", tmp_path / "index", b)),
                       ((faiss, "write_index", faiss_full), ("index", "remove", tmp_path / "index", "--ids", "3")),
                       ((sqlite3, "connect", sqlite_full), ("index", "remove", tmp_path / "index", "--camera", "1")),
                       ((faiss, "write_index", faiss_full), ("index", "build", a, "-o", tmp_path / "new"))]:
        monkeypatch.setattr(*patch)
        line = main_error(monkeypatch, capsys, *cmd)
        monkeypatch.undo()
        assert "no space left on the device" in line and "free some space" in line, line
        assert files(tmp_path / "index") == before
    assert sqlite3.connect is real_connect and faiss.write_index is real_write
    assert info(tmp_path / "index")["count"] == 12
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [".keyreid-index.lock"]
    cli("index", "build", a, "-o", tmp_path / "new")
    cli("index", "add", tmp_path / "index", b)
    assert info(tmp_path / "index")["count"] == 21 and info(tmp_path / "new")["count"] == 12


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; test_full_disk_is_one_line_and_the_old_index_stays covers it")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_real_full_disk(small_tmpfs, tmp_path, monkeypatch, capsys):
    a = write_features(tmp_path / "a", 20, seed=1, dim=64)
    big = write_features(tmp_path / "big", 1000, seed=2, dim=64)  # 256 KB of vectors: more than fits
    cli("index", "build", a, "-o", small_tmpfs / "index")
    before = files(small_tmpfs / "index")
    line = main_error(monkeypatch, capsys, "index", "add", small_tmpfs / "index", big)
    assert "no space left on the device" in line
    assert files(small_tmpfs / "index") == before and info(small_tmpfs / "index")["count"] == 20
    line = main_error(monkeypatch, capsys, "index", "build", big, "-o", small_tmpfs / "other")
    assert "no space left on the device" in line
    assert [p.name for p in (small_tmpfs / "other").iterdir()] == [".keyreid-index.lock"]
