"""Checks of a config against what is installed and what the data holds, run before any work:
a name no registry knows, a device this machine lacks, a batch the training set cannot fill, a
validation split that cannot be scored. Each is one ConfigError naming the key, found in
seconds instead of after an epoch."""

from __future__ import annotations

from pathlib import Path

from keyreid.config import Config, ConfigError
from keyreid.inference.device import resolve_device


def check_names(cfg: Config, model: bool = True) -> None:
    """model.head, model.backbone and data.dataset against their registries; the device;
    model.pretrained when it names a file. `model=False` for eval, where the checkpoint decides."""
    from keyreid.data.datasets import dataset_names
    from keyreid.models.backbones import check_backbone_name
    from keyreid.models.heads import head_names

    resolve_device(cfg.device)
    if cfg.data.dataset not in dataset_names():
        raise ConfigError(f"data.dataset={cfg.data.dataset!r} is not a known dataset; use one of: "
                          f"{', '.join(dataset_names())}")
    if not model:
        return
    if cfg.model.head not in head_names():
        raise ConfigError(f"model.head={cfg.model.head!r} is not a known head; use one of: "
                          f"{', '.join(head_names())}")
    check_backbone_name(cfg.model.backbone)
    pre = cfg.model.pretrained
    if pre is not None and pre not in ("imagenet", "offline") and not Path(pre).is_file():
        raise ConfigError(f"model.pretrained={pre!r}: no such weights file; use null, imagenet, "
                          "offline or the path of a state dict")


def check_training_data(cfg: Config, train_pids: list[int], val_query: list, val_gallery: list,
                        protocol: str) -> None:
    """What the prepared training data must allow: P identities per batch, a validation split
    whose queries have a true match, re-ranking's k1 neighbours inside the validation set."""
    n_ids = len(set(train_pids))
    held = " (after holding out data.val_identities for validation)" if cfg.data.val_identities else ""
    if n_ids < cfg.data.p:
        raise ConfigError(f"data.p={cfg.data.p}: PK batches need at least {cfg.data.p} training "
                          f"identities, {cfg.data.root} has {n_ids}{held}; lower data.p")
    if not val_query or not cfg.eval.every:
        return
    if protocol == "reid":
        # the re-ID protocol ignores same-identity images from the query's own camera
        scorable = sum(any(g.pid == q.pid and g.camid != q.camid for g in val_gallery) for q in val_query)
        if scorable == 0:
            raise ConfigError(f"data.val_identities={cfg.data.val_identities}: no held-out identity "
                              f"has images from two cameras, so validation cannot score anything "
                              f"(data without camera ids?); set data.val_identities=0 or give the "
                              f"dataset camera ids")
    n = len(val_query) + len(val_gallery)
    if cfg.eval.rerank and n < cfg.eval.rerank_k1 + 1:
        raise ConfigError(f"eval.rerank_k1={cfg.eval.rerank_k1}: re-ranking needs more than "
                          f"{cfg.eval.rerank_k1} validation images, the held-out identities have {n}; "
                          f"lower eval.rerank_k1 or raise data.val_identities")
