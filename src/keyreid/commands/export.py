"""`keyreid export CKPT -o model.onnx`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(checkpoint: Path = typer.Argument(..., help="Trained checkpoint (best.pt or last.pt)."),
           output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write (MODEL.onnx; "
                                       "its sidecar MODEL.onnx.json is written beside it)."),
           images: Optional[Path] = typer.Option(None, help="Folder of images to check parity on "
                                                 "(default: the training dataset's, else generated)."),
           opset: int = typer.Option(17, help="ONNX opset (the exporter writes 7 to 20)."),
           force: bool = typer.Option(False, "--force", help="Replace an existing MODEL.onnx and its sidecar."),
           ) -> None:
    """Export the inference graph (images -> embedding) to ONNX, verified against torch at batch 1
    and batch N before it is written."""
    from keyreid.export import export_onnx

    meta = export_onnx(checkpoint, output, opset=opset, images=images, force=force, log=typer.echo)
    typer.echo(f"wrote {output} ({meta['embedding_dim']}-d {'normalised ' if meta['normalized'] else ''}"
               f"embedding, output {meta['output']!r}, fingerprint {meta['fingerprint']}) "
               f"and {output}.json")
