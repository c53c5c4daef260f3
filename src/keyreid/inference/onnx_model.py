"""The exported-model file format: `model.onnx` and its sidecar `model.onnx.json`, and opening
them as a LoadedModel with the onnxruntime backend.

The sidecar (written by `keyreid export`) carries everything the torch model's card does (input
size, pixel mean/std, embedding size, distance, normalisation) plus the torch model's
fingerprint, so an index built with the torch model accepts ONNX queries, and the sha256 of the
.onnx file, so a sidecar never describes another file by mistake.

Replacing an export takes two renames (the graph, the sidecar), and a process killed between
them must not leave a pair that disagrees. So `keyreid export --force` first writes the new
sidecar with the old pair's description under "previous", then renames the graph, then drops
"previous": whichever graph is there, one of the two descriptions has its sha256, and
`matching_description` picks that one.

The graph has two outputs: `embedding` (L2-normalised inside the graph when the model's distance
is cosine: what an index expects) and `raw_embedding` (the model's embedding before that
normalisation), which the backend returns so that flip averaging and normalisation happen in
LoadedModel exactly as for the torch model.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Union

from keyreid.errors import KeyreidError

SIDECAR_FORMAT = "keyreid-onnx"
SIDECAR_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
RAW_OUTPUT_NAME = "raw_embedding"
PREVIOUS_KEY = "previous"   # the replaced pair's description while an export switches files

# ModelProto's field numbers and their protobuf wire types (0 varint, 2 length-delimited):
# ir_version, producer_name, producer_version, domain, model_version, doc_string, graph,
# opset_import, metadata_props, training_info, functions
_MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
_REQUIRED = ("onnx_sha256", "fingerprint", "embedding_dim", "distance", "normalized", "input",
             "output", "card")


def sidecar_path(onnx_path: Union[str, Path]) -> Path:
    return Path(str(onnx_path) + ".json")


def file_sha256(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _varint(data: bytes, pos: int) -> tuple[Optional[int], int]:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


def looks_like_onnx(head: bytes) -> bool:
    """Whether `head` (a file's first bytes) starts like a serialised ONNX ModelProto: every
    field read is one of ModelProto's with its wire type, and ir_version is a small number.
    Protobuf has no magic number; a torch checkpoint (zip or pickle), an image or a text file
    fails on its first byte or two."""
    pos, fields = 0, 0
    while pos < len(head) and fields < 4:
        tag, pos = _varint(head, pos)
        if tag is None:
            break
        number, wire = tag >> 3, tag & 7
        if _MODEL_PROTO_FIELDS.get(number) != wire:
            return False
        value, pos = _varint(head, pos)
        if value is None:
            break
        if number == 1 and not 1 <= value <= 64:
            return False
        if wire == 2:
            pos += value
        fields += 1
    return fields > 0


def session_options(threads: Optional[int] = None):
    """onnxruntime session options used by every keyreid ONNX session: all graph optimisations,
    intra-op threads = cores (onnxruntime's default counts physical cores only)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    return so


def check_sidecar_keys(side: Path, meta, kind: str, fmt: str, version: int, required: tuple,
                       where: str = "sidecar") -> dict:
    """Format, version and required keys of an export's description (`kind`: "ONNX", "OpenVINO")."""
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise KeyreidError(f"{side}: not a keyreid {kind} sidecar (format is not {fmt!r})")
    if meta.get("version") != version:
        raise KeyreidError(f"{side}: sidecar version {meta.get('version')!r}; this keyreid reads "
                           f"version {version}")
    missing = [k for k in required if k not in meta]
    if missing:
        raise KeyreidError(f"{side}: {where} lacks {', '.join(missing)}")
    return meta


def read_sidecar_json(path: Path, side: Path, kind: str, advice: str):
    """The parsed JSON of the sidecar `side` of the export `path`; missing or unreadable is one line."""
    if not side.is_file():
        raise KeyreidError(f"{path}: no sidecar {side.name} beside it; {advice}")
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KeyreidError(f"{side}: not a readable keyreid {kind} sidecar ({e})") from None


def _check_description(side: Path, meta, where: str = "sidecar") -> dict:
    return check_sidecar_keys(side, meta, "ONNX", SIDECAR_FORMAT, SIDECAR_VERSION, _REQUIRED, where)


def read_sidecar(path: Path) -> dict:
    """The sidecar of the ONNX file `path`, checked for format, version and required keys."""
    side = sidecar_path(path)
    meta = read_sidecar_json(path, side, "ONNX", "export the model with "
                             "`keyreid export CKPT -o MODEL.onnx`, which writes both")
    return _check_description(side, meta)


def matching_description(path: Path, meta: dict, sha: Optional[str] = None) -> dict:
    """The description in `meta` of the graph that is at `path` now: the sidecar's own, or the
    replaced pair's one an export killed before its graph rename left under "previous". Neither
    matching is one clear error: the sidecar was written for another file."""
    sha = sha or file_sha256(path)
    if meta["onnx_sha256"] == sha:
        return {k: v for k, v in meta.items() if k != PREVIOUS_KEY}
    previous = meta.get(PREVIOUS_KEY)
    if isinstance(previous, dict) and previous.get("onnx_sha256") == sha:
        return _check_description(sidecar_path(path), previous, f"its {PREVIOUS_KEY!r} entry")
    raise KeyreidError(f"{sidecar_path(path)} was written for another {path.name} (sha256 differs); "
                       "export again, which writes both files together")


def open_onnx(path: Union[str, Path], threads: Optional[int] = None):
    """(description, onnxruntime session) of MODEL.onnx with its sidecar MODEL.onnx.json; a
    missing file, a missing sidecar or a sidecar written for another file is one clear error."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise KeyreidError(f"{path}: ONNX model not found")
    meta = matching_description(path, read_sidecar(path))
    try:
        session = ort.InferenceSession(str(path), session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise KeyreidError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
    names = {o.name for o in session.get_outputs()}
    if {OUTPUT_NAME, RAW_OUTPUT_NAME} - names:
        raise KeyreidError(f"{path}: outputs {sorted(names)}; a keyreid export has "
                           f"{OUTPUT_NAME!r} and {RAW_OUTPUT_NAME!r}")
    return meta, session


__all__ = ["open_onnx", "read_sidecar", "matching_description", "looks_like_onnx",
           "sidecar_path", "file_sha256", "session_options", "SIDECAR_FORMAT", "SIDECAR_VERSION",
           "INPUT_NAME", "OUTPUT_NAME", "RAW_OUTPUT_NAME", "PREVIOUS_KEY", "check_sidecar_keys",
           "read_sidecar_json"]
