"""A run folder holds one run: re-running into it either resumes that run with the config it was
trained with, or (--no-resume) sets the old run's files aside first, so that logs never mix two
runs and nothing of the old one is deleted."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Optional

from keyreid.config import Config, ConfigError, _build

# what a training run writes into its folder (eval reports belong to its checkpoints)
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.csv", "lambdas.csv", "tb")
RUN_PATTERNS = ("*.eval.json", "*.eval.config.yaml")

# settings that do not change what is computed: they may differ freely on resume
IGNORED = {"output_dir", "device", "data.workers", "data.test_batch_size"}
# settings that decide which weights (and optimizer slots) exist: a run never resumes across them
ARCHITECTURE = {"model.backbone", "model.head", "model.head_options", "model.last_stride",
                "loss.id_loss", "regularizer.adaptive_l2", "optim.optimizer"}


def _flat(cfg: Config) -> dict:
    out = {}
    for key, value in dataclasses.asdict(cfg).items():
        if dataclasses.is_dataclass(getattr(cfg, key)):  # a section: one level down
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def config_changes(saved: dict, cfg: Config, where: str) -> tuple[list[str], list[str]]:
    """(architecture changes, other changes) between a checkpoint's stored config and `cfg`, one
    `key: old (checkpoint) -> new (now)` string each. Keys added to keyreid since the checkpoint
    was written compare at their defaults."""
    old = _flat(_build(Config, saved, where))
    new = _flat(cfg)
    arch, other = [], []
    for key in new:
        if key in IGNORED or old.get(key) == new[key]:
            continue
        line = f"{key}: {old.get(key)!r} (checkpoint) -> {new[key]!r} (now)"
        (arch if key in ARCHITECTURE else other).append(line)
    return arch, other


def check_resume_config(saved: Optional[dict], cfg: Config, checkpoint: Path,
                        allow_change: bool) -> list[str]:
    """Refuse to resume `checkpoint` with a config that differs from the one it was trained with
    (a diff, one line per key), unless allow_change and no key decides the architecture. Returns
    the accepted changes."""
    if saved is None:
        return []
    arch, other = config_changes(saved, cfg, f"{checkpoint}: stored config")
    if arch:
        raise ConfigError(
            f"{checkpoint}: cannot resume, the model differs from the one this run trained "
            f"(a different architecture can never resume):\n  " + "\n  ".join(arch + other) +
            f"\nuse another output_dir, or --no-resume to start over "
            f"(the old run's files are moved to {cfg.output_dir}/previous-N/)")
    if other and not allow_change:
        raise ConfigError(
            f"{checkpoint}: the config differs from the one this run was trained with:\n  " +
            "\n  ".join(other) +
            "\nrun again with --allow-config-change to resume with the new values, or --no-resume "
            "to start over (the old run's files are set aside, not deleted)")
    return other


def previous_run_files(out_dir: Path) -> list[Path]:
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    for pattern in RUN_PATTERNS:
        found += sorted(p for p in out_dir.glob(pattern) if p not in found)
    return found


def set_aside_previous_run(out_dir: Path) -> Optional[Path]:
    """Move an earlier run's files into OUT/previous-N (the first free N) and return that folder;
    None when there is nothing to move. Renames inside one folder: instant, nothing copied."""
    files = previous_run_files(out_dir)
    if not files:
        return None
    n = 1
    while (out_dir / f"previous-{n}").exists():
        n += 1
    target = out_dir / f"previous-{n}"
    target.mkdir()
    for path in files:
        shutil.move(str(path), str(target / path.name))
    return target
