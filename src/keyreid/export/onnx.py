"""`keyreid export CKPT -o model.onnx`: the inference graph as ONNX, verified before it is kept.

The file is written in a temporary folder beside the target, run by onnxruntime against the
torch model at batch 1 and batch N, for --format onnx-int8 quantised (keyreid.export.int8), then
compared with the torch model in retrieval terms on a held-out set (mAP, rank-1, top-10 overlap;
keyreid.export.parity), and only moved to the target (with its sidecar MODEL.onnx.json) when
every check passes; a failed export leaves nothing at -o and an existing pair there untouched. Replacing a pair (--force) is ordered so that a process killed at any point leaves a
pair that load_model reads as the old model or as the new one, never a graph with another
graph's sidecar (see keyreid.inference.onnx_model)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch

from keyreid.errors import KeyreidError
from keyreid.export.graph import EmbeddingGraph
from keyreid.export.parity import (MAX_MAP_DROP, MIN_TOP10_OVERLAP, TOLERANCE, check_parity,
                                   check_retrieval, choose_images, describe_retrieval, held_out_set,
                                   retrieval_parity)
from keyreid.inference import LoadedModel, load_model, model_format
from keyreid.inference.backends import OnnxBackend, OpenVinoBackend
from keyreid.inference.onnx_model import (INPUT_NAME, OUTPUT_NAME, PREVIOUS_KEY, RAW_OUTPUT_NAME,
                                          SIDECAR_FORMAT, SIDECAR_VERSION, file_sha256,
                                          matching_description, read_sidecar, session_options,
                                          sidecar_path)
from keyreid.utils.io import _file_mode, atomic_write_text

DEFAULT_OPSET = 17
FORMATS = ("onnx", "onnx-int8", "openvino", "openvino-fp16")


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


def _sidecar(card: dict, opset: int, sha: str, parity: dict, precision: str = "fp32",
             calibration: Optional[dict] = None) -> dict:
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
        "onnx_sha256": sha, "opset": opset, "card": card, "precision": precision,
        **({"calibration": calibration} if calibration is not None else {}), "parity": parity,
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


def _session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])


def _runner(session) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, raw = session.run([OUTPUT_NAME, RAW_OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x)})
        return emb, raw

    return run


def export_onnx(checkpoint: Union[str, Path], out: Union[str, Path], opset: int = DEFAULT_OPSET,
                images: Optional[Union[str, Path]] = None, force: bool = False,
                tolerance: float = TOLERANCE, log: Callable[[str], None] = print,
                format: str = "onnx", calibration: Optional[Union[str, Path]] = None,
                parity_root: Optional[Union[str, Path]] = None, max_map_drop: float = MAX_MAP_DROP,
                min_overlap: float = MIN_TOP10_OVERLAP) -> dict:
    """Export `checkpoint` to `out` (.onnx) plus `out`.json; returns the sidecar.

    The graph is checked against torch at batch 1 and N on --images, else the training
    dataset's images when its root is here, else generated images (said in the log and the
    sidecar). format "onnx-int8" then quantises it to static int8, calibrated on `calibration`
    (a folder) or the training data. Every format is then compared with the fp32 torch model on
    `parity_root`, else the training dataset's test split, else generated images, and refused
    when mAP drops by more than `max_map_drop` points or the top-10 overlap is under
    `min_overlap`."""
    out = Path(out)
    if format not in FORMATS:
        raise KeyreidError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    low, high = opset_range()
    if not low <= opset <= high:
        raise KeyreidError(f"--opset {opset}: the exporter writes opsets {low} to {high} "
                           f"(default {DEFAULT_OPSET})")
    ir = format.startswith("openvino")
    suffix = ".xml" if ir else ".onnx"
    if out.suffix.lower() != suffix:
        raise KeyreidError(f"{out}: --format {format} writes MODEL{suffix}"
                           + (" (with MODEL.bin beside it)" if ir else "") + f"; name the output *{suffix}")
    if ir:
        from keyreid.inference.openvino_model import import_openvino

        import_openvino(out)   # before any work: a missing runtime is one line
    kind = model_format(checkpoint)
    if kind != "torch":
        raise KeyreidError(f"{checkpoint}: already an exported {'ONNX' if kind == 'onnx' else 'OpenVINO'} "
                           "model; export takes a torch checkpoint (.pt)")
    if format != "onnx-int8" and calibration is not None:
        raise KeyreidError("--calibration is for --format onnx-int8 (an fp32 export needs no calibration)")
    side = sidecar_path(out)
    for target in (out, side, *([out.with_suffix(".bin")] if ir else [])):
        if target.exists() and not force:
            raise KeyreidError(f"{target} exists; pass --force to replace it")
    loaded = load_model(checkpoint, device="cpu")
    calib = None
    if format == "onnx-int8":  # before any work: a missing calibration set is found in seconds
        from keyreid.export.int8 import calibration_images

        calib = calibration_images(Path(calibration) if calibration is not None else None,
                                   loaded.config, Path(checkpoint))
    held = held_out_set(Path(parity_root) if parity_root is not None else None, loaded.config,
                        loaded.input_size)
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
    # every temporary file (fp32 graph, quantiser's work) in one folder beside the target: the
    # final rename stays on one disk, and one rmtree leaves nothing behind
    work = tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    tmp = os.path.join(work, "fp32.onnx")
    old_text, switched = None, False
    try:
        try:
            _export_graph(graph, batch[:2], tmp, opset)
        except Exception as e:  # the exporter raises many types; the first line says what
            raise KeyreidError(f"{checkpoint}: ONNX export failed at opset {opset} "
                               f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
        session = _session(tmp)
        try:
            diffs = check_parity(reference, _runner(session), batch.numpy().astype(np.float32), tolerance)
        except KeyreidError as e:
            raise KeyreidError(f"{out}: export rejected, nothing written: {e}") from None
        parity = {"images": chosen.source, "count": len(pictures), "tolerance": tolerance,
                  "max_abs_diff": diffs}
        if calib is not None:
            from keyreid.export.int8 import quantize_model

            quantized = os.path.join(work, "int8.onnx")
            log(f"int8: calibrating on {len(calib.images)} images ({calib.source})"
                + (f", {calib.unreadable} unreadable skipped" if calib.unreadable else ""))
            try:
                quantize_model(tmp, quantized, loaded, calib)
                session = _session(quantized)
            except KeyreidError:
                raise
            except Exception as e:  # onnxruntime's quantiser raises many types
                raise KeyreidError(f"{out}: int8 quantisation failed, nothing written "
                                   f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
            tmp = quantized
            # the fp32 graph passed the tolerance check above; the int8 one is held to retrieval
            # terms below, its batch-1 / batch-N differences are recorded for the record
            try:
                parity["int8_max_abs_diff"] = check_parity(reference, _runner(session),
                                                           batch.numpy().astype(np.float32), float("inf"))
            except KeyreidError as e:  # NaN embeddings, or shapes the quantiser changed
                raise KeyreidError(f"{out}: {format} export rejected, nothing written: {e}") from None
        if ir:
            from keyreid.export.openvino import FORMATS as IR_FORMATS, convert
            from keyreid.inference.openvino_model import compile_ir

            xml_tmp, bin_tmp = os.path.join(work, "model.xml"), os.path.join(work, "model.bin")
            convert(tmp, xml_tmp, IR_FORMATS[format])
            compiled = compile_ir(xml_tmp, bin_tmp)
            session = OpenVinoBackend(compiled)
            # fp32 weights are held to the ONNX graph's tolerance; fp16 ones are recorded, and
            # held to retrieval terms below (like int8)
            limit = tolerance if not IR_FORMATS[format] else float("inf")
            try:
                parity["openvino_max_abs_diff"] = check_parity(reference, _ov_runner(session, loaded.normalized),
                                                               batch.numpy().astype(np.float32), limit)
            except KeyreidError as e:
                raise KeyreidError(f"{out}: {format} export rejected, nothing written: "
                                   f"{str(e).replace('onnxruntime', 'OpenVINO')}") from None
        exported = LoadedModel(session if ir else OnnxBackend(session), loaded.card)
        if held.note:
            log(held.note)
        held_ref, held_exp = loaded.embed(held.images), exported.embed(held.images)
        parity["retrieval"] = {**retrieval_parity(held_ref, held_exp, held, loaded.distance),
                               "max_map_drop": max_map_drop, "min_top10_overlap": min_overlap}
        log(describe_retrieval(parity["retrieval"]))
        try:
            check_retrieval(parity["retrieval"], max_map_drop, min_overlap)
        except KeyreidError as e:
            raise KeyreidError(f"{out}: {format} export rejected, nothing written: {e}") from None
        del session, exported
        meta = _sidecar(loaded.card, opset, file_sha256(tmp), parity,
                        precision="int8" if calib is not None else "fp32",
                        calibration=calib.describe() if calib is not None else None)
        if ir:
            from keyreid.export.openvino import install, ir_sidecar

            meta = ir_sidecar(meta, xml_tmp, bin_tmp, out.with_suffix(".bin").name, IR_FORMATS[format])
            install(xml_tmp, bin_tmp, out, meta, mode)
            _log_parity(log, pictures, chosen, diffs, tolerance, False)
            return meta
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
        if old_text is not None and not switched:  # interrupted at step 2: the old files as they were
            atomic_write_text(side, old_text)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # 3. the sidecar without the old description
    atomic_write_text(side, json.dumps(meta, indent=2))
    _log_parity(log, pictures, chosen, diffs, tolerance, calib is not None)
    return meta


def _log_parity(log, pictures, chosen, diffs, tolerance, quantised: bool) -> None:
    log(f"parity on {len(pictures)} images ({chosen.source}): max abs difference "
        + ", ".join(f"batch {k}: {v:.2g}" for k, v in diffs.items()) + f" (limit {tolerance:g})"
        + (" for the fp32 graph before quantisation" if quantised else ""))


def _ov_runner(backend, normalized: bool) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """check_parity's runner for an IR: the raw output, and the embedding as the graph gives it."""
    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = backend.run(x).numpy()
        emb = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12) if normalized else raw
        return emb, raw

    return run
