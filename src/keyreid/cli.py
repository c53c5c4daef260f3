"""The `keyreid` command."""

import typer

from keyreid.commands import datasets as datasets_cmd
from keyreid.commands import demo as demo_cmd
from keyreid.commands import extract as extract_cmd
from keyreid.commands import index as index_cmd
from keyreid.commands import keypoints as keypoints_cmd
from keyreid.commands import search as search_cmd
from keyreid.commands import synth as synth_cmd
from keyreid.commands import train as train_cmd

app = typer.Typer(help="keyreid: keypoint-aligned embeddings for re-identification and retrieval.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(datasets_cmd.app, name="datasets")
app.add_typer(keypoints_cmd.app, name="keypoints")
app.command("synth")(synth_cmd.synth)
app.command("train")(train_cmd.train)
app.command("eval")(train_cmd.evaluate)
app.command("demo")(demo_cmd.demo)
app.command("extract")(extract_cmd.extract)
app.add_typer(index_cmd.app, name="index")
app.command("search")(search_cmd.search)


@app.command()
def version() -> None:
    """Print the installed version."""
    from keyreid import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point: keyreid's own errors print as one clear line, not a traceback."""
    from keyreid.errors import KeyreidError

    try:
        app()
    except KeyreidError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
