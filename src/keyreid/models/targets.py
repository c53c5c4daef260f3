"""Training targets rendered from keypoints on the fly, at whatever resolution a head predicts.

Keypoints are (x, y, v) in pixel-centre coordinates of the network input (after augmentation).
A map of size (h, w) over an input of (H, W) has strides H/h and W/w; cell j's centre lies at
input coordinate (j + 0.5) * stride - 0.5, the same convention as keypoints.render_heatmaps.
"""

from __future__ import annotations

import torch


def _grid(keypoints: torch.Tensor, image_hw: tuple[int, int], map_hw: tuple[int, int]):
    h, w = map_hw
    sy, sx = image_hw[0] / h, image_hw[1] / w
    x = (keypoints[..., 0] + 0.5) / sx - 0.5
    y = (keypoints[..., 1] + 0.5) / sy - 0.5
    ys = torch.arange(h, dtype=keypoints.dtype, device=keypoints.device)
    xs = torch.arange(w, dtype=keypoints.dtype, device=keypoints.device)
    return x, y, ys, xs


def _inside(keypoints: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    H, W = image_hw
    x, y, v = keypoints.unbind(-1)
    return (v > 0) & (x >= -0.5) & (y >= -0.5) & (x <= W - 0.5) & (y <= H - 0.5)


def keypoint_heatmaps(keypoints: torch.Tensor, image_hw: tuple[int, int], map_hw: tuple[int, int],
                      sigma: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian heatmaps [B, K, h, w] (peak 1, sigma in map cells) and weights [B, K] (visibility;
    0 for invisible keypoints and keypoints outside the image)."""
    x, y, ys, xs = _grid(keypoints, image_hw, map_hw)
    gx = torch.exp(-(xs.view(1, 1, -1) - x.unsqueeze(-1)) ** 2 / (2 * sigma**2))
    gy = torch.exp(-(ys.view(1, 1, -1) - y.unsqueeze(-1)) ** 2 / (2 * sigma**2))
    maps = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    valid = _inside(keypoints, image_hw)
    weights = torch.where(valid, keypoints[..., 2], torch.zeros_like(keypoints[..., 2]))
    return maps * valid[..., None, None], weights


def limb_maps(keypoints: torch.Tensor, limbs: list[tuple[int, int]], image_hw: tuple[int, int],
              map_hw: tuple[int, int], sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-rigid part maps [B, L, h, w]: a band of Gaussian profile (sigma in cells) along the
    segment joining each limb's two keypoints; weight 1 where both ends are visible."""
    x, y, ys, xs = _grid(keypoints, image_hw, map_hw)
    a, b = torch.tensor([l[0] for l in limbs]), torch.tensor([l[1] for l in limbs])
    ax, ay, bx, by = x[:, a], y[:, a], x[:, b], y[:, b]                      # [B, L]
    px = xs.view(1, 1, 1, -1)
    py = ys.view(1, 1, -1, 1)
    dx, dy = (bx - ax)[..., None, None], (by - ay)[..., None, None]
    length2 = (dx**2 + dy**2).clamp_min(1e-6)
    t = (((px - ax[..., None, None]) * dx + (py - ay[..., None, None]) * dy) / length2).clamp(0, 1)
    dist2 = (px - ax[..., None, None] - t * dx) ** 2 + (py - ay[..., None, None] - t * dy) ** 2
    maps = torch.exp(-dist2 / (2 * sigma**2))
    valid = _inside(keypoints, image_hw)
    weights = (valid[:, a] & valid[:, b]).to(keypoints.dtype)
    return maps * weights[..., None, None], weights


def box_maps(keypoints: torch.Tensor, groups: list[tuple[int, ...]], image_hw: tuple[int, int],
             map_hw: tuple[int, int], margin: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Rigid part maps [B, R, h, w]: 1 inside the box tightly containing a group's visible
    keypoints (grown by `margin` cells), 0 outside; weight 1 where at least two are visible."""
    x, y, ys, xs = _grid(keypoints, image_hw, map_hw)
    valid = _inside(keypoints, image_hw)
    big = torch.finfo(keypoints.dtype).max
    maps, weights = [], []
    for g in groups:
        idx = torch.tensor(g)
        vg = valid[:, idx]
        gx, gy = x[:, idx], y[:, idx]
        x0 = torch.where(vg, gx, torch.full_like(gx, big)).amin(1) - margin
        x1 = torch.where(vg, gx, torch.full_like(gx, -big)).amax(1) + margin
        y0 = torch.where(vg, gy, torch.full_like(gy, big)).amin(1) - margin
        y1 = torch.where(vg, gy, torch.full_like(gy, -big)).amax(1) + margin
        inside_x = (xs.view(1, -1) >= x0[:, None]) & (xs.view(1, -1) <= x1[:, None])   # [B, w]
        inside_y = (ys.view(1, -1) >= y0[:, None]) & (ys.view(1, -1) <= y1[:, None])   # [B, h]
        ok = vg.sum(1) >= 2
        m = (inside_y[:, :, None] & inside_x[:, None, :] & ok[:, None, None]).to(keypoints.dtype)
        maps.append(m)
        weights.append(ok.to(keypoints.dtype))
    return torch.stack(maps, 1), torch.stack(weights, 1)
