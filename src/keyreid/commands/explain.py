"""`keyreid explain CKPT QUERY MATCH -o cam.png`."""

from __future__ import annotations

from pathlib import Path

import typer


def explain(checkpoint: Path = typer.Argument(..., help="Trained checkpoint (best.pt or last.pt)."),
            query: Path = typer.Argument(..., help="Query image."),
            match: Path = typer.Argument(..., help="The image it was matched with."),
            output: Path = typer.Option(..., "-o", "--output", help="PNG to write."),
            method: str = typer.Option("gradxact", help="gradxact (gradient x activation per location) "
                                       "| gradcam (channel-pooled gradients, Selvaraju et al.)."),
            device: str = typer.Option("cpu", help="auto | cpu | cuda | cuda:N."),
            ) -> None:
    """Similarity Grad-CAM: which regions made QUERY and MATCH similar (for both, side by side;
    predicted keypoint heatmaps next to them for keypoint heads)."""
    from keyreid.errors import KeyreidError
    from keyreid.inference import load_model
    from keyreid.viz.gradcam import METHODS, render_explanation, similarity_cam
    from keyreid.viz.heatmaps import denormalize_images

    if method not in METHODS:
        raise KeyreidError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if checkpoint.suffix.lower() == ".onnx":
        raise KeyreidError(f"{checkpoint}: explain needs gradients, so the torch checkpoint (.pt), "
                           "not an ONNX export")
    if output.suffix.lower() != ".png":
        raise KeyreidError(f"{output}: the output must be a .png file")
    loaded = load_model(checkpoint, device=device)
    batch = loaded.preprocess([query, match])
    cam = similarity_cam(loaded.model, batch[0], batch[1], method=method)
    inp = loaded.card["input"]
    rgb = denormalize_images(batch, inp["mean"], inp["std"])
    render_explanation(rgb, cam, output)
    typer.echo(f"cosine similarity {cam.similarity:.4f}; wrote {output}")
