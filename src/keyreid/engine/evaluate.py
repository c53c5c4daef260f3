"""Evaluate a trained checkpoint on a dataset's test split and write a report beside it.

The checkpoint decides the model (architecture, input size, normalisation): the config only
names the data and the evaluation settings, and where its model section disagrees with the
checkpoint the difference is named in a warning, never silently applied."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from keyreid.config import Config, save_config, to_dict
from keyreid.engine.data import prepare_data
from keyreid.evaluation.split import reid_metrics, retrieval_metrics, split_distances
from keyreid.inference import extract_features, load_model
from keyreid.utils.io import atomic_write_text


@torch.no_grad()
def test_distances(model: torch.nn.Module, query, gallery, transform, cfg: Config,
                   device: torch.device, show_progress: bool = False) -> np.ndarray:
    """A model's features -> query x gallery distance matrix (flip averaging and re-ranking per
    config)."""
    ec = cfg.eval
    qf = extract_features(model, query, transform, cfg.data.test_batch_size, 0, device, ec.flip,
                          show_progress=show_progress, description="query features")
    gf = extract_features(model, gallery, transform, cfg.data.test_batch_size, 0, device, ec.flip,
                          show_progress=show_progress, description="gallery features")
    return split_distances(qf, gf, ec)


def evaluate_model(model: torch.nn.Module, query, gallery, transform, cfg: Config,
                   device: torch.device, show_progress: bool = False, protocol: str = "reid") -> dict:
    """A model on a split: features -> distances -> metrics (validation and `keyreid eval`).
    protocol "reid": query vs gallery, CMC / mAP / mINP; "retrieval" (CUB, Cars196): every image
    of query + gallery (each image once) against all others, Recall@K / MAP@R / NMI. `score` is
    the number best checkpoints are chosen on."""
    if protocol == "retrieval":
        seen, images = set(), []
        for s in (*query, *gallery):
            if s.path not in seen:
                seen.add(s.path)
                images.append(s)
        feats = extract_features(model, images, transform, cfg.data.test_batch_size, 0, device,
                                 cfg.eval.flip, show_progress=show_progress, description="features")
        return retrieval_metrics(feats, np.array([s.pid for s in images]), cfg.eval.distance)
    if protocol != "reid":
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use reid or retrieval")
    distmat = test_distances(model, query, gallery, transform, cfg, device, show_progress)
    out = reid_metrics(distmat, query, gallery, cfg.eval.max_rank)
    out["score"] = out["mAP"]
    return out


def config_differences(cfg: Config, card: dict) -> list[str]:
    """`key: config value != checkpoint value` for the model and input settings that differ."""
    diffs = []
    mine = dataclasses.asdict(dataclasses.replace(cfg.model, pretrained=None))
    for key, value in card["model"].items():
        if mine.get(key) != value:
            diffs.append(f"model.{key}: {mine.get(key)!r} (config) != {value!r} (checkpoint)")
    for key in ("height", "width"):
        if getattr(cfg.data, key) != card["input"][key]:
            diffs.append(f"data.{key}: {getattr(cfg.data, key)!r} (config) != "
                         f"{card['input'][key]!r} (checkpoint)")
    return diffs


def evaluate_checkpoint(cfg: Config, checkpoint: str | Path, output: Optional[str | Path] = None,
                        show_progress: bool = True, warn: Callable[[str], None] = print) -> dict:
    loaded = load_model(checkpoint, cfg.device, config=cfg)
    diffs = config_differences(cfg, loaded.card)
    if diffs:
        warn(f"warning: {checkpoint} was trained with other model settings; the checkpoint's are "
             f"used: {'; '.join(diffs)}")
    data = prepare_data(cfg, need_keypoints=False)
    t0 = time.time()
    query, gallery, distmat = data.dataset.query, data.dataset.gallery, None
    if data.dataset.protocol == "reid":  # keep the distances: ranked lists for `keyreid viz ranked`
        distmat = test_distances(loaded.model, query, gallery, loaded.transform, cfg, loaded.device,
                                 show_progress)
        metrics = reid_metrics(distmat, query, gallery, cfg.eval.max_rank)
        metrics["score"] = metrics["mAP"]
    else:
        metrics = evaluate_model(loaded.model, query, gallery, loaded.transform, cfg, loaded.device,
                                 show_progress=show_progress, protocol=data.dataset.protocol)
    path = Path(output) if output else Path(checkpoint).with_suffix(".eval.json")
    ranked = None
    if distmat is not None:
        from keyreid.viz.ranking import save_ranked

        ranked = str(save_ranked(path.with_suffix(".ranked.npz"), distmat, query, gallery, cfg.data.root))
    report = {"checkpoint": str(checkpoint), "fingerprint": loaded.fingerprint,
              "dataset": cfg.data.dataset, "root": cfg.data.root,
              "queries": len(data.dataset.query), "gallery": len(data.dataset.gallery),
              "distance": cfg.eval.distance, "flip": cfg.eval.flip, "rerank": cfg.eval.rerank,
              "protocol": data.dataset.protocol, "metrics": metrics,
              "seconds": round(time.time() - t0, 2), "config_differences": diffs,
              "config": to_dict(cfg), "path": str(path), "ranked": ranked}
    atomic_write_text(path, json.dumps(report, indent=2))
    save_config(cfg, path.with_suffix(".config.yaml"))
    return report
