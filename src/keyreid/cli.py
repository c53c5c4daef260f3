"""The `keyreid` command."""

import os

import typer

from keyreid.commands import adapt as adapt_cmd
from keyreid.commands import datasets as datasets_cmd
from keyreid.commands import demo as demo_cmd
from keyreid.commands import export as export_cmd
from keyreid.commands import viz as viz_cmd
from keyreid.commands import explain as explain_cmd
from keyreid.commands import extract as extract_cmd
from keyreid.commands import generate as generate_cmd
from keyreid.commands import index as index_cmd
from keyreid.commands import keypoints as keypoints_cmd
from keyreid.commands import search as search_cmd
from keyreid.commands import serve as serve_cmd
from keyreid.commands import synth as synth_cmd
from keyreid.commands import synth_video as synth_video_cmd
from keyreid.commands import track as track_cmd
from keyreid.commands import train as train_cmd

app = typer.Typer(help="keyreid: keypoint-aligned embeddings for re-identification and retrieval.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(datasets_cmd.app, name="datasets")
app.add_typer(keypoints_cmd.app, name="keypoints")
app.command("synth")(synth_cmd.synth)
app.command("synth-video")(synth_video_cmd.synth_video)
app.command("train")(train_cmd.train)
app.command("eval")(train_cmd.evaluate)
app.command("adapt")(adapt_cmd.adapt)
app.command("demo")(demo_cmd.demo)
app.command("export")(export_cmd.export)
app.add_typer(viz_cmd.app, name="viz")
app.command("explain")(explain_cmd.explain)
app.command("extract")(extract_cmd.extract)
app.add_typer(index_cmd.app, name="index")
app.command("search")(search_cmd.search)
app.command("serve")(serve_cmd.serve)
app.add_typer(generate_cmd.app, name="generate")
app.command("track")(track_cmd.track)
app.command("eval-tracks")(track_cmd.eval_tracks)


_DEBUG = False


def _debug() -> bool:
    return _DEBUG or os.environ.get("KEYREID_DEBUG", "").strip().lower() in ("1", "true", "yes")


@app.callback()
def _global_options(debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an error instead of one line "
                               "(also KEYREID_DEBUG=1).")) -> None:
    """keyreid: keypoint-aligned embeddings for re-identification and retrieval."""
    global _DEBUG
    _DEBUG = _DEBUG or debug


@app.command()
def version() -> None:
    """Print the installed version."""
    from keyreid import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point: a user's mistake (keyreid's own errors, and the operating system's file
    errors) prints as one `error: ...` line and exits 2; --debug or KEYREID_DEBUG=1 shows the
    traceback instead. Ctrl-C exits 130 without a traceback."""
    from keyreid.errors import KeyreidError

    try:
        app()
    except KeyreidError as e:
        if _debug():
            raise
        typer.secho(f"error: {e}", fg="red", err=True)
        raise SystemExit(2) from None
    except OSError as e:
        # no permission, a missing folder, a full disk: the user's environment, not a bug
        if _debug() or e.filename is None:
            raise
        typer.secho(f"error: {e.filename}: {e.strerror}", fg="red", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if _debug():
            raise
        typer.secho("interrupted (a training run resumes from its last.pt when run again)", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
