"""The `keyreid` command."""

import typer

app = typer.Typer(help="keyreid: keypoint-aligned embeddings for re-identification.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the installed version."""
    from keyreid import __version__

    typer.echo(__version__)
