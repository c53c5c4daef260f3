"""Typed configuration: dataclasses with defaults in code, YAML files and `key=value` overrides at
the edge. Unknown keys and wrong types are errors that name the file and the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from keyreid.errors import KeyreidError


class ConfigError(KeyreidError):
    pass


@dataclass
class DataConfig:
    dataset: str = "market1501"
    root: str = "data/synth"
    options: dict = field(default_factory=dict)      # passed to the dataset adapter
    sidecar: Optional[str] = None                     # keypoint sidecar; default ROOT/keypoints.jsonl if present
    min_keypoint_confidence: float = 0.0              # below this a keypoint counts as invisible
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


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
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
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_config(path: Optional[str | Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Defaults, then the YAML file (which may name a `base:` file relative to itself), then overrides."""
    values: dict = {}
    where = "config"
    if path is not None:
        values = _read_yaml(Path(path))
        where = str(path)
    for text in overrides:
        values = _merge(values, parse_override(text))
    return _build(Config, values, where)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = values.pop("base", None)
    if base is not None:
        values = _merge(_read_yaml(path.parent / base), values)
    return values


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    from keyreid.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
