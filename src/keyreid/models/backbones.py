"""Backbone factory over torchvision and timm models.

``build_backbone(name)`` returns a :class:`Backbone` whose ``forward`` maps
``[B, 3, H, W]`` images to the last feature map ``[B, C, h, w]``; it carries
``out_channels``, ``stride`` (total output stride), and the normalisation the
weights expect (``input_mean``, ``input_std``, ``interpolation``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from keyreid.config import ConfigValueError
from keyreid.utils.registry import UnknownNameError
from keyreid.models.pretrained import (
    OFFLINE_SOURCES,
    WeightsError,
    fetch_imagenet,
    load_into,
    load_state_dict_file,
    offline_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-ported EfficientNet(-Lite) weights were trained on inputs scaled to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class _Spec:
    library: str  # "torchvision" or "timm"
    arch: str  # the library's model name
    trunk: tuple[str, ...]  # top-level modules of the library model, run in order
    head: str  # the ImageNet Linear layer (dotted path in the library model)
    last_block: str  # block whose stride-2 convs last_stride=1 turns to stride 1
    out_channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str


_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _resnet(arch: str, channels: int) -> _Spec:
    return _Spec("torchvision", arch, _RESNET_TRUNK, "fc", "layer4.0", channels,
                 IMAGENET_MEAN, IMAGENET_STD, "bilinear")


_SPECS: dict[str, _Spec] = {
    "resnet18": _resnet("resnet18", 512),
    "resnet34": _resnet("resnet34", 512),
    "resnet50": _resnet("resnet50", 2048),
    "resnet101": _resnet("resnet101", 2048),
    "mobilenetv2": _Spec("torchvision", "mobilenet_v2", ("features",), "classifier.1",
                         "features.14", 1280, IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
    # The TF-ported variant (TF "same" padding): the architecture both timm's
    # ImageNet weights and the packaged offline weights were trained with.
    "efficientnet_lite0": _Spec("timm", "tf_efficientnet_lite0",
                                ("conv_stem", "bn1", "blocks", "conv_head", "bn2"), "classifier",
                                "blocks.5.0", 1280, INCEPTION_MEAN, INCEPTION_STD, "bicubic"),
}
_ALIASES = {"mobilenet_v2": "mobilenetv2", "tf_efficientnet_lite0": "efficientnet_lite0"}
TIMM_PREFIX = "timm:"


def available_backbones() -> list[str]:
    """Names build_backbone accepts (plus any timm model as ``timm:NAME``)."""
    return sorted(_SPECS)


def check_backbone_name(name: str) -> None:
    """UnknownNameError naming the known backbones, without building anything."""
    if not name.startswith(TIMM_PREFIX):
        _resolve(name)


class Backbone(nn.Module):
    """Runs a library model's feature layers in order and returns the last feature map.

    Submodules keep the library's names, so ``state_dict()`` keys are the
    library model's keys without the classifier.
    """

    def __init__(
        self,
        name: str,
        parts: Sequence[tuple[str, nn.Module]],
        *,
        out_channels: int,
        stride: int,
        mean: Sequence[float],
        std: Sequence[float],
        interpolation: str,
        channels_last: bool = False,
        last_stage: str | None = None,
    ):
        super().__init__()
        self.name = name
        self.last_stage = last_stage  # "part.index": where the last (stride-32) stage starts
        self._order = [n for n, _ in parts]
        for n, m in parts:
            self.add_module(n, m)
        self.out_channels = int(out_channels)
        self.stride = int(stride)
        self.input_mean = tuple(float(v) for v in mean)
        self.input_std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for n in self._order:
            x = getattr(self, n)(x)
        return x

    def pop_last_stage(self) -> nn.Sequential:
        """Remove the last stage (ResNet layer4, MobileNetV2 features[14:], ...) and return it,
        weights and all: the backbone then ends one stage earlier and out_channels follows. For
        heads that run their own copies of that stage (stripes)."""
        if self.last_stage is None:
            raise ValueError(f"backbone {self.name!r} has no known last stage to hand to the head; "
                             f"use one of {', '.join(available_backbones())}")
        part, index = self.last_stage.split(".")[:2]
        index, pos = int(index), self._order.index(part)
        container = getattr(self, part)
        stage = [container[index:]] + [getattr(self, n) for n in self._order[pos + 1:]]
        for n in self._order[pos + 1:]:
            delattr(self, n)
        self._order = self._order[:pos + 1]
        if index == 0:
            delattr(self, part)
            self._order.pop()
        else:
            setattr(self, part, container[:index])
        bns = [m for n in self._order for m in getattr(self, n).modules() if isinstance(m, nn.BatchNorm2d)]
        self.out_channels = bns[-1].num_features
        self.stride = 16  # every known last stage starts at the /32 step
        self.last_stage = None
        return nn.Sequential(*stage)


class _LastFeature(nn.Module):
    """timm features_only models return a list; keep the last map."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


class ImageNetClassifier(nn.Module):
    """A backbone plus its ImageNet head: global average pool and the original Linear."""

    def __init__(self, backbone: Backbone, fc: nn.Linear, categories: Sequence[str] | None = None):
        super().__init__()
        self.backbone = backbone
        self.fc = fc
        self.categories = list(categories) if categories is not None else None
        self.input_mean = backbone.input_mean
        self.input_std = backbone.input_std
        self.interpolation = backbone.interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x).mean(dim=(2, 3)))


def _resolve(name: str) -> tuple[str, _Spec]:
    key = _ALIASES.get(name, name)
    if key not in _SPECS:
        raise UnknownNameError(
            f"model.backbone: unknown backbone {name!r}; choose one of {', '.join(available_backbones())} "
            f"or a timm model as '{TIMM_PREFIX}NAME'"
        )
    return key, _SPECS[key]


def _check_pretrained(pretrained) -> None:
    if pretrained is None or pretrained in ("imagenet", "offline"):
        return
    if isinstance(pretrained, (str, os.PathLike)):
        return
    raise TypeError(
        f"pretrained={pretrained!r}: expected None (random init), 'imagenet', 'offline' "
        "or the path of a state-dict file"
    )


def _get(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def _set_last_stride_one(model: nn.Module, block: str) -> None:
    # Every stride-2 conv of that block: the main path and the shortcut (ResNet downsample).
    changed = 0
    for m in _get(model, block).modules():
        if isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2):
            m.stride = (1, 1)
            changed += 1
    if not changed:
        raise RuntimeError(f"no stride-2 conv in {block}; the model layout changed")


def _library_model(spec: _Spec, imagenet: bool, name: str):
    """The full library classifier, and its ImageNet category names where known."""
    import torchvision

    categories = None
    if spec.library == "torchvision":
        model = torchvision.models.get_model(spec.arch, weights=None)
        if imagenet:
            weights = torchvision.models.get_model_weights(spec.arch).DEFAULT
            state = fetch_imagenet(
                name, f"torchvision {weights} ({weights.url})",
                lambda: weights.get_state_dict(progress=False, check_hash=True),
            )
            load_into(model, state, source=f"torchvision {weights}")
            categories = weights.meta.get("categories")
    else:
        import timm

        if imagenet:
            model = fetch_imagenet(
                name, f"timm {spec.arch!r} (Hugging Face hub or timm's URL)",
                lambda: timm.create_model(spec.arch, pretrained=True),
            )
        else:
            model = timm.create_model(spec.arch, pretrained=False)
    if categories is None:
        # torchvision ships the ImageNet-1k class names offline; every spec here is a 1k head.
        categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    return model, categories


def _build(name: str, pretrained, last_stride: int, channels_last: bool, with_head: bool):
    _check_pretrained(pretrained)
    if last_stride not in (1, 2):
        raise ConfigValueError(f"model.last_stride must be 1 or 2, got {last_stride!r}")
    if name.startswith(TIMM_PREFIX):
        if with_head:
            raise ValueError(f"imagenet_classifier supports {', '.join(available_backbones())}")
        return _build_timm_generic(name, pretrained, last_stride, channels_last), None
    key, spec = _resolve(name)

    model, categories = _library_model(spec, pretrained == "imagenet", key)
    if last_stride == 1:
        _set_last_stride_one(model, spec.last_block)
    backbone = Backbone(
        key, [(n, getattr(model, n)) for n in spec.trunk],
        out_channels=spec.out_channels, stride=32 if last_stride == 2 else 16,
        mean=spec.mean, std=spec.std, interpolation=spec.interpolation, last_stage=spec.last_block,
    )
    head = _get(model, spec.head)
    head_prefix = spec.head.split(".")[0] + "."

    if pretrained == "offline":
        src = OFFLINE_SOURCES.get(key)
        if src is not None and src.has_classifier:
            load_into(model, offline_state_dict(key, model.state_dict()), source=f"offline {key}")
        else:
            if with_head and src is not None:
                raise WeightsError(
                    f"the packaged offline weights for {key!r} ({src.distribution}) have no "
                    "ImageNet classifier; use pretrained='imagenet' or a full-model state-dict file"
                )
            load_into(backbone, offline_state_dict(key, backbone.state_dict()), source=f"offline {key}")
    elif pretrained not in (None, "imagenet"):
        state = load_state_dict_file(pretrained)
        if with_head:
            load_into(model, state, source=str(pretrained))
        else:
            load_into(backbone, state, source=str(pretrained), ignore_prefixes=(head_prefix,))

    if channels_last:
        backbone.channels_last = True
        model.to(memory_format=torch.channels_last)
    if not with_head:
        return backbone, None
    if not isinstance(head, nn.Linear):
        raise RuntimeError(f"{spec.arch}.{spec.head} is not a Linear layer")
    return backbone, ImageNetClassifier(backbone, head, categories)


def _build_timm_generic(name: str, pretrained, last_stride: int, channels_last: bool) -> Backbone:
    import timm

    arch = name[len(TIMM_PREFIX):]
    if pretrained == "offline":
        raise WeightsError(
            f"backbone {name!r} has no packaged offline weights; pretrained='offline' works for: "
            f"{', '.join(sorted(OFFLINE_SOURCES))}. Use pretrained='imagenet' (needs internet or "
            "a cache) or pretrained=PATH to a local state-dict file."
        )
    # Generic timm models reach output stride 16 by dilating the last stage.
    kwargs = dict(features_only=True, out_indices=(-1,), output_stride=16 if last_stride == 1 else 32)
    if pretrained == "imagenet":
        net = fetch_imagenet(name, f"timm {arch!r}", lambda: timm.create_model(arch, pretrained=True, **kwargs))
    else:
        net = timm.create_model(arch, pretrained=False, **kwargs)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    backbone = Backbone(
        name, [("body", _LastFeature(net))],
        out_channels=net.feature_info.channels()[-1], stride=net.feature_info.reduction()[-1],
        mean=cfg.get("mean", IMAGENET_MEAN), std=cfg.get("std", IMAGENET_STD),
        interpolation=cfg.get("interpolation", "bilinear"), channels_last=channels_last,
    )
    if pretrained not in (None, "imagenet"):
        load_into(backbone, load_state_dict_file(pretrained), source=str(pretrained))
    return backbone


def build_backbone(
    name: str,
    pretrained: str | os.PathLike | None = None,
    last_stride: int = 1,
    channels_last: bool = False,
) -> Backbone:
    """Build a feature backbone.

    name: resnet18/34/50/101, mobilenetv2, efficientnet_lite0, or ``timm:NAME``.
    pretrained: None (random init, explicitly), "imagenet" (library download or
    cache), "offline" (weights packaged in pip packages; efficientnet_lite0 and
    mobilenetv2 only), or a path to a state-dict file. Never falls back to
    random weights: a source that fails raises :class:`WeightsError`.
    last_stride: 1 keeps the last stage at the previous resolution (output
    stride 16, the usual re-ID setting); 2 is the ImageNet layout (32).
    channels_last: convert weights and inputs to channels-last memory format.
    """
    backbone, _ = _build(name, pretrained, last_stride, channels_last, with_head=False)
    return backbone


def imagenet_classifier(
    name: str, pretrained: str | os.PathLike = "offline", channels_last: bool = False
) -> ImageNetClassifier:
    """Backbone plus its ImageNet-1k head from the same weights (last_stride=2).

    Used to check that a weight set really is the ImageNet model. Fails for
    the packaged MobileNetV2 weights, which contain no classifier.
    """
    if pretrained is None:
        raise ValueError("imagenet_classifier needs weights; pretrained=None would be a random classifier")
    _, clf = _build(name, pretrained, 2, channels_last, with_head=True)
    return clf.eval()


def imagenet_preprocess(
    image: np.ndarray,
    model: Backbone | ImageNetClassifier,
    size: int = 224,
    crop_pct: float = 0.875,
) -> torch.Tensor:
    """HxWx3 uint8 RGB -> [1, 3, size, size]: resize the short side to size/crop_pct,
    centre-crop, scale to [0, 1] and normalise with the model's mean/std."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[model.interpolation]
    short = int(round(size / crop_pct))
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((max(short, round(w * scale)), max(short, round(h * scale))), resample)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(model.input_mean).view(3, 1, 1)
    std = torch.tensor(model.input_std).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)
