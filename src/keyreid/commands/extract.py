"""`keyreid extract CKPT (IMAGES_DIR | --dataset NAME --root ROOT) -o FEATURES`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def extract(
    checkpoint: Path = typer.Argument(..., help="Trained model: best.pt / last.pt, or an exported .onnx file."),
    images: Optional[Path] = typer.Argument(None, help="Folder of images (searched recursively)."),
    output: Path = typer.Option(..., "--output", "-o", help="FEATURES folder (created; an unfinished one is continued)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset adapter name (instead of IMAGES_DIR)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset root (with --dataset)."),
    split: str = typer.Option("gallery", "--split", help="gallery | query | train | all (with --dataset)."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Regex with named groups pid / cam / t / track "
                                          r"searched in each file name, e.g. '(?P<pid>\d+)_c(?P<cam>\d+)'."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    flip: bool = typer.Option(False, "--flip", help="Average each image's and its mirror's embedding."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage: float32 | float16."),
    on_error: str = typer.Option("stop", "--on-error", help="stop (name the unreadable image) | skip "
                                 "(list it in FEATURES/skipped.txt)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: extract block i of N (automatic under "
                                        "torchrun from RANK / WORLD_SIZE)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch | onnx | onnx-int8 | openvino: "
                                          "check that CKPT is that kind of model [default: whatever "
                                          "the file is, from its content]."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Embed a folder or a dataset split into a FEATURES folder (resumable, shardable)."""
    from keyreid.errors import KeyreidError
    from keyreid.inference import load_model
    from keyreid.search.extract import extract as run_extract
    from keyreid.search.extract import list_dataset, list_folder, resolve_shard
    from keyreid.utils.progress import progress_bar

    if (images is None) == (dataset is None):
        raise KeyreidError("give either IMAGES_DIR or --dataset NAME --root ROOT")
    if dataset is not None and root is None:
        raise KeyreidError("--dataset needs --root ROOT")
    from keyreid.inference import RUNTIMES, runtime_of

    actual = runtime_of(checkpoint)   # from the file's content; a missing file is one line
    if backend is not None and backend not in RUNTIMES:
        raise KeyreidError(f"--backend must be one of {', '.join(RUNTIMES)}, got {backend!r}")
    if backend is not None and backend != actual:
        wanted = {"torch": "a .pt checkpoint", "onnx": "an fp32 ONNX export (keyreid export)",
                  "onnx-int8": "an int8 ONNX export (keyreid export --format onnx-int8)",
                  "openvino": "an OpenVINO IR (keyreid export --format openvino -o MODEL.xml)"}
        raise KeyreidError(f"{checkpoint}: --backend {backend} needs {wanted[backend]}; this file is "
                           f"{wanted[actual]}")
    shard_ix = resolve_shard(shard)
    if device == "auto" and shard_ix is not None and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():  # one GPU per torchrun process
            device = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    items, source = list_folder(images, pattern) if images is not None else list_dataset(dataset, root, split)
    model = load_model(checkpoint, device=device)
    where = output if shard_ix is None else f"{output} (shard {shard_ix[0]}/{shard_ix[1]})"
    with progress_bar(True) as bar:
        task = bar.add_task("extract", total=None)

        first = [True]

        def progress(done: int, total: int) -> None:
            if first[0] and 0 < done:
                console.print(f"continuing {where}: {done} of {total} images already done", markup=False,
                              highlight=False)
            first[0] = False
            bar.update(task, completed=done, total=total)

        writer = run_extract(model, items, source, output, batch_size=batch_size, flip=flip, dtype=dtype,
                             on_error=on_error, shard=shard_ix, checkpoint=str(checkpoint.resolve()),
                             progress=progress)
    m = writer.manifest
    skipped = f", {m['skipped']} skipped (listed in {writer.folder / 'skipped.txt'})" if m["skipped"] else ""
    console.print(f"{m['count']} features ({m['dim']}-d {m['dtype']}, model {m['fingerprint']}) in {where}{skipped}",
                  markup=False, highlight=False)
