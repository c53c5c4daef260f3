"""`keyreid export CKPT -o model.onnx [--format onnx|onnx-int8]`, `-o model.xml --format openvino|openvino-fp16`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(checkpoint: Path = typer.Argument(..., help="Trained checkpoint (best.pt or last.pt)."),
           output: Path = typer.Option(..., "-o", "--output", help="File to write: MODEL.onnx "
                                       "(onnx formats) or MODEL.xml (openvino: MODEL.bin beside it); "
                                       "the sidecar MODEL.onnx.json / MODEL.xml.json too."),
           fmt: str = typer.Option("onnx", "--format", help="onnx (fp32) | onnx-int8 (static int8, "
                                   "QDQ, per-channel weights; still an ONNX file) | openvino (IR, "
                                   "fp32) | openvino-fp16 (IR, fp16-compressed weights)."),
           calibration: Optional[Path] = typer.Option(None, "--calibration", help="onnx-int8: folder of "
                                                      "images to calibrate on (searched recursively; "
                                                      "default: up to 256 training images of the "
                                                      "checkpoint's dataset)."),
           parity_root: Optional[Path] = typer.Option(None, "--parity-root", help="Held-out set for the "
                                                      "retrieval check: query/ and bounding_box_test/ "
                                                      "with Market-style names (default: the "
                                                      "checkpoint's dataset test split, else generated "
                                                      "images, embedding differences only)."),
           max_map_drop: float = typer.Option(0.5, "--max-map-drop", help="Refuse the export when its "
                                              "mAP is more than this many points below the torch "
                                              "model's (or its top-10 overlap is under 0.95)."),
           images: Optional[Path] = typer.Option(None, help="Folder of images to check batch-1 / "
                                                 "batch-N parity on (default: the training "
                                                 "dataset's, else generated)."),
           opset: int = typer.Option(17, help="ONNX opset (the exporter writes 7 to 20)."),
           force: bool = typer.Option(False, "--force", "--overwrite", help="Replace an existing export (its files are switched so that a kill leaves the old or the new model)."),
           ) -> None:
    """Export the inference graph (images -> embedding) to ONNX (fp32 or static int8) or OpenVINO, verified
    against torch at batch 1 and batch N and in retrieval terms (mAP, rank-1, top-10 overlap)
    before it is written."""
    from keyreid.export import export_onnx

    meta = export_onnx(checkpoint, output, opset=opset, images=images, force=force, log=typer.echo,
                       format=fmt, calibration=calibration, parity_root=parity_root,
                       max_map_drop=max_map_drop)
    typer.echo(f"wrote {output} ({meta['precision']}, {meta['embedding_dim']}-d "
               f"{'normalised ' if meta['normalized'] else ''}"
               f"embedding, output {meta['output']!r}, fingerprint {meta['fingerprint']}) "
               f"and {output}.json" + (f" (weights {output.with_suffix('.bin').name})"
                                       if fmt.startswith("openvino") else ""))
