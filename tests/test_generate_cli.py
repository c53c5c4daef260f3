"""`keyreid generate train|render|poses` through the real entry point (keyreid.cli.main, in this
process so the test-only fake methods are registered): exit codes, messages, files, and render
output equal to the loaded generator's own render on the same inputs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import keyreid.cli as cli
from keyreid.errors import KeyreidError
from keyreid.generation.method import GENERATION_METHODS, register_method

# the fake methods and the tiny synthetic set of the trainer tests
from test_generation_trainer import FakeMethod, synth_root  # noqa: F401


if "test_fake_other" not in GENERATION_METHODS:
    @register_method("test_fake_other")
    class NeedsOther(FakeMethod):
        """Renders only with a second image (as IP-GAN) and stores two canonical poses."""

        def card(self):
            from keyreid.generation.canonical import Canonical

            poses = np.zeros((2, 18, 3), np.float32)
            poses[:, 1] = [0, -0.5, 1]      # neck
            poses[0, 8], poses[0, 11] = [-0.2, 0.5, 1], [0.2, 0.5, 1]
            poses[1, 8], poses[1, 11] = [-0.1, 0.5, 1], [0.1, 0.5, 1]
            return {"canonical": Canonical(poses, "openpose18").to_dict()}

        @torch.no_grad()
        def render(self, source, target_kp=None, other=None):
            if other is None:
                raise KeyreidError("test_fake_other renders with another image: pass it with --other IMAGE2")
            return super().render(other, target_kp)


def run_cli(args, monkeypatch, capsys):
    """keyreid ARGS exactly as the console script runs it: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    monkeypatch.setattr(cli, "_DEBUG", False)
    monkeypatch.delenv("KEYREID_DEBUG", raising=False)
    monkeypatch.setenv("KEYREID_PROGRESS", "plain")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return (0 if exc.value.code is None else exc.value.code), out, err


def one_error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def write_config(tmp_path, root, method="test_fake", **extra):
    values = {"method": method, "device": "cpu", "output_dir": str(tmp_path / "run"),
              "data": {"root": str(root), "height": 32, "width": 16, "batch_size": 8, "workers": 0},
              "optim": {"epochs": 1, "decay_epochs": 0}, "log": {"sample_count": 2, "tensorboard": False}}
    values.update(extra)
    path = tmp_path / "gen.yaml"
    path.write_text(json.dumps(values))   # JSON is YAML
    return path


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):  # noqa: F811
    """One tiny training run of each fake method, through the CLI's train command."""
    from keyreid.generation.config import load_gen_config
    from keyreid.generation.trainer import GanTrainer

    out = {}
    for method in ("test_fake", "test_fake_other"):
        tmp = tmp_path_factory.mktemp(method)
        cfg = load_gen_config(write_config(tmp, synth_root, method))
        GanTrainer(cfg, show_progress=False).fit()
        out[method] = tmp / "run" / "last.pt"
    return out


@pytest.fixture(scope="module")
def person(synth_root):  # noqa: F811
    """A training image of the set (64x32) and its COCO-17 keypoints from the sidecar."""
    lines = (synth_root / "keypoints.jsonl").read_text().splitlines()
    entry = next(e for e in map(json.loads, lines[1:]) if e["path"].startswith("bounding_box_train/"))
    return synth_root / entry["path"], entry["keypoints"]


# ------------------------------------------------------------------------------------ train

def test_train_resume_refusal_and_no_resume(synth_root, tmp_path, monkeypatch, capsys):  # noqa: F811
    config = write_config(tmp_path, synth_root)
    code, out, err = run_cli(["generate", "train", config], monkeypatch, capsys)
    assert code == 0, err
    assert "done: 1 epochs (main)" in out and (tmp_path / "run" / "last.pt").is_file()
    assert "epoch 1/1 [main 1]" in out                   # the plain line of the epoch
    # the same folder with another batch size: refused with the key's diff
    code, out, err = run_cli(["generate", "train", config, "--set", "data.batch_size=4"], monkeypatch, capsys)
    assert code == 2 and "data.batch_size: 8 (checkpoint) -> 4 (now)" in err and "Traceback" not in err
    code, out, err = run_cli(["generate", "train", config, "--set", "data.batch_size=4",
                              "--allow-config-change"], monkeypatch, capsys)
    assert code == 0 and "resuming with a changed config: data.batch_size" in out
    code, out, err = run_cli(["generate", "train", config, "--no-resume"], monkeypatch, capsys)
    assert code == 0 and "moved to" in out and (tmp_path / "run" / "previous-1" / "last.pt").is_file()
    code, out, err = run_cli(["generate", "train", config, "--set", "optim.epochs=-1"], monkeypatch, capsys)
    assert code == 2 and "optim.epochs=-1 is out of range" in one_error_line(err)
    code, out, err = run_cli(["generate", "train", config, "--set", "method=nope"], monkeypatch, capsys)
    assert code == 2 and "unknown generation method 'nope'" in one_error_line(err)


# ------------------------------------------------------------------------------------ render

def test_render_with_a_pose_file_equals_the_generator_on_the_same_inputs(trained, person, tmp_path,
                                                                          monkeypatch, capsys):
    from keyreid.data.keypoints import COCO17
    from keyreid.generation.load import load_generator, read_model_image, read_pose_json
    from keyreid.generation.pose import from_unit_range

    image, keypoints = person
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(keypoints))
    out = tmp_path / "out.png"
    code, stdout, err = run_cli(["generate", "render", trained["test_fake"], image, "--pose", pose, "-o", out],
                                monkeypatch, capsys)
    assert code == 0, err
    got = np.asarray(Image.open(out))
    assert got.shape == (32, 16, 3)
    method, cfg = load_generator(trained["test_fake"])
    source, size = read_model_image(image, 32, 16)
    assert size == (32, 64)
    kp = torch.from_numpy(read_pose_json(pose, COCO17, size, 32, 16))[None]
    assert np.array_equal(got, from_unit_range(method.render(source, kp))[0])


def test_pose_json_is_converted_to_openpose18_at_model_size(tmp_path):
    from keyreid.data.keypoints import COCO17
    from keyreid.generation.load import read_pose_json

    kp = [[0.0, 0.0, 0.0]] * 17
    kp[0] = [10.0, 6.0, 1.0]      # nose
    kp[5] = [20.0, 20.0, 1.0]     # left shoulder
    kp[6] = [12.0, 22.0, 0.9]     # right shoulder
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"keypoints": kp}))
    out = read_pose_json(path, COCO17, (32, 64), 32, 16)     # a 32x64 image -> the model's 16x32
    assert out.shape == (18, 3)
    # pixel centres: x -> (x + 0.5) * 16 / 32 - 0.5
    assert out[0].tolist() == pytest.approx([4.75, 2.75, 1.0])            # nose
    assert out[1].tolist() == pytest.approx([7.75, 10.25, 1.0])           # neck = mid-shoulders
    assert out[5].tolist() == pytest.approx([9.75, 9.75, 1.0])            # left shoulder (OpenPose 5)
    assert out[2].tolist() == pytest.approx([5.75, 10.75, 1.0])           # right shoulder (OpenPose 2)
    assert out[8].tolist() == [0.0, 0.0, 0.0]                            # missing hip


def test_render_errors_are_one_line_exit_2(trained, person, tmp_path, monkeypatch, capsys):
    image, keypoints = person
    ck = trained["test_fake"]
    out = tmp_path / "out.png"
    bad = tmp_path / "POSE.json"
    bad.write_text(json.dumps(keypoints[:12]))
    code, _, err = run_cli(["generate", "render", ck, image, "--pose", bad, "-o", out], monkeypatch, capsys)
    assert code == 2 and one_error_line(err) == f"error: {bad}: expected 17 keypoints [x, y, v], got 12"
    code, _, err = run_cli(["generate", "render", ck, tmp_path / "nope.jpg", "--pose", bad, "-o", out],
                           monkeypatch, capsys)
    assert code == 2 and "nope.jpg: image not found" in one_error_line(err)
    code, _, err = run_cli(["generate", "render", tmp_path / "none.pt", image, "-o", out], monkeypatch, capsys)
    assert code == 2 and "none.pt: checkpoint not found" in one_error_line(err)
    code, _, err = run_cli(["generate", "render", ck, image, "--pose", "canonical:0", "-o", out],
                           monkeypatch, capsys)
    assert code == 2 and "stores no canonical poses" in one_error_line(err)
    # a method that draws in a target pose, without one
    code, _, err = run_cli(["generate", "render", ck, image, "-o", out], monkeypatch, capsys)
    assert code == 2 and "test_fake render draws the person in a target pose: give --pose" in one_error_line(err)
    # a method that needs --other, without it
    code, _, err = run_cli(["generate", "render", trained["test_fake_other"], image, "--pose", "canonical:1",
                            "-o", out], monkeypatch, capsys)
    assert code == 2 and "--other IMAGE2" in one_error_line(err)
    code, _, err = run_cli(["generate", "render", trained["test_fake_other"], image, "--pose", "canonical:5",
                            "--other", image, "-o", out], monkeypatch, capsys)
    assert code == 2 and "canonical:K with K in 0..1" in one_error_line(err)
    assert not out.exists()


def test_render_canonical_all_writes_a_strip_of_every_pose(trained, person, tmp_path, monkeypatch, capsys):
    image, _ = person
    out = tmp_path / "all.png"
    code, _, err = run_cli(["generate", "render", trained["test_fake_other"], image, "--pose", "canonical:all",
                            "--other", image, "-o", out], monkeypatch, capsys)
    assert code == 0, err
    strip = np.asarray(Image.open(out))
    assert strip.shape == (32, 2 * 16, 3)
    assert not np.array_equal(strip[:, :16], strip[:, 16:])      # two different poses


# ------------------------------------------------------------------------------------ poses

def test_poses_writes_canonical_json_and_picture(synth_root, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "canon" / "canonical.json"
    code, stdout, err = run_cli(["generate", "poses", synth_root, "-o", out, "--k", "2"], monkeypatch, capsys)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["format"] == "keyreid-canonical-poses" and data["skeleton"] == "openpose18"
    assert np.asarray(data["poses"]).shape == (2, 18, 3)
    assert out.with_suffix(".png").is_file()
    # errors: no sidecar, no root
    bare = tmp_path / "bare"
    shutil.copytree(synth_root, bare, ignore=shutil.ignore_patterns("keypoints.jsonl"))
    code, _, err = run_cli(["generate", "poses", bare, "-o", out], monkeypatch, capsys)
    assert code == 2 and "keypoint sidecar not found" in one_error_line(err)
    code, _, err = run_cli(["generate", "poses", tmp_path / "none", "-o", out], monkeypatch, capsys)
    assert code == 2 and "dataset root not found" in one_error_line(err)


def test_render_reads_16_bit_images_as_their_8_bit_twin_and_refuses_bombs(trained, person, tmp_path,
                                                                          monkeypatch, capsys):
    """generate render reads its source through the one image reader: a 16-bit grey PNG gives the
    8-bit twin's picture, a decompression bomb is one line, exit 2."""
    import PIL.Image

    image, keypoints = person
    pose = tmp_path / "pose.json"
    pose.write_text(json.dumps(keypoints))
    grey = np.asarray(Image.open(image).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    Image.fromarray(grey).save(tmp_path / "eight.png")
    outs = []
    for name in ("sixteen", "eight"):
        out = tmp_path / f"{name}_out.png"
        code, _, err = run_cli(["generate", "render", trained["test_fake"], tmp_path / f"{name}.png", "--pose", pose,
                                "-o", out], monkeypatch, capsys)
        assert code == 0, err
        outs.append(np.asarray(Image.open(out)))
    assert np.array_equal(outs[0], outs[1])

    w, h = Image.open(image).size
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", (w * h) // 3)
    code, _, err = run_cli(["generate", "render", trained["test_fake"], image, "--pose", pose,
                            "-o", tmp_path / "bomb_out.png"], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and "decompression-bomb" in line and Path(image).name in line
    assert not (tmp_path / "bomb_out.png").exists()
