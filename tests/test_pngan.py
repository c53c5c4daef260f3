"""PN-GAN: canonical poses (k-means over normalised training poses), the method (pngan) and its
re-ID use (rendering in the canonical poses, fused features)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from keyreid.data.synthetic import SynthConfig, generate
from keyreid.generation.canonical import (Canonical, Placement, canonical_from_dict, canonical_poses,
                                          normalise, placement, read_canonical, to_image,
                                          write_canonical)
from keyreid.generation.pose import OPENPOSE18, coco17_to_openpose18
from keyreid.errors import KeyreidError

# OpenPose-18 indices used below
NOSE, NECK, R_SHOULDER, L_SHOULDER, R_HIP, L_HIP = 0, 1, 2, 5, 8, 11


@pytest.fixture(scope="module")
def synth_poses(tmp_path_factory):
    """Training poses (OpenPose-18, pixels) and body yaws of a 40-identity synthetic set."""
    root = tmp_path_factory.mktemp("pngan_synth")
    generate(root, SynthConfig(train_identities=40, test_identities=2, cameras=6, distractors=0,
                               junk=0, seed=3), workers=1)
    yaws = {p: v["yaw"] for p, v in json.loads((root / "synth.json").read_text())["images"].items()}
    rows = [json.loads(line) for line in (root / "keypoints.jsonl").read_text().splitlines()[1:]]
    rows = [r for r in rows if r["path"].startswith("bounding_box_train/")]
    kp = np.stack([coco17_to_openpose18(np.array(r["keypoints"])) for r in rows])
    return kp, np.array([yaws[r["path"]] for r in rows])


def view(pose: np.ndarray) -> str:
    """front / back / side of a normalised pose: the person's left shoulder is on the image's
    right (positive width) when they face the camera; a side view has a narrow torso."""
    width = pose[L_SHOULDER, 0] - pose[R_SHOULDER, 0]
    if abs(width) < 0.35:
        return "side"
    return "front" if width > 0 and pose[NOSE, 2] > 0 else "back" if width < 0 and pose[NOSE, 2] == 0 else "?"


# ------------------------------------------------------------------------------- canonical poses

def test_normalise_centres_on_the_torso_and_scales_by_its_length():
    kp = np.zeros((1, 18, 3), np.float32)
    kp[0, NECK] = [30, 20, 1]
    kp[0, R_HIP] = [26, 60, 1]
    kp[0, L_HIP] = [34, 60, 1]          # hip midpoint (30, 60): torso 40 px, centre (30, 40)
    kp[0, NOSE] = [30, 10, 1]
    kp[0, 4] = [99, 99, 0]               # invisible wrist: a zero row, whatever its coordinates
    out, idx = normalise(kp, OPENPOSE18)
    assert idx.tolist() == [0]
    np.testing.assert_allclose(out[0, NECK], [0, -0.5, 1])
    np.testing.assert_allclose(out[0, R_HIP], [-0.1, 0.5, 1])
    np.testing.assert_allclose(out[0, NOSE], [0, -0.75, 1])
    np.testing.assert_allclose(out[0, 4], [0, 0, 0])
    kp[0, L_HIP, 2] = 0                  # no torso: not usable
    assert len(normalise(kp, OPENPOSE18)[1]) == 0


def test_to_image_places_poses_like_the_training_crops(synth_poses):
    kp, _ = synth_poses
    place = placement(kp, 128, 64)
    # the synthetic crops: torso centre near the middle column, upper half; torso ~1/4 of height
    assert 0.4 < place.cx < 0.6 and 0.3 < place.cy < 0.45 and 0.18 < place.torso < 0.32
    pose = np.zeros((1, 18, 3), np.float32)
    pose[0, NECK] = [0, -0.5, 1]
    pose[0, 4] = [0.3, 0.2, 0]
    px = to_image(pose, 256, 128, Placement(cx=0.5, cy=0.4, torso=0.25))
    np.testing.assert_allclose(px[0, NECK], [64, 102.4 - 32, 1])   # (0.5 * 128, 0.4 * 256 - 0.5 * 64)
    np.testing.assert_allclose(px[0, 4], [0, 0, 0])


def test_canonical_poses_span_front_back_and_side_views(synth_poses):
    kp, yaw = synth_poses
    poses = canonical_poses(kp, k=8, seed=0)
    assert poses.shape == (8, 18, 3) and set(np.unique(poses[..., 2])) <= {0.0, 1.0}
    views = [view(p) for p in poses]
    assert {"front", "back", "side"} <= set(views), views
    # every canonical pose keeps its torso (the normalisation frame)
    assert (poses[:, [NECK, R_HIP, L_HIP], 2] == 1).all()
    # the training poses nearest each canonical pose face a common direction (yaw 0 = facing the
    # camera), and those directions cover the circle: at least 3 of the 4 quadrants
    norm, idx = normalise(kp, OPENPOSE18)
    both = (norm[:, None, :, 2] > 0) & (poses[None, :, :, 2] > 0)
    d = (((norm[:, None, :, :2] - poses[None, :, :, :2]) ** 2).sum(-1) * both).sum(-1) \
        + 0.25 * (norm[:, None, :, 2] != poses[None, :, :, 2]).sum(-1)
    nearest = d.argmin(1)
    quadrants = set()
    for c in range(8):
        a = np.radians(yaw[idx][nearest == c])
        if len(a) < 3:
            continue
        mean = math.degrees(math.atan2(np.sin(a).mean(), np.cos(a).mean())) % 360
        quadrants.add(int(((mean + 45) % 360) // 90))
    assert len(quadrants) >= 3, quadrants


def test_canonical_poses_are_deterministic_and_seeded(synth_poses):
    kp, _ = synth_poses
    a = canonical_poses(kp, k=8, seed=0)
    np.testing.assert_array_equal(a, canonical_poses(kp, k=8, seed=0))
    assert canonical_poses(kp, k=4, seed=0).shape == (4, 18, 3)
    with pytest.raises(KeyreidError, match="visible torso"):
        canonical_poses(kp[:5], k=8)


def test_write_and_read_canonical_round_trip(synth_poses, tmp_path):
    kp, _ = synth_poses
    poses = canonical_poses(kp, k=8, seed=0)
    place = placement(kp, 128, 64)
    canon = write_canonical(tmp_path / "canonical.json", poses, OPENPOSE18, tmp_path / "canonical.png",
                            place=place)
    back = read_canonical(tmp_path / "canonical.json")
    np.testing.assert_allclose(back.poses, poses, atol=1e-5)
    assert back.skeleton == "openpose18" and back.placement == place
    np.testing.assert_allclose(back.pixels(128, 64), canon.pixels(128, 64), atol=1e-3)
    from PIL import Image

    pic = np.asarray(Image.open(tmp_path / "canonical.png"))
    assert pic.shape == (128, 8 * 64 + 7 * 4, 3)
    for i in range(8):   # every tile has a drawn skeleton
        assert (pic[:, i * 68: i * 68 + 64].sum(-1) > 0).mean() > 0.02
    bad = {**canon.to_dict(), "poses": [[[0, 0, 1]]]}
    with pytest.raises(KeyreidError, match="poses must be finite"):
        canonical_from_dict(bad)
    with pytest.raises(KeyreidError, match="not found"):
        read_canonical(tmp_path / "missing.json")


# ------------------------------------------------------------------------------- the method

import contextlib

import torch

from keyreid.data.datasets import build_dataset
from keyreid.data.keypoints import COCO17
from keyreid.errors import DataError
from keyreid.generation.config import GenConfig
from keyreid.generation.method import DataInfo
from keyreid.generation.pairs import PairDataset
from keyreid.generation.pose import skeleton_image


class Ctx:
    """The part of the trainer's StepContext a method uses, on CPU without AMP."""

    def __init__(self, optimizers):
        self.optimizers, self.device = optimizers, torch.device("cpu")

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def step(self, name):
        self.optimizers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)


SMALL = {"ngf": 8, "n_blocks": 2, "ndf": 8}


def build(height=64, width=32, **options):
    from keyreid.generation.method import GENERATION_METHODS

    torch.manual_seed(0)
    cfg = GenConfig(method="pngan", method_options={**SMALL, **options})
    info = DataInfo(skeleton=OPENPOSE18, num_classes=4, height=height, width=width, train_pids=[0, 1, 2, 3])
    return GENERATION_METHODS.get("pngan")(cfg, info)


def random_batch(n=2, h=64, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(n, 3, h, w, generator=g) * 2 - 1 for k in ("source", "target", "target_skeleton")}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A 64x32 synthetic training set: 12 identities x 5 images, 240 ordered same-identity pairs."""
    root = tmp_path_factory.mktemp("pngan_tiny")
    generate(root, SynthConfig(train_identities=12, test_identities=2, cameras=3, distractors=0, junk=0,
                               train_images=(5, 5), train_cameras=(2, 3), height=64, width=32, seed=5),
             workers=1)
    ds = build_dataset("market1501", root)
    ds.attach_keypoints(root / "keypoints.jsonl")
    return root, ds.train


def test_one_step_updates_generator_and_discriminator():
    m = build()
    opt = m.optimizers(None)
    assert set(opt) == {"generator", "discriminator"}
    assert opt["generator"].defaults["lr"] == 2e-4 and opt["generator"].defaults["betas"] == (0.5, 0.999)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    losses = m.train_step(random_batch(), Ctx(opt))
    assert all(math.isfinite(v) for v in losses.values())
    assert {"g_gan", "l1", "d"} <= set(losses)
    # LSGAN + 10 L1 is G's objective
    assert losses["g_total"] == pytest.approx(losses["g_gan"] + 10 * losses["l1"], rel=1e-5)
    for net in ("generator", "discriminator"):
        changed = [not torch.equal(before[n], p) for n, p in m.named_parameters() if n.startswith(net)]
        assert any(changed), net


@pytest.mark.parametrize("d_real", ["source", "target"])
def test_discriminator_real_sample_is_the_configured_image(d_real):
    m = build(d_real=d_real)
    seen = []
    m.discriminator.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    batch = random_batch()
    m.train_step(batch, Ctx(m.optimizers(None)))
    # first D call: G's fake; second: [real; fake] for D's own update
    assert len(seen) == 2 and seen[1].shape[0] == 4
    assert torch.equal(seen[1][:2], batch[d_real])
    with pytest.raises(KeyreidError, match="d_real"):
        build(d_real="both")


def test_render_and_sample_shapes_range_and_pose():
    m = build().eval()
    src = torch.rand(3, 3, 64, 32) * 2 - 1
    kp = np.zeros((18, 3), np.float32)
    kp[[NECK, R_HIP, L_HIP]] = [[16, 18, 1], [13, 40, 1], [19, 40, 1]]
    other = kp.copy()
    other[NECK, 0] = 6
    out = m.render(src, torch.from_numpy(kp))          # one pose for every source
    assert out.shape == (3, 3, 64, 32) and out.min() >= -1 and out.max() <= 1
    moved = m.render(src, torch.from_numpy(np.stack([other] * 3)))
    assert not torch.allclose(out, moved)
    # the skeleton input is the training drawing of those keypoints
    expected = torch.from_numpy(skeleton_image(kp, OPENPOSE18, 64, 32)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(m.skeleton_images(kp[None])[0], expected)
    with pytest.raises(ValueError, match="target_kp"):
        m.render(src)
    with pytest.raises(ValueError, match="source must be"):
        m.render(torch.zeros(1, 3, 32, 32), torch.from_numpy(kp))
    cols = m.sample(random_batch(2))
    assert list(cols) == ["source", "target pose", "generated", "ground truth"]
    assert all(v.shape == (2, 3, 64, 32) for v in cols.values())


def test_pairs_are_ordered_same_identity_pairs_subsampled_per_epoch():
    m = build()
    pids = [0, 0, 0, 1, 1, 2]
    full = m.pairs(pids, epoch=0, seed=0, max_pairs=None)
    assert sorted((p["source"], p["target"]) for p in full) == [
        (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (3, 4), (4, 3)]
    a, b = m.pairs(pids, 0, 0, 4), m.pairs(pids, 1, 0, 4)
    assert len(a) == 4 and a == m.pairs(pids, 0, 0, 4) and a != b
    assert all(pids[p["source"]] == pids[p["target"]] for p in a + b)


def test_card_carries_the_canonical_poses(synth_poses, tmp_path):
    kp, _ = synth_poses
    canon = write_canonical(tmp_path / "c.json", canonical_poses(kp, 8, 0), OPENPOSE18,
                            place=placement(kp, 128, 64))
    m = build(canonical=str(tmp_path / "c.json"))
    card = m.card()
    got = canonical_from_dict(card["canonical"])
    np.testing.assert_allclose(got.pixels(64, 32), canon.pixels(64, 32), atol=1e-3)
    # the card's copy rebuilds the method without the file (a checkpoint moved elsewhere)
    assert "canonical" in build(canonical=card["canonical"]).card()
    assert "canonical" not in build().card()
    with pytest.raises(DataError, match="not found"):
        build(canonical=str(tmp_path / "nope.json"))


def test_short_training_moves_the_person_to_the_target_pose(tiny_set):
    """The training step learns what it should: after 300 steps on the 240 pairs (a small G, L1
    weighted 100 so it shows in seconds), generated images are closer to the ground truth of
    the transfer (SynthScenes: the source person and background in the target's pose) than to
    the source, most of all where the two bodies differ. On training pairs: this checks the
    optimisation, not generalisation (bench/gen_pngan.py measures held-out identities)."""
    from keyreid.data.synthetic.paired import SynthScenes
    from keyreid.generation.pose import to_unit_range

    root, train = tiny_set
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = build(ngf=16, n_blocks=3, ndf=16, lr=1e-3, l1_weight=100)
    items = m.pairs([s.pid for s in train], 0, 0, None)
    assert len(items) == 240
    ds = PairDataset(train, items, COCO17, 64, 32, flip_prob=0.0, maps=False)
    data = [ds[i] for i in range(len(ds))]
    stack = {k: torch.stack([d[k] for d in data]) for k in ("source", "target", "target_skeleton")}
    scenes = SynthScenes(root)
    rel = [Path(s.path).relative_to(root.resolve()).as_posix() for s in train]
    truth = [scenes.transfer(rel[it["source"]], rel[it["target"]]) for it in items]
    gt = torch.stack([to_unit_range(t.image) for t in truth])
    body_gt = torch.from_numpy(np.stack([t.mask for t in truth]))
    body_src = torch.from_numpy(np.stack([scenes.render(rel[it["source"]]).mask for it in items]))

    ctx = Ctx(m.optimizers(None))
    g = torch.Generator().manual_seed(0)
    l1 = []
    for _ in range(300):
        idx = torch.randint(len(data), (8,), generator=g)
        l1.append(m.train_step({k: v[idx] for k, v in stack.items()}, ctx)["l1"])
    assert np.mean(l1[-30:]) < 0.6 * np.mean(l1[:10])
    m.eval()
    with torch.no_grad():
        gen = torch.cat([m.generate(stack["source"][i:i + 60], stack["target_skeleton"][i:i + 60])
                         for i in range(0, len(data), 60)])
    src = stack["source"]

    def dist(a, b, region):
        return float((a - b).abs().mean(1)[region].mean())

    everywhere = torch.ones_like(body_gt)
    assert dist(gen, gt, everywhere) < 0.95 * dist(gen, src, everywhere)
    # the pose moved: where only the target pose has the body, and where only the source had it,
    # the generated image is nearer the truth than the source is, and nearer it than the source
    # (measured: 0.33 vs 0.50 and 0.46 where the new body is, 0.40 vs 0.47 and 0.47 where the old was)
    for region, factor in ((body_gt & ~body_src, 0.8), (body_src & ~body_gt, 0.95)):
        assert region.sum() > 2000
        assert dist(gen, gt, region) < factor * dist(src, gt, region)
        assert dist(gen, gt, region) < factor * dist(gen, src, region)


# ------------------------------------------------------------------------------- re-ID use

from keyreid.data.records import Sample
from keyreid.generation.pngan_reid import (fuse, fusion_metrics, pose_choice, render_samples,
                                           rendered_name, with_original, write_training_tree)


def test_rendered_names_keep_identity_and_camera_and_say_the_pose():
    assert rendered_name("0012_c3s2_000451_01.jpg", 0) == "0012_c3s21_000451_01.jpg"
    assert rendered_name("0012_c3s2_000451_01.jpg", 7) == "0012_c3s28_000451_01.jpg"
    names = {rendered_name(n, p) for n in ("0001_c1s1_000001_00.jpg", "0001_c1s2_000001_00.jpg")
             for p in range(8)}
    assert len(names) == 16
    with pytest.raises(DataError, match="Market-style"):
        rendered_name("person.jpg", 0)


def test_fusions_by_hand():
    f = np.array([[[3.0, 4.0], [0.0, 2.0]]])          # one image, two poses
    np.testing.assert_allclose(fuse(f, "avg"), [[0.3, 0.9]])
    np.testing.assert_allclose(fuse(f, "max"), [[0.6, 1.0]])
    np.testing.assert_allclose(fuse(f, "concat"), [[0.6, 0.8, 0.0, 1.0]])
    np.testing.assert_allclose(with_original(np.array([[0.0, 5.0]]), np.array([[2.0, 0.0, 0.0]])),
                               [[0.0, 1.0, 1.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="fusion"):
        fuse(f, "sum")


def test_fusion_corrects_a_pose_that_misleads():
    """Pose 0 puts the query next to the wrong identity, poses 1 and 2 next to the right one:
    a single pose fails, every fusion of the three succeeds."""
    def sample(pid, cam, split):
        return Sample(f"{pid}_{cam}_{split}.jpg", pid, cam, split)

    query = [sample(1, 0, "query")]
    gallery = [sample(1, 1, "gallery"), sample(2, 1, "gallery")]
    e = np.eye(4)
    q = np.stack([[e[0], e[1], e[2]]])                      # [1, 3 poses, 4]
    g = np.stack([[e[3], e[1], e[2]],                       # the same person: poses 1, 2 agree
                  [e[0] * 0.9 + e[3] * 0.1, e[3], e[3]]])   # another person: pose 0 agrees
    single = fusion_metrics(query, gallery, q[:, :1], g[:, :1])
    assert single["fused avg"]["R1"] == 0.0
    fused = fusion_metrics(query, gallery, q, g, q_original=e[None, 0], g_original=e[[0, 1]])
    for how in ("avg", "max", "concat"):
        assert fused[f"fused {how}"]["R1"] == 1.0
    assert fused["original"]["R1"] == 1.0 and "fused max + original" in fused


def test_render_samples_writes_a_resumable_market_tree(tiny_set, tmp_path):
    root, train = tiny_set
    m = build().eval()
    canon = Canonical(np.stack([np.zeros((18, 3), np.float32)] * 2), "openpose18", Placement())
    canon.poses[:, [NECK, R_HIP, L_HIP]] = [[0, -0.5, 1], [-0.1, 0.5, 1], [0.1, 0.5, 1]]
    canon.poses[1, R_HIP, 0] = -0.4
    few = train[:3]
    paths = render_samples(m, few, canon, tmp_path / "r", show_progress=False)
    assert [len(p) for p in paths] == [2, 2, 2]
    from PIL import Image

    with Image.open(paths[0][0]) as im:
        assert im.size == (32, 64)
    stamp = paths[0][0].stat().st_mtime_ns
    render_samples(m, few, canon, tmp_path / "r", show_progress=False)
    assert paths[0][0].stat().st_mtime_ns == stamp          # kept, not re-rendered

    # rendering pose by pose gives the same pixels as all poses of a source at once
    one = render_samples(m, few, canon, tmp_path / "r1", poses=[[1], [0], [1]], batch_size=2,
                         show_progress=False)
    assert [p[0].name for p in one] == [paths[0][1].name, paths[1][0].name, paths[2][1].name]
    diff = np.asarray(Image.open(one[0][0])).astype(int) - np.asarray(Image.open(paths[0][1]))
    assert np.abs(diff).max() <= 3        # (float rounding of other batch sizes, then JPEG)

    tree = write_training_tree(m, train[:6], canon, root, tmp_path / "tree", originals=True,
                               exclude_pids=[train[5].pid], show_progress=False)
    ds = build_dataset("market1501", tree.root)
    kept = [s for s in train[:6] if s.pid != train[5].pid]
    assert tree.generated == 2 * len(kept) and len(ds.train) == tree.generated + 6
    single = write_training_tree(m, train[:6], canon, root, tmp_path / "tree1", originals=False,
                                 renders_dir=tmp_path / "tree" / "renders", poses_per_image=1)
    assert single.generated == 6 and len(build_dataset("market1501", single.root).train) == 6
    assert pose_choice(50, 8, 1, 0) == pose_choice(50, 8, 1, 0)
    assert len({tuple(p) for p in pose_choice(50, 8, 1, 0)}) == 8      # every pose gets used
    assert pose_choice(3, 8, None, 0) == [list(range(8))] * 3
    assert sorted({(s.pid, s.camid) for s in ds.train}) == sorted({(s.pid, s.camid) for s in train[:6]})
    assert len(ds.query) == len(build_dataset("market1501", root).query)
