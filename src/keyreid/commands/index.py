"""`keyreid index build | add | remove | info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Build and maintain a gallery index (faiss embedded, or Qdrant).", no_args_is_help=True)
console = Console()


def _ints(text: Optional[str], option: str, minimum: Optional[int] = None,
          cameras: bool = False) -> Optional[list[int]]:
    """Comma-separated integers; `cameras`: camera numbers as the file names write them, 2 or c2
    (README "Cameras")."""
    from keyreid.errors import KeyreidError
    from keyreid.search.index import INT64_MIN, check_int64, parse_camera

    if text is None:
        return None
    try:
        values = [(parse_camera if cameras else int)(t) for t in text.split(",") if t.strip()]
    except ValueError:
        what = "camera numbers as the file names write them (2 or c2)" if cameras else "integers"
        raise KeyreidError(f"{option} takes comma-separated {what}, got {text!r}") from None
    return [check_int64(v, option, INT64_MIN if minimum is None else minimum) for v in values]


WAIT_HELP = ("Seconds to wait while another process writes the index (an index build/add/remove, or keyreid "
             "serve's gallery routes) before giving up.")


@app.command("build")
def build(
    features: list[Path] = typer.Argument(..., help="FEATURES folders (shards are taken together)."),
    output: Path = typer.Option(..., "--output", "-o", help="INDEX folder to create."),
    backend: str = typer.Option("faiss", "--backend", help="faiss | qdrant."),
    index_type: str = typer.Option("flat", "--type", help="flat (exact) | pq (4-bit PQ fast-scan + exact re-scoring) | ivf | hnsw | "
                                    "auto (flat up to 20,000 vectors, pq above)."),
    qdrant_url: Optional[str] = typer.Option(None, "--qdrant-url", help="Qdrant server (default: embedded in INDEX)."),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF lists [default: ~sqrt(N)]."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF lists probed [default: tuned to recall@10 >= 0.95]."),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="HNSW efSearch [default: tuned]."),
    pq_m: Optional[int] = typer.Option(None, "--pq-m", help="pq sub-quantisers [default: dim / 8, at most 64]."),
    k_factor: Optional[int] = typer.Option(None, "--k-factor", help="pq candidates re-scored exactly, as a multiple "
                                           "of top-k [default: tuned to recall@10 >= 0.95]."),
    storage: Optional[str] = typer.Option(None, "--ivf-storage", help="IVF vectors: flat (exact scores) | fp16 | sq8 "
                                          "(faster probes) [default: flat]; only with --type ivf."),
    allow_duplicates: bool = typer.Option(False, "--allow-duplicates", help="Build even when two FEATURES folders "
                                          "hold the same images."),
    wait: float = typer.Option(300.0, "--wait", min=0, help=WAIT_HELP),
) -> None:
    """Build an index over one model's features."""
    from keyreid.search.index import build_index

    opts = {k: v for k, v in {"nlist": nlist, "nprobe": nprobe, "ef_search": ef_search, "pq_m": pq_m,
                              "k_factor": k_factor,
                              "qdrant_url": qdrant_url, "storage": storage}.items() if v is not None}
    index = build_index(output, features, backend=backend, index_type=index_type, wait_s=wait,
                        allow_duplicates=allow_duplicates, **opts)
    rep = index.build_report
    how = "exact search" if rep.get("exact") else (
        f"recall@10 {rep['recall@10']:.3f} against exact search on {rep['held_out']} held-out gallery vectors, "
        + ", ".join(f"{k} {rep[k]}" for k in ("nprobe", "ef_search", "k_factor") if k in rep))
    console.print(f"{index.manifest['backend']} {index.manifest['type']} index of {len(index)} vectors in "
                  f"{output}: {how}", markup=False, highlight=False)
    index.close()


@app.command("add")
def add(index_path: Path = typer.Argument(..., metavar="INDEX"),
        features: Path = typer.Argument(..., help="FEATURES folder of the same model."),
        qdrant_url: Optional[str] = typer.Option(None, "--qdrant-url"),
        allow_duplicates: bool = typer.Option(False, "--allow-duplicates", help="Add the folder even when the "
                                              "index already holds its images (every image twice)."),
        wait: float = typer.Option(300.0, "--wait", min=0, help=WAIT_HELP)) -> None:
    """Add a features folder to an index."""
    from keyreid.search.index import add_to_index

    ids, size = add_to_index(index_path, features, qdrant_url, wait_s=wait, allow_duplicates=allow_duplicates)
    console.print(f"added {len(ids)} vectors (ids {ids.min() if len(ids) else '-'}..{ids.max() if len(ids) else '-'}); "
                  f"{size} in {index_path}", markup=False, highlight=False)


@app.command("remove")
def remove(index_path: Path = typer.Argument(..., metavar="INDEX"),
           ids: Optional[str] = typer.Option(None, "--ids", help="Comma-separated ids."),
           camera: Optional[str] = typer.Option(None, "--camera", help="Comma-separated cameras, numbered as the file "
                                                "names write them (2 or c2): remove all their images."),
           qdrant_url: Optional[str] = typer.Option(None, "--qdrant-url"),
           wait: float = typer.Option(300.0, "--wait", min=0, help=WAIT_HELP)) -> None:
    """Remove vectors by id or by camera."""
    from keyreid.errors import KeyreidError
    from keyreid.search.index import remove_from_index

    id_list, cams = _ints(ids, "--ids", minimum=0), _ints(camera, "--camera", cameras=True)
    if not id_list and not cams:
        raise KeyreidError("give --ids 1,2,... and/or --camera C")
    n, left = remove_from_index(index_path, ids=id_list, cameras=cams, qdrant_url=qdrant_url, wait_s=wait)
    console.print(f"removed {n} vectors; {left} left in {index_path}", markup=False, highlight=False)


@app.command("info")
def info(index_path: Path = typer.Argument(..., metavar="INDEX"),
         as_json: bool = typer.Option(False, "--json"),
         qdrant_url: Optional[str] = typer.Option(None, "--qdrant-url")) -> None:
    """What an index holds: backend, type, model fingerprint, dimension, metric, count, cameras
    (numbered as the file names write them, README "Cameras")."""
    from keyreid.data.records import camera_label
    from keyreid.search.index import open_index

    index = open_index(index_path, qdrant_url)
    data = index.info()
    data.pop("model", None)
    data["camera_base"] = index.camera_base   # worked out for an index from before the rule
    cameras = index.cameras()
    index.close()
    if cameras is not None:
        data["cameras"] = cameras
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    table = Table(title=str(index_path), show_header=False)
    for key in ("backend", "type", "fingerprint", "dim", "metric", "normalized", "count", "next_id", "params",
                "build_recall@10", "checkpoint", "bytes"):
        if key in data:
            table.add_row(key, json.dumps(data[key]) if isinstance(data[key], (dict, list)) else str(data[key]))
    if "cameras" in data:
        table.add_row("cameras", " ".join(camera_label(c) for c in data["cameras"]) + "  (as the file names write them)")
    console.print(table)
