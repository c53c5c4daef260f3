"""GanTrainer: exact resume (one and two stages), stage freezing across a kill, LR factors,
divergence, config diff on resume, set-aside, logs and sample grids, load_generator.

A tiny fake method (registered as "test_fake": a 1-conv generator with L1 + LSGAN, a 1-conv
discriminator) keeps these tests independent of the real methods."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from keyreid.config import ConfigError
from keyreid.data.synthetic import SynthConfig, generate
from keyreid.generation.config import load_gen_config
from keyreid.generation.method import GENERATION_METHODS, GenerationMethod, Stage, StepContext, lr_factor, \
    register_method
from keyreid.generation.samples import TITLE_HEIGHT, sample_grid


KILL: dict = {"at": None}       # (stage name, epoch within stage, step): train_step raises there
NAN: dict = {"at": None}        # the same: train_step returns a NaN loss there


class Killed(Exception):
    pass


class FakeMethod(GenerationMethod):
    """G: 1 conv on concat(source, target skeleton); D: 1 conv. Option two_stage: stage "A"
    (1 epoch, both train) then stage "B" (1 + 1 decay epochs) where G is frozen."""

    uses_pose_maps = False

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.gen = nn.Conv2d(6, 3, 3, padding=1)
        self.disc = nn.Conv2d(3, 1, 3, padding=1)
        self.two_stage = bool(cfg.method_options.get("two_stage", False))
        self.stage_name = "main"

    def stages(self):
        if self.two_stage:
            return [Stage("A", 1), Stage("B", 1, 1)]
        return super().stages()

    def begin_stage(self, stage):
        self.stage_name = stage.name
        self.gen.requires_grad_(stage.name != "B")

    def optimizers(self, stage):
        out = {"discriminator": torch.optim.Adam(self.disc.parameters(), lr=1e-2, betas=(0.5, 0.999))}
        if stage.name != "B":
            out["generator"] = torch.optim.Adam(self.gen.parameters(), lr=1e-2, betas=(0.5, 0.999))
        return out

    def generate(self, source, pose):
        return torch.tanh(self.gen(torch.cat([source, pose], 1)))

    def train_step(self, batch, ctx: StepContext):
        where = (ctx.stage.name, ctx.epoch, ctx.step_index)
        if KILL["at"] == where:
            raise Killed(str(where))
        src, tgt, pose = batch["source"], batch["target"], batch["target_skeleton"]
        with ctx.autocast():  # noise from the global RNG (as FD-GAN's G): resume must restore it
            fake = self.generate(src + 0.1 * torch.randn_like(src), pose)
        out = {}
        if "generator" in ctx.optimizers:
            g = F.l1_loss(fake, tgt) + 0.1 * ((self.disc(fake) - 1) ** 2).mean()
            ctx.backward(g)
            ctx.step("generator")
            out["g"] = float(g.detach())
        self.disc.zero_grad(set_to_none=True)
        d = 0.5 * (((self.disc(tgt) - 1) ** 2).mean() + (self.disc(fake.detach()) ** 2).mean())
        ctx.backward(d)
        ctx.step("discriminator")
        out["d"] = float("nan") if NAN["at"] == where else float(d.detach())
        return out

    @torch.no_grad()
    def sample(self, batch):
        return {"source": batch["source"], "target pose": batch["target_skeleton"],
                "generated": self.generate(batch["source"], batch["target_skeleton"]),
                "ground truth": batch["target"]}

    def card(self):
        return {"canonical_poses": [], "note": "fake"}

    @torch.no_grad()
    def render(self, source, target_kp=None, other=None):
        from keyreid.generation.pose import skeleton_image, to_unit_range

        h, w = source.shape[-2:]
        pose = torch.stack([to_unit_range(skeleton_image(k.numpy(), self.info.skeleton, h, w))
                            for k in target_kp])
        return self.generate(source, pose)


if "test_fake" not in GENERATION_METHODS:
    register_method("test_fake")(FakeMethod)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """64x32 synthetic set: 4 identities x 3 images = 24 ordered same-identity pairs."""
    root = tmp_path_factory.mktemp("gen_synth")
    generate(root, SynthConfig(train_identities=4, test_identities=2, cameras=2, distractors=0, junk=0,
                               train_images=(3, 3), train_cameras=(2, 2), test_cameras=(2, 2),
                               height=64, width=32, seed=3), workers=1)
    return root


def config(root, out, *extra):
    return load_gen_config(None, [f"data.root={root}", f"output_dir={out}", "method=test_fake", "device=cpu",
                                  "data.height=32", "data.width=16", "data.batch_size=8", "data.workers=0",
                                  "optim.epochs=1", "optim.decay_epochs=1", "log.sample_count=3",
                                  "log.tensorboard=false", *extra])


def weights(out):
    ck = torch.load(out / "last.pt", weights_only=False)
    return ck, ck["method_state"]


def same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def train(cfg, **kw):
    from keyreid.generation.trainer import GanTrainer

    trainer = GanTrainer(cfg, show_progress=False, **kw)
    return trainer, trainer.fit()


@pytest.fixture(autouse=True)
def _reset_hooks():
    KILL["at"] = NAN["at"] = None
    yield
    KILL["at"] = NAN["at"] = None


# ------------------------------------------------------------------------------------ LR factors

def test_lr_factor_constant_then_cyclegan_linear_decay():
    st = Stage("main", 3, 4)
    # 1 for the constant epochs, then 1 - (e - 3 + 1) / 5 = 4/5, 3/5, 2/5, 1/5
    assert [lr_factor(st, e) for e in range(7)] == pytest.approx([1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    assert [lr_factor(Stage("s", 2), e) for e in range(2)] == [1.0, 1.0]


def test_lr_of_every_optimizer_follows_the_stage_schedule(synth_root, tmp_path):
    cfg = config(synth_root, tmp_path / "run", "optim.epochs=1", "optim.decay_epochs=2", "log.sample_every=0")
    train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(r["lr_factor"]) for r in rows] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert [float(r["lr_generator"]) for r in rows] == pytest.approx([1e-2, 1e-2 * 2 / 3, 1e-2 / 3])
    assert [float(r["lr_discriminator"]) for r in rows] == pytest.approx([1e-2, 1e-2 * 2 / 3, 1e-2 / 3])


# ------------------------------------------------------------------------------------ exact resume

def test_kill_and_resume_is_bit_identical_to_a_straight_run(synth_root, tmp_path):
    straight = tmp_path / "straight"
    _, result = train(config(synth_root, straight))
    assert result["epochs"] == 2
    ck_a, w_a = weights(straight)

    killed = tmp_path / "killed"
    KILL["at"] = ("main", 1, 1)         # in the middle of the second epoch
    with pytest.raises(Killed):
        train(config(synth_root, killed))
    ck_mid, w_mid = weights(killed)
    assert (ck_mid["stage_index"], ck_mid["epoch"]) == (0, 1)
    assert not same_weights(w_mid, w_a)
    KILL["at"] = None
    trainer, result = train(config(synth_root, killed))
    assert result["epochs"] == 2
    ck_b, w_b = weights(killed)
    assert same_weights(w_a, w_b)
    for name in ("generator", "discriminator"):  # (stage over: no optimizers kept)
        assert ck_a["optimizers"] is None and ck_b["optimizers"] is None
    # the CSV holds each epoch once, the same losses as the straight run
    rows_a = list(csv.DictReader(open(straight / "metrics.csv")))
    rows_b = list(csv.DictReader(open(killed / "metrics.csv")))
    assert [r["epoch"] for r in rows_b] == ["1", "2"]
    assert [(r["g"], r["d"]) for r in rows_a] == [(r["g"], r["d"]) for r in rows_b]


def test_kill_in_stage_two_resumes_in_stage_two_with_the_net_frozen(synth_root, tmp_path):
    extra = ("method_options.two_stage=true",)
    straight = tmp_path / "straight"
    train(config(synth_root, straight, *extra))
    _, w_a = weights(straight)

    killed = tmp_path / "killed"
    KILL["at"] = ("B", 1, 0)            # stage B's second (decay) epoch
    with pytest.raises(Killed):
        train(config(synth_root, killed, *extra))
    ck_mid, w_mid = weights(killed)
    assert (ck_mid["stage_index"], ck_mid["epoch"]) == (1, 1)
    assert set(ck_mid["optimizers"]) == {"discriminator"}
    KILL["at"] = None
    from keyreid.generation.trainer import GanTrainer

    trainer = GanTrainer(config(synth_root, killed, *extra), show_progress=False)
    assert (trainer.state.stage_index, trainer.state.epoch) == (1, 1)
    trainer.fit()
    assert trainer.method.stage_name == "B"
    assert not any(p.requires_grad for p in trainer.method.gen.parameters())
    _, w_b = weights(killed)
    assert same_weights(w_a, w_b)
    # G did not move in stage B: the same as at the end of stage A
    assert torch.equal(w_b["gen.weight"], w_mid["gen.weight"])
    assert not torch.equal(w_b["disc.weight"], w_mid["disc.weight"])
    rows = list(csv.DictReader(open(killed / "metrics.csv")))
    assert [(r["epoch"], r["stage"], r["stage_epoch"]) for r in rows] == \
        [("1", "A", "1"), ("2", "B", "1"), ("3", "B", "2")]
    assert [float(r["lr_factor"]) for r in rows] == pytest.approx([1.0, 1.0, 0.5])


# ------------------------------------------------------------------------------------ divergence

def test_nan_loss_stops_naming_epoch_and_loss_and_keeps_last_good_checkpoint(synth_root, tmp_path):
    from keyreid.errors import KeyreidError

    out = tmp_path / "run"
    NAN["at"] = ("main", 1, 1)
    with pytest.raises(KeyreidError) as e:
        train(config(synth_root, out))
    msg = str(e.value)
    assert "epoch 2" in msg and "'d'" in msg and "nan" in msg and "last.pt" in msg
    ck = torch.load(out / "last.pt", weights_only=False)
    assert (ck["stage_index"], ck["epoch"]) == (0, 1)
    assert all(torch.isfinite(v).all() for v in ck["method_state"].values())


# ------------------------------------------------------------------------------------ run folder

def test_resume_refuses_a_changed_config_with_a_per_key_diff(synth_root, tmp_path):
    out = tmp_path / "run"
    KILL["at"] = ("main", 1, 0)
    with pytest.raises(Killed):
        train(config(synth_root, out))
    KILL["at"] = None
    with pytest.raises(ConfigError) as e:
        train(config(synth_root, out, "data.batch_size=4", "method_options.extra=1"))
    msg = str(e.value)
    assert "data.batch_size: 8 (checkpoint) -> 4 (now)" in msg
    assert "method_options.extra: '(unset)' (checkpoint) -> 1 (now)" in msg
    assert "--allow-config-change" in msg
    # accepted with allow_config_change; a different method never
    trainer, result = train(config(synth_root, out, "data.batch_size=4", "log.sample_every=0"),
                            allow_config_change=True)
    assert trainer.config_changes == ["data.batch_size: 8 (checkpoint) -> 4 (now)"]
    assert result["epochs"] == 2
    with pytest.raises(ConfigError, match="method: 'test_fake' .*-> 'pngan'"):
        train(config(synth_root, out, "method=pngan"), allow_config_change=True)


def test_no_resume_sets_the_old_run_aside_with_its_samples(synth_root, tmp_path):
    out = tmp_path / "run"
    train(config(synth_root, out, "optim.decay_epochs=0"))
    old = torch.load(out / "last.pt", weights_only=False)["method_state"]
    trainer, _ = train(config(synth_root, out, "optim.decay_epochs=0", "seed=1"), resume=False)
    assert trainer.set_aside == out / "previous-1"
    for name in ("last.pt", "metrics.csv", "config.yaml", "samples/epoch_001.png"):
        assert (out / "previous-1" / name).exists()
    assert same_weights(torch.load(out / "previous-1" / "last.pt", weights_only=False)["method_state"], old)
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 1


# ------------------------------------------------------------------------------------ files

def test_outputs_csv_config_samples_checkpoint_and_plain_lines(synth_root, tmp_path, capsys, monkeypatch):
    from keyreid.generation.trainer import GanTrainer

    monkeypatch.setenv("KEYREID_PROGRESS", "plain")
    out = tmp_path / "run"
    cfg = config(synth_root, out, "optim.decay_epochs=2", "log.sample_every=2", "log.tensorboard=true")
    GanTrainer(cfg, show_progress=True).fit()
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch ")]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3 [main 1]") and " g " in lines[0]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"stage", "g", "d", "seconds", "lr_factor", "steps", "pairs"} <= set(rows[0])
    assert int(rows[0]["pairs"]) == 24 and int(rows[0]["steps"]) == 3    # 24 pairs, batches of 8
    assert load_gen_config(out / "config.yaml") == cfg
    # every 2 epochs and the last one
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_002.png", "epoch_003.png"]
    grid = np.asarray(Image.open(out / "samples" / "epoch_002.png"))
    assert grid.shape[0] == TITLE_HEIGHT + 3 * (32 + 2) + 2              # 3 rows of 32 px
    assert any(p.name.startswith("events") for p in (out / "tb").iterdir())
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["format"] == "keyreid-gan" and ck["version"] == 1 and ck["method"] == "test_fake"
    assert ck["card"]["note"] == "fake" and ck["data_info"]["skeleton"] == "openpose18"
    assert ck["data_info"]["num_classes"] == 4 and ck["data_skeleton"] == "coco17"
    assert set(ck["rng"]) == {"torch", "numpy", "python", "cuda"}


def test_sample_grids_do_not_change_training(synth_root, tmp_path):
    train(config(synth_root, tmp_path / "a", "log.sample_every=1"))
    train(config(synth_root, tmp_path / "b", "log.sample_every=0"))
    assert same_weights(weights(tmp_path / "a")[1], weights(tmp_path / "b")[1])
    assert not (tmp_path / "b" / "samples").exists()


def test_sample_pairs_come_from_held_out_identities(synth_root, tmp_path):
    from keyreid.generation.trainer import GanTrainer

    cfg = config(synth_root, tmp_path / "run", "data.val_identities=0.5")
    trainer = GanTrainer(cfg, show_progress=False)
    batch = trainer.sample_batch()
    train_pids = {s.pid for s in trainer.train_samples}
    held = {int(p) for p in batch["source_pid"]}
    assert held and not held & train_pids and len(held) == 2        # both held-out ids come first
    assert torch.equal(batch["source_pid"], batch["target_pid"])
    assert not torch.equal(batch["source_index"], batch["target_index"])
    again = GanTrainer(cfg, show_progress=False, resume=False).sample_batch()
    assert torch.equal(batch["source"], again["source"])             # fixed


def test_grid_columns_titles_and_pixels():
    cols = {"a": torch.full((2, 3, 8, 4), -1.0), "wide title": torch.ones(2, 3, 8, 4)}
    g = sample_grid(cols)
    assert g.shape[0] == TITLE_HEIGHT + 2 * (8 + 2) + 2
    assert g.shape[1] > 2 * 4 + 3 * 2                    # columns widened for their titles
    row0 = g[TITLE_HEIGHT + 2: TITLE_HEIGHT + 10]
    assert (row0 == 0).all(axis=-1).sum() == 8 * 4       # the black cell of column "a"
    with pytest.raises(ValueError):
        sample_grid({"a": torch.zeros(2, 3, 8, 4), "b": torch.zeros(1, 3, 8, 4)})


def test_load_generator_rebuilds_the_trained_method(synth_root, tmp_path):
    from keyreid.generation.trainer import load_generator

    out = tmp_path / "run"
    trainer, _ = train(config(synth_root, out, "log.sample_every=0"))
    method, cfg = load_generator(out / "last.pt")
    assert cfg.method == "test_fake" and not method.training
    assert same_weights(method.state_dict(), trainer.method.state_dict())
    x = torch.rand(1, 3, 32, 16) * 2 - 1
    kp = torch.zeros(1, 18, 3)
    assert torch.equal(method.render(x, kp), trainer.method.eval().render(x, kp))


def test_amp_context_is_a_no_op_on_cpu_and_steps_by_name():
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    ctx = StepContext(torch.device("cpu"), {"net": opt}, grad_clip=0.1)
    with ctx.autocast():
        loss = net(torch.ones(1, 2)).sum() * 100
    assert loss.dtype == torch.float32
    before = net.weight.detach().clone()
    ctx.backward(loss)
    ctx.step("net")
    step = (net.weight.detach() - before).norm().item() ** 2 + 0  # weight part of the clipped step
    assert net.weight.grad is None                        # zero_grad(set_to_none)
    assert step <= (0.5 * 0.1) ** 2 + 1e-9                # clipped to norm 0.1, lr 0.5
    with pytest.raises(KeyError, match="'other'"):
        ctx.step("other")


# ------------------------------------------------------------------------------------ DDP

DDP_SCRIPT = '''
import json, os, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_generation_trainer import FakeMethod
from keyreid.generation.method import register_method
seen = []

@register_method("test_fake_ddp")
class Recording(FakeMethod):
    def train_step(self, batch, ctx):
        seen.append([ctx.epoch, batch["source_index"].tolist(), batch["target_index"].tolist()])
        return super().train_step(batch, ctx)

from keyreid.generation.config import load_gen_config
from keyreid.generation.trainer import GanTrainer
cfg = load_gen_config(None, sys.argv[3:])
trainer = GanTrainer(cfg, show_progress=False)
trainer.fit()
rank, out = int(os.environ["RANK"]), Path(sys.argv[2])
with trainer.bare_networks():
    torch.save(trainer.method.state_dict(), out / f"rank{rank}.pt")
(out / f"seen{rank}.json").write_text(json.dumps(seen))
'''


def test_torchrun_two_cpu_ranks_split_the_pairs_and_stay_in_sync(synth_root, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    sets = [f"data.root={synth_root}", f"output_dir={out}", "method=test_fake_ddp", "device=cpu",
            "data.height=32", "data.width=16", "data.batch_size=4", "data.workers=0", "optim.epochs=1",
            "optim.decay_epochs=1", "log.sample_count=2", "log.tensorboard=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KEYREID_PROGRESS": "off"}
    torchrun = Path(sys.executable).parent / "torchrun"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script),
                        str(Path(__file__).parent), str(tmp_path), *sets],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / f"rank{k}.pt") for k in range(2))
    assert same_weights(w0, w1)                                   # gradients all-reduced
    assert same_weights(w0, weights(out)[1])                     # rank 0 wrote last.pt
    seen = [json.loads((tmp_path / f"seen{k}.json").read_text()) for k in range(2)]
    for epoch in range(2):
        pairs = [{(s, t) for e, src, tgt in ranks if e == epoch for s, t in zip(src, tgt)} for ranks in seen]
        assert len(pairs[0]) == len(pairs[1]) == 12 and not pairs[0] & pairs[1]   # 24 pairs, disjoint halves
    assert [b[1] for b in seen[0] if b[0] == 0] != [b[1] for b in seen[0] if b[0] == 1]   # reshuffled per epoch
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["steps"] for r in rows] == ["3", "3"]              # 12 pairs per rank in batches of 4


def test_loss_scaling_path_steps_like_plain_fp32_and_allows_a_second_step():
    """The GradScaler path of StepContext (fp16 AMP on a GPU), run on CPU with a CPU scaler: a
    power-of-two scale unscales exactly, so clipped steps equal the unscaled ones; an optimizer
    stepped twice in one train_step gets an update() in between instead of torch's error."""
    def run(scaler):
        torch.manual_seed(0)
        g, d = nn.Linear(3, 2), nn.Linear(2, 1)
        opts = {"g": torch.optim.SGD(g.parameters(), lr=0.1), "d": torch.optim.SGD(d.parameters(), lr=0.1)}
        x = torch.randn(4, 3)
        for _ in range(2):
            ctx = StepContext(torch.device("cpu"), opts, scaler=scaler, grad_clip=0.5)
            ctx.backward(d(g(x)).pow(2).mean())
            ctx.step("g")
            ctx.backward(d(g(x).detach()).mean())
            ctx.step("d")
            ctx.backward(d(g(x)).pow(2).mean())
            ctx.step("g")                         # the same optimizer again
            ctx.update()
        return [p.detach().clone() for p in (*g.parameters(), *d.parameters())]

    plain = run(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaled = run(scaler)
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))
    assert scaler.get_scale() == 2.0 ** 10        # no overflow: the scale stayed


def test_a_finished_run_given_more_epochs_trains_them(synth_root, tmp_path, capsys):
    out = tmp_path / "run"
    train(config(synth_root, out, "log.sample_every=0"))
    before = weights(out)[1]
    with pytest.raises(ConfigError, match="optim.epochs: 1 \\(checkpoint\\) -> 2 \\(now\\)"):
        train(config(synth_root, out, "log.sample_every=0", "optim.epochs=2"))
    trainer, result = train(config(synth_root, out, "log.sample_every=0", "optim.epochs=2"),
                            allow_config_change=True)
    assert "goes on with 1 more epoch(s) of stage 'main'" in capsys.readouterr().out
    assert result["epochs"] == 3 and [r["epoch"] for r in result["history"]] == [1, 2, 3]
    assert not same_weights(before, weights(out)[1])
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 3
    # finished again: a rerun with the same config trains nothing more
    extended = weights(out)[1]
    _, again = train(config(synth_root, out, "log.sample_every=0", "optim.epochs=2"), allow_config_change=True)
    assert again["epochs"] == 3 and same_weights(extended, weights(out)[1])


# ------------------------------------------------------------------------------------ the one loop

def test_kill_in_mid_epoch_with_step_checkpoints_resumes_bit_identical(synth_root, tmp_path):
    """The loop's step checkpoints (checkpoint_every_steps, as `keyreid train --checkpoint-every`)
    work for generation too: killed at step 2 of epoch 2, the resume takes the remaining batches
    of that epoch and ends where a straight run ends; the epoch's CSV row is the mean of all its
    steps."""
    straight = tmp_path / "straight"
    train(config(synth_root, straight, "log.sample_every=0"))
    _, w_a = weights(straight)

    killed = tmp_path / "killed"
    KILL["at"] = ("main", 1, 2)
    with pytest.raises(Killed):
        train(config(synth_root, killed, "log.sample_every=0"), checkpoint_every_steps=1)
    ck_mid, _ = weights(killed)
    assert (ck_mid["stage_index"], ck_mid["epoch"], ck_mid["loop"]["step_in_epoch"]) == (0, 1, 2)
    KILL["at"] = None
    trainer, result = train(config(synth_root, killed, "log.sample_every=0"))
    assert result["epochs"] == 2 and same_weights(w_a, weights(killed)[1])
    rows_a = list(csv.DictReader(open(straight / "metrics.csv")))
    rows_b = list(csv.DictReader(open(killed / "metrics.csv")))
    assert [r["epoch"] for r in rows_b] == ["1", "2"] and [r["steps"] for r in rows_b] == ["3", "3"]
    for a, b in zip(rows_a, rows_b):
        assert float(a["g"]) == pytest.approx(float(b["g"]), rel=1e-12)
        assert float(a["d"]) == pytest.approx(float(b["d"]), rel=1e-12)


def test_a_checkpoint_written_before_the_one_loop_resumes_exactly(synth_root, tmp_path):
    """Checkpoints of the generation trainer before the loop was shared hold only (stage_index,
    epoch, history): such a file, killed after epoch 1, still resumes to the straight run."""
    straight = tmp_path / "straight"
    train(config(synth_root, straight, "log.sample_every=0"))
    _, w_a = weights(straight)
    killed = tmp_path / "killed"
    KILL["at"] = ("main", 1, 0)
    with pytest.raises(Killed):
        train(config(synth_root, killed, "log.sample_every=0"))
    KILL["at"] = None
    ck = torch.load(killed / "last.pt", weights_only=False)
    del ck["loop"]
    torch.save(ck, killed / "last.pt")
    train(config(synth_root, killed, "log.sample_every=0"))
    assert same_weights(w_a, weights(killed)[1])


def test_resume_with_method_options_equal_to_the_runs_own_is_no_change(synth_root, tmp_path):
    """An option set to the value the run was trained with (the method's default when the run's
    config did not name it) is not a change; another value is, named key by key."""
    import dataclasses

    from keyreid.generation.methods.pngan import PNGAN, PNGANOptions

    assert PNGAN.resolved_options({})["l1_weight"] == PNGANOptions().l1_weight
    assert PNGAN.resolved_options({"ngf": 3})["ngf"] == 3

    @dataclasses.dataclass
    class FakeOptions:
        two_stage: bool = False
        width: int = 4

    if "test_fake_opts" not in GENERATION_METHODS:
        register_method("test_fake_opts")(type("WithOptions", (FakeMethod,), {"options_class": FakeOptions}))
    out = tmp_path / "run"
    KILL["at"] = ("main", 1, 0)
    with pytest.raises(Killed):
        train(config(synth_root, out, "method=test_fake_opts"))       # no method_options given
    KILL["at"] = None
    with pytest.raises(ConfigError, match="method_options.width: 4 \\(checkpoint\\) -> 5 \\(now\\)"):
        train(config(synth_root, out, "method=test_fake_opts", "method_options.width=5"))
    # 4 and false are the run's own values (the defaults it was trained with)
    trainer, result = train(config(synth_root, out, "method=test_fake_opts", "method_options.width=4",
                                   "method_options.two_stage=false"))
    assert trainer.config_changes == [] and result["epochs"] == 2


def test_a_reid_run_folder_is_not_resumed_as_a_generation_run_and_back(synth_root, tmp_path):
    out = tmp_path / "run"
    train(config(synth_root, out, "log.sample_every=0"))
    from keyreid.config import load_config
    from keyreid.engine.trainer import Trainer

    with pytest.raises(ConfigError, match="not a re-ID training checkpoint"):
        Trainer(load_config(None, [f"data.root={synth_root}", f"output_dir={out}", "device=cpu"]),
                show_progress=False)
