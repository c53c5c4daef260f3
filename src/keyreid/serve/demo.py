"""`keyreid serve --demo`: the demo's kae model over the synthetic gallery. The features and
the index are built once under runs/demo/serve/<model fingerprint>/ with the search package's
own functions, so a retrained demo model gets its own index instead of a mismatched one."""

from __future__ import annotations

from pathlib import Path

from keyreid.errors import KeyreidError

DEMO_CHECKPOINT = Path("runs/demo/seed0/kae/best.pt")
DEMO_DATA = Path("data/synth")
DEMO_SERVE = Path("runs/demo/serve")


def prepare_demo_index(checkpoint: Path = DEMO_CHECKPOINT, data_root: Path = DEMO_DATA,
                       out: Path = DEMO_SERVE, model=None, show_progress: bool = True) -> Path:
    """The demo index folder, extracted and built first when missing (a killed extraction
    resumes)."""
    from keyreid.inference import load_model
    from keyreid.search import build_index
    from keyreid.search.extract import extract, list_dataset
    from keyreid.search.index import MANIFEST
    from keyreid.utils.progress import progress_bar

    if not Path(checkpoint).is_file():
        raise KeyreidError(f"{checkpoint}: demo model not found; run `make demo` (or `keyreid demo`) first")
    if not (Path(data_root) / "bounding_box_test").is_dir():
        raise KeyreidError(f"{data_root}: synthetic gallery not found; run `make demo` (or `keyreid demo`) first")
    model = model or load_model(checkpoint, device="cpu")
    folder = Path(out) / model.fingerprint
    index = folder / "index"
    if (index / MANIFEST).is_file():
        return index
    items, source = list_dataset("market1501", Path(data_root), "gallery")
    with progress_bar(show_progress) as bar:
        task = bar.add_task("demo gallery features", total=len(items))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        extract(model, items, source, folder / "features", batch_size=64, checkpoint=str(Path(checkpoint).resolve()),
                progress=progress)
    partial = index.with_name("index.partial")
    if partial.exists():  # a build killed half-way: ours to redo, never a user's folder
        import shutil

        shutil.rmtree(partial)
    build_index(partial, [folder / "features"]).close()
    partial.rename(index)
    return index


__all__ = ["DEMO_CHECKPOINT", "DEMO_DATA", "DEMO_SERVE", "prepare_demo_index"]
