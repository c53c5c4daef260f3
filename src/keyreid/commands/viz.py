"""`keyreid viz ranked EVAL_RUN... -o OUT`: pictures of an evaluation run's ranked lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Pictures of evaluation runs.", no_args_is_help=True)


def _ranked_file(run: Path) -> Path:
    """An evaluation report (CKPT.eval.json) or the checkpoint it was written for -> its ranked
    lists (CKPT.eval.ranked.npz, written by `keyreid eval` for re-ID datasets)."""
    from keyreid.errors import KeyreidError

    report = run if run.suffix == ".json" else run.with_suffix(".eval.json")
    if not report.is_file():
        raise KeyreidError(f"{run}: no evaluation report {report.name} here; run `keyreid eval` first")
    try:
        meta = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KeyreidError(f"{report}: not a readable evaluation report ({e})") from None
    if meta.get("protocol") == "retrieval":
        raise KeyreidError(f"{report}: a retrieval evaluation (every image queries all others) has no "
                           "query/gallery ranked lists to draw")
    return Path(meta.get("ranked") or report.with_suffix(".ranked.npz"))


def _query_indices(spec: Optional[str], paths) -> list[int]:
    from keyreid.errors import KeyreidError

    if not spec:
        return []
    names = [Path(str(p)).name for p in paths]
    out = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token.isdigit():
            if int(token) >= len(paths):
                raise KeyreidError(f"--queries: index {token} is past the last query ({len(paths) - 1})")
            out.append(int(token))
        elif token in names:
            out.append(names.index(token))
        else:
            raise KeyreidError(f"--queries: {token!r} is neither a query index nor a query file name")
    return out


@app.command("ranked")
def ranked(runs: list[Path] = typer.Argument(..., help="Evaluation reports (CKPT.eval.json) or their checkpoints."),
           output: Path = typer.Option(..., "-o", "--output", help="PNG for one run; a folder for several."),
           worst: Optional[int] = typer.Option(None, "--worst", min=0, help="The N queries of lowest AP."),
           best: Optional[int] = typer.Option(None, "--best", min=0, help="The N queries of highest AP."),
           queries: Optional[str] = typer.Option(None, "--queries", help="Comma-separated query indices "
                                                 "or file names."),
           top_k: int = typer.Option(10, "--top-k", min=1, help="Gallery images per query."),
           ) -> None:
    """Worst and best queries of evaluation runs with their ranked gallery (green: same identity,
    red: another). Default: the 4 worst and the 4 best."""
    from keyreid.errors import KeyreidError
    from keyreid.viz.ranking import load_ranked, plot_saved_ranking, select_queries

    if worst is None and best is None and not queries:
        worst, best = 4, 4
    if len(runs) > 1 and output.suffix.lower() == ".png":
        raise KeyreidError(f"{output}: several runs write one picture each; give a folder for -o")
    if len(runs) == 1 and output.suffix.lower() != ".png":
        raise KeyreidError(f"{output}: the output for one run must be a .png file")
    targets = [output] if len(runs) == 1 else [output / f"{r.resolve().parent.name}_{r.name.split('.')[0]}.png"
                                               for r in runs]
    if len(set(targets)) != len(targets):
        raise KeyreidError("two runs would write the same picture name; draw them one at a time")
    loaded = [load_ranked(_ranked_file(r)) for r in runs]   # every input checked before any picture
    for run, data, target in zip(runs, loaded, targets):
        rows = select_queries(data["ap"], data["first_hit"], worst or 0, best or 0,
                              _query_indices(queries, data["query_path"]))
        if not rows:
            raise KeyreidError(f"{run}: no query to show (no query has a true match in the gallery)")
        plot_saved_ranking(data, rows, target, top_k=top_k)
        typer.echo(f"{target}: " + ", ".join(f"{Path(str(data['query_path'][i])).name} ({label})"
                                             for i, label in rows))
