"""`keyreid train` / `keyreid eval` through the CLI, and clear one-line errors."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from keyreid.cli import app
from tests.conftest import tiny_overrides


def test_train_then_eval_writes_report_and_resolved_config(tiny_synth, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\nmodel:\n  head: kae\n  head_options: {group_channels: 8}\n")
    sets = [a for o in tiny_overrides(tiny_synth, tmp_path / "run", head="kae",
                                                     **{"optim.epochs": 1})
            for a in ("--set", o)]
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(config), *sets])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "best.pt").is_file()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "group_channels: 8" in saved and "head: kae" in saved
    r = runner.invoke(app, ["eval", str(config), *sets, "--checkpoint", str(tmp_path / "run" / "best.pt")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "run" / "best.eval.json").read_text())
    assert report["protocol"] == "reid" and 0 <= report["metrics"]["mAP"] <= 1
    assert (tmp_path / "run" / "best.eval.config.yaml").is_file()
    assert "mAP" in r.output
    # the same checkpoint with k-reciprocal re-ranking: a different ranking, recorded in the report
    r = runner.invoke(app, ["eval", str(config), *sets, "--checkpoint", str(tmp_path / "run" / "best.pt"),
                            "--set", "eval.rerank=true", "--set", "eval.rerank_k1=6"])
    assert r.exit_code == 0, r.output
    reranked = json.loads((tmp_path / "run" / "best.eval.json").read_text())
    assert reranked["rerank"] is True and 0 <= reranked["metrics"]["mAP"] <= 1
    assert reranked["metrics"]["mAP"] != report["metrics"]["mAP"]


def test_bad_input_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  haed: kae\n")
    r = subprocess.run([sys.executable, "-m", "keyreid.cli", "train", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode == 2
    assert "unknown key(s) ['haed']" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "keyreid.cli", "datasets", "check", str(tmp_path / "nope"),
                        "--dataset", "market1501"], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stdout + r.stderr


def test_eval_model_comes_from_the_checkpoint_and_a_differing_config_is_named(tiny_synth, tmp_path):
    sets = [a for o in tiny_overrides(tiny_synth, tmp_path / "run", **{"optim.epochs": 1})
            for a in ("--set", o)]
    config = tmp_path / "train.yaml"
    config.write_text("name: tiny\n")
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(config), *sets])
    assert r.exit_code == 0, r.output
    best = tmp_path / "run" / "best.pt"
    # no config: the checkpoint's own
    r = runner.invoke(app, ["eval", "--checkpoint", str(best), "--output", str(tmp_path / "own.json")])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output
    own = json.loads((tmp_path / "own.json").read_text())
    # a config that describes another model: named in a warning, the checkpoint's model is used
    other = tmp_path / "other.yaml"
    other.write_text(f"name: tiny\ndevice: cpu\ndata:\n  root: {tiny_synth}\n  height: 96\n  width: 32\n"
                     "model:\n  backbone: resnet18\n  last_stride: 2\n  head: kae\n")
    r = runner.invoke(app, ["eval", str(other), "--checkpoint", str(best), "--output", str(tmp_path / "o.json")])
    assert r.exit_code == 0, r.output
    warning = " ".join(r.output.split())
    assert "warning" in warning
    for key in ("model.last_stride: 2 (config) != 1 (checkpoint)", "model.head: 'kae' (config) != 'bnneck'",
                "data.height: 96 (config) != 64 (checkpoint)"):
        assert key in warning, key
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["fingerprint"] == own["fingerprint"] and got["queries"] == own["queries"]
    for metric in ("R1", "R5", "mAP", "mINP"):
        assert got["metrics"][metric] == own["metrics"][metric], metric
