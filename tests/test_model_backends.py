"""One LoadedModel, a backend per runtime: the file's content picks the backend (not its name),
a minimal backend gets the whole embedding interface, and the user's mistakes (a file that is no
model, an empty image, a checkpoint without a card) are one line each."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from keyreid.cli import app, main
from keyreid.errors import KeyreidError
from keyreid.inference import LoadedModel, load_model
from keyreid.inference.backends import Backend, Unsupported
from test_export import photo_folder, tiny_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A torch checkpoint, its ONNX export, a folder of photos."""
    from keyreid.export import export_onnx

    work = tmp_path_factory.mktemp("backends")
    ckpt = tiny_checkpoint(work / "best.pt", "bnneck")
    export_onnx(ckpt, work / "model.onnx", log=lambda s: None)
    return {"ckpt": ckpt, "onnx": work / "model.onnx", "photos": photo_folder(work / "photos"), "work": work}


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """keyreid.cli.main as the `keyreid` command runs it: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_an_onnx_file_named_in_capitals_is_searched_with_the_onnx_backend(exported, tmp_path, monkeypatch, capsys):
    """`keyreid search --checkpoint MODEL.ONNX` used to feed the protobuf to torch.load; the
    content decides now, and the ranking is the torch model's."""
    photos = exported["photos"]
    for args in (["extract", exported["ckpt"], photos, "-o", tmp_path / "feats", "--device", "cpu"],
                 ["index", "build", tmp_path / "feats", "-o", tmp_path / "index"]):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    upper = tmp_path / "MODEL.ONNX"
    shutil.copy(exported["onnx"], upper)
    shutil.copy(str(exported["onnx"]) + ".json", str(upper) + ".json")
    query = sorted(photos.iterdir())[2]
    hits = {}
    for name, model in (("torch", exported["ckpt"]), ("onnx", upper)):
        code, out, err = run_main(monkeypatch, capsys, "search", tmp_path / "index", query, "--checkpoint", model,
                                  "--top-k", 3, "--json", "--device", "cpu" if name == "torch" else "auto")
        assert code == 0, err
        hits[name] = json.loads(out)[0]["hits"]
    assert [h["id"] for h in hits["onnx"]] == [h["id"] for h in hits["torch"]]
    assert [h["score"] for h in hits["onnx"]] == pytest.approx([h["score"] for h in hits["torch"]], abs=1e-4)
    assert load_model(upper).backend.name == "onnx"
    # and the other way round: a torch checkpoint under an .onnx name is still a torch model
    disguised = tmp_path / "weights.onnx"
    shutil.copy(exported["ckpt"], disguised)
    assert load_model(disguised, device="cpu").backend.name == "torch"


def test_a_file_that_is_no_model_is_one_line_naming_it(exported, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.pt").write_text("these are not weights\n")
    (tmp_path / "empty.onnx").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(tmp_path / "picture.pt", format="PNG")
    for bad, problem in (("notes.pt", "neither a torch checkpoint nor an exported model"),
                         ("picture.pt", "neither a torch checkpoint nor an exported model"),
                         ("empty.onnx", "an empty file")):
        code, out, err = run_main(monkeypatch, capsys, "extract", tmp_path / bad, exported["photos"],
                                  "-o", tmp_path / "f", "--device", "cpu")
        assert code == 2, (bad, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(tmp_path / bad) in lines[0] and problem in lines[0], err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("image", [np.zeros((0, 0), np.uint8), np.zeros((0, 0, 3), np.uint8),
                                   np.zeros((7, 0, 3), np.uint8), np.zeros((0,), np.uint8),
                                   Image.new("RGB", (0, 0))], ids=["0x0", "0x0x3", "7x0x3", "empty", "pil0x0"])
def test_an_image_without_pixels_is_one_keyreid_error(exported, image):
    for model in (load_model(exported["ckpt"], device="cpu"), load_model(exported["onnx"])):
        with pytest.raises(KeyreidError) as e:
            model.embed(image)
        assert "no pixels" in str(e.value) or "0x0 pixels" in str(e.value)
        assert "\n" not in str(e.value)
        # in a list with good images too
        with pytest.raises(KeyreidError):
            model.embed([np.full((20, 10, 3), 128, np.uint8), image])


def test_both_backends_share_one_preprocessing_and_the_torch_one_alone_has_the_module(exported):
    t, o = load_model(exported["ckpt"], device="cpu"), load_model(exported["onnx"])
    photos = sorted(exported["photos"].iterdir())
    inputs = [photos[0], Image.open(photos[1]), np.asarray(Image.open(photos[2]).convert("RGB"))]
    assert torch.equal(t.preprocess(inputs), o.preprocess(inputs))
    assert (o.fingerprint, o.dim, o.distance, o.normalized, o.input_size) == \
        (t.fingerprint, t.dim, t.distance, t.normalized, t.input_size)
    # what serve/service.py asks before it predicts keypoints or explains a match
    assert hasattr(t, "forward") and hasattr(t, "model")
    assert not hasattr(o, "forward") and not hasattr(o, "model")
    with pytest.raises(Unsupported, match="torch checkpoint"):
        o.model
    assert o.config is None and t.config is not None


class MeanColour(Backend):
    """The smallest backend: the per-channel mean of the left half and of the whole image (6-d),
    which changes under a mirror, so flip averaging is visible."""

    name = "mean-colour"

    def __init__(self):
        self.batches = []

    def run(self, batch):
        self.batches.append(len(batch))
        w = batch.shape[3]
        return torch.cat([batch[..., : w // 2].mean(dim=(2, 3)), batch.mean(dim=(2, 3))], dim=1) + 0.5


def test_a_backend_with_run_alone_gets_the_whole_embedding_interface(exported):
    card = dict(load_model(exported["onnx"]).card, embedding_dim=6)
    backend = MeanColour()
    model = LoadedModel(backend, card)
    photos = sorted(exported["photos"].iterdir())
    x = model.preprocess(photos)
    raw = backend.run(x)
    mirrored = backend.run(torch.flip(x, dims=[3]))
    backend.batches.clear()
    got = model.embed(photos, batch_size=2, flip=True, normalize=False)
    assert backend.batches == [2, 2, 2, 2, 1, 1]      # batched as asked, each batch and its mirror
    np.testing.assert_allclose(got, ((raw + mirrored) / 2).numpy(), atol=1e-6)
    unit = model.embed(photos, batch_size=5)         # the card says cosine: unit rows by default
    np.testing.assert_allclose(unit, torch.nn.functional.normalize(raw, dim=1).numpy(), atol=1e-6)
    assert model.embed([]).shape == (0, 6)
    assert not hasattr(model, "forward")


def test_a_checkpoint_without_card_names_a_command_that_exists(exported, tiny_synth, tmp_path, monkeypatch, capsys):
    """The old advice named `--config`, which no command has; `keyreid eval CONFIG.yaml
    --checkpoint CKPT`, what it says now, runs."""
    from keyreid.config import load_config
    from tests.conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(tiny_synth, tmp_path / "run"))
    ck = torch.load(exported["ckpt"], weights_only=False)
    legacy = tmp_path / "legacy.pt"
    # what keyreid wrote before model cards: weights, label map, nothing that names the model
    torch.save({"model": ck["model"], "label_map": ck["label_map"]}, legacy)
    code, _, err = run_main(monkeypatch, capsys, "extract", legacy, exported["photos"], "-o", tmp_path / "f",
                            "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--config" not in err and f"keyreid eval CONFIG.yaml --checkpoint {legacy}" in err
    yaml_path = tmp_path / "train.yaml"
    yaml_path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    code, out, err = run_main(monkeypatch, capsys, "eval", yaml_path, "--checkpoint", legacy,
                              "--output", tmp_path / "report.json")
    assert code == 0, err
    assert "mAP" in json.loads((tmp_path / "report.json").read_text())["metrics"]
    # and the Python form of the advice gives the carded checkpoint's embeddings
    photos = sorted(exported["photos"].iterdir())
    np.testing.assert_allclose(load_model(legacy, device="cpu", config=cfg).embed(photos),
                               load_model(exported["ckpt"], device="cpu").embed(photos), atol=1e-6)


def test_an_onnx_model_on_a_gpu_device_is_refused_not_ignored(exported):
    with pytest.raises(KeyreidError, match="runs on CPU"):
        load_model(exported["onnx"], device="cuda")
