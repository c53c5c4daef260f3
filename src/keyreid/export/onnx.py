"""`keyreid export CKPT -o model.onnx`: the inference graph as ONNX, verified before it is kept.

The file is written under a temporary name beside the target, run by onnxruntime against the
torch model at batch 1 and batch N, and only renamed to the target (with its sidecar
MODEL.onnx.json) when both agree; a failed export leaves nothing at -o and an existing file there
untouched."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from keyreid.errors import KeyreidError
from keyreid.export.graph import EmbeddingGraph
from keyreid.export.parity import TOLERANCE, check_parity, choose_images
from keyreid.inference import load_model
from keyreid.inference.onnx_model import (INPUT_NAME, OUTPUT_NAME, RAW_OUTPUT_NAME, SIDECAR_FORMAT,
                                          SIDECAR_VERSION, file_sha256, session_options, sidecar_path)
from keyreid.utils.io import atomic_write_text

DEFAULT_OPSET = 17


def _export_graph(graph: torch.nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of torch.export's, which needs
        # onnxscript; this one handles every head here and needs nothing more
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), path, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, RAW_OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"},
                                        RAW_OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)


def _sidecar(card: dict, opset: int, sha: str, parity: dict) -> dict:
    from keyreid import __version__

    inp = card["input"]
    return {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION,
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32", "batch": "dynamic",
                  "height": inp["height"], "width": inp["width"], "mean": inp["mean"], "std": inp["std"],
                  "preprocessing": "RGB, resized to height x width (bilinear, antialiased), "
                                   "scaled to [0, 1], then (x - mean) / std per channel"},
        "output": OUTPUT_NAME,
        "outputs": {OUTPUT_NAME: "the model's embedding [batch, dim], L2-normalised inside the graph "
                                 "when normalized is true (what the index stores)",
                    RAW_OUTPUT_NAME: "the embedding before that normalisation (average it over an "
                                     "image and its mirror, then normalise, for flip averaging)"},
        "embedding_dim": card["embedding_dim"], "distance": card["distance"],
        "normalized": card["normalized"], "fingerprint": card["fingerprint"],
        "onnx_sha256": sha, "opset": opset, "card": card, "parity": parity,
        "keyreid_version": __version__,
    }


def export_onnx(checkpoint: Union[str, Path], out: Union[str, Path], opset: int = DEFAULT_OPSET,
                images: Optional[Union[str, Path]] = None, force: bool = False,
                tolerance: float = TOLERANCE, log: Callable[[str], None] = print) -> dict:
    """Export `checkpoint` to `out` (.onnx) plus `out`.json; returns the sidecar.

    Parity is checked on --images, else the training dataset's images when its root is here,
    else generated images (said in the log and the sidecar)."""
    out = Path(out)
    if Path(checkpoint).suffix == ".onnx":
        raise KeyreidError(f"{checkpoint}: already an ONNX model; export takes a checkpoint (.pt)")
    if out.suffix != ".onnx":
        raise KeyreidError(f"{out}: the output must end in .onnx (load_model recognises it by that)")
    for target in (out, sidecar_path(out)):
        if target.exists() and not force:
            raise KeyreidError(f"{target} exists; pass --force to replace it")
    loaded = load_model(checkpoint, device="cpu")
    chosen = choose_images(Path(images) if images is not None else None,
                           loaded.config.data.root if loaded.config is not None else None,
                           loaded.input_size)
    if chosen.source == "generated":
        log("parity: no --images and the training images are not here; checking on "
            f"{len(chosen.images)} generated images (pass --images DIR for real ones)")
    pictures = list(chosen.images)
    while len(pictures) < 2:  # batch > 1 needs two images at least
        pictures = pictures * 2
    batch = loaded.preprocess(pictures)
    reference = loaded.embed_tensor(batch, normalize=True)

    graph = EmbeddingGraph(loaded.model, normalize=loaded.normalized)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        try:
            _export_graph(graph, batch[:2], tmp, opset)
        except Exception as e:  # the exporter raises many types; the first line says what
            raise KeyreidError(f"{checkpoint}: ONNX export failed at opset {opset} "
                               f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
        import onnxruntime as ort

        session = ort.InferenceSession(tmp, session_options(), providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            emb, raw = session.run([OUTPUT_NAME, RAW_OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x)})
            return emb, raw

        try:
            diffs = check_parity(reference, run, batch.numpy().astype(np.float32), tolerance)
        except KeyreidError as e:
            raise KeyreidError(f"{out}: export rejected, nothing written: {e}") from None
        del session
        parity = {"images": chosen.source, "count": len(pictures), "tolerance": tolerance,
                  "max_abs_diff": diffs}
        meta = _sidecar(loaded.card, opset, file_sha256(tmp), parity)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    atomic_write_text(sidecar_path(out), json.dumps(meta, indent=2))
    log(f"parity on {len(pictures)} images ({chosen.source}): max abs difference "
        + ", ".join(f"batch {k}: {v:.2g}" for k, v in diffs.items()) + f" (limit {tolerance:g})")
    return meta
