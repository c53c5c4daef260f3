"""An exported `model.onnx` used like a trained checkpoint, through onnxruntime alone.

The sidecar `model.onnx.json` (written by `keyreid export`) carries everything the torch model's
card does (input size, pixel mean/std, embedding size, distance, normalisation) plus the torch
model's fingerprint, so an index built with the torch model accepts ONNX queries, and the sha256
of the .onnx file, so a sidecar never describes another file by mistake.

The graph has two outputs: `embedding` (L2-normalised inside the graph when the model's distance
is cosine: what an index expects) and `raw_embedding` (the model's embedding before that
normalisation), which flip averaging and `normalize=False` use so that every embedding equals
LoadedModel.embed's for the same arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from keyreid.data.transforms import KeypointTransform, TransformConfig
from keyreid.errors import KeyreidError
from keyreid.inference.loaded import to_pil  # image reading only; no model code comes with it

SIDECAR_FORMAT = "keyreid-onnx"
SIDECAR_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
RAW_OUTPUT_NAME = "raw_embedding"


def sidecar_path(onnx_path: Union[str, Path]) -> Path:
    return Path(str(onnx_path) + ".json")


def file_sha256(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def session_options(threads: Optional[int] = None):
    """onnxruntime session options used by every keyreid ONNX session: all graph optimisations,
    intra-op threads = cores (onnxruntime's default counts physical cores only)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    return so


def read_sidecar(path: Path) -> dict:
    side = sidecar_path(path)
    if not side.is_file():
        raise KeyreidError(f"{path}: no sidecar {side.name} beside it; export the model with "
                           "`keyreid export CKPT -o MODEL.onnx`, which writes both")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KeyreidError(f"{side}: not a readable keyreid ONNX sidecar ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise KeyreidError(f"{side}: not a keyreid ONNX sidecar (format is not {SIDECAR_FORMAT!r})")
    if meta.get("version") != SIDECAR_VERSION:
        raise KeyreidError(f"{side}: sidecar version {meta.get('version')!r}; this keyreid reads "
                           f"version {SIDECAR_VERSION}")
    missing = [k for k in ("onnx_sha256", "fingerprint", "embedding_dim", "distance", "normalized",
                           "input", "output") if k not in meta]
    if missing:
        raise KeyreidError(f"{side}: sidecar lacks {', '.join(missing)}")
    return meta


class OnnxModel:
    """An exported model with LoadedModel's embedding interface, run by onnxruntime on CPU."""

    device = "cpu"

    def __init__(self, path: Path, meta: dict, session):
        self.path = path
        self.meta = meta
        self.session = session
        self.card = meta["card"]
        inp = meta["input"]
        tcfg = TransformConfig(height=inp["height"], width=inp["width"], flip_prob=0.0, pad=0,
                               erase_prob=0.0, mean=tuple(inp["mean"]), std=tuple(inp["std"]))
        # the same preprocessing LoadedModel uses (the flip permutation only moves keypoints,
        # which embedding never passes)
        self.transform = KeypointTransform(tcfg, train=False)

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.meta["embedding_dim"])

    @property
    def distance(self) -> str:
        return self.meta["distance"]

    @property
    def normalized(self) -> bool:
        return bool(self.meta["normalized"])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.meta["input"]["height"]), int(self.meta["input"]["width"])

    def preprocess(self, images: Sequence) -> torch.Tensor:
        return torch.stack([self.transform(to_pil(im))[0] for im in images])

    def _run(self, x: np.ndarray) -> np.ndarray:
        # raw_embedding: flip averaging and normalisation happen outside, as in LoadedModel
        return self.session.run([RAW_OUTPUT_NAME], {INPUT_NAME: x})[0]

    def embed_tensor(self, batch, flip: bool = False, normalize: Optional[bool] = None) -> np.ndarray:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
        x = np.ascontiguousarray(x, dtype=np.float32)
        f = self._run(x)
        if flip:
            f = (f + self._run(np.ascontiguousarray(x[..., ::-1]))) / 2
        if self.normalized if normalize is None else normalize:
            # torch.nn.functional.normalize's formula, so both backends agree to rounding
            f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        return f.astype(np.float32, copy=False)

    def embed(self, images, batch_size: int = 64, flip: bool = False,
              normalize: Optional[bool] = None) -> np.ndarray:
        """float32 [N, D] for paths, PIL images or uint8 arrays (one image gives [1, D])."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        images = list(images)
        out = [self.embed_tensor(self.preprocess(images[i:i + batch_size]), flip, normalize)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def load_onnx_model(path: Union[str, Path], threads: Optional[int] = None) -> OnnxModel:
    """Open MODEL.onnx with its sidecar MODEL.onnx.json; a missing file, a missing sidecar or a
    sidecar written for another file is one clear error."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise KeyreidError(f"{path}: ONNX model not found")
    meta = read_sidecar(path)
    if file_sha256(path) != meta["onnx_sha256"]:
        raise KeyreidError(f"{sidecar_path(path)} was written for another {path.name} (sha256 differs); "
                           "export again, which writes both files together")
    try:
        session = ort.InferenceSession(str(path), session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise KeyreidError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
    names = {o.name for o in session.get_outputs()}
    if {OUTPUT_NAME, RAW_OUTPUT_NAME} - names:
        raise KeyreidError(f"{path}: outputs {sorted(names)}; a keyreid export has "
                           f"{OUTPUT_NAME!r} and {RAW_OUTPUT_NAME!r}")
    return OnnxModel(path, meta, session)


__all__ = ["OnnxModel", "load_onnx_model", "read_sidecar", "sidecar_path", "file_sha256",
           "session_options", "SIDECAR_FORMAT", "SIDECAR_VERSION", "INPUT_NAME", "OUTPUT_NAME",
           "RAW_OUTPUT_NAME"]
