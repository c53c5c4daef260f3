"""Loss values against hand computations and direct transcriptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from keyreid.losses import (
    BatchHardTripletLoss,
    CenterLoss,
    CrossEntropyLabelSmooth,
    EasyPositiveHardNegativeLoss,
    HeatmapMSELoss,
    MultiSimilarityLoss,
    NormalizedSoftmaxLoss,
    build_loss,
    loss_names,
    register_loss,
)

# Four points in 2-D: a=(0,0), b=(1,0) share id 0; c=(0,2), d=(3,0) share id 1.
# Distances: ab=1, ac=2, ad=3, bc=sqrt5, bd=2, cd=sqrt13.
POINTS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 0, 1, 1])


# ---------------------------------------------------------------- cross-entropy
def test_label_smoothing_hand_value():
    # p = [0.75, 0.25]; target 0; eps 0.1 -> 0.9 * -ln .75 + 0.1 * mean(-ln .75, -ln .25)
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    got = CrossEntropyLabelSmooth(0.1)(logits, torch.tensor([0]))
    want = 0.9 * -math.log(0.75) + 0.1 * 0.5 * (-math.log(0.75) - math.log(0.25))
    assert got.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_torch(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 7, generator=g)
    labels = torch.randint(0, 7, (16,), generator=g)
    got = CrossEntropyLabelSmooth(eps)(logits, labels)
    want = F.cross_entropy(logits, labels, label_smoothing=eps)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_label_smoothing_half_precision_input_is_computed_in_float32():
    logits = torch.randn(4, 5).half()
    got = CrossEntropyLabelSmooth(0.1)(logits, torch.tensor([0, 1, 2, 3]))
    assert got.dtype == torch.float32


# ---------------------------------------------------------------- normalized softmax
def test_normalized_softmax_matches_direct_formula():
    torch.manual_seed(0)
    loss = NormalizedSoftmaxLoss(num_classes=5, embedding_dim=3, temperature=0.05)
    x = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    got = loss(x, y).item()

    xn = x.numpy().astype(np.float64)
    xn /= np.linalg.norm(xn, axis=1, keepdims=True)
    w = loss.weight.detach().numpy().astype(np.float64)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    z = xn @ w.T / 0.05
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    want = float(np.mean(lse - z[np.arange(6), y.numpy()]))
    assert got == pytest.approx(want, rel=1e-5)


def test_normalized_softmax_hand_value_and_scale_invariance():
    loss = NormalizedSoftmaxLoss(num_classes=2, embedding_dim=2, temperature=0.5)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.2]]))  # norms must not matter
    x = torch.tensor([[5.0, 0.0]])  # cos = [1, 0] -> logits [2, 0]
    want = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert loss(x, torch.tensor([0])).item() == pytest.approx(want, rel=1e-6)
    assert loss(10 * x, torch.tensor([0])).item() == pytest.approx(want, rel=1e-6)


def test_normalized_softmax_owns_its_weights_and_they_learn():
    loss = NormalizedSoftmaxLoss(4, 8)
    assert [n for n, _ in loss.named_parameters()] == ["weight"]
    x = torch.randn(4, 8, requires_grad=True)
    loss(x, torch.tensor([0, 1, 2, 3])).backward()
    assert loss.weight.grad is not None and loss.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


# ---------------------------------------------------------------- batch-hard triplet
def test_batch_hard_margin_hand_value():
    # a: d_ap=1, d_an=2 -> 0; b: 1 vs 2 -> 0; c: sqrt13 vs 2; d: sqrt13 vs 2.
    got = BatchHardTripletLoss(margin=0.3)(POINTS, LABELS).item()
    want = 2 * (math.sqrt(13) - 2 + 0.3) / 4
    assert got == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx(0.952776, abs=1e-6)


def test_batch_hard_soft_margin_hand_value():
    got = BatchHardTripletLoss(soft_margin=True)(POINTS, LABELS).item()
    want = (2 * math.log1p(math.exp(1 - 2)) + 2 * math.log1p(math.exp(math.sqrt(13) - 2))) / 4
    assert got == pytest.approx(want, rel=1e-9)


def test_batch_hard_skips_anchor_without_positive():
    # A singleton identity far away: it is nobody's hardest negative and has no positive.
    x = torch.cat([POINTS, torch.tensor([[100.0, 100.0]], dtype=torch.float64)])
    y = torch.cat([LABELS, torch.tensor([7])])
    got = BatchHardTripletLoss(margin=0.3)(x, y).item()
    assert got == pytest.approx(2 * (math.sqrt(13) - 2 + 0.3) / 4, rel=1e-9)


def test_batch_hard_no_valid_anchor_is_zero_with_grad():
    x = torch.randn(3, 4, requires_grad=True)
    loss = BatchHardTripletLoss()(x, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_batch_hard_gradient_finite_on_duplicate_points():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    BatchHardTripletLoss(soft_margin=True)(x, torch.tensor([0, 0, 1, 1])).backward()
    assert torch.isfinite(x.grad).all()


def test_batch_hard_normalize_uses_unit_vectors():
    got = BatchHardTripletLoss(margin=0.3, normalize=True)(5 * POINTS + 1, LABELS).item()
    want = BatchHardTripletLoss(margin=0.3)(F.normalize(5 * POINTS + 1, dim=1), LABELS).item()
    assert got == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------- EPHN
def _ephn_numpy(x: np.ndarray, y: np.ndarray, s: float) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    losses = []
    for i in range(len(x)):
        pos = [float(x[i] @ x[j]) for j in range(len(x)) if j != i and y[j] == y[i]]
        neg = [float(x[i] @ x[j]) for j in range(len(x)) if y[j] != y[i]]
        if not pos or not neg:
            continue
        sap, san = max(pos), max(neg)
        losses.append(-math.log(math.exp(sap / s) / (math.exp(sap / s) + math.exp(san / s))))
    return float(np.mean(losses))


def test_ephn_matches_numpy_transcription():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 5))
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4])  # 3 and 4 are singletons: skipped
    got = EasyPositiveHardNegativeLoss(0.1)(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert got == pytest.approx(_ephn_numpy(x, y, 0.1), rel=1e-9)


def test_ephn_hand_value_easiest_positive_hardest_negative():
    # Unit vectors a=(1,0), b=(.6,.8), e=(-.6,-.8) are id 0; c=(0,1), d=(-1,0) are id 1.
    # Cosines: ab .6, ae -.6, be -1, ac 0, ad -1, bc .8, bd -.6, ce -.8, de .6, cd 0.
    # a: S_ap = max(.6, -.6) = .6 (the easy positive; batch-hard would take e), S_an = 0
    # b: .6 vs .8;  e: -.6 vs .6;  c: 0 vs .8;  d: 0 vs .6.
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-0.6, -0.8], [0.0, 1.0], [-1.0, 0.0]],
                     dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    sp = lambda v: math.log1p(math.exp(v))  # -log(e^p/(e^p+e^n)) = softplus(n - p)
    want = (sp(-6) + sp(2) + sp(12) + sp(8) + sp(6)) / 5
    got = EasyPositiveHardNegativeLoss(0.1)(x, y).item()
    assert got == pytest.approx(want, rel=1e-9)
    assert got == pytest.approx(_ephn_numpy(x.numpy(), y.numpy(), 0.1), rel=1e-9)


def test_ephn_no_valid_anchor_is_zero_with_grad():
    x = torch.randn(2, 3, requires_grad=True)
    loss = EasyPositiveHardNegativeLoss()(x, torch.tensor([0, 0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


# ---------------------------------------------------------------- center
def test_center_loss_value_and_sgd_update():
    loss = CenterLoss(num_classes=3, feat_dim=2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 3.0]])
    y = torch.tensor([0, 0, 1])
    value = loss(x, y)
    # ||(1,0)||^2 = 1, ||(0,2)||^2 = 4, ||(0,2)||^2 = 4 -> mean 3
    assert value.item() == pytest.approx(3.0)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    value.backward()
    opt.step()
    # dL/dc_y = -2/B * sum_{i: y_i = y} (x_i - c_y), so SGD moves c_y towards its members.
    c0 = torch.tensor([0.0, 0.0]) + 0.5 * 2 / 3 * torch.tensor([1.0 + 0.0, 0.0 + 2.0])
    c1 = torch.tensor([1.0, 1.0]) + 0.5 * 2 / 3 * torch.tensor([0.0, 2.0])
    assert torch.allclose(loss.centers[0], c0)
    assert torch.allclose(loss.centers[1], c1)
    assert torch.equal(loss.centers[2].detach(), torch.tensor([5.0, 5.0]))  # unused class


# ---------------------------------------------------------------- multi-similarity
@pytest.mark.parametrize("eps", [0.1, None])
def test_multi_similarity_equals_pml(eps):
    from pytorch_metric_learning import losses, miners

    torch.manual_seed(1)
    x = torch.randn(16, 8)
    y = torch.arange(4).repeat_interleave(4)
    got = MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5, miner_epsilon=eps)(x, y)
    ref_loss = losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)
    pairs = None if eps is None else miners.MultiSimilarityMiner(epsilon=eps)(x, y)
    want = ref_loss(x, y, pairs)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert got.item() > 0


def test_multi_similarity_matches_paper_formula_without_mining():
    torch.manual_seed(2)
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    a, b, lam = 2.0, 50.0, 0.5
    n = F.normalize(x, dim=1).numpy()
    s = n @ n.T
    terms = []
    for i in range(8):
        pos = [s[i, j] for j in range(8) if j != i and y[j] == y[i]]
        neg = [s[i, j] for j in range(8) if y[j] != y[i]]
        lp = math.log1p(sum(math.exp(-a * (v - lam)) for v in pos)) / a if pos else 0.0
        ln = math.log1p(sum(math.exp(b * (v - lam)) for v in neg)) / b if neg else 0.0
        terms.append(lp + ln)
    got = MultiSimilarityLoss(a, b, lam, miner_epsilon=None)(x, y).item()
    assert got == pytest.approx(float(np.mean(terms)), rel=1e-6)


# ---------------------------------------------------------------- heatmap
def test_heatmap_mse_visibility_masking_hand_value():
    pred = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    target[0, 0] = 1.0               # map error 1.0, visible
    target[0, 1, 0, 0] = 2.0         # map error 4/4 = 1.0, INVISIBLE
    target[1, 2] = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # error 0.5, visible
    # (1, 0) and (1, 1) are visible with zero error; (0, 2) invisible.
    w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    got = HeatmapMSELoss()(pred, target, w).item()
    assert got == pytest.approx((1.0 + 0.0 + 0.0 + 0.5) / 4)


def test_heatmap_mse_invisible_maps_get_no_gradient():
    pred = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.rand(1, 2, 3, 3)
    HeatmapMSELoss()(pred, target, torch.tensor([[1.0, 0.0]])).backward()
    assert torch.equal(pred.grad[0, 1], torch.zeros(3, 3))
    expected = 2 * (pred[0, 0] - target[0, 0]).detach() / 9  # mean over 9 pixels, 1 map
    assert torch.allclose(pred.grad[0, 0], expected)


def test_heatmap_mse_fractional_weights():
    pred = torch.zeros(1, 2, 1, 1)
    target = torch.tensor([[[[1.0]], [[2.0]]]])
    got = HeatmapMSELoss()(pred, target, torch.tensor([[0.5, 1.0]])).item()
    assert got == pytest.approx((0.5 * 1.0 + 1.0 * 4.0) / 2)


def test_heatmap_mse_no_visible_keypoint_is_zero_with_grad():
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = HeatmapMSELoss()(pred, torch.rand(2, 3, 4, 4), torch.zeros(2, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_heatmap_mse_rejects_bad_shapes():
    with pytest.raises(ValueError):
        HeatmapMSELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8), torch.ones(1, 2))
    with pytest.raises(ValueError):
        HeatmapMSELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(2))


# ---------------------------------------------------------------- registry
def test_registry_builds_every_family():
    assert {"cross_entropy", "normalized_softmax", "triplet", "ephn", "center",
            "multi_similarity", "heatmap_mse"} <= set(loss_names())
    t = build_loss("triplet", margin=0.3)
    assert isinstance(t, BatchHardTripletLoss)
    assert t(POINTS, LABELS).item() == pytest.approx(2 * (math.sqrt(13) - 2 + 0.3) / 4)
    assert isinstance(build_loss("normalized_softmax", num_classes=3, embedding_dim=4),
                      NormalizedSoftmaxLoss)


def test_registry_rejects_unknown_and_duplicates():
    with pytest.raises(KeyError):
        build_loss("no_such_loss")
    with pytest.raises(ValueError):
        register_loss("triplet")(nn.Identity)


def test_registry_accepts_user_loss():
    @register_loss("test_only_l1")
    class L1(nn.Module):
        def forward(self, x, y):
            return (x - y).abs().mean()

    assert build_loss("test_only_l1")(torch.ones(2), torch.zeros(2)).item() == 1.0
