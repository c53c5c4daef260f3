"""FD-GAN: networks, stages, losses, resume, and the encoder-only evaluation with its pose probe.

Everything runs at 64x32 with a random-init ResNet-18 encoder and an 8-filter generator on the
session's tiny synthetic set, so the whole file stays well under a minute on a quiet CPU.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from keyreid.data.keypoints import COCO17
from keyreid.generation.nets.fdgan_nets import PoseGenerator, VerificationHead
from keyreid.generation.pose import OPENPOSE18, coco17_to_openpose18, pose_maps

torch.set_num_threads(1)

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
