"""Training curves from the trainer's metrics.csv, and the adaptive L2 lambdas from lambdas.csv.

Both files are written by `keyreid.engine.trainer` through `CSVLog`: metrics.csv has one row per
epoch (epoch, lr, seconds, images, the loss parts, acc, loss, lambda_mean/min/max when a
regularizer is on, val_* on evaluated epochs); lambdas.csv has one row per (epoch, parameter).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from keyreid.viz.report import save_figure

__all__ = ["read_metrics", "loss_parts", "read_lambdas", "select_lambda_tensors",
           "plot_training_curves", "plot_lambdas"]

# metrics.csv columns that are not loss parts; every other numeric column is one (id, metric,
# center, heatmap, l2, or whatever a keypoint head names its losses).
_NOT_PARTS = {"epoch", "lr", "seconds", "images", "acc", "loss"}


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan  # empty cells: a column the row did not have (e.g. val_* off-epochs)


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """metrics.csv as {column: float64 array}, rows sorted by epoch; NaN where a cell is empty.

    A resumed run may have rewritten epochs; the last row of an epoch wins.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_epoch: dict[float, dict] = {}
    for r in rows:
        e = _float(r.get("epoch"))
        if not math.isnan(e):
            by_epoch[e] = r
    epochs = sorted(by_epoch)
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c is not None and c not in columns]
    return {c: np.array([_float(by_epoch[e].get(c)) for e in epochs], dtype=np.float64)
            for c in columns}


def loss_parts(table: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the loss-part columns of a metrics table, in column order."""
    return [c for c, v in table.items()
            if c not in _NOT_PARTS and not c.startswith(("val_", "lambda_"))
            and np.isfinite(v).any()]


def _has(table: Mapping[str, np.ndarray], col: str) -> bool:
    return col in table and bool(np.isfinite(table[col]).any())


def _line(ax, x, y, **kw) -> None:
    ok = np.isfinite(y)
    # evaluation runs every few epochs only: markers keep sparse points visible
    if ok.sum() < len(y) or ok.sum() <= 3:
        kw.setdefault("marker", "o")
        kw.setdefault("markersize", 3)
    ax.plot(x[ok], y[ok], **kw)


def plot_training_curves(runs: Mapping[str, str | Path], out_png: str | Path,
                         title: Optional[str] = None) -> Path:
    """Loss, its parts, train accuracy and validation mAP/R1 against epoch, one colour per run.

    runs: {run label (e.g. "bnneck", "kae", "kae+adaptiveL2"): path to its metrics.csv}.
    Panels without data in any run (no val_* columns, no acc) are left out; epochs are shown
    1-based (the CSV stores the 0-based epoch index).
    """
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("plot_training_curves needs at least one run")
    tables = {label: read_metrics(p) for label, p in runs.items()}
    panels = ["loss"]
    if any(len(loss_parts(t)) > 0 for t in tables.values()):
        panels.append("parts")
    if any(_has(t, "acc") for t in tables.values()):
        panels.append("acc")
    if any(_has(t, "val_mAP") or _has(t, "val_R1") for t in tables.values()):
        panels.append("val")

    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colours = {label: f"C{i % 10}" for i, label in enumerate(tables)}
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
    part_styles: dict[str, object] = {}  # one line style per part name, shared by all runs

    for ax, panel in zip(axes, panels):
        for label, t in tables.items():
            if "epoch" not in t or len(t["epoch"]) == 0:
                continue
            x = t["epoch"] + 1
            c = colours[label]
            if panel == "loss" and _has(t, "loss"):
                _line(ax, x, t["loss"], color=c, label=label)
            elif panel == "parts":
                for part in loss_parts(t):
                    style = part_styles.setdefault(part, styles[len(part_styles) % len(styles)])
                    _line(ax, x, t[part], color=c, linestyle=style)
            elif panel == "acc" and _has(t, "acc"):
                _line(ax, x, 100 * t["acc"], color=c, label=label)
            elif panel == "val":
                if _has(t, "val_mAP"):
                    _line(ax, x, 100 * t["val_mAP"], color=c, label=f"{label} mAP")
                if _has(t, "val_R1"):
                    _line(ax, x, 100 * t["val_R1"], color=c, linestyle="--", label=f"{label} R1")
        ax.set_xlabel("epoch")
        ax.set_title({"loss": "total training loss", "parts": "loss parts (weighted)",
                      "acc": "train identity accuracy (%)", "val": "validation (%)"}[panel])
        if panel in ("loss", "parts"):
            ys = [ln.get_ydata() for ln in ax.get_lines()]
            if ys and all(len(y) and np.all(np.asarray(y) > 0) for y in ys):
                hi = max(np.max(y) for y in ys)
                lo = min(np.min(y) for y in ys)
                if hi / lo > 50:  # parts differ by orders of magnitude (l2 vs id loss)
                    ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if panel == "parts":
            # runs x parts lines: a legend of colours (runs) and one of line styles (parts)
            from matplotlib.lines import Line2D
            handles = [Line2D([], [], color=colours[r], label=r) for r in tables]
            handles += [Line2D([], [], color="k", linestyle=st, label=p)
                        for p, st in part_styles.items()]
            ax.legend(handles=handles, fontsize=7, loc="best")
        elif ax.get_lines():
            ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)


def read_lambdas(path: str | Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """lambdas.csv as (epochs [E], parameter names in first-seen order [P], lambdas [E, P]).

    NaN where a parameter has no value at an epoch; a duplicated (epoch, parameter) row (a resumed
    run re-logging an epoch) keeps its last value.
    """
    values: dict[tuple[float, str], float] = {}
    names: dict[str, None] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            e, name = _float(r.get("epoch")), r.get("parameter")
            if math.isnan(e) or not name:
                continue
            names.setdefault(name)
            values[(e, name)] = _float(r.get("lambda"))
    epochs = np.array(sorted({e for e, _ in values}), dtype=np.float64)
    order = list(names)
    table = np.full((len(epochs), len(order)), np.nan)
    row = {e: i for i, e in enumerate(epochs)}
    col = {n: j for j, n in enumerate(order)}
    for (e, n), v in values.items():
        table[row[e], col[n]] = v
    return epochs, order, table


def select_lambda_tensors(names: Sequence[str], final: np.ndarray, top: int) -> list[int]:
    """Indices of the tensors worth naming: the first (first conv) and the last (head / last
    layer) in model order, then those whose final lambda lies furthest from the median (in log
    space when all are positive), up to `top` in all."""
    n = len(names)
    if top <= 0 or n == 0:
        return []
    chosen = [0] if n else []
    if n > 1 and top > 1:
        chosen.append(n - 1)
    final = np.asarray(final, dtype=np.float64)
    ok = np.isfinite(final)
    if ok.any():
        v = np.log(final) if np.all(final[ok] > 0) else final
        dev = np.abs(v - np.median(v[ok]))
        dev[~ok] = -np.inf
        for j in np.argsort(-dev, kind="stable"):
            if len(chosen) >= top:
                break
            if int(j) not in chosen and np.isfinite(dev[j]):
                chosen.append(int(j))
    return chosen[:top]


def _short(name: str, limit: int = 38) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def plot_lambdas(lambdas_csv: str | Path, out_png: str | Path, top: int = 5,
                 names: Optional[Sequence[str]] = None, title: Optional[str] = None) -> Path:
    """The adaptive L2 lambdas over epochs: mean over tensors, min-max band, and `top` named
    tensors (first conv, last layer, then the most extreme ones; or exactly `names`).

    Log y scale when every lambda is positive and they span more than a factor of 20.
    """
    from matplotlib.figure import Figure

    epochs, params, table = read_lambdas(lambdas_csv)
    if len(epochs) == 0:
        raise ValueError(f"{lambdas_csv}: no lambda rows")
    x = epochs + 1
    with np.errstate(all="ignore"):  # an epoch row of all-NaN would warn
        mean = np.nanmean(table, axis=1)
        lo = np.nanmin(table, axis=1)
        hi = np.nanmax(table, axis=1)
    if names is not None:
        missing = [n for n in names if n not in params]
        if missing:
            raise KeyError(f"not in {lambdas_csv}: {missing}")
        picks = [params.index(n) for n in names]
    else:
        picks = select_lambda_tensors(params, table[-1], top)

    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(x, lo, hi, color="0.8", alpha=0.6, label=f"min-max over {len(params)} tensors")
    _line(ax, x, mean, color="k", linewidth=2, label="mean")
    for i, j in enumerate(picks):
        _line(ax, x, table[:, j], color=f"C{i % 10}", linewidth=1.2, label=_short(params[j]))
    finite = table[np.isfinite(table)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("lambda")
    ax.set_title(title or "adaptive L2 lambdas")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, out_png)
