"""`keyreid export --format openvino|openvino-fp16`: the verified ONNX graph converted to an
OpenVINO IR (MODEL.xml + MODEL.bin + the sidecar MODEL.xml.json).

The IR comes from the fp32 ONNX graph that keyreid.export.onnx has already checked against
torch, through the openvino package's own converter (`openvino.convert_model`), saved with fp32
weights or, for openvino-fp16, with weights compressed to fp16 (half the file; the CPU plugin
decompresses them when it compiles the model, so speed is the same and the cost is in the
weights' precision, which the export's retrieval check measures). Installing the three files
follows the order described in keyreid.inference.openvino_model, so that a process killed at any
point leaves the old model or the new one, never an .xml with other weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from keyreid.errors import KeyreidError
from keyreid.inference.onnx_model import PREVIOUS_KEY, file_sha256, sidecar_path
from keyreid.inference.openvino_model import (INFERENCE_PRECISION, SIDECAR_FORMAT, SIDECAR_VERSION,
                                              WEIGHTS_PREVIOUS_SUFFIX, import_openvino,
                                              matching_ir_description, read_ir_sidecar)
from keyreid.utils.io import atomic_write_text

FORMATS = {"openvino": False, "openvino-fp16": True}   # format -> fp16-compressed weights


def weights_for(out: Path) -> Path:
    """MODEL.bin beside MODEL.xml: the name OpenVINO's tools look for."""
    return out.with_suffix(".bin")


def convert(onnx_path: str, xml_path: str, compress_fp16: bool) -> None:
    """ONNX -> IR with OpenVINO's converter; its errors as one line."""
    ov = import_openvino(xml_path)
    try:
        model = ov.convert_model(onnx_path)
        ov.save_model(model, xml_path, compress_to_fp16=compress_fp16)
    except Exception as e:  # the converter raises several types, with C++ messages
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise KeyreidError(f"{xml_path}: OpenVINO conversion failed ({first[:300]})") from None


def ir_sidecar(onnx_meta: dict, xml_path: str, bin_path: str, weights_name: str, compress_fp16: bool) -> dict:
    """The ONNX sidecar's description, re-addressed to the IR files."""
    ov = import_openvino(xml_path)
    meta = {k: v for k, v in onnx_meta.items() if k not in ("onnx_sha256", "format", "version")}
    return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **meta,
            "precision": "fp16 weights" if compress_fp16 else "fp32",
            "inference_precision": INFERENCE_PRECISION, "openvino_version": ov.__version__,
            "xml_sha256": file_sha256(xml_path), "weights": weights_name,
            "weights_sha256": file_sha256(bin_path)}


def current_ir_description(out: Path) -> Optional[dict]:
    """The description of the IR at `out` when it loads now, else None."""
    if not out.is_file():
        return None
    try:
        return matching_ir_description(out, read_ir_sidecar(out))
    except KeyreidError:
        return None


def _fsync(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def install(xml_tmp: str, bin_tmp: str, out: Path, meta: dict, mode: int) -> None:
    """Move a finished IR (its files in the export's work folder) to `out`, replacing a pair
    there in steps that each leave a loadable model:
    1. the old weights hard-linked as MODEL.bin.previous and the new sidecar written, describing
       the old pair under "previous" with those weights (the old model loads);
    2. the new weights renamed to MODEL.bin (the old .xml still loads, from .previous);
    3. the new .xml renamed into place (the new model loads from the sidecar's own description);
    4. "previous" dropped from the sidecar and MODEL.bin.previous removed."""
    side, weights = sidecar_path(out), weights_for(out)
    backup = weights.with_name(weights.name + WEIGHTS_PREVIOUS_SUFFIX)
    for path in (xml_tmp, bin_tmp):
        _fsync(path)
        os.chmod(path, mode)
    previous = current_ir_description(out)
    old_text = None
    if previous is not None:
        old_weights = out.with_name(previous["weights"])
        if old_weights == weights:    # the new weights take its name: keep the old ones reachable
            if backup.exists():
                backup.unlink()
            os.link(weights, backup)
            previous = {**previous, "weights": backup.name}
        old_text = side.read_text(encoding="utf-8")
        atomic_write_text(side, json.dumps({**meta, PREVIOUS_KEY: previous}, indent=2))
    switched = False
    try:
        os.replace(bin_tmp, weights)
        os.replace(xml_tmp, out)
        switched = True
    finally:
        if not switched and old_text is not None:   # interrupted: the old model as it was
            if backup.exists() and previous is not None and previous["weights"] == backup.name:
                os.replace(backup, weights)
            atomic_write_text(side, old_text)
    atomic_write_text(side, json.dumps(meta, indent=2))
    if backup.exists():
        backup.unlink()


__all__ = ["FORMATS", "convert", "current_ir_description", "install", "ir_sidecar", "weights_for"]
