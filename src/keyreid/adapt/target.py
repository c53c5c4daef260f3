"""The unlabelled target set of an adaptation run, with its true labels sealed away.

A target dataset may happen to have identity labels (the synthetic target site, a public set
used as a new site). They must never reach training. So the images training sees are copies
with pid -1 (`TargetSet.images`), made once when the set is read; the true pids live only in a
`_SealedTruth`, which has one method, `quality(pseudo_labels)`, returning numbers for
metrics.csv. Pseudo-labelled samples are made from `images` (never from the dataset's own
samples) by `labelled_by`. tests/test_adapt_training.py checks that permuting the truth changes
no weight.

The target's query / gallery split, where the dataset has one, is only evaluated (reported in
metrics.csv and by `keyreid eval`), never trained on or used to choose a checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from keyreid.adapt.config import TargetSettings
from keyreid.config import Config, DataConfig
from keyreid.data.records import Sample
from keyreid.data.keypoints import Skeleton
from keyreid.engine.data import prepare_data

__all__ = ["TargetSet", "load_target", "pseudo_label_quality"]

UNKNOWN = -1


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def pseudo_label_quality(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pseudo-labels (-1: outlier) against true pids: ARI and NMI over all images (outliers as
    clusters of one), pairwise precision (same-cluster pairs that are one person) and recall
    (one person's pairs that share a cluster), and how many true identities there are."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels, truth = np.asarray(labels), np.asarray(truth)
    singles = np.where(labels < 0, labels.max(initial=0) + 1 + np.arange(len(labels)), labels)
    clustered = labels >= 0
    _, joint = np.unique(np.stack([labels[clustered], truth[clustered]]), axis=1, return_counts=True)
    together = _pairs(joint)
    predicted = _pairs(np.bincount(labels[clustered])) if clustered.any() else 0.0
    actual = _pairs(np.unique(truth, return_counts=True)[1])
    return {"ari": float(adjusted_rand_score(truth, singles)),
            "nmi": float(normalized_mutual_info_score(truth, singles)),
            "pair_precision": together / predicted if predicted else float("nan"),
            "pair_recall": together / actual if actual else float("nan"),
            "true_ids": float(len(np.unique(truth)))}


class _SealedTruth:
    """True pids of the target images, readable only as pseudo-label quality numbers."""

    __slots__ = ("_pids",)

    def __init__(self, pids: np.ndarray):
        self._pids = np.array(pids, dtype=np.int64)
        self._pids.setflags(write=False)

    def quality(self, labels: np.ndarray) -> dict[str, float]:
        return pseudo_label_quality(labels, self._pids)


@dataclass
class TargetSet:
    root: Path
    images: list[Sample]                 # what training sees: every pid is -1
    skeleton: Optional[Skeleton]
    query: list[Sample]                  # labelled test split, evaluation only (may be empty)
    gallery: list[Sample]
    protocol: str = "reid"
    _truth: Optional[_SealedTruth] = dataclasses.field(default=None, repr=False)

    @property
    def has_truth(self) -> bool:
        return self._truth is not None

    @property
    def has_keypoints(self) -> bool:
        return any(s.keypoints is not None for s in self.images)

    @property
    def cameras(self) -> Optional[np.ndarray]:
        """Camera per image where the dataset knows them, else None."""
        if any(s.meta.get("camera_known") is False for s in self.images):
            return None
        return np.array([s.camid for s in self.images])

    def audit(self, labels: np.ndarray) -> dict[str, float]:
        """Pseudo-label quality against the truth ({} when the target has none)."""
        return self._truth.quality(labels) if self._truth is not None else {}

    def labelled_by(self, labels: np.ndarray) -> list[Sample]:
        """The clustered images with their pseudo-label as pid (outliers left out)."""
        return [dataclasses.replace(s, pid=int(y)) for s, y in zip(self.images, labels) if y >= 0]


def load_target(settings: TargetSettings, seed: int, notify: Callable[[str], None]) -> TargetSet:
    """Read the target's training split (unlabelled), its keypoints (sidecar, optional) and its
    test split; unreadable images and wrong layouts are the data layer's one-line errors."""
    cfg = Config(seed=seed, data=DataConfig(dataset=settings.dataset, root=settings.root,
                                            options=dict(settings.options), sidecar=settings.sidecar,
                                            allow_missing_keypoints=True, val_identities=0.0))
    data = prepare_data(cfg, need_keypoints=False, notify=notify)
    ds = data.dataset
    pids = np.array([s.pid for s in ds.train], dtype=np.int64)
    truth = _SealedTruth(pids) if len(pids) and (pids >= 0).all() and settings.dataset != "unlabelled" else None
    images = [dataclasses.replace(s, pid=UNKNOWN, meta={k: v for k, v in s.meta.items()
                                                         if k not in ("identity", "orig_pid")})
              for s in ds.train]
    return TargetSet(Path(ds.root), images, data.skeleton, list(ds.query), list(ds.gallery),
                     ds.protocol, truth)
