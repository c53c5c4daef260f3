"""Camera-aware proxies (CAP): proxies per (cluster, camera), the intra- and inter-camera loss
against a plain loop over the formula, its gradient, the momentum update, and an adaptation run
with them (and its one-line refusal where the target has no cameras)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keyreid.adapt.camera_memory import CameraProxyMemory
from keyreid.adapt.config import load_adapt_config
from keyreid.adapt.jaccard import ClusteringError
from keyreid.adapt.method import Adaptation
from tests.test_adapt_training import SMALL


def _memory(**options):
    # clusters 0, 1, 2 seen by cameras 3, 5, 8 (raw ids): proxies (0,3) (0,5) (1,5) (2,3) (2,8)
    torch.manual_seed(0)
    feats = torch.randn(10, 6)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, -1, 0])
    cameras = np.array([3, 3, 5, 5, 5, 3, 8, 8, 3, 5])
    return CameraProxyMemory.from_clusters(feats, labels, cameras, **options), feats, labels, cameras


def test_proxies_are_the_mean_of_each_cluster_and_camera():
    memory, feats, labels, cameras = _memory()
    pairs = [(0, 3), (0, 5), (1, 5), (2, 3), (2, 8)]
    got = list(zip(memory.proxy_cluster.tolist(), memory.cameras[memory.proxy_camera].tolist()))
    assert got == pairs
    x = F.normalize(feats, dim=1)
    for i, (y, c) in enumerate(pairs):
        rows = [j for j in range(10) if labels[j] == y and cameras[j] == c]
        assert torch.allclose(memory.proxies[i], F.normalize(x[rows].mean(0), dim=0), atol=1e-6)
    assert memory.proxy_of(torch.tensor([2, 0]), torch.tensor([8, 5])).tolist() == [4, 1]
    with pytest.raises(ClusteringError, match="no camera proxy"):
        memory.proxy_of(torch.tensor([1]), torch.tensor([3]))     # cluster 1 never seen by camera 3


def _loop_loss(memory, f, targets, cameras, temperature, inter_weight, hard):
    """The CAP loss written out sample by sample."""
    total = 0.0
    P = memory.proxies
    clusters = memory.proxy_cluster.tolist()
    cams = memory.cameras[memory.proxy_camera].tolist()
    for b in range(len(f)):
        x = f[b] / f[b].norm()
        s = [(x @ P[p]) / temperature for p in range(len(P))]
        own = [p for p in range(len(P)) if clusters[p] == targets[b] and cams[p] == cameras[b]][0]
        same_cam = [p for p in range(len(P)) if cams[p] == cameras[b]]
        intra = -(s[own] - torch.logsumexp(torch.stack([s[p] for p in same_cam]), 0))
        pos = [p for p in range(len(P)) if clusters[p] == targets[b]]
        neg = sorted((p for p in range(len(P)) if clusters[p] != targets[b]), key=lambda p: -float(s[p].detach()))[:hard]
        denominator = torch.logsumexp(torch.stack([s[p] for p in pos + neg]), 0)
        inter = -sum(s[p] - denominator for p in pos) / len(pos)
        total = total + intra + inter_weight * inter
    return total / len(f)


@pytest.mark.parametrize("hard", [1, 50])
def test_loss_and_gradient_match_the_formula(hard):
    memory, _, _, _ = _memory(temperature=0.1, inter_weight=0.5, hard_negatives=hard)
    memory.eval()   # no update: the loop sees the same proxies
    torch.manual_seed(1)
    f = torch.randn(4, 6, dtype=torch.float32, requires_grad=True)
    targets, cameras = torch.tensor([0, 2, 1, 0]), torch.tensor([5, 8, 5, 3])
    got = memory(f, targets, cameras)
    g_got, = torch.autograd.grad(got, f)
    f2 = f.detach().clone().requires_grad_(True)
    want = _loop_loss(memory, f2, targets.tolist(), cameras.tolist(), 0.1, 0.5, hard)
    g_want, = torch.autograd.grad(want, f2)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert torch.allclose(g_got, g_want, atol=1e-5)
    assert math.isfinite(float(got))


def test_momentum_update_moves_only_the_batch_proxies():
    memory, _, _, _ = _memory(momentum=0.2)
    memory.train()
    before = memory.proxies.clone()
    f = torch.randn(3, 6)
    memory(f, torch.tensor([0, 0, 2]), torch.tensor([5, 5, 8]))   # proxies 1 (twice) and 4
    x = F.normalize(f, dim=1)
    assert torch.allclose(memory.proxies[1], F.normalize(0.2 * before[1] + 0.8 * x[:2].mean(0), dim=0), atol=1e-6)
    assert torch.allclose(memory.proxies[4], F.normalize(0.2 * before[4] + 0.8 * x[2], dim=0), atol=1e-6)
    for i in (0, 2, 3):
        assert torch.equal(memory.proxies[i], before[i])


@pytest.fixture
def source(adapt_source):
    return adapt_source


def test_adaptation_with_camera_proxies(source, tiny_synth, tmp_path):
    cfg = load_adapt_config(None, [f"checkpoint={source}", f"target.root={tiny_synth}", "target.dataset=market1501",
                                   f"output_dir={tmp_path / 'run'}", "epochs=1", "memory.kind=camera", *SMALL])
    run = Adaptation(cfg, resume=False, show_progress=False, notify=lambda s: None)
    run.fit()
    row = run.state.history[-1]
    assert math.isfinite(row["memory"]) and row["clusters"] >= 2
    assert len(run.memory.proxies) > row["clusters"]        # clusters span cameras: more proxies
    resumed = Adaptation(cfg, resume=True, show_progress=False, notify=lambda s: None)
    assert torch.equal(resumed.memory.proxies, run.memory.proxies)


def test_camera_proxies_without_cameras_is_one_line(source, tiny_synth, tmp_path):
    flags = [x for s in SMALL + ["memory.kind=camera"] for x in ("--set", s)]
    result = subprocess.run([sys.executable, "-m", "keyreid.cli", "adapt", str(source), "--target",
                             str(tiny_synth / "bounding_box_train"), "-o", str(tmp_path / "run"), *flags],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "memory.kind=camera" in lines[0] and "--cam-pattern" in lines[0]
    assert not (tmp_path / "run").exists()
