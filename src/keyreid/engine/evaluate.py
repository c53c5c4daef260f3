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

from keyreid.config import Config, save_config, to_dict
from keyreid.engine.data import prepare_data
from keyreid.evaluation.model_metrics import evaluate_model, reid_metrics, test_distances
from keyreid.inference import load_model
from keyreid.utils.io import atomic_write_text


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
