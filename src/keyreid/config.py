"""Typed configuration: dataclasses with defaults in code, YAML files and `key=value` overrides at
the edge. Unknown keys and wrong types are errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from keyreid.errors import KeyreidError


class ConfigError(KeyreidError):
    pass


class ConfigValueError(ConfigError, ValueError):
    """A setting that cannot work (found where a ValueError used to be raised, which it still is)."""


@dataclass
class DataConfig:
    dataset: str = "market1501"
    root: str = "data/synth"
    options: dict = field(default_factory=dict)      # passed to the dataset adapter
    sidecar: Optional[str] = None                     # keypoint sidecar; default ROOT/keypoints.jsonl if present
    min_keypoint_confidence: float = 0.0              # below this a keypoint counts as invisible
    allow_missing_keypoints: bool = False             # train images without a sidecar entry (all invisible)
    height: int = 256
    width: int = 128
    flip_prob: float = 0.5
    pad: int = 10
    erase_prob: float = 0.5
    p: int = 16                                       # identities per batch
    k: int = 4                                        # images per identity
    workers: int = 2
    val_identities: float = 0.0                       # fraction of training ids held out for validation
    test_batch_size: int = 128


@dataclass
class ModelConfig:
    backbone: str = "resnet50"
    pretrained: Optional[str] = "imagenet"            # None | imagenet | offline | path to a state dict
    last_stride: int = 1
    channels_last: bool = False
    head: str = "bnneck"
    head_options: dict = field(default_factory=dict)   # head-specific, see each head's Options


@dataclass
class LossConfig:
    id_loss: str = "cross_entropy"                    # cross_entropy | normalized_softmax | none
    label_smoothing: float = 0.1
    id_weight: float = 1.0
    metric_loss: str = "triplet"                      # triplet | ephn_triplet | multi_similarity | none
    margin: Optional[float] = 0.3                     # None: soft-margin triplet
    metric_weight: float = 1.0
    center_weight: float = 0.0
    heatmap_weight: float = 1.0                       # auxiliary heatmap reconstruction (kae, aacn, pabr)
    heatmap_sigma: float = 1.5                        # Gaussian sigma in heatmap cells


@dataclass
class OptimConfig:
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4                        # ignored (set to 0) when adaptive L2 is on
    momentum: float = 0.9
    epochs: int = 120
    warmup_epochs: int = 10
    warmup_factor: float = 0.01
    schedule: str = "multistep"                       # multistep | cosine
    milestones: list = field(default_factory=lambda: [40, 70])
    gamma: float = 0.1
    grad_clip: Optional[float] = None
    amp: bool = True                                  # only takes effect on a GPU
    freeze_pretrained_epochs: int = 0                 # backbone (+ stage copies) fixed, BN stats too
    divergence_factor: float = 10.0                   # stop when the loss exceeds this x its early value (0: off)
    head_lr_factor: float = 1.0                       # the head's (new layers') lr = this x lr


@dataclass
class RegularizerConfig:
    adaptive_l2: bool = False
    amplitude: float = 0.005                          # A
    omega: float = 1.0


@dataclass
class EvalConfig:
    every: int = 10                                   # epochs between validation runs
    distance: str = "cosine"                          # cosine (post-BN, BoT) | euclidean (squared)
    flip: bool = False
    rerank: bool = False                              # k-reciprocal re-ranking (Zhong et al. 2017)
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    rerank_exact: bool = False                        # True: the float32 neighbour pass (reference)
    max_rank: int = 50


@dataclass
class Config:
    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs/experiment"
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Enum-like settings whose allowed values live in the config itself (the rest, head / backbone /
# dataset, are checked against their registries by keyreid.engine.checks before any work).
ALLOWED = {
    "loss.id_loss": ("cross_entropy", "normalized_softmax", "none"),
    "loss.metric_loss": ("triplet", "ephn_triplet", "ephn", "multi_similarity", "none"),
    "optim.optimizer": ("adam", "adamw", "sgd"),
    "optim.schedule": ("multistep", "cosine"),
    "eval.distance": ("cosine", "euclidean"),
    "model.last_stride": (1, 2),
}

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 and 1e6 (no dot) as strings
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    if origin in (list, dict) or tp in (list, dict):
        want = origin or tp
        if isinstance(value, want):
            return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls, values: dict, where: str, prefix: str = ""):
    """`where` names the source (a file, `--set`, a checkpoint); `prefix` the section inside it."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        section = f" {prefix}:" if prefix else ""
        raise ConfigError(f"{where}:{section} unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else k
        if dataclasses.is_dataclass(hints[k]):
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {key}: expected a mapping, got {v!r}")
            kwargs[k] = _build(hints[k], v, where, key)
        else:
            kwargs[k] = _coerce(v, hints[k], f"{where}: {key}")
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("options", "head_options"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict:
    """`model.head=kae` -> {"model": {"head": "kae"}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: an override must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"--set {key.strip()}: value {raw!r} is not valid YAML ({problem})") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Defaults, then the YAML file (which may name a `base:` file relative to itself), then overrides.
    Each file and each override is checked on its own, so an error names the one that holds it;
    the result's numeric ranges and fixed choices are checked too (check_ranges)."""
    return read_typed_config(Config, path, overrides, check_ranges)


def config_from_dict(values: dict, where: str, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """A config from a resolved mapping (a file's, or the one a checkpoint stores) plus overrides."""
    return typed_config_from_dict(Config, values, where, overrides, check_ranges)


# ---------------------------------------------------------------- the one loader of typed configs
# Re-ID configs (Config) and generation configs (keyreid.generation.config.GenConfig) are read by
# these functions: defaults in the dataclasses, a YAML file with `base:` chains, `--set` overrides,
# then the kind's own range checks. `merge` lets a kind merge some keys its own way.
Merge = Callable[[dict, dict], dict]


def read_typed_config(cls, path: Optional[str | Path], overrides: tuple[str, ...] | list[str],
                      check: Callable[[Any], None], merge: Optional[Merge] = None):
    values: dict = {}
    if path is not None:
        values = read_yaml_values(cls, Path(path), merge or _merge)
    return typed_config_from_dict(cls, values, str(path) if path is not None else "config", overrides, check,
                                  merge)


def typed_config_from_dict(cls, values: dict, where: str, overrides: tuple[str, ...] | list[str],
                           check: Callable[[Any], None], merge: Optional[Merge] = None):
    merge = merge or _merge
    for text in overrides:
        update = parse_override(text)
        _build(cls, update, "--set")
        values = merge(values, update)
    cfg = _build(cls, values, where)
    check(cfg)
    return cfg


def read_yaml_values(cls, path: Path, merge: Merge, chain: tuple[Path, ...] = ()) -> dict:
    """The mapping of a YAML config file with its `base:` chain resolved (checked against `cls`
    file by file, so a bad key is blamed on the file that has it)."""
    if not path.is_file():
        via = f" (base of {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{via}")
    if path.resolve() in [c.resolve() for c in chain]:
        loop = " -> ".join(str(c) for c in (*chain, path))
        raise ConfigError(f"{chain[-1]}: `base:` files form a loop: {loop}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = values.pop("base", None)
    _build(cls, values, str(path))
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
        values = merge(read_yaml_values(cls, path.parent / base, merge, (*chain, path)), values)
    return values


def save_typed_config(cfg: Any, path: str | Path) -> None:
    from keyreid.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def _range(key: str, value, ok: bool, want: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range: must be {want}")


def check_ranges(cfg: Config) -> None:
    """Every numeric field inside its range and every fixed choice one of its values, checked when
    the config is loaded so that a typo never costs a started run."""
    finite = math.isfinite
    for key, allowed in ALLOWED.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; use one of: "
                              f"{', '.join(str(a) for a in allowed)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"device={cfg.device!r} is not a device name; use auto, cpu, cuda, cuda:N or mps")
    d, m, lo, o, r, e = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.regularizer, cfg.eval
    checks = [
        ("seed", cfg.seed, cfg.seed >= 0, ">= 0"),
        ("name", cfg.name, bool(cfg.name.strip()), "a non-empty name"),
        ("output_dir", cfg.output_dir, bool(cfg.output_dir.strip()), "a non-empty path"),
        ("data.root", d.root, bool(d.root.strip()), "a non-empty path"),
        ("data.min_keypoint_confidence", d.min_keypoint_confidence, 0 <= d.min_keypoint_confidence <= 1,
         "in [0, 1]"),
        ("data.height", d.height, d.height >= 16, ">= 16 pixels"),
        ("data.width", d.width, d.width >= 16, ">= 16 pixels"),
        ("data.flip_prob", d.flip_prob, 0 <= d.flip_prob <= 1, "a probability in [0, 1]"),
        ("data.pad", d.pad, d.pad >= 0, ">= 0"),
        ("data.erase_prob", d.erase_prob, 0 <= d.erase_prob <= 1, "a probability in [0, 1]"),
        ("data.p", d.p, d.p >= 2, ">= 2 (identities per batch; triplets need two)"),
        ("data.k", d.k, d.k >= 1, ">= 1"),
        ("data.workers", d.workers, d.workers >= 0, ">= 0"),
        ("data.val_identities", d.val_identities, 0 <= d.val_identities < 1,
         "a fraction in [0, 1) of the training identities"),
        ("data.test_batch_size", d.test_batch_size, d.test_batch_size >= 1, ">= 1"),
        ("model.backbone", m.backbone, bool(m.backbone.strip()), "a backbone name"),
        ("loss.label_smoothing", lo.label_smoothing, 0 <= lo.label_smoothing < 1, "in [0, 1)"),
        ("loss.id_weight", lo.id_weight, finite(lo.id_weight) and lo.id_weight >= 0, ">= 0"),
        ("loss.margin", lo.margin, lo.margin is None or (finite(lo.margin) and lo.margin >= 0),
         ">= 0 (or null for the soft margin)"),
        ("loss.metric_weight", lo.metric_weight, finite(lo.metric_weight) and lo.metric_weight >= 0, ">= 0"),
        ("loss.center_weight", lo.center_weight, finite(lo.center_weight) and lo.center_weight >= 0, ">= 0"),
        ("loss.heatmap_weight", lo.heatmap_weight, finite(lo.heatmap_weight) and lo.heatmap_weight >= 0,
         ">= 0"),
        ("loss.heatmap_sigma", lo.heatmap_sigma, finite(lo.heatmap_sigma) and lo.heatmap_sigma > 0, "> 0"),
        ("optim.lr", o.lr, finite(o.lr) and o.lr > 0, "> 0"),
        ("optim.weight_decay", o.weight_decay, finite(o.weight_decay) and o.weight_decay >= 0, ">= 0"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
        ("optim.epochs", o.epochs, o.epochs >= 1, ">= 1"),
        ("optim.warmup_epochs", o.warmup_epochs, o.warmup_epochs >= 0, ">= 0"),
        ("optim.warmup_factor", o.warmup_factor, 0 < o.warmup_factor <= 1, "in (0, 1]"),
        ("optim.milestones", o.milestones,
         all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in o.milestones)
         and list(o.milestones) == sorted(o.milestones), "a rising list of epochs >= 0"),
        ("optim.gamma", o.gamma, finite(o.gamma) and o.gamma > 0, "> 0"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip is None or (finite(o.grad_clip) and o.grad_clip > 0),
         "> 0 (or null for no clipping)"),
        ("optim.freeze_pretrained_epochs", o.freeze_pretrained_epochs, o.freeze_pretrained_epochs >= 0,
         ">= 0"),
        ("optim.divergence_factor", o.divergence_factor,
         o.divergence_factor == 0 or (finite(o.divergence_factor) and o.divergence_factor > 1),
         "> 1 (or 0 to switch the check off)"),
        ("optim.head_lr_factor", o.head_lr_factor, finite(o.head_lr_factor) and o.head_lr_factor > 0, "> 0"),
        ("regularizer.amplitude", r.amplitude, finite(r.amplitude) and r.amplitude > 0, "> 0"),
        ("regularizer.omega", r.omega, finite(r.omega) and r.omega > 0, "> 0"),
        ("eval.every", e.every, e.every >= 0, ">= 0 (0: no validation)"),
        ("eval.rerank_k1", e.rerank_k1, e.rerank_k1 >= 1, ">= 1"),
        ("eval.rerank_k2", e.rerank_k2, 1 <= e.rerank_k2 <= e.rerank_k1 + 1,
         f"in [1, eval.rerank_k1 + 1 = {e.rerank_k1 + 1}]"),
        ("eval.rerank_lambda", e.rerank_lambda, 0 <= e.rerank_lambda <= 1, "in [0, 1]"),
        ("eval.max_rank", e.max_rank, e.max_rank >= 1, ">= 1"),
    ]
    for key, value, ok, want in checks:
        _range(key, value, ok, want)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    save_typed_config(cfg, path)
