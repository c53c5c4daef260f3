"""`keyreid export --format openvino|openvino-fp16`: an IR that load_model, extract and serve take
like any model; its embeddings agree with torch (fp32 to the ONNX tolerance, fp16 weights to what
fp16 costs), its sidecar names both files by sha256; damaged, missing or foreign files and a
missing runtime are one line, exit 2; an --overwrite killed at any step leaves the old model or the
new one, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from keyreid.cli import app
from keyreid.inference import load_model
from keyreid.inference.onnx_model import file_sha256
from tests.test_export import photo_folder, tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]
KEYREID = ROOT / ".venv" / "bin" / "keyreid"
runner = CliRunner()


@pytest.fixture
def images(tmp_path):
    return photo_folder(tmp_path / "photos")


def quiet(*_):
    pass


def one_line_exit_2(*args, env=None) -> str:
    r = subprocess.run([str(KEYREID), *map(str, args)], capture_output=True, text=True, timeout=300,
                       env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (r.returncode, r.stderr)
    return lines[0]


@pytest.mark.parametrize("fmt,limit", [("openvino", 1e-4), ("openvino-fp16", 5e-3)])
@pytest.mark.parametrize("head", ["bnneck", "kae"])
def test_ir_embeds_like_torch_with_flip_and_its_sidecar_names_both_files(tmp_path, images, head, fmt, limit):
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", head)
    out = tmp_path / "model.xml"
    meta = export_onnx(ckpt, out, images=images, format=fmt, log=quiet)
    weights = tmp_path / "model.bin"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.bin", "model.xml",
                                                           "model.xml.json", "photos"]  # no temporary left
    side = json.loads((tmp_path / "model.xml.json").read_text())
    assert side == meta and side["format"] == "keyreid-openvino"
    assert side["xml_sha256"] == file_sha256(out) and side["weights_sha256"] == file_sha256(weights)
    assert side["weights"] == "model.bin" and side["inference_precision"] == "f32"
    assert side["precision"] == ("fp16 weights" if fmt.endswith("fp16") else "fp32")
    torch_model, ir = load_model(ckpt, device="cpu"), load_model(out)
    assert ir.backend.name == "openvino" and ir.fingerprint == torch_model.fingerprint
    assert ir.dim == torch_model.dim and ir.distance == torch_model.distance
    files = sorted(images.iterdir())
    for flip in (False, True):
        a, b = torch_model.embed(files, flip=flip), ir.embed(files, flip=flip)
        assert np.abs(a - b).max() < limit, (flip, np.abs(a - b).max())
        np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    if fmt.endswith("fp16"):   # compressed weights: the file is about half the fp32 one
        fp32 = export_onnx(ckpt, tmp_path / "fp32.xml", images=images, format="openvino", log=quiet)
        assert fp32["precision"] == "fp32"
        assert weights.stat().st_size < 0.6 * (tmp_path / "fp32.bin").stat().st_size


def test_cli_export_extract_and_backend_checks(tmp_path, images):
    """Through the CLI: the IR is written, `extract --backend openvino` gives the torch features to
    1e-4 under the same fingerprint; a --backend that names another kind of file, a wrong suffix,
    an existing target without --overwrite are one line each, exit 2, nothing written."""
    from keyreid.search.features import read_features

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "kae", group_channels=4, global_channels=8)
    out = tmp_path / "m.xml"
    r = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--format", "openvino", "--images", str(images)])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "m.bin" in r.output
    for model, dest, backend in ((ckpt, "t", "torch"), (out, "o", "openvino")):
        r = runner.invoke(app, ["extract", str(model), str(images), "-o", str(tmp_path / dest),
                                "--backend", backend, "--batch-size", "2"])
        assert r.exit_code == 0, r.output
    t, o = read_features(tmp_path / "t"), read_features(tmp_path / "o")
    assert t.manifest["fingerprint"] == o.manifest["fingerprint"]
    np.testing.assert_allclose(o.vectors, t.vectors, atol=1e-4, rtol=0)

    before = sorted(p.name for p in tmp_path.iterdir())
    assert "needs an OpenVINO IR" in one_line_exit_2("extract", ckpt, images, "-o", tmp_path / "x",
                                                     "--backend", "openvino")
    assert "needs an int8 ONNX export" in one_line_exit_2("extract", out, images, "-o", tmp_path / "x",
                                                          "--backend", "onnx-int8")
    assert "must be one of" in one_line_exit_2("extract", out, images, "-o", tmp_path / "x", "--backend", "tensorrt")
    assert "writes MODEL.xml" in one_line_exit_2("export", ckpt, "-o", tmp_path / "y.onnx", "--format", "openvino")
    assert "m.xml exists; pass --force" in one_line_exit_2("export", ckpt, "-o", out, "--format", "openvino")
    assert "already an exported OpenVINO model" in one_line_exit_2("export", out, "-o", tmp_path / "z.xml",
                                                                   "--format", "openvino")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    old = out.read_bytes()
    r = runner.invoke(app, ["export", str(tiny_checkpoint(tmp_path / "b.pt", "bnneck", seed=3)), "-o", str(out),
                            "--format", "openvino", "--overwrite", "--images", str(images)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() != old and load_model(out).fingerprint == load_model(tmp_path / "b.pt").fingerprint
    assert not (tmp_path / "m.bin.previous").exists()


def test_damaged_missing_or_foreign_files_are_one_line(tmp_path, images):
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    out = tmp_path / "model.xml"
    export_onnx(ckpt, out, images=images, format="openvino", log=quiet)
    xml, weights, side = out.read_bytes(), (tmp_path / "model.bin").read_bytes(), (tmp_path / "model.xml.json").read_text()

    def restore():
        out.write_bytes(xml)
        (tmp_path / "model.bin").write_bytes(weights)
        (tmp_path / "model.xml.json").write_text(side)

    cases = {
        "written for another model.xml": lambda: out.write_bytes(xml[: len(xml) // 2]),   # truncated graph
        "not the weights": lambda: (tmp_path / "model.bin").write_bytes(weights[:-8] + b"\x00" * 8),
        "weights model.bin are missing": lambda: (tmp_path / "model.bin").unlink(),
        "no sidecar model.xml.json": lambda: (tmp_path / "model.xml.json").unlink(),
        "not a readable keyreid OpenVINO sidecar": lambda: (tmp_path / "model.xml.json").write_text("{"),
    }
    for expected, damage in cases.items():
        damage()
        line = one_line_exit_2("extract", out, images, "-o", tmp_path / "feats")
        assert expected in line, (expected, line)
        assert not (tmp_path / "feats").exists()
        restore()
    # an IR that OpenVINO cannot parse, described by a sidecar that matches it: OpenVINO's reason
    bad = xml.replace(b"<layers>", b"<layers><layer broken", 1)
    out.write_bytes(bad)
    meta = json.loads(side)
    meta["xml_sha256"] = file_sha256(out)
    (tmp_path / "model.xml.json").write_text(json.dumps(meta))
    assert "OpenVINO cannot load it" in one_line_exit_2("extract", out, images, "-o", tmp_path / "feats")


def test_without_the_openvino_package_an_ir_says_what_to_install(tmp_path, images):
    """The real CLI in a process where `import openvino` fails: loading an IR, and exporting one,
    name the package to install; torch checkpoints work as before."""
    from keyreid.export import export_onnx

    ckpt = tiny_checkpoint(tmp_path / "best.pt", "bnneck")
    export_onnx(ckpt, tmp_path / "model.xml", images=images, format="openvino", log=quiet)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    for args in (["extract", tmp_path / "model.xml", images, "-o", tmp_path / "f"],
                 ["export", ckpt, "-o", tmp_path / "n.xml", "--format", "openvino"]):
        line = one_line_exit_2(*args, env=env)
        assert "needs the openvino package" in line and "pip install" in line, line
    r = subprocess.run([str(KEYREID), "extract", str(ckpt), str(images), "-o", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "n.xml").exists()


class Killed(BaseException):
    """The process dying: nothing after it runs."""


@pytest.mark.parametrize("dies_at", [1, 2, 3, 4])
def test_overwrite_killed_at_any_rename_leaves_the_old_or_the_new_model(tmp_path, images, monkeypatch, dies_at):
    """`export --format openvino --overwrite` killed at its 1st..4th rename (sidecar with
    "previous", weights, graph, final sidecar; every later step fails too): load_model reads
    the old model or the new one, whole."""
    from keyreid.cli import main
    from keyreid.export import export_onnx

    old_ckpt = tiny_checkpoint(tmp_path / "old.pt", "bnneck", seed=0)
    new_ckpt = tiny_checkpoint(tmp_path / "new.pt", "bnneck", seed=1)
    out = tmp_path / "model.xml"
    export_onnx(old_ckpt, out, images=images, format="openvino", log=quiet)
    files = sorted(images.iterdir())
    want = {m.fingerprint: m.embed(files) for m in (load_model(old_ckpt, device="cpu"),
                                                    load_model(new_ckpt, device="cpu"))}
    real_replace, calls = os.replace, []

    def replace(src, dst):
        name = Path(dst).name
        if name.startswith("model.") and Path(dst).parent == tmp_path:
            calls.append(name)
            if len(calls) >= dies_at:
                raise Killed()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(sys, "argv", ["keyreid", "export", str(new_ckpt), "-o", str(out), "--overwrite",
                                      "--format", "openvino", "--images", str(images)])
    with pytest.raises(Killed):
        main()
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[:dies_at] == ["model.xml.json", "model.bin", "model.xml", "model.xml.json"][:dies_at]
    loaded = load_model(out)
    expected = list(want)[0 if dies_at <= 3 else 1]   # up to the graph rename: old; after it: new
    assert loaded.fingerprint == expected
    np.testing.assert_allclose(loaded.embed(files), want[expected], atol=1e-4)


def test_serve_answers_with_an_openvino_model_like_with_torch(tiny_synth, tmp_path):
    """The service on an IR of the checkpoint that built the index: /api/search gives the torch
    service's ids, scores within 1e-4."""
    import httpx

    from keyreid.export import export_onnx
    from keyreid.search import open_index
    from keyreid.serve import SearchService, ServeSettings, create_app
    from tests.serve_helpers import Server, build_index_for_tests, image_bytes

    built = build_index_for_tests(tmp_path, tiny_synth)
    out = tmp_path / "served.xml"
    export_onnx(built["checkpoint"], out, format="openvino", log=quiet)
    query = image_bytes(built["queries"][0])
    answers = []
    for model in (load_model(built["checkpoint"], device="cpu"), load_model(out)):
        service = SearchService(model, open_index(built["index"]), uploads_dir=tmp_path / f"up_{len(answers)}")
        with Server(create_app(service, ServeSettings())) as server:
            r = httpx.post(f"{server.url}/api/search?top_k=5", content=query, timeout=60)
            assert r.status_code == 200, r.text
            answers.append(r.json()["results"])
    assert [h["id"] for h in answers[0]] == [h["id"] for h in answers[1]]
    assert [h["score"] for h in answers[1]] == pytest.approx([h["score"] for h in answers[0]], abs=1e-4)
