"""Shared set-up of the serve tests: a tiny trained kae model with a faiss index over the tiny
synthetic gallery (built once per session), and a real uvicorn server on 127.0.0.1, port 0, in a
thread."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

_BUILT: dict = {}


def build_index_for_tests(root: Path, synth_root: Path, head: str = "kae") -> dict:
    """Train a seconds-long model on the tiny synthetic set, extract its gallery and index it."""
    key = (str(synth_root), head)
    if key in _BUILT:
        return _BUILT[key]
    from keyreid.config import load_config
    from keyreid.engine.trainer import Trainer
    from keyreid.inference import load_model
    from keyreid.search import build_index
    from keyreid.search.extract import extract, list_dataset
    from tests.conftest import tiny_overrides

    run = root / f"run_{head}"
    # one epoch: the service tests need a model and its index, not a good model
    over = tiny_overrides(synth_root, run, head=head, **{"optim.epochs": 1, "optim.warmup_epochs": 0,
                                                         "optim.milestones": "[]"})
    Trainer(load_config(None, over), resume=False, show_progress=False).fit()
    ckpt = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
    model = load_model(ckpt, device="cpu")
    items, source = list_dataset("market1501", synth_root, "gallery")
    extract(model, items, source, root / f"features_{head}", batch_size=16, checkpoint=str(ckpt))
    build_index(root / f"index_{head}", [root / f"features_{head}"]).close()
    queries, _ = list_dataset("market1501", synth_root, "query")
    _BUILT[key] = {"checkpoint": ckpt, "index": root / f"index_{head}", "queries": [q.path for q in queries],
                   "gallery": [g.path for g in items]}
    return _BUILT[key]


def make_app(built: dict, tmp: Path, **settings):
    from keyreid.inference import load_model
    from keyreid.search import open_index
    from keyreid.serve import ServeSettings, SearchService, create_app

    service = SearchService(load_model(built["checkpoint"], device="cpu"), open_index(built["index"]),
                            uploads_dir=tmp / "uploads")
    return create_app(service, ServeSettings(**settings))


class Server:
    """uvicorn serving `app` on 127.0.0.1 at a free port, in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY on accept
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


@contextmanager
def serving(built: dict, tmp: Path, **settings):
    with Server(make_app(built, tmp, **settings)) as server:
        yield server


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def image_bytes(path: str, fmt: str = "PNG") -> bytes:
    with Image.open(path) as im:
        return encode(im.convert("RGB"), fmt)


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
