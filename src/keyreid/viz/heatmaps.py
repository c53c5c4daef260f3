"""Predicted keypoint heatmaps over their input images.

Coordinates follow keyreid.data.keypoints: pixel-centre coordinates, x = column, y = row. Heatmap
cell j covers input pixels [j*stride, (j+1)*stride), so its centre lies at (j + 0.5)*stride - 0.5,
and the upsampled overlay is drawn with exactly that extent so peaks and markers coincide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from keyreid.data.keypoints import Skeleton
from keyreid.viz.report import save_figure

__all__ = ["heatmap_argmax_xy", "heatmap_peaks_xy", "denormalize_images", "keypoint_colours", "plot_heatmap_overlays"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _strides(image_hw: tuple[int, int], map_hw: tuple[int, int],
             stride: Optional[float | tuple[float, float]]) -> tuple[float, float]:
    if stride is None:  # the maps cover the whole image
        return image_hw[0] / map_hw[0], image_hw[1] / map_hw[1]
    if isinstance(stride, (tuple, list)):
        return float(stride[0]), float(stride[1])
    return float(stride), float(stride)


def heatmap_argmax_xy(heatmaps, image_hw: tuple[int, int],
                      stride: Optional[float | tuple[float, float]] = None) -> np.ndarray:
    """Argmax of each heatmap [..., h, w] in image pixel-centre coordinates.

    Returns [..., 3] of (x, y, peak value). stride (per axis (sy, sx) or one number) defaults to
    image size / map size; the first maximum wins ties (numpy argmax order).
    """
    hm = _np(heatmaps).astype(np.float64)
    if hm.ndim < 2:
        raise ValueError(f"heatmaps need at least 2 dims [..., h, w], got shape {hm.shape}")
    h, w = hm.shape[-2:]
    sy, sx = _strides(image_hw, (h, w), stride)
    flat = hm.reshape(*hm.shape[:-2], h * w)
    idx = flat.argmax(-1)
    peak = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    row, col = np.divmod(idx, w)
    x = (col + 0.5) * sx - 0.5
    y = (row + 0.5) * sy - 0.5
    return np.stack([x, y, peak], axis=-1)


def heatmap_peaks_xy(heatmaps, image_hw: tuple[int, int],
                     stride: Optional[float | tuple[float, float]] = None) -> np.ndarray:
    """heatmap_argmax_xy refined to sub-pixel precision: per axis, a parabola through the peak
    and its two neighbours, fitted to the log of the map where all three are positive (exact for
    a Gaussian blob, the shape the heatmap losses train for; DARK, Zhang et al. 2020) and to the
    map itself otherwise; the shift is at most half a map cell. Without it a keypoint snaps to
    the map's grid (8 image pixels for a stride-8 head) and a skeleton becomes a tangle."""
    hm = _np(heatmaps).astype(np.float64)
    coarse = heatmap_argmax_xy(hm, image_hw, stride)
    h, w = hm.shape[-2:]
    sy, sx = _strides(image_hw, (h, w), stride)
    flat = hm.reshape(-1, h, w)
    idx = flat.reshape(len(flat), -1).argmax(-1)
    rows, cols = np.divmod(idx, w)
    shifts = np.zeros((len(flat), 2))
    for n, (r, c) in enumerate(zip(rows, cols)):
        m = flat[n]
        if c > 0 and c < w - 1:
            shifts[n, 0] = _parabola_shift(m[r, c - 1], m[r, c], m[r, c + 1])
        if r > 0 and r < h - 1:
            shifts[n, 1] = _parabola_shift(m[r - 1, c], m[r, c], m[r + 1, c])
    out = coarse.reshape(-1, 3).copy()
    out[:, 0] += shifts[:, 0] * sx
    out[:, 1] += shifts[:, 1] * sy
    return out.reshape(coarse.shape)


def _parabola_shift(left: float, centre: float, right: float) -> float:
    if left > 0 and centre > 0 and right > 0:
        left, centre, right = np.log(left), np.log(centre), np.log(right)
    curvature = left - 2 * centre + right
    if curvature >= 0:  # flat or not a maximum: keep the grid cell
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def denormalize_images(images, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised [N, 3, H, W] tensors/arrays back to float RGB [N, H, W, 3] in [0, 1].

    mean/std on the 0-255 scale (any value above 1) are treated as such.
    """
    x = _np(images).astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got shape {x.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    x = x * s + m
    if m.max() > 1.0:
        x = x / 255.0
    return np.clip(x, 0.0, 1.0).transpose(0, 2, 3, 1)


def _as_rgb(images, mean, std) -> list[np.ndarray]:
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        return [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    if mean is None or std is None:
        raise ValueError("mean and std are needed to show normalised image tensors")
    return list(denormalize_images(images, mean, std))


def keypoint_colours(k: int) -> np.ndarray:
    """One distinct RGBA colour per keypoint index."""
    from matplotlib import colormaps

    if k <= 10:
        return colormaps["tab10"](np.arange(k))
    if k <= 20:
        return colormaps["tab20"](np.arange(k))
    return colormaps["hsv"](np.linspace(0, 1, k, endpoint=False))


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _overlay(ax, heat: np.ndarray, map_hw, strides, cmap: str, alpha: float) -> None:
    """Heat drawn over the image with opacity growing with the heat, so cold regions stay
    see-through and the image remains readable."""
    from matplotlib import colormaps

    v = _unit(heat)
    rgba = colormaps[cmap](v)
    rgba[..., 3] = alpha * np.sqrt(v)
    ax.imshow(rgba, interpolation="bilinear", extent=_extent(map_hw, strides))


def _extent(map_hw, strides) -> tuple[float, float, float, float]:
    # cell j spans input pixels [j*s, (j+1)*s): pixel centres are integers, so edges sit at -0.5
    (h, w), (sy, sx) = map_hw, strides
    return (-0.5, w * sx - 0.5, h * sy - 0.5, -0.5)


def plot_heatmap_overlays(images, heatmaps, skeleton: Skeleton, out_png: str | Path,
                          mean: Optional[Sequence[float]] = None,
                          std: Optional[Sequence[float]] = None, keypoints=None,
                          reduce: str = "max", detail: Optional[int] = 0, alpha: float = 0.7,
                          cmap: str = "jet", stride: Optional[float] = None,
                          max_images: int = 8, title: Optional[str] = None) -> Path:
    """Images with their predicted heatmaps overlaid, and one image's maps keypoint by keypoint.

    images: normalised [N, 3, H, W] (tensor or array; give mean/std) or a list of PIL images.
    heatmaps: [N, K, h, w] predictions for those images (any scale: each overlay is min-max
    normalised). keypoints: optional true keypoints [N, K, 3] in the same image coordinates,
    drawn as crosses joined to the predicted peak (visible ones only).
    reduce: "max" or "sum" over keypoints for the overview overlay. Predicted peaks are drawn as
    dots in each keypoint's colour with its index. detail: the image whose K maps get a panel of
    their own (None for none). At most `max_images` images are drawn.
    """
    from matplotlib.figure import Figure

    if reduce not in ("max", "sum"):
        raise ValueError(f"reduce must be 'max' or 'sum', got {reduce!r}")
    rgb = _as_rgb(images, mean, std)[:max_images]
    hm = _np(heatmaps).astype(np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {hm.shape}")
    n = len(rgb)
    if n == 0:
        raise ValueError("no images to draw")
    if hm.shape[0] < n:
        raise ValueError(f"{hm.shape[0]} heatmaps for {n} images")
    k = hm.shape[1]
    if k != skeleton.num_keypoints:
        raise ValueError(f"{k} heatmaps per image but skeleton {skeleton.name!r} has "
                         f"{skeleton.num_keypoints} keypoints")
    kp = None if keypoints is None else _np(keypoints).astype(np.float32)
    colours = keypoint_colours(k)
    if detail is not None and not 0 <= detail < n:
        raise ValueError(f"detail index {detail} outside 0..{n - 1}")

    img_h, img_w = rgb[0].shape[:2]
    aspect = img_h / img_w
    col_w = 2.2
    cols_k = min(k, 6)
    rows_k = -(-k // cols_k) if detail is not None else 0
    top_h = col_w * aspect + 0.5
    det_w = col_w * n / max(cols_k, 1)
    det_w = min(max(det_w, 1.3), 2.2)
    fig_w = max(col_w * n, det_w * cols_k)
    fig_h = top_h + rows_k * (det_w * aspect + 0.35) + (0.4 if detail is not None else 0)
    fig = Figure(figsize=(fig_w, fig_h), layout="constrained")
    if detail is not None:
        top, bottom = fig.subfigures(2, 1, height_ratios=[top_h, fig_h - top_h])
    else:
        top, bottom = fig, None

    axes = np.atleast_1d(top.subplots(1, n))
    for i, ax in enumerate(axes):
        img = rgb[i]
        maps = hm[i]
        strides = _strides(img.shape[:2], maps.shape[-2:], stride)
        merged = maps.max(0) if reduce == "max" else maps.sum(0)
        ax.imshow(img, interpolation="bilinear")
        _overlay(ax, merged, maps.shape[-2:], strides, cmap, alpha)
        pred = heatmap_argmax_xy(maps, img.shape[:2], strides)
        for j in range(k):
            x, y = pred[j, :2]
            if kp is not None and kp[i, j, 2] > 0:
                tx, ty = kp[i, j, :2]
                ax.plot([tx, x], [ty, y], color=colours[j], linewidth=0.8)
                ax.plot(tx, ty, marker="x", color="white", markersize=5, markeredgewidth=1.6)
                ax.plot(tx, ty, marker="x", color=colours[j], markersize=4, markeredgewidth=1.0)
            ax.plot(x, y, marker="o", color=colours[j], markeredgecolor="white",
                    markeredgewidth=0.6, markersize=4)
            ax.annotate(str(j), (x, y), xytext=(2, 2), textcoords="offset points", fontsize=5,
                        color="white", bbox=dict(boxstyle="round,pad=0.1", fc=colours[j],
                                                 ec="none", alpha=0.8))
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        ax.set_title(f"image {i}: {reduce} of {k} maps", fontsize=7)
        ax.set_axis_off()
    legend = "dots: predicted peaks (index)" + (", crosses: true keypoints" if kp is not None else "")
    if title:
        legend = f"{title}\n{legend}"
    top.suptitle(legend, fontsize=8)  # top is the whole figure when there is no detail panel

    if bottom is not None:
        img = rgb[detail]
        maps = hm[detail]
        strides = _strides(img.shape[:2], maps.shape[-2:], stride)
        pred = heatmap_argmax_xy(maps, img.shape[:2], strides)
        grey = img.mean(-1)  # a grey backdrop keeps the colormap readable
        det_axes = np.atleast_1d(bottom.subplots(rows_k, cols_k)).ravel()
        for j, ax in enumerate(det_axes):
            ax.set_axis_off()
            if j >= k:
                continue
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
            _overlay(ax, maps[j], maps.shape[-2:], strides, cmap, alpha)
            ax.plot(pred[j, 0], pred[j, 1], marker="o", color=colours[j],
                    markeredgecolor="white", markeredgewidth=0.6, markersize=4)
            if kp is not None and kp[detail, j, 2] > 0:
                ax.plot(kp[detail, j, 0], kp[detail, j, 1], marker="x", color="white",
                        markersize=4, markeredgewidth=1.2)
            ax.set_xlim(-0.5, img.shape[1] - 0.5)
            ax.set_ylim(img.shape[0] - 0.5, -0.5)
            ax.set_title(f"{j} {skeleton.keypoints[j]}\npeak {pred[j, 2]:.2f}", fontsize=6,
                         color=colours[j] * np.array([0.75, 0.75, 0.75, 1]))
        bottom.suptitle(f"image {detail}, keypoint by keypoint", fontsize=8)
    return save_figure(fig, out_png, dpi=110)
