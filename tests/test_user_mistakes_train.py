"""The mistakes of a user's first hour with `keyreid train` / `keyreid eval`, through the real CLI
entry point (keyreid.cli.main): each ends with exit code 2, one `error:` line naming the key or
file and the problem, no traceback, and no file of the user's changed (configs, data, the run
folder of an earlier run). Siblings too: every enum-like option and every numeric range.

Most mistakes are found while the config loads, so those cases cost milliseconds; the ones that
need data or a run folder share one tiny training run (MobileNetV2 from random weights, 64x32
crops, one epoch)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import keyreid.cli as cli
from keyreid.config import load_config

def run_cli(args, monkeypatch, capsys, env=None):
    """keyreid ARGS in this process, exactly as the console script runs it: (exit code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["keyreid", *map(str, args)])
    monkeypatch.setattr(cli, "_DEBUG", False)
    monkeypatch.delenv("KEYREID_DEBUG", raising=False)
    monkeypatch.setenv("KEYREID_PROGRESS", "plain")
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else code), out, err


def snapshot(*roots: Path) -> dict:
    """path -> (sha256, mode) of every file under the roots (a missing root is empty)."""
    found = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            found[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return found


def one_error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def tiny_sets(root, out, **extra) -> list[str]:
    values = {"data.root": root, "data.height": 64, "data.width": 32, "data.p": 4, "data.k": 2,
              "data.workers": 0, "model.backbone": "mobilenetv2", "model.pretrained": "null",
              "optim.epochs": 1, "optim.warmup_epochs": 0, "optim.milestones": "[]",
              "eval.every": 0, "output_dir": out, "device": "cpu"}
    values.update(extra)
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture
def user_config(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text("name: mine\nmodel:\n  head: bnneck\n")
    return config


# ------------------------------------------------------------------ found while the config loads
# (override, what the one line must name): every enum-like option and every numeric range
BAD_SETTINGS = [
    ("model.head=bnnek", "model.head"),
    ("model.backbone=resnet7", "model.backbone"),
    ("data.dataset=market", "data.dataset"),
    ("optim.optimizer=adagrad", "optim.optimizer"),
    ("optim.schedule=linear", "optim.schedule"),
    ("loss.id_loss=softmax", "loss.id_loss"),
    ("loss.metric_loss=contrastive", "loss.metric_loss"),
    ("eval.distance=cosin", "eval.distance"),
    ("device=gpu", "device"),
    ("model.last_stride=3", "model.last_stride"),
    ("seed=-1", "seed"),
    ("data.height=0", "data.height"),
    ("data.width=-32", "data.width"),
    ("data.flip_prob=1.5", "data.flip_prob"),
    ("data.erase_prob=-0.1", "data.erase_prob"),
    ("data.min_keypoint_confidence=2", "data.min_keypoint_confidence"),
    ("data.pad=-1", "data.pad"),
    ("data.p=1", "data.p"),
    ("data.k=0", "data.k"),
    ("data.workers=-1", "data.workers"),
    ("data.val_identities=1.0", "data.val_identities"),
    ("data.test_batch_size=0", "data.test_batch_size"),
    ("loss.label_smoothing=1", "loss.label_smoothing"),
    ("loss.id_weight=-1", "loss.id_weight"),
    ("loss.margin=-0.3", "loss.margin"),
    ("loss.metric_weight=-1", "loss.metric_weight"),
    ("loss.center_weight=-0.1", "loss.center_weight"),
    ("loss.heatmap_weight=-1", "loss.heatmap_weight"),
    ("loss.heatmap_sigma=0", "loss.heatmap_sigma"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-1e-3", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.weight_decay=-5e-4", "optim.weight_decay"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("optim.epochs=-1", "optim.epochs"),
    ("optim.epochs=0", "optim.epochs"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("optim.warmup_factor=0", "optim.warmup_factor"),
    ("optim.milestones=[70, 40]", "optim.milestones"),
    ("optim.gamma=0", "optim.gamma"),
    ("optim.grad_clip=0", "optim.grad_clip"),
    ("optim.freeze_pretrained_epochs=-2", "optim.freeze_pretrained_epochs"),
    ("optim.divergence_factor=0.5", "optim.divergence_factor"),
    ("optim.head_lr_factor=0", "optim.head_lr_factor"),
    ("regularizer.amplitude=0", "regularizer.amplitude"),
    ("regularizer.omega=-1", "regularizer.omega"),
    ("eval.every=-1", "eval.every"),
    ("eval.rerank_k1=0", "eval.rerank_k1"),
    ("eval.rerank_k2=30", "eval.rerank_k2"),
    ("eval.rerank_lambda=2", "eval.rerank_lambda"),
    ("eval.max_rank=0", "eval.max_rank"),
    ("optim.lr=fast", "optim.lr"),                 # a type error
    ("optim.epochs=2.5", "optim.epochs"),
    ("model.haed=kae", "haed"),                    # an unknown key
    ("model.head_options={a: [}", "--set model.head_options"),   # invalid YAML in --set
    ("optim.lr", "--set"),                         # no '='
]


@pytest.mark.parametrize("override,key", BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_bad_setting_is_one_line_naming_the_key(override, key, user_config, tmp_path, tiny_synth,
                                                monkeypatch, capsys):
    out = tmp_path / "run"
    before = snapshot(user_config, tiny_synth)
    code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, out), "--set", override],
                           monkeypatch, capsys)
    assert code == 2
    line = one_error_line(err)
    assert key in line, line
    assert snapshot(user_config, tiny_synth) == before
    assert not out.exists()  # found before any work: not even the run folder was made


def test_a_head_options_own_check_is_one_line_before_any_work(user_config, tmp_path, tiny_synth,
                                                              monkeypatch, capsys):
    out = tmp_path / "run"
    before = snapshot(user_config, tiny_synth)
    code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, out), "--set", "model.head=pabr",
                            "--set", "model.head_options={compact_dim: 1}"], monkeypatch, capsys)
    assert code == 2
    assert one_error_line(err) == ("error: model.head_options of head 'pabr': pabr compact_dim must be "
                                   "at least 2, got 1")
    assert snapshot(user_config, tiny_synth) == before and not out.exists()
    # an option of the wrong type is named too, not read as truthy
    code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, out), "--set", "model.head=aacn",
                            "--set", "model.head_options={max_normalize: maybe, part_channels: 8}"],
                           monkeypatch, capsys)
    assert code == 2
    assert one_error_line(err) == "error: model.head_options.max_normalize: 'maybe' is not true or false (head 'aacn')"
    code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, out), "--set", "model.head=pabr",
                            "--set", "model.head_options={compact_dim: 2.5}"], monkeypatch, capsys)
    assert code == 2
    assert one_error_line(err) == "error: model.head_options.compact_dim: 2.5 is not an integer (or null) (head 'pabr')"
    assert snapshot(user_config, tiny_synth) == before and not out.exists()


def test_enum_messages_list_the_allowed_values(user_config, tmp_path, tiny_synth, monkeypatch, capsys):
    for override, allowed in [("model.head=x", ["bnneck", "kae", "aacn", "pabr", "stripes"]),
                              ("model.backbone=x", ["resnet50", "mobilenetv2"]),
                              ("data.dataset=x", ["market1501", "folder", "cub200"]),
                              ("optim.optimizer=x", ["adam", "adamw", "sgd"]),
                              ("eval.distance=x", ["cosine", "euclidean"]),
                              ("loss.metric_loss=x", ["triplet", "multi_similarity", "none"])]:
        code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, tmp_path / "r"),
                                "--set", override], monkeypatch, capsys)
        line = one_error_line(err)
        assert code == 2 and all(a in line for a in allowed), line


def test_registry_lookup_of_an_unknown_name_is_a_keyreid_error_and_a_key_error():
    from keyreid.errors import KeyreidError
    from keyreid.losses.registry import LOSSES
    from keyreid.models.heads import HEADS

    for registry, known in ((HEADS, "bnneck"), (LOSSES, "triplet")):
        with pytest.raises(KeyError) as exc:  # callers that caught KeyError still do
            registry.get("nope")
        assert isinstance(exc.value, KeyreidError)
        assert str(exc.value).startswith(f"unknown {registry.kind} 'nope'; known: ") and known in str(exc.value)


def test_yaml_1_1_numbers_are_floats(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n  grad_clip: 1e6\n")
    cfg = load_config(config, ["loss.margin=3e-1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip, cfg.loss.margin) == (1e-3, 5e-4, 1e6, 0.3)
    assert isinstance(cfg.optim.lr, float)


def test_config_file_mistakes(tmp_path, tiny_synth, monkeypatch, capsys):
    sets = tiny_sets(tiny_synth, tmp_path / "run")
    # a base: loop is named, file by file, instead of a RecursionError
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\nname: a\n")
    b.write_text("base: a.yaml\nseed: 1\n")
    before = snapshot(a, b)
    code, _, err = run_cli(["train", a, *sets], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and "loop" in line and str(a) in line and str(b) in line
    # an unknown key in a base file is blamed on the base file, not on the child
    base, child = tmp_path / "base.yaml", tmp_path / "child.yaml"
    base.write_text("optim:\n  lr_rate: 0.1\n")
    child.write_text("base: base.yaml\nname: child\n")
    code, _, err = run_cli(["train", child, *sets], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith(f"error: {base}:") and "lr_rate" in line
    # a type error in a base file too
    base.write_text("data:\n  p: many\n")
    code, _, err = run_cli(["train", child, *sets], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith(f"error: {base}:") and "data.p" in line
    # a missing base file names the child that asked for it
    child.write_text("base: nowhere.yaml\n")
    code, _, err = run_cli(["train", child, *sets], monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and "nowhere.yaml" in line and str(child) in line
    # invalid YAML, a missing file
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    code, _, err = run_cli(["train", bad, *sets], monkeypatch, capsys)
    assert code == 2 and str(bad) in one_error_line(err) and "YAML" in err
    code, _, err = run_cli(["train", tmp_path / "missing.yaml", *sets], monkeypatch, capsys)
    assert code == 2 and "not found" in one_error_line(err)
    assert snapshot(a, b) == before
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ found once the data is read
def _copy_without_keypoints(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("keypoints.jsonl"))
    return dst


def test_data_dependent_mistakes_stop_before_training(user_config, tmp_path, tiny_synth, monkeypatch,
                                                      capsys):
    out = tmp_path / "run"
    no_kp = _copy_without_keypoints(tiny_synth, tmp_path / "no_kp")
    folder = tmp_path / "folder_data"  # own folders, one per identity
    for img in sorted((tiny_synth / "bounding_box_train").glob("*.jpg")):
        (folder / img.name[:4]).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, folder / img.name[:4] / img.name)
    cases = [
        (tiny_sets(tiny_synth, out, **{"data.p": 50}), ["data.p=50", "10"]),
        (tiny_sets(no_kp, out, **{"model.head": "kae"}), ["kae", "keypoints"]),
        (tiny_sets(tiny_synth, out, **{"data.val_identities": 0.3, "eval.every": 1, "eval.rerank": "true",
                                       "eval.rerank_k1": 100}), ["eval.rerank_k1=100"]),
        # one camera for all (every file name has "s1"): no held-out query has a true match
        (tiny_sets(folder, out, **{"data.dataset": "folder", "data.val_identities": 0.3, "eval.every": 1,
                                   "data.p": 2, "data.options": "{cam_pattern: '(?P<cam>s1)'}"}),
         ["data.val_identities", "camera"]),
        (tiny_sets(tiny_synth, out, **{"model.pretrained": tmp_path / "nothing.pt"}), ["model.pretrained"]),
    ]
    if not torch.cuda.is_available():
        cases.append((tiny_sets(tiny_synth, out, device="cuda"), ["'cuda'", "GPU"]))
    for sets, words in cases:
        before = snapshot(user_config, tiny_synth, no_kp, folder)
        code, _, err = run_cli(["train", user_config, *sets], monkeypatch, capsys)
        line = one_error_line(err)
        assert code == 2 and all(w in line for w in words), line
        assert snapshot(user_config, tiny_synth, no_kp, folder) == before
        assert not out.exists(), line


# ------------------------------------------------------------------ an existing run folder
@pytest.fixture(scope="module")
def trained_run(tiny_synth, tmp_path_factory):
    """One finished one-epoch run (config.yaml, last.pt, best.pt, metrics.csv, tb/), trained
    through keyreid.cli.main with stdout a pipe, as in a CI log."""
    out = tmp_path_factory.mktemp("trained") / "run"
    config = out.parent / "my.yaml"
    config.write_text("name: mine\nmodel:\n  head: bnneck\n")
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        mp.setattr(sys, "argv", ["keyreid", "train", str(config), *map(str, tiny_sets(tiny_synth, out))])
        mp.delenv("KEYREID_PROGRESS", raising=False)
        mp.delenv("CI", raising=False)
        with pytest.raises(SystemExit) as exc:
            cli.main()
    assert exc.value.code in (0, None), stdout.getvalue()
    # no terminal: one plain line per epoch with loss, lr and speed
    text = stdout.getvalue()
    assert "epoch 1/1  loss " in text and " lr " in text and "img/s" in text, text
    return config, out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    config, out = trained_run
    shutil.copy(config, tmp_path / "my.yaml")
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "my.yaml", tmp_path / "run"


def test_resume_with_a_changed_config_is_refused_with_a_diff(run_copy, tiny_synth, monkeypatch, capsys):
    config, out = run_copy
    before = snapshot(config, out, tiny_synth)
    # lr and epochs: a diff, one line per key, and the flag that accepts it
    code, _, err = run_cli(["train", config, *tiny_sets(tiny_synth, out, **{"optim.lr": 0.01, "optim.epochs": 2})],
                           monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert "optim.lr: 0.00035 (checkpoint) -> 0.01 (now)" in err
    assert "optim.epochs: 1 (checkpoint) -> 2 (now)" in err and "--allow-config-change" in err
    assert "data.workers" not in err  # settings that change nothing computed are not listed
    # another head: never resumes, not even with the flag
    code, _, err = run_cli(["train", config, "--allow-config-change",
                            *tiny_sets(tiny_synth, out, **{"model.head": "stripes"})], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err
    assert "model.head: 'bnneck' (checkpoint) -> 'stripes' (now)" in err and "can never resume" in err
    # config.yaml still describes the model the folder holds; nothing else moved either
    assert snapshot(config, out, tiny_synth) == before


def test_allow_config_change_resumes_with_the_new_values(run_copy, tiny_synth, monkeypatch, capsys):
    config, out = run_copy
    code, stdout, err = run_cli(["train", config, "--allow-config-change",
                                 *tiny_sets(tiny_synth, out, **{"optim.epochs": 2, "optim.lr": "1e-3"})],
                                monkeypatch, capsys)
    assert code == 0, err
    assert "optim.epochs: 1 (checkpoint) -> 2 (now)" in stdout and "resuming" in stdout
    assert load_config(out / "config.yaml").optim.lr == 1e-3
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["state"]["epoch"] == 2
    assert [g["lr"] for g in ck["optimizer"]["param_groups"]][0] == pytest.approx(1e-3)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]


def test_no_resume_sets_the_old_run_aside(run_copy, tiny_synth, monkeypatch, capsys):
    config, out = run_copy
    old = snapshot(out)
    (out / "previous-1").mkdir()  # an earlier set-aside run: the next free number is used
    (out / "previous-1" / "notes.txt").write_text("mine")
    code, stdout, err = run_cli(["train", config, "--no-resume", *tiny_sets(tiny_synth, out)],
                                monkeypatch, capsys)
    assert code == 0, err
    assert "previous-2" in stdout
    moved = snapshot(out / "previous-2")
    # every file of the old run is there, byte for byte; the older set-aside folder untouched
    assert sorted(old.values()) == sorted(moved.values())
    assert (out / "previous-1" / "notes.txt").read_text() == "mine"
    assert len((out / "metrics.csv").read_text().splitlines()) == 2   # header + this run's epoch
    new_tb = {p.name for p in (out / "tb").iterdir()}
    assert new_tb and not new_tb & {p.name for p in (out / "previous-2" / "tb").iterdir()}
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["state"]["epoch"] == 1 and ck["state"]["global_step"] == \
        torch.load(out / "previous-2" / "last.pt", weights_only=False)["state"]["global_step"]


def test_divergence_stops_with_the_last_good_checkpoint_intact(run_copy, tiny_synth, monkeypatch, capsys):
    config, out = run_copy
    good = snapshot(out / "last.pt", out / "best.pt")
    code, _, err = run_cli(["train", config, "--allow-config-change",
                            *tiny_sets(tiny_synth, out, **{"optim.epochs": 2, "optim.lr": "1e6"})],
                           monkeypatch, capsys)
    assert code == 2
    line = one_error_line(err)
    assert "diverged at epoch 2" in line and "optim.lr" in line and "end of epoch 1" in line, line
    assert snapshot(out / "last.pt", out / "best.pt") == good


def test_divergence_from_the_start_writes_no_checkpoint(user_config, tmp_path, tiny_synth, monkeypatch,
                                                         capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, out, **{"optim.lr": "1e6",
                                                                                 "optim.epochs": 3})],
                           monkeypatch, capsys)
    line = one_error_line(err)
    assert code == 2 and "diverged at epoch 1" in line and "no checkpoint was written" in line, line
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_full_disk_while_checkpointing_keeps_the_previous_last_pt(run_copy, tiny_synth, monkeypatch,
                                                                  capsys):
    config, out = run_copy
    good = snapshot(out / "last.pt")
    real_save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("keyreid.utils.checkpoint.torch.save", save_on_a_full_disk)
    code, _, err = run_cli(["train", config, "--allow-config-change",
                            *tiny_sets(tiny_synth, out, **{"optim.epochs": 2})], monkeypatch, capsys)
    monkeypatch.setattr("keyreid.utils.checkpoint.torch.save", real_save)
    line = one_error_line(err)
    assert code == 2 and str(out / "last.pt") in line and "free in" in line
    assert "previous last.pt is intact" in line
    assert snapshot(out / "last.pt") == good and not list(out.glob("*.tmp"))


def test_files_get_the_umask_mode(run_copy):
    _, out = run_copy
    umask = os.umask(0)
    os.umask(umask)
    # the fixture's run wrote these with keyreid's atomic writes
    for name in ("config.yaml", "last.pt", "best.pt"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_eval_config_is_optional_and_an_error_is_one_line(run_copy, tiny_synth, monkeypatch, capsys):
    config, out = run_copy
    code, stdout, err = run_cli(["eval", "--checkpoint", out / "best.pt"], monkeypatch, capsys)
    assert code == 0, err
    assert "mAP" in stdout and (out / "best.eval.json").is_file()
    code, _, err = run_cli(["eval", "--checkpoint", out / "nothing.pt"], monkeypatch, capsys)
    assert code == 2 and "checkpoint not found" in one_error_line(err)
    code, _, err = run_cli(["eval", "--checkpoint", out / "best.pt", "--set", "eval.distance=l2"],
                           monkeypatch, capsys)
    assert code == 2 and "eval.distance" in one_error_line(err)


def test_debug_shows_the_traceback(user_config, monkeypatch, capsys):
    from keyreid.config import ConfigError

    args = ["train", user_config, "--set", "optim.epochs=0"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    assert code == 2 and err.strip() == "error: optim.epochs=0 is out of range: must be >= 1"
    # --debug (or KEYREID_DEBUG=1): main() lets the error through, so Python prints its traceback
    for argv, env in ((["--debug", *args], {}), (args, {"KEYREID_DEBUG": "1"})):
        with pytest.raises(ConfigError, match="optim.epochs=0"):
            run_cli(argv, monkeypatch, capsys, env=env)


class _FillingFile:
    """A file whose write() fails with ENOSPC after `room` bytes, as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _tmpfs(folder: Path, size: str) -> bool:
    """A real small filesystem at `folder` (root in CI can mount tmpfs); False where not allowed."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_really_full_disk_in_train_is_one_line(user_config, tmp_path, tiny_synth, monkeypatch, capsys):
    """torch.save's zip writer turns the file's ENOSPC into a long RuntimeError ("unexpected pos"):
    still one line naming last.pt and the free space. Through the real writer on a file that
    fills up, and on a real 1 MB tmpfs where the machine allows mounting one (CI runs as root)."""
    import builtins
    import subprocess

    real_open = builtins.open

    def filling_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _FillingFile(f, 50_000) if "w" in mode and "b" in mode else f

    out = tmp_path / "run"
    monkeypatch.setattr("keyreid.utils.checkpoint.open", filling_open, raising=False)
    code, _, err = run_cli(["train", user_config, *tiny_sets(tiny_synth, out)], monkeypatch, capsys)
    monkeypatch.undo()
    line = one_error_line(err)
    assert code == 2 and str(out / "last.pt") in line and "no space left" in line and "free in" in line, line
    assert not list(out.glob("*.tmp"))

    disk = tmp_path / "small_disk"
    if _tmpfs(disk, "1m"):
        try:
            r = subprocess.run([str(Path(sys.executable).parent / "keyreid"), "train", str(user_config),
                                *map(str, tiny_sets(tiny_synth, disk / "run"))],
                               capture_output=True, text=True, timeout=600,
                               env={**os.environ, "KEYREID_PROGRESS": "plain"})
            line = one_error_line(r.stderr)
            assert r.returncode == 2 and "no space left" in line and "last.pt" in line, r.stderr[-2000:]
            assert not list((disk / "run").glob("*.tmp"))
        finally:
            subprocess.run(["umount", str(disk)], capture_output=True)
    elif os.environ.get("CI") == "true" and os.geteuid() == 0:
        pytest.fail("CI runs as root but could not mount a tmpfs for the real full-disk case")
