"""A run folder holds one run: re-running into it either resumes that run with the config it was
trained with, or (--no-resume) sets the old run's files aside first, so that logs never mix two
runs and nothing of the old one is deleted. Used by every method of the training loop."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

from keyreid.config import Config, ConfigError, _build

# what a training run writes into its folder (eval reports belong to its checkpoints)
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.csv", "lambdas.csv", "tb", "samples")
RUN_PATTERNS = ("*.eval.json", "*.eval.config.yaml")

# re-ID settings that do not change what is computed: they may differ freely on resume
IGNORED = {"output_dir", "device", "data.workers", "data.test_batch_size"}
# re-ID settings that decide which weights (and optimizer slots) exist: never resumed across
ARCHITECTURE = {"model.backbone", "model.head", "model.head_options", "model.last_stride",
                "loss.id_loss", "regularizer.adaptive_l2", "optim.optimizer"}


def flat_values(values: Any, prefix: str = "") -> dict:
    """`section.key` -> value for a config (dataclass) or mapping; nested non-empty mappings
    (head_options, method_options) key by key, so a diff names the one option that changed."""
    if dataclasses.is_dataclass(values):
        values = dataclasses.asdict(values)
    out = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_values(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v   # a tuple from code equals a YAML list
    return out


def _under(key: str, names: Iterable[str]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def config_diff(old: dict, new: dict, ignored: Iterable[str], architecture: Iterable[str]
                ) -> tuple[list[str], list[str]]:
    """(architecture changes, other changes) between two flat configs, one
    `key: old (checkpoint) -> new (now)` string each."""
    arch, other = [], []
    for key in [*new, *(k for k in old if k not in new)]:
        if _under(key, ignored) or old.get(key, "(unset)") == new.get(key, "(unset)"):
            continue
        line = f"{key}: {old.get(key, '(unset)')!r} (checkpoint) -> {new.get(key, '(unset)')!r} (now)"
        (arch if _under(key, architecture) else other).append(line)
    return arch, other


def config_changes(saved: dict, cfg: Config, where: str) -> tuple[list[str], list[str]]:
    """(architecture changes, other changes) between a re-ID checkpoint's stored config and `cfg`.
    Keys added to keyreid since the checkpoint was written compare at their defaults."""
    return config_diff(flat_values(_build(Config, saved, where)), flat_values(cfg), IGNORED, ARCHITECTURE)


def refuse_changes(checkpoint: Path, output_dir: str, arch: list[str], other: list[str], allow_change: bool,
                   what: str = "the model differs from the one this run trained") -> list[str]:
    """The resume rule of every method: never across an architecture change; other changes only
    with --allow-config-change. Returns the accepted changes."""
    if arch:
        raise ConfigError(
            f"{checkpoint}: cannot resume, {what} (a different architecture can never resume):\n  "
            + "\n  ".join(arch + other) +
            f"\nuse another output_dir, or --no-resume to start over "
            f"(the old run's files are moved to {output_dir}/previous-N/)")
    if other and not allow_change:
        raise ConfigError(
            f"{checkpoint}: the config differs from the one this run was trained with:\n  " +
            "\n  ".join(other) +
            "\nrun again with --allow-config-change to resume with the new values, or --no-resume "
            "to start over (the old run's files are set aside, not deleted)")
    return other


def check_resume_config(saved: Optional[dict], cfg: Config, checkpoint: Path,
                        allow_change: bool) -> list[str]:
    """Refuse to resume `checkpoint` with a config that differs from the one it was trained with
    (a diff, one line per key), unless allow_change and no key decides the architecture. Returns
    the accepted changes."""
    if saved is None:
        return []
    arch, other = config_changes(saved, cfg, f"{checkpoint}: stored config")
    return refuse_changes(checkpoint, cfg.output_dir, arch, other, allow_change)


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


__all__ = ["ARCHITECTURE", "IGNORED", "check_resume_config", "config_changes", "config_diff", "flat_values",
           "previous_run_files", "refuse_changes", "set_aside_previous_run"]
