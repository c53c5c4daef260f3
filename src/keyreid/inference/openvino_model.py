"""The OpenVINO export's file format: `MODEL.xml` (the IR graph), its weights `MODEL.bin` and the
sidecar `MODEL.xml.json`, and opening them for the OpenVINO backend.

The sidecar is the ONNX sidecar's description (input size, pixel mean/std, embedding size,
distance, normalisation, the torch model's card and fingerprint: keyreid.inference.onnx_model)
with the sha256 of both IR files in place of the .onnx one, so a sidecar never describes
another graph or other weights by mistake.

An IR is two files, so replacing one (`keyreid export --force`) takes more than one rename. The
weights file a description names is part of the description: the old pair's weights are kept as
`MODEL.bin.previous` (a hard link) while the new files move in, and the sidecar describes the
old pair under "previous" until the new graph is in place. A process killed at any point leaves
an .xml whose sha256 one of the descriptions has, and that description names weights that are
there (keyreid.export.openvino does the switching).

The openvino package is optional (`pip install keyreid[openvino]`): without it an IR is one
clear error naming the package, and nothing else in keyreid needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from keyreid.errors import KeyreidError
from keyreid.inference.onnx_model import (INPUT_NAME, OUTPUT_NAME, PREVIOUS_KEY, RAW_OUTPUT_NAME,
                                          check_sidecar_keys, file_sha256, read_sidecar_json, sidecar_path)

SIDECAR_FORMAT = "keyreid-openvino"
SIDECAR_VERSION = 1
WEIGHTS_PREVIOUS_SUFFIX = ".previous"   # MODEL.bin.previous: the replaced pair's weights
INFERENCE_PRECISION = "f32"   # OpenVINO's CPU plugin would run bf16 on CPUs that have it:
                              # keyreid asks for f32, the precision the parity check measured
_REQUIRED = ("xml_sha256", "weights", "weights_sha256", "fingerprint", "embedding_dim", "distance",
             "normalized", "input", "output", "card")
INSTALL = "pip install 'keyreid[openvino]' (or: pip install openvino)"


def looks_like_ir(head: bytes) -> bool:
    """Whether a file's first bytes are an OpenVINO IR graph: XML whose root element is <net>."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not text.startswith(b"<"):
        return False
    if text.startswith(b"<?xml"):
        end = text.find(b"?>")
        text = text[end + 2:].lstrip() if end >= 0 else b""
    while text.startswith(b"<!--"):   # comments before the root element
        end = text.find(b"-->")
        text = text[end + 3:].lstrip() if end >= 0 else b""
    return text.startswith(b"<net ") or text.startswith(b"<net>")


def weights_path(xml: Union[str, Path], meta: dict) -> Path:
    return Path(xml).with_name(meta["weights"])


def import_openvino(path: Union[str, Path]):
    """The openvino module, or one line saying which package to install."""
    try:
        import openvino
    except ImportError:
        raise KeyreidError(f"{path}: an OpenVINO model needs the openvino package, which is not "
                           f"installed; {INSTALL}") from None
    return openvino


def _check(side: Path, meta, where: str = "sidecar") -> dict:
    check_sidecar_keys(side, meta, "OpenVINO", SIDECAR_FORMAT, SIDECAR_VERSION, _REQUIRED, where)
    if os.sep in str(meta["weights"]) or "/" in str(meta["weights"]) or meta["weights"] in ("", ".", ".."):
        raise KeyreidError(f"{side}: {where} names weights {meta['weights']!r}; a file beside the .xml expected")
    return meta


def read_ir_sidecar(path: Path) -> dict:
    side = sidecar_path(path)
    meta = read_sidecar_json(path, side, "OpenVINO", "export the model with "
                             "`keyreid export CKPT --format openvino -o MODEL.xml`, which writes all three files")
    return _check(side, meta)


def matching_ir_description(path: Path, meta: dict) -> dict:
    """The description of the IR at `path` now (the sidecar's own, or the replaced pair's under
    "previous" while an export switches files), with its weights checked by sha256."""
    sha = file_sha256(path)
    chosen = None
    if meta["xml_sha256"] == sha:
        chosen = {k: v for k, v in meta.items() if k != PREVIOUS_KEY}
    elif isinstance(meta.get(PREVIOUS_KEY), dict) and meta[PREVIOUS_KEY].get("xml_sha256") == sha:
        chosen = _check(sidecar_path(path), meta[PREVIOUS_KEY], f"its {PREVIOUS_KEY!r} entry")
    if chosen is None:
        raise KeyreidError(f"{sidecar_path(path)} was written for another {path.name} (sha256 differs); "
                           "export again, which writes the three files together")
    weights = weights_path(path, chosen)
    if not weights.is_file():
        raise KeyreidError(f"{path}: its weights {weights.name} are missing; an OpenVINO model is "
                           f"{path.name}, {weights.name} and {sidecar_path(path).name} together")
    if file_sha256(weights) != chosen["weights_sha256"]:
        raise KeyreidError(f"{weights}: not the weights {sidecar_path(path).name} describes (sha256 "
                           "differs); export again")
    return chosen


def compile_options(threads: Optional[int] = None) -> dict:
    return {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION,
            "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1),
            "PERFORMANCE_HINT": "LATENCY"}   # one request at a time: keyreid batches itself


def compile_ir(xml: Union[str, Path], weights: Union[str, Path], threads: Optional[int] = None):
    """The CPU-compiled model of an IR; a damaged file is one clear error."""
    ov = import_openvino(xml)
    try:
        core = ov.Core()
        model = core.read_model(str(xml), str(weights))
        compiled = core.compile_model(model, "CPU", compile_options(threads))
    except Exception as e:  # OpenVINO raises RuntimeError with multi-line C++ messages
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise KeyreidError(f"{xml}: OpenVINO cannot load it ({first[:300]})") from None
    names = {n for out in compiled.outputs for n in out.get_names()}
    if {OUTPUT_NAME, RAW_OUTPUT_NAME} - names:
        raise KeyreidError(f"{xml}: outputs {sorted(names)}; a keyreid export has "
                           f"{OUTPUT_NAME!r} and {RAW_OUTPUT_NAME!r}")
    if INPUT_NAME not in {n for inp in compiled.inputs for n in inp.get_names()}:
        raise KeyreidError(f"{xml}: no input {INPUT_NAME!r}; not a keyreid export")
    return compiled


def open_openvino(path: Union[str, Path], threads: Optional[int] = None):
    """(description, compiled model) of MODEL.xml with MODEL.bin and MODEL.xml.json."""
    path = Path(path)
    if not path.is_file():
        raise KeyreidError(f"{path}: OpenVINO model not found")
    meta = matching_ir_description(path, read_ir_sidecar(path))
    return meta, compile_ir(path, weights_path(path, meta), threads)


__all__ = ["INFERENCE_PRECISION", "SIDECAR_FORMAT", "SIDECAR_VERSION", "WEIGHTS_PREVIOUS_SUFFIX",
           "compile_ir", "import_openvino", "looks_like_ir", "matching_ir_description", "open_openvino",
           "read_ir_sidecar", "weights_path"]
