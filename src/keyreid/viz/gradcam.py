"""Similarity Grad-CAM: which regions of two images made their embeddings similar.

The target is the cosine similarity S = cos(e_q, e_m) of the two images' embeddings (whatever the
head), differentiated at the last feature map A of the backbone (a forward hook; for the stripes
head, which runs its own copies of the last stage, that is the map before them). Two maps:

- "gradxact" (default): M(x, y) = sum_c dS/dA_c(x, y) * A_c(x, y), the first-order estimate of
  how much S drops when the features at (x, y) are removed. Heads that pool differently over
  space (kae heatmap pooling, aacn part attention, pabr bilinear pooling) get a map that follows
  where they look.
- "gradcam" (Selvaraju et al.): channel weights w_c = mean over (x, y) of dS/dA_c, M = sum_c w_c A_c.
  For average-pooled heads (bnneck, stripes' global branch) dS/dA is the same at every location,
  so both maps are equal.

Both are shown after ReLU (the regions that raised the similarity), upsampled to the input size.
Both images go through the model in one batch of two (eval mode: BatchNorm uses its running
statistics, so the pair does not influence each other)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw

from keyreid.utils.io import atomic_write

METHODS = ("gradxact", "gradcam")


@dataclass
class SimilarityCam:
    similarity: float               # cos(e_q, e_m)
    signed: np.ndarray              # [2, h, w] map before ReLU at feature-map resolution
    cams: np.ndarray                # [2, H, W] ReLU(map) upsampled to the input size
    heatmaps: Optional[np.ndarray]  # [2, K, hh, ww] predicted keypoint heatmaps (keypoint heads)


def feature_layer(model: nn.Module) -> nn.Module:
    """The module whose output the map is computed at: the backbone (its last feature map)."""
    if not hasattr(model, "backbone"):
        raise ValueError("similarity Grad-CAM needs a model with a .backbone (keyreid's ReIDModel)")
    return model.backbone


def similarity_cam(model: nn.Module, query: torch.Tensor, match: torch.Tensor,
                   method: str = "gradxact", layer: Optional[nn.Module] = None) -> SimilarityCam:
    """Maps for one preprocessed pair ([3, H, W] each) on `model` (forward -> ModelOutput)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    layer = layer if layer is not None else feature_layer(model)
    captured: list[torch.Tensor] = []

    def hook(module, inputs, output):
        # a leaf of its own: gradients stop here, and the weights need no requires_grad
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    was_training = model.training
    model.eval()
    handle = layer.register_forward_hook(hook)
    try:
        device = next(model.parameters()).device
        batch = torch.stack([query, match]).to(device)
        with torch.enable_grad():
            out = model(batch)
            emb = out.embedding.float()
            sim = F.cosine_similarity(emb[0:1], emb[1:2]).sum()
            (grad,) = torch.autograd.grad(sim, captured[-1])
    finally:
        handle.remove()
        model.train(was_training)
    act = captured[-1].detach().float()
    grad = grad.float()
    if method == "gradcam":
        signed = (grad.mean(dim=(-2, -1), keepdim=True) * act).sum(1)
    else:
        signed = (grad * act).sum(1)
    cams = F.interpolate(signed.relu().unsqueeze(1), size=tuple(batch.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0]
    heatmaps = out.heatmaps.detach().float().cpu().numpy() if out.heatmaps is not None else None
    return SimilarityCam(float(sim.detach()), signed.cpu().numpy(), cams.cpu().numpy(), heatmaps)


# ------------------------------------------------------------------------------------- picture
LABEL_H = 22   # text band above each panel
PAD = 6        # space between panels and around the picture


def panel_titles(has_heatmaps: bool) -> list[str]:
    titles = ["query", "query: similarity map", "match: similarity map", "match"]
    return titles + (["query: keypoints", "match: keypoints"] if has_heatmaps else [])


def panel_scale(height: int, min_height: int = 256) -> int:
    """Integer upscaling so that small re-ID crops (128x64) are readable."""
    return max(1, -(-min_height // height))


BAR_H = 10     # colour scale under the map panels (its labels take a LABEL_H below it)


def picture_size(image_hw: tuple[int, int], panels: int, scale: int) -> tuple[int, int]:
    """(height, width) of the PNG: one row of `panels` panels of the scaled input size, and
    the colour scales under the maps."""
    h, w = image_hw[0] * scale, image_hw[1] * scale
    return PAD + LABEL_H + h + PAD + LABEL_H + BAR_H + LABEL_H, PAD + panels * (w + PAD)


def _colour_scale(canvas: Image.Image, draw, x0: int, x1: int, y0: int, low: str, high: str, title: str) -> None:
    """A jet bar from x0 to x1 with its ends and meaning written under it."""
    ramp = _colour(np.linspace(0, 1, max(2, x1 - x0)))
    bar = np.repeat((ramp * 255).round().astype(np.uint8)[None], BAR_H, axis=0)
    canvas.paste(Image.fromarray(bar), (x0, y0))
    y = y0 + BAR_H + 3
    draw.text((x0, y), low, fill=(0, 0, 0))
    draw.text((x1 - 6 * len(high), y), high, fill=(0, 0, 0))
    middle = (x0 + x1) // 2 - 3 * len(title)
    draw.text((max(x0 + 6 * len(low) + 6, middle), y), title, fill=(0, 0, 0))


def _colour(values: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps["jet"](np.clip(values, 0, 1))[..., :3]


def _overlay(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (1 - alpha) * rgb + alpha * _colour(heat)


def _upsample(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0, 0].numpy()


def render_explanation(images_rgb: Sequence[np.ndarray], cam: SimilarityCam, out_png: str | Path,
                       min_height: int = 256) -> Path:
    """Query, its map, the match's map, the match (and the predicted keypoint heatmaps, max over
    keypoints, of both when the head has them) side by side in one PNG.

    images_rgb: the two preprocessed images as float RGB [H, W, 3] in [0, 1]. Both maps share one
    colour scale (divided by the larger maximum), so the brighter map is the stronger one."""
    q, m = (np.clip(np.asarray(x, dtype=np.float64), 0, 1) for x in images_rgb)
    hw = q.shape[:2]
    top = max(float(cam.cams.max()), 1e-12)
    panels = [q, _overlay(q, cam.cams[0] / top), _overlay(m, cam.cams[1] / top), m]
    if cam.heatmaps is not None:
        for i, rgb in enumerate((q, m)):
            heat = _upsample(cam.heatmaps[i].max(0), hw)
            heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
            panels.append(_overlay(rgb, heat))
    scale = panel_scale(hw[0], min_height)
    height, width = picture_size(hw, len(panels), scale)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((PAD, PAD + 4), f"cosine similarity {cam.similarity:.4f}", fill=(0, 0, 0))
    for i, (panel, title) in enumerate(zip(panels, panel_titles(cam.heatmaps is not None))):
        x0, y0 = PAD + i * (hw[1] * scale + PAD), PAD + 2 * LABEL_H
        pic = Image.fromarray((panel * 255).round().astype(np.uint8))
        canvas.paste(pic.resize((hw[1] * scale, hw[0] * scale), Image.NEAREST), (x0, y0))
        draw.text((x0, y0 - LABEL_H + 6), title, fill=(0, 0, 0))
    # colour scales: the two Grad-CAM maps share one (0 .. the larger map's maximum), each
    # keypoint heatmap panel runs from its own minimum to its maximum
    pw = hw[1] * scale
    bar_y = PAD + 2 * LABEL_H + hw[0] * scale + PAD
    x_of = [PAD + i * (pw + PAD) for i in range(len(panels))]
    _colour_scale(canvas, draw, x_of[1], x_of[2] + pw, bar_y, "0", f"{top:.2g}", "Grad-CAM (one scale)")
    if cam.heatmaps is not None:
        _colour_scale(canvas, draw, x_of[4], x_of[5] + pw, bar_y, "min", "max", "keypoint heat")
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: canvas.save(tmp, format="PNG"))
    return out_png


__all__ = ["METHODS", "SimilarityCam", "feature_layer", "similarity_cam", "render_explanation",
           "picture_size", "panel_scale", "panel_titles"]
