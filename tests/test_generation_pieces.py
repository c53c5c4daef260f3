"""Shared generation pieces: losses, networks, the pair dataset and the pair samplers."""

import math

import numpy as np
import pytest
import torch

from keyreid.generation.losses import (GANLoss, discriminator_loss, feature_matching,
                                       kl_divergence, safe_mean)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ losses

def test_lsgan_values_by_hand():
    pred = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    gan = GANLoss("lsgan")
    # real: ((0.5-1)^2 + (-2)^2 + 1^2 + 1^2) / 4 = (0.25 + 4 + 1 + 1) / 4
    assert gan(pred, True).item() == pytest.approx(6.25 / 4)
    # fake: (0.25 + 1 + 4 + 0) / 4
    assert gan(pred, False).item() == pytest.approx(5.25 / 4)
    assert discriminator_loss(gan, pred, pred).item() == pytest.approx(0.5 * (6.25 + 5.25) / 4)


def test_bce_values_by_hand_and_fixed_smoothing():
    pred = torch.tensor([0.0, 2.0, -1.0])

    def sp(z):  # softplus: -log sigmoid(-z)
        return math.log1p(math.exp(z))

    real = (sp(-0.0) + sp(-2.0) + sp(1.0)) / 3
    fake = (sp(0.0) + sp(2.0) + sp(-1.0)) / 3
    assert GANLoss("bce")(pred, True).item() == pytest.approx(real)
    assert GANLoss("bce")(pred, False).item() == pytest.approx(fake)
    # smoothing with lo == hi fixes the label: BCE(z, t) = t * sp(-z) + (1 - t) * sp(z)
    smoothed = GANLoss("bce", real_label=(0.8, 0.8), fake_label=(0.2, 0.2))
    want_real = sum(0.8 * sp(-z) + 0.2 * sp(z) for z in (0.0, 2.0, -1.0)) / 3
    want_fake = sum(0.2 * sp(-z) + 0.8 * sp(z) for z in (0.0, 2.0, -1.0)) / 3
    assert smoothed(pred, True).item() == pytest.approx(want_real)
    assert smoothed(pred, False).item() == pytest.approx(want_fake)


def test_smoothing_ranges_draw_uniform_labels_and_are_seeded():
    gan = GANLoss("bce", real_label=(0.7, 1.0), fake_label=(0.0, 0.3))
    pred = torch.zeros(20000)
    real = gan.targets(pred, True)
    fake = gan.targets(pred, False)
    assert 0.7 <= real.min() and real.max() <= 1.0 and real.mean().item() == pytest.approx(0.85, abs=0.01)
    assert 0.0 <= fake.min() and fake.max() <= 0.3 and fake.mean().item() == pytest.approx(0.15, abs=0.01)
    torch.manual_seed(5)
    a = gan(torch.randn(8), True)
    torch.manual_seed(5)
    b = gan(torch.randn(8), True)
    assert a.item() == b.item()
    with pytest.raises(ValueError):
        GANLoss("wgan")
    with pytest.raises(ValueError):
        GANLoss("bce", real_label=(1.0, 0.7))


def test_gan_loss_is_float32_under_bf16_prediction():
    pred = torch.tensor([0.3, -0.2], dtype=torch.bfloat16, requires_grad=True)
    loss = GANLoss("lsgan")(pred, True)
    assert loss.dtype == torch.float32
    loss.backward()
    assert pred.grad is not None


def test_kl_divergence_closed_form_and_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    got = kl_divergence(mu, logvar)
    by_hand = 0.5 * (mu**2 + logvar.exp() - logvar - 1).sum(1).mean()
    sigma = (0.5 * logvar).exp()
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma),
                                            torch.distributions.Normal(torch.zeros_like(mu),
                                                                       torch.ones_like(mu)))
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert got.item() == pytest.approx(ref.sum(1).mean().item(), rel=1e-5)
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0
    # a scalar example: mu = 1, logvar = 0 -> 0.5 per dimension
    assert kl_divergence(torch.ones(2, 4), torch.zeros(2, 4)).item() == pytest.approx(2.0)


def test_feature_matching_by_hand_and_lists():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    # per sample ||a-b||^2: 5 and 9, mean 7, half 3.5
    assert feature_matching(a, b).item() == pytest.approx(3.5)
    maps = torch.ones(2, 3, 2, 2)
    assert feature_matching(maps, torch.zeros_like(maps)).item() == pytest.approx(6.0)  # 0.5 * 12
    assert feature_matching([a, maps], [b, torch.zeros_like(maps)]).item() == pytest.approx(9.5)
    with pytest.raises(ValueError):
        feature_matching(a, maps)


def test_safe_mean_values_empty_mask_and_gradients():
    x = torch.tensor([[1.0, 3.0], [10.0, 20.0], [float("nan"), 5.0]], requires_grad=True)
    m = safe_mean(x, torch.tensor([True, False, False]))
    assert m.item() == pytest.approx(2.0)  # NaN rows outside the mask do not leak in
    m.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.5, 0.5], [0, 0], [0, 0]])
    x.grad = None
    empty = safe_mean(x, torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0 and math.isfinite(empty.item()) and empty.requires_grad
    empty.backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()
    # element masks work too
    y = torch.arange(6.0).reshape(2, 3)
    assert safe_mean(y, y > 2).item() == pytest.approx(4.0)


# ------------------------------------------------------------------------------------ networks

from keyreid.generation.nets import PatchDiscriminator, ResnetGenerator  # noqa: E402


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_published_parameter_counts():
    # CycleGAN's code prints 11.378 M for its 9-block generator, pix2pix's 2.769 M for its D
    assert _params(ResnetGenerator(3, 3, 64, 9)) == 11_378_179
    assert _params(ResnetGenerator(6, 3, 64, 9)) == 11_387_587
    assert _params(PatchDiscriminator(6, 64, 3, "batch")) == 2_768_705
    assert _params(PatchDiscriminator(3, 64, 3, "instance")) == 2_764_737


@pytest.mark.parametrize("size", [(64, 32), (128, 64), (32, 16)])
def test_resnet_generator_shapes_and_range(size):
    torch.manual_seed(0)
    g = ResnetGenerator(6, 3, ngf=8, n_blocks=2)
    x = torch.randn(2, 6, *size) * 3
    y = g(x)
    assert y.shape == (2, 3, *size)
    assert y.min() >= -1 and y.max() <= 1 and y.std() > 0.01
    # the residual stack really runs at 1/4 resolution with 4 ngf channels
    seen = []
    hook = g.model[10].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    g(x)
    hook.remove()
    assert seen[0] == (2, 32, size[0] // 4, size[1] // 4)


def test_resnet_generator_structure_and_bad_sizes():
    g = ResnetGenerator(6, 3, ngf=8, n_blocks=3)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].kernel_size == (7, 7) and convs[-1].kernel_size == (7, 7)
    assert [c.stride for c in convs[1:3]] == [(2, 2), (2, 2)]
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules()) == 2
    norms = [m for m in g.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and not any(n.affine for n in norms)
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in g.modules()) == 2 + 2 * 3
    with pytest.raises(ValueError, match="divisible by 4"):
        g(torch.zeros(1, 6, 66, 32))
    with pytest.raises(ValueError, match=r"\[B, 6, H, W\]"):
        g(torch.zeros(1, 3, 64, 32))
    with pytest.raises(ValueError):
        ResnetGenerator(6, norm="group")


@pytest.mark.parametrize("size,n_layers", [((64, 32), 3), ((128, 64), 3), ((256, 128), 3), ((32, 16), 2)])
def test_patch_discriminator_shapes_and_features(size, n_layers):
    torch.manual_seed(0)
    d = PatchDiscriminator(21, ndf=8, n_layers=n_layers, norm="instance")
    x = torch.randn(2, 21, *size)
    logits, feats = d(x, return_features=True)
    oh, ow = d.output_size(*size)
    # n_layers stride-2 halvings, then two 4x4 stride-1 convs with padding 1 take 1 px each
    assert (oh, ow) == (size[0] // 2 ** n_layers - 2, size[1] // 2 ** n_layers - 2)
    assert logits.shape == (2, 1, oh, ow)
    assert torch.equal(logits, d(x))
    assert [f.shape[1] for f in feats] == [8 * min(2 ** n, 8) for n in range(n_layers + 1)]
    assert len(feats) == n_layers + 1 and all(f.shape[0] == 2 for f in feats)
    assert logits.min() < 0 < logits.max()  # raw logits, no sigmoid


def test_patch_discriminator_width_cap_norms_and_too_small_inputs():
    d = PatchDiscriminator(3, ndf=4, n_layers=5, norm="batch")
    widths = [m.out_channels for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [4, 8, 16, 32, 32, 32, 1]  # capped at 8 ndf
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 5
    leaky = [m for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(leaky) == 6 and all(m.negative_slope == 0.2 for m in leaky)
    with pytest.raises(ValueError, match="too deep for a 32x16 input"):
        PatchDiscriminator(3, ndf=4)(torch.zeros(1, 3, 32, 16))
