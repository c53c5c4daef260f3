"""generation.metrics: L1 and SSIM against hand values and skimage, keypoints recovered from the
heatmaps the trainer renders, PCK and identity rank-1 on hand-made cases, and evaluate_transfer
with fake methods that hand back the truth or the source."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from keyreid.config import Config, ModelConfig
from keyreid.data.keypoints import get_skeleton
from keyreid.data.synthetic.paired import SynthScenes
from keyreid.utils.checkpoint import save_checkpoint
from keyreid.errors import KeyreidError
from keyreid.generation.metrics import (IdentityJudge, KeypointProbe, evaluate_transfer, heatmap_keypoints,
                                        identity_rank1, l1, pck, ssim, transfer_pairs)
from keyreid.generation.pose import to_unit_range
from keyreid.inference import card_for
from keyreid.models.build import build_model
from keyreid.models.output import ModelOutput
from keyreid.models.targets import keypoint_heatmaps



def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1, channel_axis=-1)


# ------------------------------------------------------------------------------------ pixels
def test_l1_hand_values_uint8_and_unit_range_agree():
    a = np.zeros((8, 6, 3), np.uint8)
    b = a.copy()
    b[:4, :, 0] = 255                                   # one channel of the top half: 1/3 * 1/2
    assert l1(a, b) == pytest.approx(1 / 6)
    top = np.zeros((8, 6), bool)
    top[:4] = True
    assert l1(a, b, top) == pytest.approx(1 / 3)
    assert l1(a, b, ~top) == 0.0
    assert math.isnan(l1(a, b, np.zeros((8, 6), bool)))
    # the same images as [-1, 1] tensors, and mixed
    assert l1(to_unit_range(a), to_unit_range(b)) == pytest.approx(1 / 6)
    assert l1(a, to_unit_range(b), top) == pytest.approx(1 / 3)


def test_ssim_matches_skimage_gaussian_ssim():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.random((8, 4, 3)), np.ones((8, 8, 1)))     # blocky 64x32 image
    cases = [(rng.random((32, 20, 3)), rng.random((32, 20, 3))),
             (smooth, np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1)),
             (smooth, np.clip(smooth * 0.7 + 0.2, 0, 1))]
    for a, b in cases:
        ref = _skimage_ssim(a, b)
        ours = ssim(torch.from_numpy(a).permute(2, 0, 1) * 2 - 1, torch.from_numpy(b).permute(2, 0, 1) * 2 - 1)
        assert ours == pytest.approx(ref, abs=1e-4)
    # uint8 input is read on the 0..1 scale
    u1, u2 = (rng.random((40, 24, 3)) * 255).astype(np.uint8), (rng.random((40, 24, 3)) * 255).astype(np.uint8)
    assert ssim(u1, u2) == pytest.approx(_skimage_ssim(u1 / 255.0, u2 / 255.0), abs=1e-4)


def test_ssim_hand_values_and_masks():
    a = np.full((20, 20, 3), 51, np.uint8)          # 0.2
    b = np.full((20, 20, 3), 153, np.uint8)         # 0.6: flat images, only the luminance term
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 18, 3)), rng.random((30, 18, 3))
    tx, ty = (torch.from_numpy(v).permute(2, 0, 1) * 2 - 1 for v in (x, y))
    assert ssim(tx, ty, np.ones((30, 18), bool)) == pytest.approx(ssim(tx, ty))
    # masked: the mean of skimage's SSIM image inside the mask (border of 5 left out, as unmasked)
    _, full = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1, channel_axis=-1, full=True)
    mask = np.zeros((30, 18), bool)
    mask[3:20, 4:12] = True
    inner = np.zeros_like(mask)
    inner[5:-5, 5:-5] = True
    assert ssim(tx, ty, mask) == pytest.approx(full.mean(-1)[mask & inner].mean(), abs=1e-4)
    assert math.isnan(ssim(tx, ty, ~inner))       # a mask only on the border: nothing to average


# ------------------------------------------------------------------------------------ keypoints
@pytest.mark.parametrize("image_hw,map_hw", [((128, 64), (16, 8)), ((64, 32), (16, 8)), ((256, 128), (64, 32))])
def test_heatmap_keypoints_inverts_the_training_targets(image_hw, map_hw):
    """Maps rendered exactly as the trainer's targets (sigma 1.5 cells) give back their keypoints
    to far below a pixel, anywhere in the image including the border cells; the plain argmax
    cell centre is off by up to half a stride (4 px at the demo's 128x64 / 16x8)."""
    rng = np.random.default_rng(0)
    H, W = image_hw
    xy = rng.uniform(-0.5, [W - 0.5, H - 0.5], size=(40, 17, 2))
    xy[0, :4] = [[-0.5, -0.5], [W - 0.5, H - 0.5], [0.3, H / 2], [W - 1.2, 2.0]]   # corners, edges
    kp = torch.tensor(np.concatenate([xy, np.ones((40, 17, 1))], -1), dtype=torch.float32)
    maps, _ = keypoint_heatmaps(kp, image_hw, map_hw, sigma=1.5)
    found = heatmap_keypoints(maps, image_hw)
    err = np.linalg.norm(found[..., :2] - xy, axis=-1)
    assert err.max() < 0.01
    assert np.allclose(found[..., 2], maps.flatten(2).max(-1).values.numpy())   # confidence = map max
    argmax_only = heatmap_keypoints(torch.where(maps == maps.amax((-2, -1), keepdim=True), 1.0, 0.0), image_hw)
    assert np.linalg.norm(argmax_only[..., :2] - xy, axis=-1).max() > 0.3 * H / map_hw[0]


class _PoseModel:
    """Stands in for a LoadedModel with a kae head that always sees the same pose: its heatmaps
    are the training targets of `keypoints` (pixels of its 64x32 input)."""

    def __init__(self, keypoints: np.ndarray):
        self.keypoints = torch.tensor(keypoints, dtype=torch.float32)
        self.input_size = (64, 32)
        self.skeleton = get_skeleton("coco17")
        self.config = Config()
        self.seen = []

    def preprocess(self, images):
        self.seen += [im.shape for im in images]
        return torch.zeros(len(images), 3, *self.input_size)

    def forward(self, batch):
        maps, _ = keypoint_heatmaps(self.keypoints.expand(len(batch), -1, -1), self.input_size, (16, 8), 1.5)
        return ModelOutput(embedding=torch.zeros(len(batch), 4), feature=torch.zeros(len(batch), 4), heatmaps=maps)


def test_probe_maps_keypoints_back_to_the_images_size():
    rng = np.random.default_rng(3)
    kp = np.concatenate([rng.uniform(0, [31, 63], size=(17, 2)), np.ones((17, 1))], -1)
    model = _PoseModel(kp)
    probe = KeypointProbe(model)
    images = torch.zeros(3, 3, 128, 64)                       # twice the model's input
    found = probe(images)
    assert found.shape == (3, 17, 3) and model.seen[-1] == (128, 64, 3)
    expected = (kp[:, :2] + 0.5) * 2 - 0.5                    # pixel-centre scaling, as the resize
    assert np.abs(found[:, :, :2] - expected).max() < 0.02


def tiny_checkpoint(path: Path, head: str, height: int = 64, width: int = 32, classes: int = 5) -> Path:
    """A randomly initialised model saved as the trainer saves it (weights, config, card)."""
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(backbone="resnet18", pretrained=None, head=head)
    cfg.data.height, cfg.data.width = height, width
    skeleton = get_skeleton("coco17") if head == "kae" else None
    model = build_model(cfg.model, classes, skeleton)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, height, width))               # BN statistics that are not identity
    model.eval()
    state = model.state_dict()
    save_checkpoint(path, {"model": state, "config": dataclasses.asdict(cfg),
                           "card": card_for(cfg, model, skeleton, classes, state),
                           "label_map": {i: i for i in range(classes)}})
    return path


@pytest.fixture(scope="module")
def kae_ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("kae") / "best.pt", "kae")


def test_probe_loads_a_kae_checkpoint_and_refuses_a_model_without_heatmaps(kae_ckpt, tmp_path):
    probe = KeypointProbe(kae_ckpt)
    found = probe(torch.rand(2, 3, 128, 64) * 2 - 1)
    assert found.shape == (2, 17, 3)
    assert (found[..., 0] >= -0.5).all() and (found[..., 0] <= 63.5).all()
    assert (found[..., 1] >= -0.5).all() and (found[..., 1] <= 127.5).all()
    with pytest.raises(KeyreidError, match="kae"):
        KeypointProbe(tiny_checkpoint(tmp_path / "bnneck.pt", "bnneck"))


def test_pck_hand_values():
    target = np.zeros((2, 17, 3))
    target[0, :3] = [[10, 0, 1], [10, 50, 1], [10, 100, 1]]   # height 100: threshold 10 px at 0.1
    target[0, 3] = [10, 60, 0]                                # invisible: never judged
    target[1, 0] = [5, 5, 1]                                  # one visible point: no height, left out
    pred = np.zeros((2, 17, 3))
    pred[0, :4, :2] = [[10, 0], [19, 50], [10, 111], [500, 500]]
    pred[1, 0, :2] = [100, 100]
    assert pck(pred, target) == pytest.approx(2 / 3)
    assert pck(pred, target, threshold=0.2) == pytest.approx(1.0)
    assert pck(pred[0], target[0]) == pytest.approx(2 / 3)    # one image [K, 3]
    assert math.isnan(pck(pred[1:], target[1:]))


# ------------------------------------------------------------------------------------ identity
class _ColourModel:
    """A 're-ID model' whose embedding is an image's mean colour (Euclidean)."""
    distance = "euclidean"

    def embed(self, images, batch_size=64):
        out = []
        for im in images:
            arr = np.asarray(Image.open(im).convert("RGB")) if isinstance(im, (str, Path)) else np.asarray(im)
            out.append(arr.reshape(-1, 3).mean(0) / 255.0)
        return np.array(out, np.float32)


def _solid(value, h=8, w=4) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_identity_rank1_hand_made(tmp_path):
    # gallery: identity 1 at grey 100 (camera 0) and 120 (camera 1), identity 2 at 140, identity 3 at 200
    values, pids, cams = [100, 120, 140, 200], [1, 1, 2, 3], [0, 1, 0, 0]
    paths = []
    for i, v in enumerate(values):
        paths.append(tmp_path / f"g{i}.png")
        Image.fromarray(_solid(v)).save(paths[-1])
    generated = np.stack([_solid(101), _solid(135), _solid(190)])
    # nearest: 100 (id 1, right), 140 (id 2, wrong: it is id 1), 200 (id 3, right)
    assert identity_rank1(_ColourModel(), generated, [1, 1, 3], paths, pids) == pytest.approx(2 / 3)
    # camera exclusion: the first image comes from camera 0, where identity 1's gallery image at 100
    # sits; the next nearest allowed is 120 (id 1, camera 1): still right. Made from camera 1
    # instead, 120 is out and 100 stays: right. The third, id 3 from camera 0, loses its only
    # gallery image and its nearest is 140 (id 2): wrong.
    assert identity_rank1(_ColourModel(), generated, [1, 1, 3], paths, pids, [0, 0, 0], cams) == pytest.approx(1 / 3)
    judge = IdentityJudge(_ColourModel(), paths, pids, cams)
    assert list(judge.top_match(generated, [0, 0, 0], [1, 1, 3])) == [1, 2, 2]
    assert list(judge.top_match(generated)) == [1, 2, 3]


# ------------------------------------------------------------------------------------ transfer
class _FakeMethod:
    """Hands back either the ground truth of each pair (in the order evaluate_transfer asks) or
    the source image it is given."""

    def __init__(self, scenes, pairs, give: str):
        self.give = give
        self.truth = [to_unit_range(scenes.transfer(s, t).image) for s, t in pairs]
        self.calls = []

    def render(self, source, target_kp=None, other=None):
        self.calls.append((source.shape, target_kp.shape, other.shape))
        if self.give == "source":
            return source.clone()
        out, self.truth = torch.stack(self.truth[:len(source)]), self.truth[len(source):]
        return out


@pytest.fixture(scope="module")
def transfer_setup(tiny_synth, kae_ckpt):
    scenes = SynthScenes(tiny_synth)
    pairs = transfer_pairs(scenes, 12, seed=1)
    return scenes, pairs, KeypointProbe(kae_ckpt), IdentityJudge.for_dataset(kae_ckpt, tiny_synth)


def test_transfer_pairs_are_cross_identity_test_pairs(transfer_setup):
    scenes, pairs, _, _ = transfer_setup
    queries = set(scenes.paths("query"))
    assert len(pairs) == 12 and all(s in queries for s, _ in pairs)
    assert all(scenes.pid(s) != scenes.pid(t) for s, t in pairs)
    assert transfer_pairs(scenes, 12, seed=1) == pairs


def test_evaluate_transfer_truth_scores_perfect_and_source_scores_the_control(transfer_setup):
    scenes, pairs, probe, judge = transfer_setup
    truth = _FakeMethod(scenes, pairs, "truth")
    r = evaluate_transfer(truth, scenes, pairs, probe, judge, batch_size=5)
    assert [c[1] for c in truth.calls] == [(5, 18, 3), (5, 18, 3), (2, 18, 3)]   # OpenPose-18 poses
    assert r["pairs"] == 12
    assert r["l1_gt"] == 0 and r["l1_gt_masked"] == 0
    assert r["ssim_gt"] == pytest.approx(1) and r["ssim_gt_masked"] == pytest.approx(1)
    assert r["pck_target"] == r["gt_pck_target"] and r["pck_source"] == r["gt_pck_source"]
    assert r["id_rank1"] == r["gt_id_rank1"]
    assert r["l1_source"] == pytest.approx(r["control_l1_gt"])                # |gt - src| both ways
    # the control differs from the truth, more inside the person than over the whole image
    assert r["control_l1_gt"] > 0.01 and r["control_l1_gt_masked"] > r["control_l1_gt"]
    assert r["control_ssim_gt"] < 0.99

    copy = _FakeMethod(scenes, pairs, "source")
    c = evaluate_transfer(copy, scenes, pairs, probe, judge, batch_size=32)
    for k in ("l1_gt", "l1_gt_masked", "ssim_gt", "ssim_gt_masked", "pck_target", "pck_source", "id_rank1"):
        assert c[k] == pytest.approx(c[f"control_{k}"]), k
        assert c[f"control_{k}"] == pytest.approx(r[f"control_{k}"], nan_ok=True), k  # same pairs, same control
    assert c["l1_source"] == 0 and c["ssim_source"] == pytest.approx(1)
    assert c["gt_pck_target"] == r["gt_pck_target"]
    assert all(0 <= c[k] <= 1 for k in ("pck_target", "id_rank1", "gt_id_rank1"))


def test_evaluate_transfer_without_probe_or_judge_leaves_those_nan(transfer_setup):
    scenes, pairs, _, _ = transfer_setup
    r = evaluate_transfer(_FakeMethod(scenes, pairs[:3], "source"), scenes, pairs[:3], None, None,
                          return_images=True)
    assert math.isnan(r["pck_target"]) and math.isnan(r["id_rank1"]) and math.isnan(r["gt_id_rank1"])
    assert r["generated"].shape == (3, 128, 64, 3) and r["generated"].dtype == np.uint8
    assert np.array_equal(r["generated"][0], scenes.render(pairs[0][0]).image)
