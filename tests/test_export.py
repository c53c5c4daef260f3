"""ONNX export: parity with torch at batch 1 and batch N for every head, the sidecar, a rejected
export leaves nothing behind, the exported model embeds like the checkpoint through load_model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from keyreid.config import Config, ModelConfig
from keyreid.data.keypoints import get_skeleton
from keyreid.utils.checkpoint import save_checkpoint
from keyreid.errors import KeyreidError
from keyreid.inference import card_for, load_model
from keyreid.models.build import KEYPOINT_HEADS, build_model

HEIGHT, WIDTH = 64, 32
NUM_CLASSES = 5


def tiny_checkpoint(path: Path, head: str = "bnneck", backbone: str = "resnet18", distance: str = "cosine",
                    seed: int = 0, height: int = HEIGHT, width: int = WIDTH, **head_options) -> Path:
    """A checkpoint with a card, as the trainer writes it, of a randomly initialised model whose
    BatchNorm statistics were set by a few training-mode passes (so eval mode is not identity BN)."""
    torch.manual_seed(seed)
    cfg = Config()
    cfg.model = ModelConfig(backbone=backbone, pretrained=None, head=head, head_options=head_options)
    cfg.data.height, cfg.data.width = height, width
    cfg.data.root = str(path.parent / "no-such-dataset")
    cfg.eval.distance = distance
    skeleton = get_skeleton("coco17") if head in KEYPOINT_HEADS else None
    model = build_model(cfg.model, NUM_CLASSES, skeleton)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, height, width) * 0.8 + 0.1)
    model.eval()
    state = model.state_dict()
    import dataclasses

    save_checkpoint(path, {"model": state, "config": dataclasses.asdict(cfg),
                           "card": card_for(cfg, model, skeleton, NUM_CLASSES, state),
                           "label_map": {i: i for i in range(NUM_CLASSES)}})
    return path


def photo_folder(folder: Path, n: int = 5, seed: int = 1) -> Path:
    """Small images of other sizes than the model's input (the transform resizes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, size=(12, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((40 + 4 * i, 90), Image.BILINEAR).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("photos"))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("head,options", [
    ("bnneck", {}),
    ("kae", {"group_channels": 4, "global_channels": 8}),
    ("kae", {"group_channels": 4, "global_channels": 8, "pooling": "heatmap"}),
    ("aacn", {"part_channels": 8, "global_channels": 16, "hidden": 16}),
    ("pabr", {"appearance_channels": 8, "part_hidden": 16}),
    ("stripes", {}),
])
def test_every_head_exports_with_parity_at_batch_1_and_4(tmp_path, images, head, options):
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", head, **options)
    out = tmp_path / "model.onnx"
    meta = export_onnx(ckpt, out, images=images, log=lambda s: None)
    torch_model = load_model(ckpt, device="cpu")
    onnx_model = load_model(out)
    files = sorted(images.iterdir())[:4]
    for size in (1, 4):
        expected = np.concatenate([torch_model.embed(files[i:i + size]) for i in range(0, 4, size)])
        got = np.concatenate([onnx_model.embed(files[i:i + size], batch_size=size) for i in range(0, 4, size)])
        assert got.shape == (4, torch_model.dim)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # the export's own check ran at batch 1 and at batch 5 (the folder's images) and passed
    assert set(meta["parity"]["max_abs_diff"]) == {"1", "5"}
    assert max(meta["parity"]["max_abs_diff"].values()) <= 1e-4
    # inference graph only: the classifier's [classes, dim] matrix is not in the file, and kae's
    # transposed-conv decoder only when its pooling reads the heatmaps
    graph = onnx.load(str(out)).graph
    shapes = {tuple(t.dims) for t in graph.initializer}
    assert (NUM_CLASSES, torch_model.dim) not in shapes
    ops = {n.op_type for n in graph.node}
    if head == "kae":
        assert ("ConvTranspose" in ops) == (options.get("pooling") == "heatmap")
    assert [o.name for o in graph.output] == ["embedding", "raw_embedding"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_sidecar_describes_the_model_and_the_file(tmp_path, images):
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    out = tmp_path / "exported" / "m.onnx"
    export_onnx(ckpt, out, images=images, opset=17, log=lambda s: None)
    side = json.loads((tmp_path / "exported" / "m.onnx.json").read_text())
    card = torch.load(ckpt, weights_only=False)["card"]
    assert side["format"] == "keyreid-onnx" and side["version"] == 1
    assert side["input"]["name"] == "images"
    assert (side["input"]["height"], side["input"]["width"]) == (HEIGHT, WIDTH)
    assert side["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert side["input"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert side["output"] == "embedding"
    assert side["embedding_dim"] == 512 and side["distance"] == "cosine" and side["normalized"] is True
    assert side["fingerprint"] == card["fingerprint"]
    assert side["onnx_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert side["opset"] == 17 and side["parity"]["images"] == str(images)
    # the normalised output has unit rows; the raw one is the model's embedding
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = load_model(ckpt, device="cpu").preprocess(sorted(images.iterdir())[:3]).numpy()
    emb, raw = sess.run(None, {"images": x})
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_euclidean_model_keeps_raw_embedding_and_flip_matches_torch(tmp_path, images):
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck", distance="euclidean")
    out = tmp_path / "model.onnx"
    export_onnx(ckpt, out, images=images, log=lambda s: None)
    torch_model, onnx_model = load_model(ckpt, device="cpu"), load_model(out)
    assert onnx_model.normalized is False and onnx_model.distance == "euclidean"
    files = sorted(images.iterdir())
    for flip in (False, True):
        for normalize in (None, True):
            want = torch_model.embed(files, flip=flip, normalize=normalize)
            got = onnx_model.embed(files, flip=flip, normalize=normalize)
            # raw embeddings: relative tolerance (their scale is the model's)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert onnx_model.fingerprint == torch_model.fingerprint
    assert (onnx_model.dim, onnx_model.input_size) == (torch_model.dim, torch_model.input_size)


def test_perturbed_export_is_rejected_and_leaves_nothing(tmp_path, images, monkeypatch):
    """A graph that differs from the torch model only at batch > 1 (a batch-coupled bug) fails
    the check, names the batch size, and leaves no file at -o; an earlier export there stays."""
    from keyreid.cli import app
    from keyreid.export import graph

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    original = graph.EmbeddingGraph.forward

    def coupled(self, x):
        emb, raw = original(self, x)
        raw = raw + 0.05 * raw.mean(0, keepdim=True) * (x.shape[0] > 1)
        return emb, raw

    monkeypatch.setattr(graph.EmbeddingGraph, "forward", coupled)
    before = _files(tmp_path)
    result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "model.onnx"),
                                      "--images", str(images)])
    assert isinstance(result.exception, KeyreidError)
    message = str(result.exception)
    assert "disagree at batch 5" in message and "nothing written" in message and "\n" not in message
    assert _files(tmp_path) == before  # no model.onnx, no sidecar, no temporary file

    (tmp_path / "model.onnx").write_bytes(b"an earlier export")
    result = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "model.onnx"), "--force",
                                      "--images", str(images)])
    assert isinstance(result.exception, KeyreidError)
    assert (tmp_path / "model.onnx").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.onnx"]


def test_cli_export_errors_are_one_line_exit_2(tmp_path, images):
    """main() prints keyreid's errors as one line and exits 2 (one real subprocess); the other
    refusals through the app, each one line, and the user's files stay as they were."""
    import subprocess
    import sys

    from keyreid.cli import app

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"mine")
    keyreid = Path(sys.executable).parent / "keyreid"
    r = subprocess.run([str(keyreid), "export", str(ckpt), "-o", str(existing)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.onnx exists; pass --force" in lines[0], r.stderr
    cases = [
        ([str(ckpt), "-o", str(tmp_path / "model.bin")], "writes MODEL.onnx; name the output *.onnx"),
        ([str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.onnx")], "checkpoint not found"),
        ([str(ckpt), "-o", str(tmp_path / "x.onnx"), "--images", str(tmp_path / "nope")], "not a folder"),
        ([str(ckpt), "-o", str(tmp_path / "x.onnx"), "--images", str(tmp_path)], "no image files"),
    ]
    for args, expected in cases:
        result = CliRunner().invoke(app, ["export", *args])
        assert isinstance(result.exception, KeyreidError), result.output
        assert expected in str(result.exception) and "\n" not in str(result.exception)
    assert existing.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.onnx"]


def test_cli_export_succeeds_and_loads(tmp_path, images):
    from keyreid.cli import app

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "kae", group_channels=4, global_channels=8)
    r = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "model.onnx")])
    assert r.exit_code == 0, r.output
    assert "generated images" in r.output  # no --images and no dataset: said so
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["parity"]["images"] == "generated"
    m = load_model(tmp_path / "model.onnx")
    np.testing.assert_allclose(m.embed(sorted(images.iterdir())),
                               load_model(ckpt, device="cpu").embed(sorted(images.iterdir())), atol=1e-4)


def test_missing_or_foreign_sidecar_is_a_clear_error(tmp_path, images):
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    out = tmp_path / "model.onnx"
    export_onnx(ckpt, out, images=images, log=lambda s: None)
    side = tmp_path / "model.onnx.json"
    text = side.read_text()
    meta = json.loads(text)
    meta["onnx_sha256"] = "0" * 64
    side.write_text(json.dumps(meta))
    with pytest.raises(KeyreidError, match="written for another model.onnx"):
        load_model(out)
    side.unlink()
    with pytest.raises(KeyreidError, match="no sidecar model.onnx.json"):
        load_model(out)
    side.write_text("{not json")
    with pytest.raises(KeyreidError, match="not a readable keyreid ONNX sidecar"):
        load_model(out)


def test_a_corrupt_onnx_file_with_a_matching_sidecar_is_one_line_through_the_cli(tmp_path, images):
    """A damaged graph whose sidecar was (re)written for it: onnxruntime's reason in one line,
    exit 2, no features folder created."""
    import subprocess

    from keyreid.export import export_onnx
    from keyreid.inference.onnx_model import file_sha256

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    out = tmp_path / "model.onnx"
    export_onnx(ckpt, out, images=images, log=lambda s: None)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) * 2 // 3])     # cut inside the weights
    side = tmp_path / "model.onnx.json"
    meta = json.loads(side.read_text())
    meta["onnx_sha256"] = file_sha256(out)
    side.write_text(json.dumps(meta))
    keyreid = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "keyreid"
    r = subprocess.run([str(keyreid), "extract", str(out), str(images), "-o", str(tmp_path / "feats")],
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "onnxruntime cannot load it" in lines[0], r.stderr
    assert not (tmp_path / "feats").exists()


def test_keyreid_extract_with_onnx_backend_matches_torch(tmp_path, images):
    """A deployment without torch model code: `keyreid extract model.onnx` writes the features
    `keyreid extract best.pt` writes (to 1e-4), under the same model fingerprint."""
    from keyreid.cli import app
    from keyreid.export import export_onnx
    from keyreid.search.features import read_features

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "kae", group_channels=4, global_channels=8)
    export_onnx(ckpt, tmp_path / "model.onnx", images=images, log=lambda s: None)
    runner = CliRunner()
    for model, out in ((ckpt, "torch_feats"), (tmp_path / "model.onnx", "onnx_feats")):
        r = runner.invoke(app, ["extract", str(model), str(images), "-o", str(tmp_path / out),
                                "--batch-size", "3", "--flip"])
        assert r.exit_code == 0, r.output
    t, o = read_features(tmp_path / "torch_feats"), read_features(tmp_path / "onnx_feats")
    assert [r["path"] for r in t.rows] == [r["path"] for r in o.rows]
    assert t.manifest["fingerprint"] == o.manifest["fingerprint"]
    assert t.vectors.shape == (5, 4 * 17 + 8)
    np.testing.assert_allclose(o.vectors, t.vectors, atol=1e-4, rtol=0)


class Killed(BaseException):
    """The process dying (SIGKILL, power loss): nothing after it runs, no cleanup succeeds."""


@pytest.mark.parametrize("dies_at", [1, 2, 3])
def test_export_force_killed_between_renames_leaves_a_loadable_pair(tmp_path, images, monkeypatch, dies_at):
    """`keyreid export --force` over an earlier export, killed at its 1st, 2nd or 3rd rename
    (every later rename fails too: the process is gone): load_model then reads the old model or
    the new one, whole, never a graph with the other graph's sidecar."""
    import os
    import sys

    from keyreid.cli import main
    from keyreid.export import export_onnx

    old_ckpt = tiny_checkpoint(tmp_path / "old.pt", "bnneck", seed=0)
    new_ckpt = tiny_checkpoint(tmp_path / "new.pt", "bnneck", seed=1)
    out = tmp_path / "model.onnx"
    export_onnx(old_ckpt, out, images=images, log=lambda s: None)
    files = sorted(images.iterdir())
    want = {m.fingerprint: m.embed(files) for m in (load_model(old_ckpt, device="cpu"),
                                                    load_model(new_ckpt, device="cpu"))}
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) >= dies_at:
            raise Killed()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(sys, "argv", ["keyreid", "export", str(new_ckpt), "-o", str(out), "--force",
                                      "--images", str(images)])
    with pytest.raises(Killed):
        main()
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[:dies_at] == ["model.onnx.json", "model.onnx", "model.onnx.json"][:dies_at]
    loaded = load_model(out)
    expected = list(want)[0 if dies_at < 3 else 1]  # before the graph rename: old; after: new
    assert loaded.fingerprint == expected
    np.testing.assert_allclose(loaded.embed(files), want[expected], atol=1e-4)


def test_export_interrupted_before_the_graph_rename_restores_the_old_sidecar(tmp_path, images, monkeypatch):
    """A Ctrl-C (the process lives on) at the graph rename puts the old files back byte for byte."""
    import os

    from keyreid.export import export_onnx

    out = tmp_path / "model.onnx"
    export_onnx(tiny_checkpoint(tmp_path / "old.pt", "bnneck", seed=0), out, images=images, log=lambda s: None)
    before = _files(tmp_path)
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == out:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(tiny_checkpoint(tmp_path / "new.pt", "bnneck", seed=1), out, images=images, force=True,
                    log=lambda s: None)
    assert {k: v for k, v in _files(tmp_path).items() if k != "new.pt"} == before


def test_exported_files_follow_the_umask(tmp_path, images):
    """Both files get the mode any other output gets (0666 minus the umask), not mkstemp's 0600."""
    import os
    import stat

    from keyreid.cli import app

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    old = os.umask(0o027)
    try:
        r = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "model.onnx"), "--images", str(images)])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    for name in ("model.onnx", "model.onnx.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


@pytest.mark.parametrize("opset,expected", [(5, "--opset 5: the exporter writes opsets 7 to"),
                                            (7, "ONNX export failed at opset 7")])
def test_a_bad_opset_is_one_line_without_torch_graph_dumps(tmp_path, images, monkeypatch, capfd, opset, expected):
    """Out of range: refused before the model loads. In range but an op has no form at that opset:
    torch's exporter dumps the whole TorchScript graph from C++ (hundreds of lines on fd 1);
    the user sees the one error line."""
    import sys

    from keyreid.cli import main

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    monkeypatch.setattr(sys, "argv", ["keyreid", "export", str(ckpt), "-o", str(tmp_path / "model.onnx"),
                                      "--opset", str(opset), "--images", str(images)])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capfd.readouterr()
    assert e.value.code == 2
    assert out == "" and len(err.strip().splitlines()) == 1 and expected in err, (out[:500], err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
