"""`keyreid search INDEX IMAGE... [--checkpoint CKPT] --top-k 20 [filters] [--rerank] [--json] [--render]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _cams(text: Optional[str]) -> Optional[set[int]]:
    """--camera / --camera-not: cameras as the file names write them, 2 or c2 (README "Cameras")."""
    from keyreid.errors import KeyreidError

    if text is None:
        return None
    from keyreid.search.index import check_int64, parse_camera

    try:
        cams = {parse_camera(t) for t in text.split(",") if t.strip()}
    except ValueError:
        raise KeyreidError(f"cameras are comma-separated camera numbers as the file names write them "
                           f"(2 or c2), got {text!r}") from None
    return {check_int64(c, "cameras") for c in cams}


def search(
    index_path: Path = typer.Argument(..., metavar="INDEX"),
    images: list[Path] = typer.Argument(..., help="Query images."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Model of the index [default: the "
                                              "checkpoint recorded at extraction, if it still exists]."),
    top_k: int = typer.Option(20, "--top-k", min=1),
    camera: Optional[str] = typer.Option(None, "--camera", help="Keep only these cameras, numbered as the file "
                                         "names write them (e.g. 1,3 or c1,c3 for ..._c1s1_... and ..._c3s1_...)."),
    camera_not: Optional[str] = typer.Option(None, "--camera-not", help="Drop these cameras (numbered as --camera)."),
    after: Optional[float] = typer.Option(None, "--after", help="Only images with timestamp >= T."),
    before: Optional[float] = typer.Option(None, "--before", help="Only images with timestamp <= T."),
    rerank: bool = typer.Option(False, "--rerank", help="k-reciprocal re-ranking of the top 100 candidates."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    render: Optional[Path] = typer.Option(None, "--render", help="Draw the queries and their hits (PNG)."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Regex with (?P<pid>..) naming the query's "
                                          "identity in its file name (frames green / red in --render)."),
    qdrant_url: Optional[str] = typer.Option(None, "--qdrant-url"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Find the gallery images most similar to each query image."""
    from keyreid.data.records import camera_label
    from keyreid.errors import KeyreidError
    from keyreid.inference import load_model
    from keyreid.search.extract import _compile_pattern, parse_name
    from keyreid.search.index import SearchFilter, open_index
    from keyreid.search.rerank import CANDIDATES, rerank_hits

    if render is not None:
        from keyreid.viz.report import figure_format

        figure_format(render)   # a name without a picture suffix: said before any work
    index = open_index(index_path, qdrant_url)
    m = index.manifest
    if checkpoint is None:
        recorded = m.get("checkpoint")
        if not recorded:
            raise KeyreidError(f"{index_path}: the index records no checkpoint; pass --checkpoint CKPT")
        if not Path(recorded).is_file():
            raise KeyreidError(f"{index_path}: its checkpoint {recorded} no longer exists; pass --checkpoint CKPT "
                               f"(model {m['fingerprint']})")
        checkpoint = Path(recorded)
    model = load_model(checkpoint, device=device) if checkpoint.suffix != ".onnx" else load_model(checkpoint)
    if model.fingerprint != m["fingerprint"]:
        raise KeyreidError(f"{checkpoint}: model {model.fingerprint} is not the index's model {m['fingerprint']}; "
                           "search with the checkpoint the gallery was extracted with")
    regex = _compile_pattern(pattern)
    query_pids = [parse_name(regex, p.name)["pid"] for p in images]
    vectors = model.embed([str(p) for p in images], flip=bool(m.get("flip", False)))
    filt = SearchFilter(cameras=_cams(camera), cameras_not=_cams(camera_not), after=after, before=before)
    results = index.search(vectors, max(top_k, CANDIDATES) if rerank else top_k, filt)
    ranked = [rerank_hits(index, v, hits, top_k) if rerank else [(h, None) for h in hits[:top_k]]
              for v, hits in zip(vectors, results)]
    window = _time_window_note(index, vectors[:1], after, before) if not all(results) else None
    index.close()
    if window:  # an empty answer is legitimate, but say why (stderr: --json output stays clean)
        Console(stderr=True).print(window, markup=False, highlight=False)

    if as_json:
        out = [{"query": str(p), "hits": [{"rank": r, **vars(h), **({"rerank_distance": d} if rerank else {})}
                                          for r, (h, d) in enumerate(row, start=1)]}
               for p, row in zip(images, ranked)]
        typer.echo(json.dumps(out, indent=1))
    else:
        for p, row in zip(images, ranked):
            table = Table(title=f"{p}: top {len(row)}")
            for col in ("rank", "score", *(("re-ranked distance",) if rerank else ()), "id", "path", "camera", "pid"):
                table.add_column(col, justify="right" if col not in ("path",) else "left")
            for r, (h, d) in enumerate(row, start=1):
                table.add_row(str(r), f"{h.score:.4f}", *((f"{d:.4f}",) if rerank else ()), str(h.id), h.path,
                              camera_label(h.camid), "" if h.pid is None else str(h.pid))
            console.print(table)
    if render is not None:
        from keyreid.search.render import render_hits

        path = render_hits([str(p) for p in images], query_pids, [[h for h, _ in row] for row in ranked], render)
        (console if not as_json else Console(stderr=True)).print(f"picture: {path}", markup=False, highlight=False)


def _time_window_note(index, vector, after: Optional[float], before: Optional[float]) -> Optional[str]:
    """Why --after / --before left a query without hits: a gallery without timestamps matches no
    time window at all."""
    if after is None and before is None:
        return None
    from keyreid.search.index import SearchFilter

    anytime = index.search(vector, 1, SearchFilter(after=float("-inf")))[0]
    if not anytime:
        return ("note: the gallery holds no timestamps, so --after / --before match no image; "
                "search without them (or extract the gallery with a --pattern whose (?P<t>...) group "
                "reads a time from the file names)")
    return "note: no gallery image lies in the time window of --after / --before"
