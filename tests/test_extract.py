"""Features folders: resume after a kill (byte-identical), torn commits, skipped images, refusal
of another model, shards, float16, file-name patterns."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from keyreid.errors import DataError, KeyreidError
from keyreid.search import extract as ex
from keyreid.search import features as feat
from keyreid.search.extract import extract, list_folder, parse_name, resolve_shard
from keyreid.search.features import FeatureWriter, read_features
from keyreid.search.index import build_index, open_index


class PixelModel:
    """A stand-in with LoadedModel's embedding interface: the unit-normalised 4x2 thumbnail of
    each image (24-d), the same whatever batch the image comes in."""

    dim, normalized, distance = 24, True, "cosine"

    def __init__(self, fingerprint="pix0"):
        self.fingerprint = fingerprint
        self.card = {"fingerprint": fingerprint, "embedding_dim": 24}

    def preprocess(self, images):
        return torch.stack([torch.from_numpy(np.asarray(im.resize((2, 4)), np.float32)).permute(2, 0, 1)
                            for im in images])

    def embed_tensor(self, batch, flip=False):
        x = batch.flatten(1) + 1.0
        if flip:
            x = (x + torch.flip(batch, dims=[3]).flatten(1) + 1.0) / 2
        return torch.nn.functional.normalize(x, dim=1).numpy()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(23):
        pid, cam = i % 5, i % 3
        Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(
            root / f"{pid:04d}_c{cam}_t{100 + i}.png")
    return root


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


PATTERN = r"(?P<pid>\d+)_c(?P<cam>\d+)_t(?P<t>\d+)"


def run(images, out, model=None, **kw):
    items, source = list_folder(images, PATTERN)
    return extract(model or PixelModel(), items, source, out, batch_size=4, **kw)


def test_rows_vectors_and_manifest(images, tmp_path):
    w = run(images, tmp_path / "f")
    fs = read_features(tmp_path / "f")
    files = sorted(images.glob("*.png"))
    assert fs.manifest["count"] == fs.manifest["total"] == 23 and fs.manifest["complete"]
    assert [r["path"] for r in fs.rows] == [str(p.resolve()) for p in files]
    assert [r["row"] for r in fs.rows] == list(range(23))
    row = next(r for r in fs.rows if r["path"].endswith("0002_c1_t107.png"))
    assert (row["pid"], row["camid"], row["timestamp"], row["track"]) == (2, 1, 107.0, None)
    expected = PixelModel().embed_tensor(PixelModel().preprocess([Image.open(p).convert("RGB") for p in files]))
    np.testing.assert_array_equal(fs.vectors, expected)
    assert w.manifest["fingerprint"] == "pix0" and w.manifest["dim"] == 24


class Killed(BaseException):
    pass


def test_resume_after_kill_is_byte_identical(images, tmp_path, monkeypatch):
    run(images, tmp_path / "ref")
    real = FeatureWriter.commit
    calls = {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed()
        return real(self, *a, **k)

    monkeypatch.setattr(FeatureWriter, "commit", dying)
    with pytest.raises(Killed):
        run(images, tmp_path / "f")
    monkeypatch.setattr(FeatureWriter, "commit", real)
    assert json.loads((tmp_path / "f" / "manifest.json").read_text())["count"] == 8
    finished = (tmp_path / "f" / "rows.jsonl").read_bytes()
    seen = []
    monkeypatch.setattr(FeatureWriter, "commit", lambda self, v, rows, *a, **k: (seen.extend(rows),
                                                                               real(self, v, rows, *a, **k)))
    run(images, tmp_path / "f")
    assert len(seen) == 23 - 8  # finished rows are not computed or written again
    assert (tmp_path / "f" / "rows.jsonl").read_bytes().startswith(finished)
    assert digest(tmp_path / "f") == digest(tmp_path / "ref")


def test_torn_commit_is_cut_back_to_the_manifest(images, tmp_path, monkeypatch):
    """A crash after rows.jsonl got a batch but before the manifest did: the rerun drops those
    unfinished lines and redoes the batch."""
    run(images, tmp_path / "ref")
    real = feat.atomic_write_text
    calls = {"n": 0}

    def crash_on_third_manifest(path, text):
        calls["n"] += 1
        if calls["n"] == 4:  # 1: creation, 2-3: two batches, 4: the third batch's commit point
            raise Killed()
        return real(path, text)

    monkeypatch.setattr(feat, "atomic_write_text", crash_on_third_manifest)
    with pytest.raises(Killed):
        run(images, tmp_path / "f")
    monkeypatch.setattr(feat, "atomic_write_text", real)
    assert len((tmp_path / "f" / "rows.jsonl").read_text().splitlines()) == 12  # 4 past the commit point
    with pytest.raises(DataError, match="unfinished"):
        read_features(tmp_path / "f")
    assert len(read_features(tmp_path / "f", allow_incomplete=True).rows) == 8
    run(images, tmp_path / "f")
    assert digest(tmp_path / "f") == digest(tmp_path / "ref")


def test_refuses_another_model_or_image_list_without_touching_files(images, tmp_path):
    run(images, tmp_path / "f")
    before = digest(tmp_path / "f")
    with pytest.raises(DataError, match="another model"):
        run(images, tmp_path / "f", model=PixelModel("other"))
    with pytest.raises(DataError, match="another --flip"):
        run(images, tmp_path / "f", flip=True)
    items, source = list_folder(images, PATTERN)
    with pytest.raises(DataError, match="another image count"):
        extract(PixelModel(), items[:-1], source, tmp_path / "f", batch_size=4)
    assert digest(tmp_path / "f") == before


def test_unreadable_images_stop_or_are_skipped(images, tmp_path):
    bad_dir = tmp_path / "imgs"
    bad_dir.mkdir()
    for p in sorted(images.glob("*.png"))[:6]:
        (bad_dir / p.name).write_bytes(p.read_bytes())
    (bad_dir / "0009_c1_t5.png").write_bytes(b"not an image")
    items, source = list_folder(bad_dir, PATTERN)
    with pytest.raises(DataError, match="0009_c1_t5.png.*--on-error skip"):
        extract(PixelModel(), items, source, tmp_path / "stop", batch_size=4)
    w = extract(PixelModel(), items, source, tmp_path / "skip", batch_size=4, on_error="skip")
    assert w.manifest["count"] == 6 and w.manifest["skipped"] == 1 and w.complete
    assert (tmp_path / "skip" / "skipped.txt").read_text().startswith(str((bad_dir / "0009_c1_t5.png").resolve()))
    assert all("0009" not in r["path"] for r in read_features(tmp_path / "skip").rows)


def test_shards_read_as_one_and_build_one_index(images, tmp_path):
    whole = run(images, tmp_path / "whole")
    for i in range(3):
        run(images, tmp_path / "sharded", shard=(i, 3))
    a, b = read_features(tmp_path / "whole"), read_features(tmp_path / "sharded")
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert [r["path"] for r in a.rows] == [r["path"] for r in b.rows]
    index = build_index(tmp_path / "index", [tmp_path / "sharded"])
    assert len(index) == 23 and index.manifest["fingerprint"] == whole.manifest["fingerprint"]
    hits = open_index(tmp_path / "index").search(a.vectors[[4]], 1)[0]
    assert hits[0].path == a.rows[4]["path"] and hits[0].score == pytest.approx(1.0, abs=1e-6)
    # a missing shard is an error, not a silently smaller gallery
    import shutil

    shutil.rmtree(tmp_path / "sharded" / "shard-00001-of-00003")
    with pytest.raises(DataError, match="2 of 3 shards"):
        read_features(tmp_path / "sharded")


def test_float16_storage_and_build(images, tmp_path):
    run(images, tmp_path / "f16", dtype="float16")
    run(images, tmp_path / "f32")
    a, b = read_features(tmp_path / "f16"), read_features(tmp_path / "f32")
    assert np.load(tmp_path / "f16" / "features.npy", mmap_mode="r").dtype == np.float16
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-3)
    assert len(build_index(tmp_path / "i", [tmp_path / "f16"])) == 23  # unit norms within tolerance


def test_index_build_refuses_mixed_models(images, tmp_path):
    run(images, tmp_path / "a")
    run(images, tmp_path / "b", model=PixelModel("other"))
    with pytest.raises(KeyreidError, match="another model"):
        build_index(tmp_path / "i", [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "i" / "manifest.json").exists()


def test_pattern_and_shard_parsing(monkeypatch):
    regex = ex._compile_pattern(PATTERN)
    assert parse_name(regex, "0012_c3_t99.jpg") == {"pid": 12, "camid": 3, "timestamp": 99.0, "track": None}
    assert parse_name(regex, "holiday.jpg")["pid"] is None  # unlabelled images are normal
    with pytest.raises(KeyreidError, match="named groups"):
        ex._compile_pattern(r"(?P<person>\d+)")
    assert resolve_shard("1/4") == (1, 4)
    with pytest.raises(KeyreidError, match="i/N"):
        resolve_shard("4/4")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert resolve_shard(None) == (2, 3)
    assert [ex.shard_block(10, i, 3) for i in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_dataset_split_rows_carry_the_adapters_identities(tiny_synth, tmp_path):
    from keyreid.data.datasets import build_dataset
    from keyreid.search.extract import list_dataset

    items, source = list_dataset("market1501", tiny_synth, "query")
    extract(PixelModel(), items, source, tmp_path / "q", batch_size=8)
    fs = read_features(tmp_path / "q")
    query = build_dataset("market1501", tiny_synth).query
    # cameras as the file names write them (README "Cameras"): the adapter's camid is 0-based
    assert [(r["path"], r["pid"], r["camid"]) for r in fs.rows] == \
        [(str(Path(s.path).resolve()), s.pid, s.camid + 1) for s in query]
    assert all(f"_c{r['camid']}s" in Path(r["path"]).name for r in fs.rows)
    assert fs.manifest["source"]["split"] == "query" and fs.manifest["source"]["dataset"] == "market1501"
    with pytest.raises(KeyreidError, match="--split"):
        list_dataset("market1501", tiny_synth, "test")
