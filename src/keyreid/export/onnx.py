"""`keyreid export CKPT -o model.onnx`: the inference graph as ONNX, verified before it is kept.

The file is written under a temporary name beside the target, run by onnxruntime against the
torch model at batch 1 and batch N, and only moved to the target (with its sidecar
MODEL.onnx.json) when both agree; a failed export leaves nothing at -o and an existing pair there
untouched. Replacing a pair (--force) is ordered so that a process killed at any point leaves a
pair that load_model reads as the old model or as the new one, never a graph with another
graph's sidecar (see keyreid.inference.onnx_model)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from keyreid.errors import KeyreidError
from keyreid.export.graph import EmbeddingGraph
from keyreid.export.parity import TOLERANCE, check_parity, choose_images
from keyreid.inference import load_model, model_format
from keyreid.inference.onnx_model import (INPUT_NAME, OUTPUT_NAME, PREVIOUS_KEY, RAW_OUTPUT_NAME,
                                          SIDECAR_FORMAT, SIDECAR_VERSION, file_sha256,
                                          matching_description, read_sidecar, session_options,
                                          sidecar_path)
from keyreid.utils.io import _file_mode, atomic_write_text

DEFAULT_OPSET = 17


def opset_range() -> tuple[int, int]:
    """The opsets torch's TorchScript exporter writes (7 to 20 in torch 2.x)."""
    try:
        from torch.onnx import _constants as c

        return int(c.ONNX_MIN_OPSET), int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", c.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):  # a private module: fall back to the range known to work
        return 7, 20


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Send what torch's exporter prints to file descriptors 1 and 2 (a failed export dumps the
    whole TorchScript graph from C++, out of Python's reach) to a discarded temporary file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def _export_graph(graph: torch.nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    with warnings.catch_warnings(), _quiet_output():
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


def _current_description(out: Path) -> Optional[dict]:
    """The description of the pair at `out` when it is a readable, matching pair (what a load
    gives now), else None: there is no old model to keep loadable."""
    if not out.is_file():
        return None
    try:
        return matching_description(out, read_sidecar(out))
    except KeyreidError:
        return None


def export_onnx(checkpoint: Union[str, Path], out: Union[str, Path], opset: int = DEFAULT_OPSET,
                images: Optional[Union[str, Path]] = None, force: bool = False,
                tolerance: float = TOLERANCE, log: Callable[[str], None] = print) -> dict:
    """Export `checkpoint` to `out` (.onnx) plus `out`.json; returns the sidecar.

    Parity is checked on --images, else the training dataset's images when its root is here,
    else generated images (said in the log and the sidecar)."""
    out = Path(out)
    low, high = opset_range()
    if not low <= opset <= high:
        raise KeyreidError(f"--opset {opset}: the exporter writes opsets {low} to {high} "
                           f"(default {DEFAULT_OPSET})")
    if out.suffix.lower() != ".onnx":
        raise KeyreidError(f"{out}: the output must end in .onnx (`keyreid extract` picks the ONNX "
                           "backend by that name)")
    if model_format(checkpoint) == "onnx":
        raise KeyreidError(f"{checkpoint}: already an ONNX model; export takes a torch checkpoint (.pt)")
    side = sidecar_path(out)
    for target in (out, side):
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
    mode = _file_mode(out)  # mkstemp's 0600 would outlive the rename; other outputs follow the umask
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    os.close(fd)
    old_text, switched = None, False
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
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        # three atomic steps; a kill between any two leaves a pair load_model reads whole:
        # 1. the new sidecar, still describing the old graph under "previous" (old pair loads)
        previous = _current_description(out)
        if previous is not None:
            old_text = side.read_text(encoding="utf-8")
            atomic_write_text(side, json.dumps({**meta, PREVIOUS_KEY: previous}, indent=2))
        # 2. the new graph (new pair loads, from the sidecar's own description)
        os.replace(tmp, out)
        switched = True
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if old_text is not None and not switched:  # interrupted at step 2: the old files as they were
            atomic_write_text(side, old_text)
        raise
    # 3. the sidecar without the old description
    atomic_write_text(side, json.dumps(meta, indent=2))
    log(f"parity on {len(pictures)} images ({chosen.source}): max abs difference "
        + ", ".join(f"batch {k}: {v:.2g}" for k, v in diffs.items()) + f" (limit {tolerance:g})")
    return meta
