"""Heads and their keypoint targets: shapes, keypoint order, numbers against references."""

import numpy as np
import pytest
import torch

from keyreid.config import ModelConfig
from keyreid.data.keypoints import COCO17, CUB15, render_heatmaps
from keyreid.models.build import build_model
from keyreid.models.heads import build_head, head_names
from keyreid.models.output import ModelOutput
from keyreid.models.targets import box_maps, keypoint_heatmaps, limb_maps


def _kp(batch=2, k=17, seed=0, h=128, w=64):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(batch, k, 3, generator=g) * torch.tensor([w - 1.0, h - 1.0, 1.0])
    kp[..., 2] = (kp[..., 2] > 0.3).float()
    return kp


def test_torch_heatmaps_equal_numpy_reference():
    kp = _kp(batch=3)
    maps, weights = keypoint_heatmaps(kp.double(), (128, 64), (32, 16), sigma=1.5)
    for b in range(3):
        ref, ref_w = render_heatmaps(kp[b].double().numpy(), (128, 64), stride=4, sigma=1.5)
        np.testing.assert_allclose(maps[b].numpy(), ref, atol=1e-6)
        np.testing.assert_allclose(weights[b].numpy(), ref_w, atol=1e-7)


def test_limb_map_peaks_on_the_segment_and_box_covers_keypoints():
    kp = torch.zeros(1, 17, 3)
    ls, le = COCO17.index("left_shoulder"), COCO17.index("left_elbow")
    kp[0, ls] = torch.tensor([10.0, 10.0, 1.0])
    kp[0, le] = torch.tensor([10.0, 50.0, 1.0])
    maps, w = limb_maps(kp, [(ls, le)], (64, 32), (64, 32), sigma=1.0)  # stride 1: cells = pixels
    assert w.tolist() == [[1.0]]
    assert maps[0, 0, 30, 10] == pytest.approx(1.0) and maps[0, 0, 5, 10] < 1e-5
    assert maps[0, 0, 30, 11] == pytest.approx(np.exp(-0.5), rel=1e-5)
    kp[0, le, 2] = 0
    _, w = limb_maps(kp, [(ls, le)], (64, 32), (64, 32))
    assert w.tolist() == [[0.0]]
    kp[0, le, 2] = 1
    boxes, bw = box_maps(kp, [(ls, le)], (64, 32), (64, 32), margin=0.0)
    assert bw.tolist() == [[1.0]]
    ys, xs = torch.nonzero(boxes[0, 0], as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 50, 10, 10)


@pytest.mark.parametrize("head", ["bnneck", "kae", "aacn", "pabr"])
def test_every_head_returns_one_typed_output_in_train_and_eval(head):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", pretrained=None, head=head), 7, COCO17)
    x = torch.randn(4, 3, 128, 64)
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert isinstance(out, ModelOutput)
        assert out.embedding.shape == out.feature.shape == (4, model.embedding_dim)
        assert out.logits.shape == (4, 7)
        if head != "bnneck":
            assert out.heatmaps.shape[:2] == (4, 17)
    losses = model.keypoint_losses(model.train()(x), _kp(4), (128, 64), 1.5)
    assert (set(losses) == set()) if head == "bnneck" else all(torch.isfinite(v) for v in losses.values())
    assert set(head_names()) >= {"bnneck", "kae", "aacn", "pabr"}


@pytest.mark.parametrize("decoder,upsample", [("subpixel", 1), ("subpixel", 2), ("subpixel", 4),
                                              ("deconv", 2), ("deconv", 4)])
def test_kae_embedding_is_concatenated_in_keypoint_order(decoder, upsample):
    torch.manual_seed(0)
    head = build_head("kae", in_channels=32, num_classes=5, skeleton=CUB15, group_channels=4,
                      global_channels=8, upsample=upsample, decoder=decoder)
    head.eval()
    fmap = torch.randn(2, 32, 8, 4)
    out = head(fmap)
    assert out.part_features.shape == (2, 15, 4)
    # feature = [global (8), part 1 (4), ..., part 15 (4)]
    torch.testing.assert_close(out.feature[:, 8:].reshape(2, 15, 4), out.part_features)
    # heatmap k depends only on channel group k: perturb group 3's input channels downstream
    z = head.split(fmap)
    z2 = z.clone()
    z2[:, 3 * 4:4 * 4] += 1.0
    h1, h2 = head.decoder(z[:, :60]), head.decoder(z2[:, :60])
    changed = (h1 - h2).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [k == 3 for k in range(15)]
    assert h1.shape[-2:] == (8 * upsample, 4 * upsample)


def test_kae_heatmap_loss_ignores_invisible_keypoints():
    torch.manual_seed(0)
    head = build_head("kae", in_channels=16, num_classes=3, skeleton=COCO17, group_channels=2,
                      global_channels=0, upsample=2)
    out = head(torch.randn(2, 16, 8, 4))
    kp = _kp(2, h=128, w=64)
    loss = float(head.keypoint_losses(out, kp, (128, 64), 1.5)["heatmap"].detach())
    moved = kp.clone()
    moved[..., :2][kp[..., 2] == 0] += 17.0  # invisible keypoints may be anywhere
    assert float(head.keypoint_losses(out, moved, (128, 64), 1.5)["heatmap"].detach()) == pytest.approx(loss)
    assert out.heatmaps.shape[-2:] == (16, 8)


def test_aacn_visibility_weights_average_one_and_scale_parts():
    torch.manual_seed(0)
    head = build_head("aacn", in_channels=16, num_classes=3, skeleton=COCO17, part_channels=4,
                      global_channels=8, hidden=8)
    head.eval()
    out = head(torch.randn(3, 16, 8, 4))
    p = len(COCO17.limbs) + 6
    assert out.part_features.shape == (3, p, 4) and out.part_weights.shape == (3, p)
    torch.testing.assert_close(out.part_weights.mean(1), torch.ones(3))
    composed = (out.part_features * out.part_weights.unsqueeze(-1)).flatten(1)
    torch.testing.assert_close(out.feature[:, 8:], composed)


def test_pabr_descriptor_is_normalised_bilinear_and_pose_loss_stops():
    torch.manual_seed(0)
    head = build_head("pabr", in_channels=16, num_classes=3, skeleton=COCO17, appearance_channels=4,
                      part_hidden=8, pose_epochs=2)
    head.eval()
    fmap = torch.randn(2, 16, 8, 4)
    out = head(fmap)
    assert out.feature.shape == (2, 4 * 17)
    # L2-normalised, then scaled by feature_scale (10 by default) for the metric loss's geometry
    torch.testing.assert_close(out.feature.norm(dim=1), torch.full((2,), 10.0))
    a, p = head.appearance(fmap), head.part(fmap).relu()
    direct = torch.stack([sum(torch.outer(p[0, :, y, x], a[0, :, y, x]) for y in range(8) for x in range(4))]) / 32
    torch.testing.assert_close(out.part_features[0], direct[0], rtol=1e-4, atol=1e-6)
    kp = _kp(2, h=128, w=64)
    assert set(head.keypoint_losses(out, kp, (128, 64), 1.5, epoch=1)) == {"heatmap"}
    assert head.keypoint_losses(out, kp, (128, 64), 1.5, epoch=2) == {}


def test_keypoint_heads_refuse_data_without_keypoints():
    with pytest.raises(ValueError, match="needs keypoints|learns from keypoints"):
        build_model(ModelConfig(backbone="resnet18", pretrained=None, head="kae"), 3, None)


def test_unknown_head_option_names_the_options():
    from keyreid.errors import KeyreidError

    with pytest.raises(KeyreidError, match=r"\['group_channel'\] not understood by head 'kae'.*group_channels"):
        build_head("kae", in_channels=8, num_classes=2, skeleton=COCO17, group_channel=3)


def test_stripes_head_copies_the_last_stage_and_cuts_the_map_into_bands():
    torch.manual_seed(0)
    reference = build_model(ModelConfig(backbone="resnet18", pretrained=None, head="bnneck"), 5)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", pretrained=None, head="stripes"), 5)
    # the backbone stops after layer3; both branches start from the same layer4 weights, unshared
    assert "layer4" not in model.backbone._order and model.backbone.out_channels == 256
    layer4 = {k[len("backbone.layer4."):]: v for k, v in reference.state_dict().items()
              if k.startswith("backbone.layer4.")}
    for stage in (model.head.global_stage, model.head.stripe_stage):
        got = {k[2:]: v for k, v in stage.state_dict().items()}  # "0." = the Sequential slot
        assert got.keys() == layer4.keys() and all(torch.equal(got[k], layer4[k]) for k in got)
    assert model.head.global_stage[0][0].conv1.weight is not model.head.stripe_stage[0][0].conv1.weight

    model.eval()
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        out = model(x)
    assert [f.shape[1] for f, _ in out.branches] == [512, 256, 256] and out.embedding.shape == (2, 1024)
    assert all(lg.shape == (2, 5) for _, lg in out.branches)
    torch.testing.assert_close(out.embedding, out.feature)            # authors: pre-BN features
    assert float(out.feature.min()) >= 0.0 and float(out.feature.max()) <= 1.0  # clipped to [0, 1]

    # Band i sees only its rows of the stripe map: change the bottom half of that map.
    head = model.head
    fmap = model.backbone(x)
    stripe_map = head.stripe_stage(fmap)
    top = head._pool(head.reducers[0](stripe_map[..., :4, :]))
    changed = stripe_map.clone()
    changed[..., 4:, :] += 5.0
    torch.testing.assert_close(head._pool(head.reducers[0](changed[..., :4, :])), top)
    assert stripe_map.shape[-2] == 8 and not torch.equal(
        head._pool(head.reducers[1](changed[..., 4:, :])), head._pool(head.reducers[1](stripe_map[..., 4:, :])))


def test_stripes_head_options_and_errors():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenetv2", pretrained=None, head="stripes",
                                    head_options={"stripes": 3, "embedding": "post_bn", "share_stage": True,
                                                  "clip_max": None}), 4)
    assert model.head.stripe_stage is model.head.global_stage
    out = model.eval()(torch.randn(2, 3, 128, 64))
    assert [f.shape[1] for f, _ in out.branches] == [1280, 426, 426, 426]
    bn = torch.cat([neck.bn(f) for neck, (f, _) in zip(model.head.necks, out.branches)], dim=1)
    torch.testing.assert_close(out.embedding, bn)
    with pytest.raises(ValueError, match="cannot be cut into 3 stripes"):
        model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="no known last stage"):
        build_model(ModelConfig(backbone="timm:resnet18", pretrained=None, head="stripes"), 4)


def test_criterion_sums_id_and_metric_losses_over_the_branches():
    from keyreid.config import Config
    from keyreid.engine.trainer import Criterion
    from keyreid.losses import build_loss

    torch.manual_seed(0)
    cfg = Config()
    cfg.loss.margin = None  # soft-margin triplet, as AdaptiveReID
    model = build_model(ModelConfig(backbone="resnet18", pretrained=None, head="stripes"), 4)
    out = model.train()(torch.randn(8, 3, 64, 32))
    labels = torch.arange(4).repeat_interleave(2)
    total, parts = Criterion(cfg, 4, model.embedding_dim)(model, out, labels, None, (64, 32), 0)
    ce = build_loss("cross_entropy", epsilon=cfg.loss.label_smoothing)
    tri = build_loss("triplet", margin=0.0, soft_margin=True)
    want_id = cfg.loss.id_weight * sum(float(ce(lg, labels).detach()) for _, lg in out.branches)
    want_metric = cfg.loss.metric_weight * sum(float(tri(f, labels).detach()) for f, _ in out.branches)
    assert parts["id"] == pytest.approx(want_id, rel=1e-5)
    assert parts["metric"] == pytest.approx(want_metric, rel=1e-5)
    assert float(total.detach()) == pytest.approx(want_id + want_metric, rel=1e-5)


def test_pabr_global_part_is_the_average_appearance_and_sqrt_can_be_dropped():
    torch.manual_seed(0)
    fmap = torch.randn(2, 16, 8, 4)
    head = build_head("pabr", in_channels=16, num_classes=3, skeleton=COCO17, appearance_channels=4,
                      part_hidden=8, global_part=True, signed_sqrt=False, feature_scale=1.0).eval()
    out = head(fmap)
    assert out.feature.shape == (2, 4 * 18) and head.dim == 72
    a = head.appearance(fmap)
    torch.testing.assert_close(out.part_features[:, 0], a.mean(dim=(-2, -1)))   # uniform part map
    # without the signed square root the descriptor is the L2-normalised bilinear pooling itself
    want = out.part_features.flatten(1)
    torch.testing.assert_close(out.feature, want / want.norm(dim=1, keepdim=True))


def test_aacn_map_loss_weight_scales_only_the_part_map_losses_and_visibility_can_be_off():
    torch.manual_seed(0)
    fmap, kp = torch.randn(2, 16, 8, 4), _kp(2, h=128, w=64)
    kw = dict(in_channels=16, num_classes=3, skeleton=COCO17, part_channels=4, global_channels=8, hidden=8)
    torch.manual_seed(1)
    full = build_head("aacn", map_loss_weight=1.0, **kw)
    torch.manual_seed(1)
    light = build_head("aacn", map_loss_weight=0.1, visibility_weighting=False, **kw)
    lf = full.keypoint_losses(full(fmap), kp, (128, 64), 1.5)
    out = light(fmap)
    ll = light.keypoint_losses(out, kp, (128, 64), 1.5)
    assert float(ll["heatmap"].detach()) == pytest.approx(float(lf["heatmap"].detach()))
    for name in ("nonrigid", "rigid"):
        assert float(ll[name].detach()) == pytest.approx(0.1 * float(lf[name].detach()), rel=1e-5)
    torch.testing.assert_close(out.part_weights, torch.ones_like(out.part_weights))
    torch.testing.assert_close(out.feature[:, 8:], out.part_features.flatten(1))


def test_pabr_feature_scale_keeps_the_direction_and_makes_the_triplet_margin_small():
    """Old behaviour: the unit-norm descriptor put every pair of images at distance ~0.32 +- 0.02,
    so BoT's triplet margin of 0.3 was the whole spread and the re-ID gradient into the backbone
    was ~8x weaker than with the scaled feature (measured on a demo batch: 5.6 vs 47.8)."""
    torch.manual_seed(0)
    fmap = torch.randn(16, 32, 8, 4).relu()
    kw = dict(in_channels=32, num_classes=3, skeleton=COCO17, appearance_channels=8, part_hidden=8)
    torch.manual_seed(1)
    unit = build_head("pabr", feature_scale=1.0, **kw).eval()
    torch.manual_seed(1)
    default = build_head("pabr", **kw).eval()
    with torch.no_grad():
        fu, fd = unit(fmap).feature, default(fmap).feature
    torch.testing.assert_close(fd, 10.0 * fu)                       # same direction: same cosine ranking
    iu = torch.triu_indices(16, 16, 1)
    dist = torch.cdist(fd, fd)[iu[0], iu[1]]
    assert float(dist.median()) > 5 * 0.3                             # margin 0.3 is small against it


@pytest.mark.parametrize("head,options", [("pabr", {}), ("aacn", {"map_init_std": 0.001})])
def test_part_map_predictors_start_near_zero(head, options):
    """Old pabr (and aacn's default, kept: it scored better): the maps' last conv had the ReLU init,
    so the map losses started at ~8 (pabr) / ~3 per map (aacn) instead of the targets' own energy, and drove the backbone's first
    steps more than the re-ID losses did."""
    torch.manual_seed(0)
    h = build_head(head, in_channels=64, num_classes=3, skeleton=COCO17, **options)
    out = h(torch.randn(4, 64, 8, 4).relu())
    kp = _kp(4, h=128, w=64)
    losses = h.keypoint_losses(out, kp, (128, 64), 1.5)
    zero_maps = ModelOutput(embedding=out.embedding, feature=out.feature, heatmaps=torch.zeros_like(out.heatmaps),
                            maps={k: torch.zeros_like(v) for k, v in out.maps.items()})
    at_zero = h.keypoint_losses(zero_maps, kp, (128, 64), 1.5)
    assert set(losses) == set(at_zero)
    for name in losses:
        assert float(losses[name].detach()) == pytest.approx(float(at_zero[name]), rel=0.05)
    assert out.heatmaps.abs().max() < 0.05


def test_demo_report_draws_the_heatmaps_of_every_part_head(tiny_synth, tmp_path):
    """The report used to draw the first keypoint head's heatmaps only (and title them "kae").
    Untrained models suffice: the figure shows whatever maps the head predicts."""
    import re

    from conftest import tiny_overrides
    from keyreid.config import load_config
    from keyreid.demo.report import write_demo_report
    from keyreid.demo.run import DEMO_CONFIG, RunResult
    from keyreid.engine.trainer import Trainer

    results, trainers, distmats = [], {}, {}
    rng = np.random.default_rng(0)
    for head in ("bnneck", "aacn", "pabr"):
        over = tiny_overrides(tiny_synth, tmp_path / head, head=head, name=head)
        torch.manual_seed(0)
        t = Trainer(load_config(DEMO_CONFIG, over), resume=False, show_progress=False)
        (t.out_dir / "metrics.csv").write_text("epoch,loss,acc\n0,5.0,0.1\n")
        metrics = {"R1": 0.5, "R5": 0.6, "mAP": 0.4, "mINP": 0.2}
        results.append(RunResult(head, metrics, 1.0, 1.0, t.out_dir))
        ds = t.data.dataset
        trainers[head], distmats[head] = t, rng.random((len(ds.query), len(ds.gallery)))
    report = write_demo_report(tmp_path / "report", results, trainers, distmats).read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    drawn = sorted(l for l in links if "heatmaps_" in l)
    assert drawn == ["figures/heatmaps_aacn.png", "figures/heatmaps_pabr.png"]
    assert "Predicted keypoint heatmaps (aacn)" in report and "Predicted keypoint heatmaps (pabr)" in report
    for link in drawn:
        assert (tmp_path / "report" / link).stat().st_size > 1000


def test_aacn_per_part_stream_embeds_the_masked_backbone_map_part_by_part():
    """part_stream=per_part: f_p = W_p^T mean_xy(m_p(x, y) F(x, y)) with m_p the max-normalised
    |part map| and F the backbone map itself, W_p each part's own matrix. The shared stream masks
    one 64-channel reduction of F instead, so the parts of one image were near copies (cosine 0.97
    between two parts of one demo image at the start, 0.95 after training)."""
    torch.manual_seed(0)
    kw = dict(in_channels=16, num_classes=3, skeleton=COCO17, part_channels=4, global_channels=8, hidden=8)
    head = build_head("aacn", part_stream="per_part", **kw).eval()
    fmap = torch.randn(2, 16, 8, 4).relu()
    out = head(fmap)
    maps = torch.cat([out.maps["nonrigid"], out.maps["rigid"]], 1).abs()
    p = maps.shape[1]
    b, part = 1, 5
    m = maps[b, part] / maps[b, part].max()
    pooled = (m * fmap[b]).sum(dim=(-2, -1)) / 32
    torch.testing.assert_close(out.part_features[b, part], pooled @ head.part_embed[part])
    shared = build_head("aacn", **kw).eval()
    for h, low, high in ((head, -0.5, 0.5), (shared, 0.9, 1.0)):
        f = torch.nn.functional.normalize(h(fmap).part_features.detach(), dim=-1)
        cos = torch.einsum("bpc,bqc->bpq", f, f)[:, ~torch.eye(p, dtype=torch.bool)].mean()
        assert low < float(cos) < high
    with pytest.raises(ValueError, match="part_stream"):
        build_head("aacn", part_stream="separate", **kw)


def test_aacn_detached_attention_takes_no_reid_gradient():
    """detach_attention: the maps still weight the parts, but only the map losses train them."""
    torch.manual_seed(0)
    kw = dict(in_channels=16, num_classes=3, skeleton=COCO17, part_channels=4, global_channels=8, hidden=8)
    fmap = torch.randn(2, 16, 8, 4).relu()
    for detach in (False, True):
        torch.manual_seed(1)
        head = build_head("aacn", detach_attention=detach, **kw)
        head(fmap).feature.square().sum().backward()
        grad = head.attention[-1].weight.grad
        assert (grad is None or float(grad.abs().max()) == 0.0) == detach
        head.zero_grad()
        out = head(fmap)
        sum(head.keypoint_losses(out, _kp(2), (128, 64), 1.5).values()).backward()
        assert float(head.attention[-1].weight.grad.abs().max()) > 0


def test_pabr_compact_bilinear_is_the_count_sketch_of_the_outer_product():
    # Tensor Sketch identity (Pham and Pagh): FFT-convolving the count sketches of a and p equals
    # count-sketching a (outer) p with hash (h_a(c) + h_p(k)) mod d and sign s_a(c) s_p(k)
    torch.manual_seed(0)
    fmap = torch.randn(2, 16, 8, 4)
    head = build_head("pabr", in_channels=16, num_classes=3, skeleton=COCO17, appearance_channels=4,
                      part_hidden=8, compact_dim=12, signed_sqrt=False).eval()
    out = head(fmap)
    assert out.feature.shape == (2, 12) and head.dim == 12 and out.part_features is None
    a, p = head.appearance(fmap), head.part(fmap).relu()
    full = torch.einsum("bchw,bkhw->bkc", a, p) / 32                       # [B, K, Ca]
    ha, sa = head.sketch_a.abs().argmax(1), head.sketch_a.sum(1)
    hp, sp = head.sketch_p.abs().argmax(1), head.sketch_p.sum(1)
    want = torch.zeros(2, 12)
    for k in range(17):
        for c in range(4):
            want[:, (ha[c] + hp[k]) % 12] += sa[c] * sp[k] * full[:, k, c]
    torch.testing.assert_close(out.feature, 10.0 * want / want.norm(dim=1, keepdim=True), rtol=1e-4, atol=1e-5)
    # the sketch is a fixed part of the model: saved with it, the same in every build
    again = build_head("pabr", in_channels=16, num_classes=3, skeleton=COCO17, appearance_channels=4,
                       part_hidden=8, compact_dim=12)
    assert torch.equal(again.sketch_a, head.sketch_a) and "sketch_p" in head.state_dict()


def test_pabr_without_l2_normalisation_keeps_the_descriptor_scale():
    torch.manual_seed(0)
    fmap = torch.randn(2, 16, 8, 4)
    head = build_head("pabr", in_channels=16, num_classes=3, skeleton=COCO17, appearance_channels=4,
                      part_hidden=8, l2_normalize=False, signed_sqrt=False).eval()
    out = head(fmap)
    torch.testing.assert_close(out.feature, out.part_features.flatten(1))


def test_aacn_attention_without_max_normalisation_masks_with_the_raw_maps():
    torch.manual_seed(0)
    fmap = torch.randn(2, 16, 8, 4)
    head = build_head("aacn", in_channels=16, num_classes=3, skeleton=COCO17, part_channels=4,
                      global_channels=8, hidden=8, max_normalize=False, visibility_weighting=False).eval()
    out = head(fmap)
    maps = torch.cat([out.maps["nonrigid"], out.maps["rigid"]], 1).abs()
    f = head.reduce(fmap)
    want = torch.einsum("bphw,bchw->bpc", maps, f) / 32
    torch.testing.assert_close(out.part_features, want)
    normed = build_head("aacn", in_channels=16, num_classes=3, skeleton=COCO17, part_channels=4,
                        global_channels=8, hidden=8, visibility_weighting=False)
    normed.load_state_dict(head.state_dict())
    normed.eval()
    assert not torch.allclose(normed(fmap).part_features, want)


def test_aacn_global_stream_is_as_wide_as_the_backbone_by_default():
    # issue 11: a 256-d global stream next to P x 64 part dims made the feature mostly parts (demo
    # seed 0: 52.1 mAP against 64.2 with the backbone's width); a given width still wins
    head = build_head("aacn", in_channels=48, num_classes=3, skeleton=COCO17, part_channels=4, hidden=8)
    p = len(COCO17.limbs) + 6
    assert head.global_dim == 48 and head.dim == 48 + p * 4
    assert head.map_loss_weight == 0.1   # issue 11: 1.0 scored 1.8 mAP less over the demo's 3 seeds
    out = head.eval()(torch.randn(2, 48, 8, 4))
    assert out.feature.shape == (2, 48 + p * 4)
    assert build_head("aacn", in_channels=48, num_classes=3, skeleton=COCO17, global_channels=8).global_dim == 8


def test_an_aacn_checkpoint_from_before_the_wider_default_still_loads(tiny_synth, tmp_path):
    from conftest import tiny_overrides

    from keyreid.config import load_config
    from keyreid.demo.run import DEMO_CONFIG
    from keyreid.engine.trainer import Trainer
    from keyreid.inference import load_model

    over = tiny_overrides(tiny_synth, tmp_path / "aacn", head="aacn", **{"optim.epochs": 1,
                          "model.head_options": "{global_channels: 8}"})
    torch.manual_seed(0)
    Trainer(load_config(DEMO_CONFIG, over), resume=False, show_progress=False).fit()
    path = tmp_path / "aacn" / "last.pt"
    ck = torch.load(path, weights_only=False)
    # as written before issue 11: the 256-wide global stream was the default, so no option was stored
    for where in (ck["card"]["model"], ck["config"]["model"]):
        where["head_options"].pop("global_channels")
    torch.save(ck, path)
    lm = load_model(path, device="cpu")
    assert lm.model.head.global_dim == 8
    torch.testing.assert_close(lm.model.state_dict()["head.global_reduce.0.weight"],
                               ck["model"]["head.global_reduce.0.weight"])


def test_pabr_appearance_stream_is_128_wide_by_default():
    # issue 11: 64 channels scored 66.3 mAP over the demo's 3 seeds, 128 scored 74.7
    head = build_head("pabr", in_channels=16, num_classes=3, skeleton=COCO17)
    assert head.dim == 128 * 17
    assert head.eval()(torch.randn(2, 16, 8, 4)).feature.shape == (2, 128 * 17)


def test_a_pabr_checkpoint_from_before_the_wider_default_loads_with_its_width():
    from keyreid.config import ModelConfig
    from keyreid.inference.loaded import _options_from_weights

    old = build_model(ModelConfig(backbone="resnet18", pretrained=None, head="pabr",
                                  head_options={"appearance_channels": 8}), 3, COCO17)
    state = old.state_dict()
    cfg = _options_from_weights(ModelConfig(backbone="resnet18", pretrained=None, head="pabr"), state)
    assert cfg.head_options == {"appearance_channels": 8}
    build_model(cfg, 3, COCO17).load_state_dict(state)            # fits exactly
    stated = ModelConfig(backbone="resnet18", pretrained=None, head="pabr", head_options={"appearance_channels": 8})
    assert _options_from_weights(stated, state) is stated          # a stated option is never overridden
