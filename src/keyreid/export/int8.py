"""Static int8 quantisation of an exported graph (`keyreid export --format onnx-int8`).

onnxruntime's quantiser rewrites the fp32 graph in QDQ form (QuantizeLinear / DequantizeLinear
pairs around every quantised op, which its CPU kernels fuse into int8 convolutions), weights int8
per output channel, activations uint8 ("U8S8": the combination onnxruntime's x86 kernels run
fastest, on VNNI CPUs without the saturation that needs reduce_range on older ones; measured
here: ResNet-50 at 128x64, batch 64, 279 images/s against 92 for S8S8 and 83 for fp32), activation
ranges from calibration: the model's own preprocessing of a few
hundred images like the ones it will see (the training data the checkpoint records, else
--calibration DIR). The result is still an ONNX file with the same inputs and outputs, so the
onnx backend runs it unchanged; what it costs in retrieval terms is measured by the export
(keyreid.export.parity) before the file is kept."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from keyreid.data.datasets.base import IMAGE_EXTENSIONS
from keyreid.errors import KeyreidError
from keyreid.inference.onnx_model import INPUT_NAME

CALIBRATION_IMAGES = 256   # MinMax ranges settle well before this; more only costs time
CALIBRATION_BATCH = 16     # preprocessed lazily, a batch at a time (memory stays small)
METHOD = "MinMax"


@dataclass
class Calibration:
    images: list[Path]
    source: str            # the folder, or "DATASET training split at ROOT"
    unreadable: int = 0    # files found but not decodable (skipped)

    def describe(self) -> dict:
        return {"source": self.source, "images": len(self.images), "unreadable_skipped": self.unreadable,
                "method": METHOD, "format": "QDQ", "per_channel": True,
                "activations": "uint8", "weights": "int8"}


def _spread(items: list, limit: int) -> list:
    """`limit` items spread evenly over `items` (every identity and camera of a sorted dataset
    list gets a share, not only the first few)."""
    if len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def _readable(paths: list[Path], limit: int) -> tuple[list[Path], int]:
    """The first `limit` of `paths` that decode as images, and how many did not."""
    from keyreid.inference.loaded import to_pil

    good, bad = [], 0
    for p in paths:
        if len(good) >= limit:
            break
        try:
            to_pil(p)
            good.append(p)
        except (KeyreidError, OSError, ValueError):
            bad += 1
    return good, bad


def calibration_images(folder: Optional[Path], config, checkpoint: Path,
                       limit: int = CALIBRATION_IMAGES) -> Calibration:
    """--calibration DIR (searched recursively), else the training split of the dataset the
    checkpoint's config records, else one error saying to pass --calibration."""
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise KeyreidError(f"{folder}: --calibration is not a folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        # spread over the whole folder first, then top up from the rest if some do not decode
        ordered = _spread(files, limit)
        ordered += [p for p in files if p not in set(ordered)]
        good, bad = _readable(ordered, limit)
        if not good:
            found = f"{len(files)} image file(s), none readable" if files else \
                f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            raise KeyreidError(f"{folder}: --calibration has {found}; int8 calibration needs images "
                               "like the ones the model will embed")
        return Calibration(good, str(folder), bad)
    data = getattr(config, "data", None)
    if data is None or not data.root:
        raise KeyreidError(f"{checkpoint}: records no training data to calibrate int8 ranges on; pass "
                           "--calibration DIR (a folder of images like the ones the model will embed)")
    from keyreid.data.datasets import build_dataset

    try:
        ds = build_dataset(data.dataset, data.root, **{k: v for k, v in (data.options or {}).items()
                                                        if k != "keypoints"})
        train = [Path(s.path) for s in ds.train]
    except (KeyreidError, OSError, KeyError, ValueError, TypeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KeyreidError(f"{checkpoint}: its training data ({data.dataset} at {data.root}) is not "
                           f"readable here ({reason}); pass --calibration DIR (a folder of images "
                           "like the ones the model will embed)") from None
    good, bad = _readable(_spread(train, limit), limit)
    if not good:
        raise KeyreidError(f"{checkpoint}: no readable training image in {data.root}; pass "
                           "--calibration DIR")
    return Calibration(good, f"{data.dataset} training split at {data.root}", bad)


def _reader(loaded, images: list[Path]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Batches of the model's own preprocessing (LoadedModel.preprocess) of the images."""

        def __init__(self):
            self.start = 0

        def get_next(self):
            if self.start >= len(images):
                return None
            chunk = images[self.start:self.start + CALIBRATION_BATCH]
            self.start += len(chunk)
            return {INPUT_NAME: np.ascontiguousarray(loaded.preprocess(chunk).numpy(), dtype=np.float32)}

        def rewind(self):
            self.start = 0

    return Reader()


@contextlib.contextmanager
def _quantiser_context(folder: str) -> Iterator[None]:
    """The calibrator writes its augmented model into a temporary folder of the system's: keep
    every byte of the export beside its target (same disk, removed with it). The quantiser logs
    warnings to the root logger ("Axis 1 is out-of-range for weight ...", about the 1-d BN
    weights it quantises per tensor instead): not the user's business, the export's parity
    check says what quantisation cost."""
    old_dir, old_level = tempfile.tempdir, logging.root.manager.disable
    tempfile.tempdir = folder
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tempfile.tempdir = old_dir
        logging.disable(old_level)


def quantize_model(fp32_path: str, out_path: str, loaded, calibration: Calibration) -> None:
    """Write the static int8 (QDQ, per-channel weights) version of the fp32 graph at `fp32_path`
    to `out_path`, with activation ranges from `calibration`'s images."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    work = os.path.dirname(out_path) or "."
    prepared = out_path + ".pre.onnx"
    try:
        with _quantiser_context(work):
            # shape inference and graph optimisation first, as onnxruntime recommends: the
            # quantiser then sees Conv+BN folded and every tensor's shape
            quant_pre_process(fp32_path, prepared, skip_symbolic_shape=False)
            quantize_static(prepared, out_path, _reader(loaded, calibration.images),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        if os.path.exists(prepared):
            os.unlink(prepared)


__all__ = ["CALIBRATION_IMAGES", "Calibration", "calibration_images", "quantize_model"]
