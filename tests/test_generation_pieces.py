"""Shared generation pieces: losses, networks, the pair dataset and the pair samplers."""

import math

import numpy as np
import pytest
import torch

from keyreid.generation.losses import (GANLoss, discriminator_loss, feature_matching,
                                       kl_divergence, safe_mean)



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


# ------------------------------------------------------------------------------------ pairs

from collections import Counter  # noqa: E402

from PIL import Image  # noqa: E402

from keyreid.data.keypoints import COCO17  # noqa: E402
from keyreid.data.records import Sample  # noqa: E402
from keyreid.generation.pairs import (PairDataset, batch_is_same, default_sigma,  # noqa: E402
                                      fdgan_pairs, same_identity_pairs)
from keyreid.generation.pose import (OPENPOSE18, coco17_to_openpose18, flip_keypoints,  # noqa: E402
                                     pose_maps, to_unit_range)

SRC_H, SRC_W, OUT_H, OUT_W = 16, 8, 32, 16  # images are upscaled 2x on load


def _hand_samples(tmp_path, pids=(1, 1, 2, 2, 3)) -> list[Sample]:
    """Tiny PNGs with random pixels and COCO keypoints whose right side is on the image's left."""
    rng = np.random.default_rng(0)
    samples = []
    for n, pid in enumerate(pids):
        path = tmp_path / f"{n}.png"
        Image.fromarray(rng.integers(0, 256, (SRC_H, SRC_W, 3), dtype=np.uint8)).save(path)
        kp = np.zeros((17, 3), np.float32)
        kp[COCO17.index("right_shoulder")] = (1, 4, 1)
        kp[COCO17.index("left_shoulder")] = (6, 4, 1)
        kp[COCO17.index("right_hip")] = (2, 9, 1)
        kp[COCO17.index("nose")] = (3 + n % 2, 1, 1)
        samples.append(Sample(path=str(path), pid=pid, camid=0, split="train", keypoints=kp))
    return samples


def test_pair_dataset_loads_resizes_and_converts(tmp_path):
    samples = _hand_samples(tmp_path)
    ds = PairDataset(samples, [{"source": 0, "target": 3}], COCO17, OUT_H, OUT_W, sigma=1.5)
    assert ds.pose_skeleton is OPENPOSE18 and ds.sigma == 1.5
    item = ds[0]
    assert set(item) == {f"{r}{s}" for r in ("source", "target")
                         for s in ("", "_kp", "_maps", "_skeleton", "_pid", "_index")}
    assert (item["source_pid"], item["target_pid"], item["source_index"], item["target_index"]) == (1, 2, 0, 3)
    src = Image.open(samples[0].path).convert("RGB").resize((OUT_W, OUT_H), Image.BILINEAR)
    torch.testing.assert_close(item["source"], to_unit_range(np.asarray(src)), rtol=0, atol=0)
    # keypoints: OpenPose order, pixel centres scaled 2x: x -> (x + 0.5) * 2 - 0.5 = 2x + 0.5
    kp = item["source_kp"].numpy()
    assert kp.shape == (18, 3)
    np.testing.assert_allclose(kp[OPENPOSE18.index("right_shoulder")], [2.5, 8.5, 1])
    np.testing.assert_allclose(kp[OPENPOSE18.index("neck")], [7.5, 8.5, 1])  # mid-shoulders
    np.testing.assert_array_equal(kp[OPENPOSE18.index("left_knee")], 0)  # missing stays zero
    maps = item["source_maps"].numpy()
    np.testing.assert_allclose(maps, pose_maps(kp, OUT_H, OUT_W, 1.5))
    # a visible joint's map peaks at its (rounded) location
    y, x = np.unravel_index(np.argmax(maps[OPENPOSE18.index("right_hip")]), (OUT_H, OUT_W))
    assert abs(x - 4.5) <= 0.5 and abs(y - 18.5) <= 0.5
    assert item["source_skeleton"].shape == (3, OUT_H, OUT_W)
    assert item["source_skeleton"].min() == -1 and item["source_skeleton"].max() > 0
    assert default_sigma(256) == 5.0 and PairDataset(samples, [], COCO17, 128, 64).sigma == 2.5


def test_pair_dataset_flip_mirrors_pixels_and_swaps_sides(tmp_path):
    samples = _hand_samples(tmp_path)
    items = [{"source": 0, "target": 2}]
    plain = PairDataset(samples, items, COCO17, OUT_H, OUT_W, sigma=1.5)[0]
    flipped = PairDataset(samples, items, COCO17, OUT_H, OUT_W, sigma=1.5, flip_prob=1.0)[0]
    torch.testing.assert_close(flipped["source"], plain["source"].flip(-1), rtol=0, atol=0)
    np.testing.assert_allclose(flipped["source_kp"].numpy(),
                               flip_keypoints(plain["source_kp"].numpy(), OUT_W, OPENPOSE18))
    rs, ls = OPENPOSE18.index("right_shoulder"), OPENPOSE18.index("left_shoulder")
    # after the flip the right-shoulder channel is where the left shoulder was, mirrored
    np.testing.assert_allclose(flipped["source_kp"][rs].numpy(),
                               [OUT_W - 1 - plain["source_kp"][ls, 0].item(), 8.5, 1])
    torch.testing.assert_close(flipped["source_maps"][rs], plain["source_maps"][ls].flip(-1))
    # the skeleton image is drawn from the flipped pose: not a mirror, the sides' colours swap
    from keyreid.generation.pose import skeleton_image
    redrawn = skeleton_image(flipped["source_kp"].numpy(), OPENPOSE18, OUT_H, OUT_W)
    torch.testing.assert_close(flipped["source_skeleton"], to_unit_range(redrawn))
    assert not torch.equal(flipped["source_skeleton"], plain["source_skeleton"].flip(-1))


def test_pair_dataset_flips_are_seeded_per_item_and_shared_within_an_item(tmp_path):
    samples = _hand_samples(tmp_path)
    items = [{"a": i % 5, "b": (i + 1) % 5, "target_a": (i + 2) % 5, "target_b": (i + 2) % 5}
             for i in range(200)]
    ds = PairDataset(samples, items, COCO17, OUT_H, OUT_W, flip_prob=0.5, seed=3, skeletons=False)
    again = PairDataset(samples, items, COCO17, OUT_H, OUT_W, flip_prob=0.5, seed=3, skeletons=False)
    other = PairDataset(samples, items, COCO17, OUT_H, OUT_W, flip_prob=0.5, seed=4, skeletons=False)
    flips = [ds.flips(i) for i in range(len(items))]
    assert flips == [again.flips(i) for i in range(len(items))]  # a fresh dataset (a resume) agrees
    assert flips != [other.flips(i) for i in range(len(items))]
    rate = np.mean([f for d in flips for f in d.values()])
    assert 0.4 < rate < 0.6
    # reading an item twice, or out of order, gives the same tensors
    first = ds[17]
    ds[3]
    second = ds[17]
    for k in first:
        assert torch.equal(torch.as_tensor(first[k]), torch.as_tensor(second[k])), k
    # the shared target of a pair is loaded once, so both roles agree even when flipped
    assert torch.equal(first["target_a"], first["target_b"])
    assert "target_a_skeleton" not in first and "target_a_maps" in first


def test_pair_dataset_refuses_bad_items_and_keypoints(tmp_path):
    samples = _hand_samples(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        PairDataset(samples, [{"source": 0, "target": 9}], COCO17, OUT_H, OUT_W)
    bad = Sample(path=samples[0].path, pid=1, camid=0, split="train", keypoints=np.zeros((5, 3)))
    from keyreid.errors import DataError
    with pytest.raises(DataError, match="has 5 keypoints"):
        PairDataset([bad], [{"source": 0}], COCO17, OUT_H, OUT_W)[0]
    none = Sample(path=samples[0].path, pid=1, camid=0, split="train")
    item = PairDataset([none], [{"source": 0}], COCO17, OUT_H, OUT_W)[0]
    assert not item["source_kp"].any() and not item["source_maps"].any()
    assert (item["source_skeleton"] == -1).all()  # no pose: a black skeleton image


def test_same_identity_pairs():
    pids = [5, 5, 5, 7, 7, 9, 5]
    pairs = same_identity_pairs(pids, seed=0)
    # identity 5 has 4 images (12 ordered pairs), 7 has 2 (2 pairs), 9 has 1 (none)
    assert len(pairs) == 12 + 2
    assert len({(p["source"], p["target"]) for p in pairs}) == len(pairs)
    assert all(p["source"] != p["target"] and pids[p["source"]] == pids[p["target"]] for p in pairs)
    assert {"source": 6, "target": 0} in pairs and {"source": 3, "target": 4} in pairs
    sub = same_identity_pairs(pids, seed=1, max_pairs=5)
    assert len(sub) == 5 and all(p in pairs for p in sub)
    assert sub == same_identity_pairs(pids, seed=1, max_pairs=5)
    assert any(same_identity_pairs(pids, seed=s, max_pairs=5) != sub for s in range(2, 6))
    assert same_identity_pairs(pids, seed=0, max_pairs=100) == pairs


def test_fdgan_pairs_roles_and_ratio():
    pids = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]  # identity 2 has a single image
    items = fdgan_pairs(pids, seed=0)
    assert len(items) == 4 * len(pids)
    for n in range(len(pids)):
        group = items[4 * n: 4 * n + 4]
        assert {it["a"] for it in group} == {n}
        pos, negs = group[0], group[1:]
        a = n
        assert pids[pos["b"]] == pids[a] and pos["target_b"] == pos["target_a"]
        single = pids.count(pids[a]) == 1
        assert (pos["b"] == a) == single and (pos["target_a"] == a) == single
        if pids.count(pids[a]) >= 3:
            assert pos["target_a"] != pos["b"]  # a third image serves as the target
        for it in negs:
            assert pids[it["b"]] != pids[a]
            assert pids[it["target_a"]] == pids[a] and (it["target_a"] == a) == single
            assert pids[it["target_b"]] == pids[it["b"]]
            assert (it["target_b"] == it["b"]) == (pids.count(pids[it["b"]]) == 1)
    assert items == fdgan_pairs(pids, seed=0)
    assert items != fdgan_pairs(pids, seed=1)
    sub = fdgan_pairs(pids, seed=2, max_anchors=3, negatives_per_positive=1)
    assert len(sub) == 6 and len({it["a"] for it in sub}) == 3
    with pytest.raises(ValueError):
        fdgan_pairs([4, 4, 4], seed=0)
    # negatives are uniform over the other identities' images: identity 3 (4 of 7) dominates
    many = fdgan_pairs(pids, seed=0, negatives_per_positive=200)
    counts = Counter(pids[it["b"]] for it in many if it["a"] == 0 and pids[it["b"]] != 0)
    assert counts[3] > counts[1] > counts[2] > 0


def test_fdgan_items_through_a_dataloader_on_synthetic_data(tiny_synth):
    from keyreid.data.datasets import build_dataset

    ds = build_dataset("market1501", tiny_synth, num_cameras=3,
                       keypoints=tiny_synth / "keypoints.jsonl")
    train = ds.train[:30]
    pids = [s.pid for s in train]
    items = fdgan_pairs(pids, seed=0, max_anchors=4)
    pairs = PairDataset(train, items, COCO17, 64, 32, flip_prob=0.5, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(pairs, batch_size=8, shuffle=False)))
    assert batch["a"].shape == (8, 3, 64, 32) and batch["target_b_maps"].shape == (8, 18, 64, 32)
    assert batch["a"].min() >= -1 and batch["a"].max() <= 1
    same = batch_is_same(batch)
    assert same.dtype == torch.bool and same.tolist() == [True, False, False, False] * 2
    # the synthetic people have poses: the neck is found in most images
    assert (batch["a_kp"][:, OPENPOSE18.index("neck"), 2] > 0).float().mean() > 0.5
