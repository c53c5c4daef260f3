"""`keyreid serve`: the HTTP search service and its web page over a gallery index."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer


def serve(
    index: Optional[Path] = typer.Option(None, "--index", help="INDEX folder written by `keyreid index build`."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="The model the index was built with "
                                                                         "(best.pt, or an exported .onnx)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free port)."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar="KEYREID_ADMIN_TOKEN",
                                              help="Token for POST/DELETE /api/gallery (off without one)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Inference threads."),
    queue: int = typer.Option(32, "--queue", min=1, help="Queries waiting before the service answers 503."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Queries embedded together (1: no batching)."),
    max_body_mb: float = typer.Option(10.0, "--max-body-mb", min=0.001, help="Largest request body."),
    max_pixels: int = typer.Option(25_000_000, "--max-pixels", min=1, help="Largest image, in pixels."),
    uploads: Optional[Path] = typer.Option(None, "--uploads", help="Where images added through the API are "
                                                                   "kept [default: INDEX-uploads]."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    allowed_hosts: Optional[str] = typer.Option(None, "--allowed-hosts", help="Host header names answered, "
                                                "comma-separated (* answers any: unsafe, DNS rebinding) "
                                                "[default: the --host names; localhost for loopback]."),
    demo: bool = typer.Option(False, "--demo", help="Serve `make demo`'s kae model over data/synth (index "
                                                    "built under runs/demo/serve when missing)."),
) -> None:
    """Serve a gallery index over HTTP: search API, thumbnails, metrics and a web page at /."""
    import uvicorn

    from keyreid.errors import KeyreidError
    from keyreid.inference import load_model
    from keyreid.search import open_index
    from keyreid.serve import SearchService, ServeSettings, create_app

    hosts = _allowed_hosts(allowed_hosts, host)
    if demo:
        from keyreid.serve.demo import DEMO_CHECKPOINT, DEMO_DATA, DEMO_SERVE, demo_home, demo_not_found, \
            prepare_demo_index

        home = demo_home()
        checkpoint = checkpoint or home / DEMO_CHECKPOINT
        if not checkpoint.is_file():
            raise demo_not_found(checkpoint)
        model = load_model(checkpoint, device=device)
        index = index or prepare_demo_index(checkpoint, home / DEMO_DATA, home / DEMO_SERVE, model=model)
    else:
        if index is None or checkpoint is None:
            raise KeyreidError("give --index INDEX and --checkpoint CKPT (or --demo)")
        if not checkpoint.is_file():
            raise KeyreidError(f"{checkpoint}: checkpoint file not found")
        model = load_model(checkpoint, device=device)   # a .pt, or any export (by content)
    opened = open_index(index)
    service = SearchService(model, opened, uploads_dir=uploads or index.with_name(index.name + "-uploads"))
    settings = ServeSettings(max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels, workers=workers,
                             queue=queue, max_batch=max_batch, admin_token=admin_token or None, allowed_hosts=hosts)
    app = create_app(service, settings)
    # bind first, so a taken port is one clear line and port 0 prints the port actually chosen
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP, and with Nagle on every keep-alive response body waited ~40 ms for an ACK
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise KeyreidError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"keyreid serve: {len(opened)} gallery images, model {model.fingerprint}, "
               f"admin routes {'on' if settings.admin_token else 'off'}")
    typer.echo(f"serving on http://{shown}:{bound}/ (Ctrl+C to stop)", err=False)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
    finally:
        sock.close()
        service.close()


def _allowed_hosts(text: Optional[str], host: str) -> tuple[str, ...]:
    from keyreid.errors import KeyreidError
    from keyreid.serve.limits import default_allowed_hosts

    if text is None:
        return default_allowed_hosts(host)
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    if not names or any(c in n for n in names for c in "/ @"):
        raise KeyreidError(f"--allowed-hosts {text!r}: give host names separated by commas (or *)")
    return names
