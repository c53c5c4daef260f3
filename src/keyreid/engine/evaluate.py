"""Evaluate a trained checkpoint on a dataset's test split and write a report beside it."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional

import torch

from keyreid.config import Config, save_config, to_dict
from keyreid.engine.checkpoint import load_checkpoint
from keyreid.engine.data import make_transforms, prepare_data
from keyreid.engine.trainer import evaluate_model, resolve_device
from keyreid.models.build import build_model
from keyreid.data.keypoints import get_skeleton
from keyreid.utils.io import atomic_write_text


def load_trained_model(cfg: Config, checkpoint: str | Path, device: torch.device):
    ck = load_checkpoint(checkpoint, device)
    skeleton = get_skeleton(ck["skeleton"]) if ck.get("skeleton") else None
    model_cfg = dataclasses.replace(cfg.model, pretrained=None)  # the checkpoint supplies every weight
    model = build_model(model_cfg, len(ck["label_map"]), skeleton).to(device)
    model.load_state_dict(ck["model"])
    return model.eval(), skeleton


def evaluate_checkpoint(cfg: Config, checkpoint: str | Path, output: Optional[str | Path] = None,
                        show_progress: bool = True) -> dict:
    device = resolve_device(cfg.device)
    model, skeleton = load_trained_model(cfg, checkpoint, device)
    data = prepare_data(cfg, need_keypoints=False)
    _, test_tf = make_transforms(cfg, skeleton, model.backbone.input_mean, model.backbone.input_std)
    t0 = time.time()
    metrics = evaluate_model(model, data.dataset.query, data.dataset.gallery, test_tf, cfg, device,
                             show_progress=show_progress, protocol=data.dataset.protocol)
    path = Path(output) if output else Path(checkpoint).with_suffix(".eval.json")
    report = {"checkpoint": str(checkpoint), "dataset": cfg.data.dataset, "root": cfg.data.root,
              "queries": len(data.dataset.query), "gallery": len(data.dataset.gallery),
              "distance": cfg.eval.distance, "flip": cfg.eval.flip, "rerank": cfg.eval.rerank,
              "protocol": data.dataset.protocol, "metrics": metrics, "seconds": round(time.time() - t0, 2), "config": to_dict(cfg),
              "path": str(path)}
    atomic_write_text(path, json.dumps(report, indent=2))
    save_config(cfg, path.with_suffix(".config.yaml"))
    return report
