"""FD-GAN: networks, stages, losses, resume, and the encoder-only evaluation with its pose probe.

Everything runs at 64x32 with a random-init MobileNetV3-small-0.5 encoder (timm) and 8-filter
generator and pose discriminator on the session's tiny synthetic set.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from keyreid.data.keypoints import COCO17
from keyreid.generation.nets.fdgan_nets import PoseGenerator, VerificationHead
from keyreid.generation.pose import OPENPOSE18, coco17_to_openpose18, pose_maps


H, W = 64, 32


# ------------------------------------------------------------------------------ networks

def test_generator_shapes_range_and_bottleneck():
    torch.manual_seed(0)
    g = PoseGenerator(18, 40, H, W, pose_dim=16, noise_dim=8, ngf=8, dropout=0.2).eval()
    maps = torch.rand(3, 18, H, W)
    f = torch.randn(3, 40)
    out = g(maps, f, torch.randn(3, 8))
    assert out.shape == (3, 3, H, W)
    assert out.abs().max() <= 1.0
    # everything passes the 1x1 bottleneck: the pose code is 16-d, the decoder sees 40 + 16 + 8
    assert g.pose_code(maps).shape == (3, 16)
    assert g.decoder[1].in_channels == 64
    # the output depends on the pose maps AND on the identity feature, and on nothing else
    assert not torch.allclose(out, g(torch.rand(3, 18, H, W), f, torch.zeros(3, 8)))
    assert not torch.allclose(g(maps, f), g(maps, f + 1))
    assert torch.equal(g(maps, f), g(maps, f, torch.zeros(3, 8)))  # no noise = zero noise
    with pytest.raises(ValueError, match="divisible by 32"):
        PoseGenerator(18, 40, 48, 32)


def test_generator_published_size():
    """256x128: the pose encoder ends on an 8x4 map (a conv over all of it gives the 128-d code),
    like the authors' CustomPoseGenerator."""
    g = PoseGenerator(18, 2048, 256, 128)
    assert g.pose_encoder[-2].kernel_size == (8, 4)
    assert g.decoder[1].kernel_size == (8, 4) and g.decoder[1].in_channels == 2048 + 128 + 256
    assert [m.p for m in g.decoder.modules() if isinstance(m, torch.nn.Dropout)] == [0.2] * 5


def test_verification_head_is_squared_difference_bn_linear():
    torch.manual_seed(0)
    head = VerificationHead(5, 2).eval()
    head.bn.running_mean.uniform_(0, 1)
    head.bn.running_var.uniform_(0.5, 2)
    f1, f2 = torch.randn(4, 5), torch.randn(4, 5)
    x = (f1 - f2) ** 2
    bn = (x - head.bn.running_mean) / torch.sqrt(head.bn.running_var + head.bn.eps)
    expected = bn * head.bn.weight + head.bn.bias
    expected = expected @ head.classifier.weight.T + head.classifier.bias
    assert torch.allclose(head(f1, f2), expected, atol=1e-6)
    assert torch.allclose(head(f1, f2), head(f2, f1))   # symmetric in the pair


# ------------------------------------------------------------------------------ evaluation pieces

def test_rescore_top_replaces_the_top_and_keeps_the_rest_behind():
    from keyreid.generation.fdgan_eval import rescore_top

    dist = np.array([[0.1, 0.5, 0.3, 2.0, 0.9]], np.float32)
    qf, gf = np.zeros((1, 2), np.float32), np.arange(10, dtype=np.float32).reshape(5, 2)
    calls = []

    def verify(q, g):
        calls.append(g[:, 0].tolist())
        return torch.tensor([0.9, 0.2, 0.5])   # for the three nearest: g0, g2, g1

    out = rescore_top(dist, qf, gf, verify, top=3)
    assert calls == [[0.0, 4.0, 2.0]]                     # the 3 nearest, nearest first
    assert out[0, [0, 2, 1]].tolist() == pytest.approx([0.9, 0.2, 0.5])
    # the others keep their order and come after every re-scored one
    assert out[0, 4] < out[0, 3] and min(out[0, 3], out[0, 4]) > 1.0
    assert np.argsort(out[0]).tolist() == [2, 1, 0, 4, 3]


def test_ridge_probe_reads_linear_targets_and_not_noise():
    from keyreid.generation.fdgan_eval import ridge_probe

    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(40), 5)
    target = rng.normal(size=(200, 2))
    linear = np.concatenate([target @ rng.normal(size=(2, 6)), rng.normal(size=(200, 10))], 1)
    assert ridge_probe(linear + 0.01 * rng.normal(size=linear.shape), target, pids)["r2"].min() > 0.98
    assert ridge_probe(rng.normal(size=(200, 16)), target, pids)["r2"].mean() < 0.1


def test_pose_probe_on_the_synthetic_set(tiny_synth):
    """Features that ARE the true keypoints and view direction give R^2 ~ 1 and a small angle
    error; features without pose give ~0 and ~90 degrees (the mean error of a blind guess)."""
    from keyreid.data.datasets import build_dataset
    from keyreid.generation.fdgan_eval import pose_probe, probe_targets

    ds = build_dataset("market1501", tiny_synth, num_cameras=3)
    samples = ds.query + ds.gallery
    keep, yaw, kp = probe_targets(tiny_synth, samples)
    assert 0 < keep.sum() < len(samples)                  # distractors / junk are left out
    assert (kp[keep] > -0.5).all() and (kp[keep] < 1.5).all()
    rad = np.radians(yaw)
    truth = np.concatenate([kp.reshape(len(kp), -1), np.cos(rad)[:, None], np.sin(rad)[:, None]], 1)
    rng = np.random.default_rng(0)
    good = pose_probe(truth + 1e-3 * rng.normal(size=truth.shape), samples, tiny_synth)
    assert good["keypoint_r2"] > 0.95 and good["yaw_r2"] > 0.95 and good["yaw_error_deg"] < 10
    blind = pose_probe(rng.normal(size=(len(samples), 8)), samples, tiny_synth)
    assert blind["keypoint_r2"] < 0.3 and blind["yaw_r2"] < 0.3 and blind["yaw_error_deg"] > 45


# ------------------------------------------------------------------------------ the method

def _tiny_options(**extra):
    # a 0.3 M-parameter timm encoder and 8-filter G / Dp: a GAN step costs ~0.2 s on one core
    opts = dict(encoder="siamese", backbone="timm:mobilenetv3_small_050", pretrained=None, ngf=8, ndf=8,
                pose_dim=16, noise_dim=8,
                stage1_epochs=1, stage1_step=0, stage2_epochs=1, stage2_decay_epochs=0,
                stage3_epochs=1, stage3_decay_epochs=0)
    opts.update(extra)
    return opts


@pytest.fixture(scope="module")
def train_samples(tiny_synth):
    from keyreid.data.datasets import build_dataset

    ds = build_dataset("market1501", tiny_synth, num_cameras=3, keypoints=tiny_synth / "keypoints.jsonl")
    return ds.train


def make_method(samples, seed=0, **options):
    from keyreid.data.datasets.base import relabel
    from keyreid.generation.config import GenConfig, GenDataConfig
    from keyreid.generation.method import DataInfo
    from keyreid.generation.methods.fdgan import FDGAN

    label = relabel(samples)[1]
    pids = [label[s.pid] for s in samples]
    cfg = GenConfig(method="fdgan", method_options=_tiny_options(**options),
                    data=GenDataConfig(height=H, width=W, flip_prob=0.5, batch_size=8, workers=0))
    info = DataInfo(skeleton=OPENPOSE18, num_classes=len(set(pids)), height=H, width=W, train_pids=pids)
    torch.manual_seed(seed)
    return FDGAN(cfg, info)


def stage_of(method, kind):
    from keyreid.generation.methods.fdgan import stage_kind

    return next(s for s in method.stages() if stage_kind(s) == kind)


def batches(method, samples, n, batch_size=8, seed=0, flip_prob=0.5):
    from keyreid.generation.pairs import PairDataset

    items = method.pairs([s.pid for s in samples], 0, seed, None)
    ds = PairDataset(samples, items, COCO17, H, W, None, flip_prob, seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    out = []
    for b in loader:
        out.append(b)
        if len(out) == n:
            return out
    return out


def enter(method, kind):
    """begin_stage, train mode, and the trainer's StepContext with the stage's optimizers (CPU: no AMP)."""
    from keyreid.generation.method import StepContext

    stage = stage_of(method, kind)
    method.begin_stage(stage)
    method.train()
    return StepContext(torch.device("cpu"), method.optimizers(stage), stage=stage)


def test_openpose18_back_to_coco17_is_exact():
    from keyreid.generation.methods.fdgan import openpose18_to_coco17

    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 30, (17, 2)), (rng.random((17, 1)) > 0.3)], 1).astype(np.float32)
    back = openpose18_to_coco17(torch.from_numpy(coco17_to_openpose18(kp))).numpy()
    expected = kp.copy()
    expected[expected[:, 2] <= 0] = 0
    np.testing.assert_array_equal(back, expected)


def test_published_stages_and_optimisers(train_samples):
    m = make_method(train_samples, stage1_epochs=100, stage1_step=40, stage2_epochs=50, stage2_decay_epochs=50,
                    stage3_epochs=25, stage3_decay_epochs=25)
    assert [(s.name, s.epochs, s.decay_epochs) for s in m.stages()] == [
        ("I", 40, 0), ("I (lr x0.1)", 40, 0), ("I (lr x0.01)", 20, 0), ("II", 50, 50), ("III", 25, 25)]
    lrs, members = {}, {}
    for s in m.stages():
        m.begin_stage(s)
        opts = m.optimizers(s)
        lrs[s.name] = {k: o.param_groups[0]["lr"] for k, o in opts.items()}
        members[s.name] = {k: {id(p) for g in o.param_groups for p in g["params"]} for k, o in opts.items()}
        assert all(type(o) is (torch.optim.Adam if k == "generator" else torch.optim.SGD) for k, o in opts.items())
    assert [lrs[n]["encoder"] for n in ("I", "I (lr x0.1)", "I (lr x0.01)")] == pytest.approx([1e-2, 1e-3, 1e-4])
    assert lrs["II"] == pytest.approx({"generator": 1e-4, "di": 1e-5, "dp": 1e-3})
    assert lrs["III"] == pytest.approx({"generator": 1e-5, "di": 1e-4, "dp": 1e-4})
    e, g = {id(p) for p in m.siamese.parameters()}, {id(p) for p in m.gen.parameters()}
    assert members["II"]["generator"] == g                     # E frozen in stage II
    assert members["III"]["generator"] == e | g                # E and G in one Adam in stage III
    assert members["I"]["encoder"] == e


def test_pairs_one_positive_three_negatives_and_fewer_in_gan_stages(train_samples):
    m = make_method(train_samples, gan_pairs_per_epoch=8)
    pids = [s.pid for s in train_samples]
    m.begin_stage(stage_of(m, "I"))
    items = m.pairs(pids, 0, 0, 40)
    assert len(items) == 40
    same = [pids[i["a"]] == pids[i["b"]] for i in items]
    assert same == [True, False, False, False] * 10
    assert items != m.pairs(pids, 1, 0, 40) and items == m.pairs(pids, 0, 0, 40)   # per epoch, seeded
    m.begin_stage(stage_of(m, "II"))
    assert len(m.pairs(pids, 0, 0, 40)) == 8 and len(m.pairs(pids, 0, 0, None)) == 8


def test_identity_discriminator_equals_encoder_after_initialisation(train_samples):
    m = make_method(train_samples)
    ctx = enter(m, "I")
    for b in batches(m, train_samples, 2):
        m.train_step(b, ctx)                                   # E moves away from its init
    before = m.di.encoder.state_dict()
    assert not all(torch.equal(v, m.siamese.encoder.state_dict()[k]) for k, v in before.items())
    enter(m, "II")
    e_state, di_state = m.siamese.encoder.state_dict(), m.di.encoder.state_dict()
    assert all(torch.equal(e_state[k], di_state[k]) for k in e_state)
    m.eval()
    x1, x2 = torch.rand(4, 3, H, W) * 2 - 1, torch.rand(4, 3, H, W) * 2 - 1
    with torch.no_grad():
        same_logit = m.siamese(x1, x2)[2][:, 1]
        assert torch.allclose(m.di(x1, x2)[2][:, 0], same_logit, atol=1e-5)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


def test_stage2_leaves_the_encoder_unchanged_and_stage3_updates_it(train_samples):
    m = make_method(train_samples)
    enter(m, "I")
    data = batches(m, train_samples, 2)
    ctx = enter(m, "II")
    e0, g0, di0, dp0 = _snapshot(m.siamese), _snapshot(m.gen), _snapshot(m.di), _snapshot(m.dp)
    for b in data:
        losses = m.train_step(b, ctx)
        assert all(math.isfinite(v) for v in losses.values())
    assert _changed(e0, m.siamese) == []                      # weights AND BN statistics
    assert _changed(g0, m.gen) and _changed(dp0, m.dp)
    di_changed = _changed(di0, m.di)
    assert di_changed and not any("running" in k for k in di_changed)   # Di's BN frozen
    ctx = enter(m, "III")
    e1 = _snapshot(m.siamese)
    for b in data:
        losses = m.train_step(b, ctx)
    assert "verification" in losses
    changed = _changed(e1, m.siamese)
    assert any(k.startswith("encoder.backbone.") and k.endswith("weight") for k in changed)
    assert any(k.startswith("head.") for k in changed)
    assert not any("running" in k for k in changed)            # E's BN statistics frozen in stage III


def test_same_pose_loss_is_finite_without_positive_pairs(train_samples):
    m = make_method(train_samples)
    ctx = enter(m, "II")
    b = batches(m, train_samples, 1, batch_size=16)[0]
    neg = ~(torch.as_tensor(b["a_pid"]) == torch.as_tensor(b["b_pid"]))
    only_neg = {k: (v[neg] if isinstance(v, torch.Tensor) else [x for x, keep in zip(v, neg) if keep])
                for k, v in b.items()}
    assert 0 < int(neg.sum()) < 16
    inp = m.gan_inputs(only_neg, ctx.device)
    gen = m.generate(inp)
    g = m.generator_losses(only_neg, inp, gen, 0.0)
    assert g["same_pose"].item() == 0.0 and torch.isfinite(g["total"])
    g["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.gen.parameters() if p.grad is not None)
    losses = m.train_step(only_neg, ctx)
    assert losses["same_pose"] == 0.0 and all(math.isfinite(v) for v in losses.values())


def test_positive_pair_shares_target_image_maps_and_noise(train_samples):
    m = make_method(train_samples)
    enter(m, "II")
    b = batches(m, train_samples, 1, batch_size=16)[0]
    same = torch.as_tensor(b["a_pid"]) == torch.as_tensor(b["b_pid"])
    b["target_b"] = -b["target_b"]                               # a positive pair must not use it
    inp = m.gan_inputs(b, torch.device("cpu"))
    n = len(same)
    assert torch.equal(inp["target"][n:][same], b["target_a"][same])
    assert torch.equal(inp["maps"][n:][same], b["target_a_maps"][same])
    assert torch.equal(inp["target"][n:][~same], b["target_b"][~same])
    assert torch.equal(inp["noise"][:n], inp["noise"][n:])


def test_flipped_pose_maps_swap_left_and_right_channels(train_samples):
    """The authors mirrored the maps only; here a mirrored image's map of "right_shoulder" is the
    mirror of the unflipped LEFT shoulder's map (the person's right side is on the other side)."""
    from keyreid.generation.pairs import PairDataset

    m = make_method(train_samples)
    item = m.pairs([s.pid for s in train_samples], 0, 0, None)[0]
    plain = PairDataset(train_samples, [item], COCO17, H, W, None, 0.0)[0]
    flipped = PairDataset(train_samples, [item], COCO17, H, W, None, 1.0)[0]
    perm = OPENPOSE18.flip_permutation()
    assert (perm != np.arange(18)).sum() == 16                  # every joint but nose and neck moves
    mirrored = torch.flip(plain["target_a_maps"], dims=[2])[perm]
    assert torch.allclose(flipped["target_a_maps"], mirrored, atol=1e-5)
    rs, ls = OPENPOSE18.index("right_shoulder"), OPENPOSE18.index("left_shoulder")
    if plain["target_a_kp"][ls, 2] > 0:
        assert torch.allclose(flipped["target_a_maps"][rs], torch.flip(plain["target_a_maps"][ls], dims=[1]),
                              atol=1e-5)
    assert torch.equal(flipped["target_a"], torch.flip(plain["target_a"], dims=[2]))


def test_short_training_lowers_the_losses_on_a_fixed_batch(train_samples):
    """Relative checks: 8 steps on one batch lower stage I's verification loss and stage II's
    reconstruction L1 (the training losses of the first and the last step on that batch; G's
    rate raised to 2e-3 so that 8 steps show it)."""
    m = make_method(train_samples, stage2_lr_g=2e-3)
    batch = batches(m, train_samples, 1, batch_size=8, flip_prob=0.0)[0]
    ctx = enter(m, "I")
    first = m.train_step(batch, ctx)
    for _ in range(6):
        m.train_step(batch, ctx)
    last = m.train_step(batch, ctx)
    assert last["verification"] < 0.7 * first["verification"]
    assert last["accuracy"] > first["accuracy"]
    ctx = enter(m, "II")
    first = m.train_step(batch, ctx)
    for _ in range(6):
        m.train_step(batch, ctx)
    last = m.train_step(batch, ctx)
    assert last["recon"] < 0.9 * first["recon"]


def test_kae_encoder_keeps_its_heatmap_and_identity_losses(train_samples):
    m = make_method(train_samples, encoder="kae", head_options={"group_channels": 4, "global_channels": 8})
    assert m.siamese.encoder.dim == 17 * 4 + 8
    ctx = enter(m, "I")
    b = batches(m, train_samples, 1)[0]
    losses = m.train_step(b, ctx)
    assert {"verification", "id", "heatmap"} <= set(losses) and all(math.isfinite(v) for v in losses.values())
    ctx = enter(m, "III")
    losses = m.train_step(b, ctx)
    assert {"verification", "id", "heatmap", "recon"} <= set(losses)
    ctx = enter(m, "II")
    assert "heatmap" not in m.train_step(b, ctx)                # E frozen: its own losses are off


def test_stage1_encoder_is_kept_and_the_evaluation_reads_it(train_samples, tiny_synth):
    from keyreid.data.datasets import build_dataset
    from keyreid.generation.fdgan_eval import encoder_features, evaluate_encoder

    ds = build_dataset("market1501", tiny_synth, num_cameras=3)
    m = make_method(train_samples)
    enter(m, "I")
    f_stage1 = encoder_features(m, ds.query, H, W)
    ctx = enter(m, "III")
    for b in batches(m, train_samples, 2):
        m.train_step(b, ctx)
    f_final = encoder_features(m, ds.query, H, W)
    assert not np.allclose(f_final, f_stage1)
    np.testing.assert_allclose(encoder_features(m, ds.query, H, W, which="stage I"), f_stage1, atol=1e-5)
    np.testing.assert_array_equal(encoder_features(m, ds.query, H, W), f_final)   # restored
    # a restored checkpoint carries the snapshot
    m2 = make_method(train_samples, seed=1)
    m2.load_state_dict(m.state_dict())
    np.testing.assert_allclose(encoder_features(m2, ds.query, H, W, which="stage I"), f_stage1, atol=1e-5)
    # re-scoring with a verifier that is a monotone function of the distance keeps the ranking
    # (up to near-ties the two distance formulas round differently); a verifier that scores the
    # wrong gallery images would not
    def monotone(a, b):
        d = ((a - b) ** 2).sum(1)
        return d / d.max().clamp_min(1e-12)

    m.verify = monotone
    r = evaluate_encoder(m, ds.query, ds.gallery, H, W, rescore=5)
    assert r["rescored"]["mAP"] == pytest.approx(r["plain"]["mAP"], abs=0.02)
    assert r["rescored"]["R1"] == pytest.approx(r["plain"]["R1"], abs=1.01 / len(ds.query))
    # an oracle verifier (P(different) = 0 for the query's identity) lifts every true match of the
    # top 5 to the front: R1 and mAP can only rise, and do
    pid_of = {}
    for samples in (ds.query, ds.gallery):
        feats = encoder_features(m, samples, H, W)
        pid_of.update({f.tobytes(): s.pid for f, s in zip(feats, samples)})

    def oracle(a, b):
        pa = [pid_of[x.numpy().tobytes()] for x in a]
        pb = [pid_of[x.numpy().tobytes()] for x in b]
        return torch.tensor([float(x != y) for x, y in zip(pa, pb)])

    m.verify = oracle
    o = evaluate_encoder(m, ds.query, ds.gallery, H, W, rescore=5)["rescored"]
    assert o["R1"] >= r["plain"]["R1"] and o["mAP"] > r["plain"]["mAP"] + 0.05


# ------------------------------------------------------------------------------ with the trainer

class Killed(Exception):
    pass


def _trainer_config(root, out):
    from keyreid.generation.config import load_gen_config

    opts = _tiny_options(stage1_epochs=1, stage2_epochs=1, stage2_decay_epochs=1, stage3_epochs=1,
                         stage3_decay_epochs=0)
    sets = [f"method_options.{k}={'null' if v is None else v}" for k, v in opts.items()]
    return load_gen_config(None, [f"data.root={root}", f"output_dir={out}", "method=fdgan", "device=cpu",
                                  f"data.height={H}", f"data.width={W}", "data.batch_size=4",
                                  "data.workers=0", "data.max_pairs_per_epoch=8", "log.sample_count=2",
                                  "log.sample_every=4", "log.tensorboard=false", *sets])


def _fit(cfg):
    from keyreid.generation.trainer import GanTrainer

    trainer = GanTrainer(cfg, show_progress=False)
    return trainer, trainer.fit()


@pytest.fixture(scope="module")
def straight_run(tiny_synth, tmp_path_factory):
    """Stages I (1 epoch), II (1 + 1 decay), III (1), 2 steps of 4 pairs per epoch, never stopped."""
    out = tmp_path_factory.mktemp("fdgan_straight")
    _, result = _fit(_trainer_config(tiny_synth, out))
    return out, result


def test_kills_in_stages_two_and_three_resume_bit_identical(tiny_synth, straight_run, tmp_path, monkeypatch):
    """Against the straight run: one killed in the middle of stage II (Di must not be
    re-initialised from E when the stage begins again, the optimizers' moments come back) and
    in stage III's first epoch (resumed from the stage boundary); every weight, the stage-I
    snapshot and every logged loss agree exactly."""
    import csv

    from keyreid.generation.methods.fdgan import FDGAN

    straight, result = straight_run
    assert [(h["stage"], h["stage_epoch"]) for h in result["history"]] == \
        [("I", 1), ("II", 1), ("II", 2), ("III", 1)]
    a = torch.load(straight / "last.pt", weights_only=False)["method_state"]
    assert a["_extra_state"]["stage1_encoder"]
    assert (straight / "samples" / "epoch_004.png").is_file()

    step = FDGAN.train_step
    kill = {"at": None}

    def killable(self, batch, ctx):
        if (ctx.stage.name, ctx.epoch, ctx.step_index) == kill["at"]:
            raise Killed(str(kill["at"]))
        return step(self, batch, ctx)

    monkeypatch.setattr(FDGAN, "train_step", killable)
    killed = tmp_path / "killed"
    for at, where in ((("II", 1, 1), (1, 1)), (("III", 0, 1), (2, 0))):
        kill["at"] = at
        with pytest.raises(Killed):
            _fit(_trainer_config(tiny_synth, killed))
        ck = torch.load(killed / "last.pt", weights_only=False)
        assert (ck["stage_index"], ck["epoch"]) == where
    kill["at"] = None
    _fit(_trainer_config(tiny_synth, killed))
    b = torch.load(killed / "last.pt", weights_only=False)["method_state"]
    tensors = [k for k in a if isinstance(a[k], torch.Tensor)]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in tensors)
    snap_a, snap_b = a["_extra_state"]["stage1_encoder"], b["_extra_state"]["stage1_encoder"]
    assert all(torch.equal(snap_a[k], snap_b[k]) for k in snap_a)
    rows_a = list(csv.DictReader(open(straight / "metrics.csv")))
    rows_b = list(csv.DictReader(open(killed / "metrics.csv")))
    keys = [k for k in rows_a[0] if k not in ("seconds",)]
    assert [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]


def test_load_generator_renders_and_evaluates(tiny_synth, straight_run):
    from keyreid.data.datasets import build_dataset
    from keyreid.generation.fdgan_eval import evaluate_encoder
    from keyreid.generation.load import load_generator

    method, cfg = load_generator(straight_run[0] / "last.pt")
    assert method.opts.encoder == "siamese" and method._kind == "III"
    kp = torch.zeros(2, 18, 3)
    kp[:, :, 0], kp[:, :, 1], kp[:, :, 2] = 16, torch.linspace(4, 60, 18), 1
    src = torch.rand(2, 3, H, W) * 2 - 1
    img = method.render(src, kp)
    assert img.shape == (2, 3, H, W) and torch.equal(img, method.render(src, kp))   # deterministic
    with pytest.raises(Exception, match="--pose"):
        method.render(src)
    ds = build_dataset("market1501", tiny_synth, num_cameras=3)
    r = evaluate_encoder(method, ds.query, ds.gallery, H, W, rescore=100, which="stage I")
    assert 0 <= r["plain"]["mAP"] <= 1 and 0 <= r["rescored"]["mAP"] <= 1
