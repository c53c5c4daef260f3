"""`keyreid generate train|render|poses`: person image generation (PN-GAN, FD-GAN, IP-GAN)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from keyreid.errors import KeyreidError

console = Console()
app = typer.Typer(help="Person image generation: train a generator, render a person in a pose, "
                       "cluster canonical poses.", no_args_is_help=True)


@app.command("train")
def train(config: Path = typer.Argument(..., help="YAML config (see configs/generation/)."),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="Override: key.sub=value (repeatable)."),
          no_resume: bool = typer.Option(False, "--no-resume",
                                         help="Start over even if OUTPUT_DIR/last.pt exists (the old run's "
                                              "files move to OUTPUT_DIR/previous-N)."),
          allow_config_change: bool = typer.Option(
              False, "--allow-config-change",
              help="Resume OUTPUT_DIR/last.pt although the config differs from the one it was trained with "
                   "(learning rates, epochs, ...; never another method or image size)."),
          checkpoint_every: int = typer.Option(0, min=0, help="Also write last.pt every N steps (0: each epoch)."),
          ) -> None:
    """Train a generation method; resumes from OUTPUT_DIR/last.pt when it exists (same config)."""
    from keyreid.generation.config import load_gen_config
    from keyreid.commands.run_start import print_run_start
    from keyreid.generation.trainer import GanTrainer

    cfg = load_gen_config(config, set_ or [])
    trainer = GanTrainer(cfg, resume=not no_resume, allow_config_change=allow_config_change,
                         checkpoint_every_steps=checkpoint_every)
    print_run_start(console, cfg.output_dir, trainer.set_aside, trainer.config_changes)
    if trainer.epochs_done:
        stage = trainer.stages[trainer.state.stage_index].name if trainer.state.stage_index < len(trainer.stages) \
            else "done"
        console.print(f"resuming {cfg.output_dir} after epoch {trainer.epochs_done} (stage {stage})",
                      markup=False)
    result = trainer.fit()
    console.print(f"done: {result['epochs']} epochs ({', '.join(result['stages'])}); checkpoint "
                  f"{result['last']}, sample grids in {Path(cfg.output_dir) / 'samples'}", markup=False)


@app.command("render")
def render(checkpoint: Path = typer.Argument(..., help="A generation checkpoint (OUTPUT_DIR/last.pt)."),
           image: Path = typer.Argument(..., help="The person's image (the source)."),
           pose: Optional[str] = typer.Option(
               None, "--pose", help="Target pose: a JSON file of keypoints [[x, y, v], ...] in the data's "
                                    "skeleton (COCO-17 for people) at IMAGE's size, or canonical:K / "
                                    "canonical:all (the checkpoint's canonical poses)."),
           other: Optional[Path] = typer.Option(
               None, "--other", help="A second image for methods that take one (IP-GAN: pose and background)."),
           output: Path = typer.Option(..., "-o", "--output", help="PNG to write (canonical:all: a strip)."),
           device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
           ) -> None:
    """Render IMAGE's person in another pose (or with another image's attributes) with a trained generator."""
    import numpy as np
    import torch
    from PIL import Image

    from keyreid.errors import DataError
    from keyreid.generation.load import (canonical_targets, load_generator, read_generation_checkpoint,
                                         read_model_image, read_pose_json)
    from keyreid.generation.pose import from_unit_range
    from keyreid.inference.device import resolve_device
    from keyreid.utils.io import atomic_write

    for path, what in ((image, "image"), (other, "--other image")):
        if path is not None and not path.is_file():
            raise DataError(path, f"{what} not found")
    ck = read_generation_checkpoint(checkpoint)
    method, cfg = load_generator(checkpoint, resolve_device(device))
    h, w = cfg.data.height, cfg.data.width
    source, size = read_model_image(image, h, w)
    target = None
    if pose is None and getattr(method, "needs_keypoints", False):
        raise KeyreidError(f"{cfg.method} render draws the person in a target pose: give --pose POSE.json "
                           "(keypoints) or --pose canonical:K / canonical:all")
    if pose is not None:
        if pose.startswith("canonical:"):
            target = canonical_targets(ck.get("card") or {}, pose, h, w, str(checkpoint))
        else:
            from keyreid.data.keypoints import get_skeleton

            target = read_pose_json(pose, get_skeleton(ck["data_skeleton"]), size, h, w)[None]
        target = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
        source = source.expand(len(target), -1, -1, -1)
    second = None
    if other is not None:
        second = read_model_image(other, h, w)[0].expand(source.shape[0], -1, -1, -1)
    try:
        out = method.render(source, target, second)
    except (ValueError, TypeError) as e:  # a method's own refusal of missing / wrong inputs
        raise KeyreidError(f"{cfg.method} render: {str(e).strip().splitlines()[0]}") from None
    pixels = from_unit_range(out.float().cpu())
    strip = np.concatenate(list(pixels), axis=1)
    atomic_write(output, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))
    console.print(f"wrote {output} ({strip.shape[1]}x{strip.shape[0]}, method {cfg.method})", markup=False)


@app.command("poses")
def poses(root: Path = typer.Argument(..., help="Dataset root."),
          dataset: str = typer.Option("market1501", help="Dataset adapter."),
          sidecar: Optional[Path] = typer.Option(None, help="Keypoint sidecar (default ROOT/keypoints.jsonl)."),
          output: Path = typer.Option(..., "-o", "--output", help="canonical.json to write (a PNG goes beside it)."),
          k: int = typer.Option(8, "--k", min=1, help="Number of canonical poses."),
          seed: int = typer.Option(0, help="k-means seed."),
          ) -> None:
    """PN-GAN's canonical poses: k-means over the training poses of ROOT (method_options.canonical)."""
    from keyreid.data.datasets import build_dataset
    from keyreid.data.keypoints import get_skeleton
    from keyreid.errors import DataError

    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    side = sidecar or root / "keypoints.jsonl"
    if not side.is_file():
        raise DataError(side, "keypoint sidecar not found; give --sidecar or run `keyreid keypoints estimate`")
    ds = build_dataset(dataset, root)
    ds.attach_keypoints(side, require_all=False)
    if not ds.skeleton:
        raise DataError(side, "the sidecar names no keypoint skeleton")
    from keyreid.generation.canonical import canonical_from_samples, write_canonical

    canonical = canonical_from_samples(ds.train, get_skeleton(ds.skeleton), k=k, seed=seed)
    picture = output.with_suffix(".png")
    write_canonical(output, canonical, picture_path=picture)
    console.print(json.dumps({"poses": len(canonical.poses), "from": canonical.meta.get("num_poses"),
                              "file": str(output), "picture": str(picture)}), markup=False)
