"""`keyreid serve --demo`: the demo's kae model over the synthetic gallery. The features and
the index are built once under runs/demo/serve/<model fingerprint>/ with the search package's
own functions, so a retrained demo model gets its own index instead of a mismatched one."""

from __future__ import annotations

from pathlib import Path

from keyreid.errors import KeyreidError

DEMO_CHECKPOINT = Path("runs/demo/seed0/kae/best.pt")
DEMO_DATA = Path("data/synth")
DEMO_SERVE = Path("runs/demo/serve")
# the checkout keyreid runs from (src/keyreid/serve/demo.py -> the repository), where `make demo`
# wrote its files: `keyreid serve --demo` then works from any folder, not only the project root
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def demo_home() -> Path:
    """The folder whose runs/demo holds the demo model: the current folder when it has one,
    else the keyreid checkout (both relative paths of the demo then resolve there)."""
    for home in (Path.cwd(), PROJECT_ROOT):
        if (home / DEMO_CHECKPOINT).is_file():
            return home
    return Path.cwd()


def demo_not_found(checkpoint: Path) -> KeyreidError:
    return KeyreidError(f"{checkpoint}: demo model not found (looked in {Path.cwd()} and in the keyreid checkout "
                        f"{PROJECT_ROOT}); run `make demo` (or `keyreid demo`) first")


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


__all__ = ["DEMO_CHECKPOINT", "DEMO_DATA", "DEMO_SERVE", "PROJECT_ROOT", "demo_home", "demo_not_found",
           "prepare_demo_index"]
