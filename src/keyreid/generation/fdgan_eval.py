"""What FD-GAN's encoder is worth: re-ID with E alone, and how much pose its features still hold.

Re-ID (the paper's test): E's identity feature of every query and gallery image (no pose input,
no generator), squared Euclidean distances, keyreid's CMC / mAP / mINP. Optionally the
authors' second stage: for each query the top `rescore_top` (100) gallery images by that distance
are re-scored with the verification head, distance := P(different identity), and stay ahead of
every image outside the top; the authors' reported numbers seem to include it, so both are
reported, plain first.

Pose probe (the paper's claim is that the GAN removes pose from E's feature): ridge regressions
from the (standardised) features to the view angle (cos, sin of the body yaw relative to the
camera, from the renderer's synth.json) and to the 17 keypoints (x / W, y / H from
keypoints.jsonl: the projected skeleton, occluded joints included, which the synthetic set knows),
fitted on half of the identities and scored (R^2, mean angular error) on the other half, the
ridge strength chosen on a split of the fitting half. Only images of people (synth.json kind
"person") take part. A lower R^2 after stage III than after stage I is the claim confirmed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from keyreid.data.records import Sample
from keyreid.errors import DataError

RESCORE_TOP = 100


# ---------------------------------------------------------------------------------- features

@contextlib.contextmanager
def encoder_weights(method, which: str = "final"):
    """Run `method`'s encoder with the weights of `which`: "final" (as trained) or "stage I"
    (the snapshot kept when stage II began); the trained weights are back afterwards."""
    if which == "final":
        yield method
        return
    if which != "stage I":
        raise ValueError(f"which encoder: 'final' or 'stage I', got {which!r}")
    snap = getattr(method, "_stage1_encoder", None)
    if not snap:
        raise DataError(None, "this FD-GAN checkpoint has no stage-I encoder (stage II never began)")
    siamese = getattr(method.siamese, "module", method.siamese)
    current = {k: v.detach().clone() for k, v in siamese.state_dict().items()}
    siamese.load_state_dict(snap)
    try:
        yield method
    finally:
        siamese.load_state_dict(current)


class _UnitRangeEncoder(torch.nn.Module):
    """keyreid's feature extraction calls model(x) and reads `.feature`: E on [-1, 1] images."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        from keyreid.models.output import ModelOutput

        f = self.method.encode(x)
        return ModelOutput(embedding=f, feature=f)


@torch.no_grad()
def encoder_features(method, samples: Sequence[Sample], height: int, width: int,
                     device: str | torch.device = "cpu", batch_size: int = 128, which: str = "final",
                     show_progress: bool = False) -> np.ndarray:
    """float32 [N, D]: E's identity feature of each image, resized to height x width, in [-1, 1]."""
    from keyreid.data.transforms import TransformConfig, build_transforms
    from keyreid.inference.embed import extract_features

    _, test_tf = build_transforms(TransformConfig(height=height, width=width, mean=(0.5,) * 3, std=(0.5,) * 3))
    was = method.training
    method.eval()
    try:
        with encoder_weights(method, which):
            return extract_features(_UnitRangeEncoder(method), samples, test_tf, batch_size, 0, device,
                                    feature="feature", show_progress=show_progress)
    finally:
        method.train(was)


# ---------------------------------------------------------------------------------- re-ID

def rescore_top(distmat: np.ndarray, qf: np.ndarray, gf: np.ndarray,
                verify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], top: int = RESCORE_TOP
                ) -> np.ndarray:
    """The authors' second stage: each query's `top` nearest gallery images get distance
    verify(q, g) = P(different) in [0, 1]; every other image keeps its order behind them
    (its distance shifted to start above 1)."""
    out = np.array(distmat, dtype=np.float32, copy=True)
    top = min(int(top), out.shape[1])
    if top <= 0:
        return out
    order = np.argsort(out, axis=1, kind="stable")
    g = torch.from_numpy(np.ascontiguousarray(gf, dtype=np.float32))
    for i in range(out.shape[0]):
        near, rest = order[i, :top], order[i, top:]
        q = torch.from_numpy(np.ascontiguousarray(qf[i:i + 1], dtype=np.float32)).expand(top, -1)
        scores = verify(q, g[near]).float().cpu().numpy()
        if len(rest):
            base = out[i, rest]
            out[i, rest] = 1.0 + 1e-3 + (base - base.min())
        out[i, near] = scores
    return out


def evaluate_encoder(method, query: Sequence[Sample], gallery: Sequence[Sample], height: int, width: int,
                     device: str | torch.device = "cpu", rescore: int = 0, which: str = "final",
                     batch_size: int = 128, max_rank: int = 50) -> dict:
    """{"plain": metrics} (+ {"rescored": metrics} with rescore > 0): Euclidean on E's feature, and
    with the top `rescore` re-scored by the verification head."""
    from keyreid.evaluation.distance import distance_matrix
    from keyreid.evaluation.split import reid_metrics

    qf = encoder_features(method, query, height, width, device, batch_size, which)
    gf = encoder_features(method, gallery, height, width, device, batch_size, which)
    dist = distance_matrix(qf, gf, "euclidean")
    out = {"plain": reid_metrics(dist, query, gallery, max_rank)}
    if rescore > 0:
        was = method.training
        method.eval()
        try:
            with encoder_weights(method, which):
                def verify(a, b):
                    return method.verify(a.to(device), b.to(device))
                out["rescored"] = reid_metrics(rescore_top(dist, qf, gf, verify, rescore), query, gallery,
                                               max_rank)
        finally:
            method.train(was)
    return out


# ---------------------------------------------------------------------------------- pose probe

def probe_targets(root: str | Path, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep bool [N], yaw degrees [N], keypoints [N, 17, 2] as fractions of the image width and
    height) for a synthetic set's samples: keep is False for images that are not of a person
    (clutter, junk) or unknown to the set."""
    from keyreid.data.keypoints import read_sidecar
    from keyreid.data.synthetic import load_synth

    root = Path(root)
    synth = load_synth(root)
    meta = synth["images"]
    size = np.array([synth["config"]["width"], synth["config"]["height"]], np.float64)
    _, kps = read_sidecar(root / "keypoints.jsonl")
    base = root.resolve()
    n = len(samples)
    keep = np.zeros(n, bool)
    yaw = np.zeros(n, np.float64)
    kp = np.zeros((n, 17, 2), np.float64)
    for i, s in enumerate(samples):
        try:
            rel = Path(s.path).resolve().relative_to(base).as_posix()
        except ValueError:
            continue
        info = meta.get(rel)
        if info is None or info.get("kind") != "person" or "yaw" not in info or rel not in kps:
            continue
        keep[i] = True
        yaw[i] = float(info["yaw"])
        kp[i] = kps[rel][:, :2] / size
    return keep, yaw, kp


def _ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Weights [D + 1, T] of ridge regression with an unpenalised intercept (x standardised)."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    d = x.shape[1]
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    return np.vstack([w, (ym - xm @ w)[None]])


def _predict(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def r2_scores(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column R^2 = 1 - SSE / SST (around the column's own mean)."""
    sse = ((y - pred) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    return 1.0 - sse / np.maximum(sst, 1e-12)


def _identity_halves(pids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ids = np.unique(pids)
    first = set(rng.permutation(ids)[: len(ids) // 2].tolist())
    a = np.array([p in first for p in pids])
    return a, ~a


def ridge_probe(features: np.ndarray, targets: np.ndarray, pids: np.ndarray, seed: int = 0,
                alphas: Sequence[float] = (1e-2, 1e-1, 1, 10, 100, 1e3, 1e4)) -> dict:
    """Fit on half the identities, score on the other half. alpha (times the number of features)
    is chosen on a split of the fitting half by mean R^2. Returns {"r2" [T], "pred" [N_test, T],
    "test" bool [N], "alpha"}."""
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64).reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    fit, test = _identity_halves(np.asarray(pids), rng)
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    x = (x - mu) / sd
    inner_fit, inner_val = _identity_halves(np.asarray(pids)[fit], rng)
    xf, yf = x[fit], y[fit]
    scale = x.shape[1]
    best = max(alphas, key=lambda a: r2_scores(yf[inner_val], _predict(
        xf[inner_val], _ridge_fit(xf[inner_fit], yf[inner_fit], a * scale))).mean())
    w = _ridge_fit(xf, yf, best * scale)
    pred = _predict(x[test], w)
    return {"r2": r2_scores(y[test], pred), "pred": pred, "test": test, "alpha": float(best)}


def pose_probe(features: np.ndarray, samples: Sequence[Sample], root: str | Path, seed: int = 0) -> dict:
    """How linearly readable the pose is from features of a synthetic set's images:
    {"yaw_r2": mean R^2 of (cos, sin) yaw, "yaw_error_deg": mean angle between predicted and true
    view direction, "keypoint_r2": mean R^2 over the 34 normalised coordinates, "images": N}."""
    keep, yaw, kp = probe_targets(root, samples)
    if keep.sum() < 8:
        raise DataError(root, f"only {int(keep.sum())} person images with yaw and keypoints among "
                              f"{len(samples)} samples: not enough for a probe")
    f = np.asarray(features)[keep]
    pids = np.array([s.pid for s in samples])[keep]
    rad = np.radians(yaw[keep])
    yaw_t = np.stack([np.cos(rad), np.sin(rad)], 1)
    kp_t = kp[keep].reshape(len(f), -1)
    y = ridge_probe(f, yaw_t, pids, seed)
    k = ridge_probe(f, kp_t, pids, seed)
    pred = y["pred"]
    err = np.degrees(np.abs(np.angle(np.exp(1j * (np.arctan2(pred[:, 1], pred[:, 0]) - rad[y["test"]])))))
    return {"yaw_r2": float(y["r2"].mean()), "yaw_error_deg": float(err.mean()),
            "keypoint_r2": float(k["r2"].mean()), "images": int(keep.sum())}


__all__ = ["RESCORE_TOP", "encoder_features", "encoder_weights", "evaluate_encoder", "pose_probe",
           "probe_targets", "r2_scores", "rescore_top", "ridge_probe"]
