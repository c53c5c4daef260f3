"""Load on `keyreid serve`: requests/s and p50 / p99 latency of POST /api/search at 1, 4 and 16
concurrent clients, and the same figures calling the model and the index directly in-process
(the ceiling: no HTTP, no upload decoding).

    .venv/bin/python bench/service_load.py --demo                     # make demo's kae + data/synth
    .venv/bin/python bench/service_load.py --index INDEX --checkpoint CKPT --images DIR
    .venv/bin/python bench/service_load.py --url http://host:8000 --images DIR   # a running service
    .venv/bin/python bench/service_load.py --synthetic     # no make demo needed: see below

--synthetic builds everything in a temporary folder: a small synthetic set (keyreid synth), the
demo's model (MobileNetV2 kae, 128x64, its offline ImageNet weights, not trained: speed does not
depend on what the weights learned) saved as a checkpoint, its gallery extracted and indexed.

Besides requests/s and latency, each service row splits a request's mean time (the service's own
took_ms): decode (upload read and image decoding), inference (queue wait + the batch's model and
index time) and the rest (HTTP, JSON, thread hops: client-side time minus the service's total).

Unless --url is given, the service is started as a subprocess (`keyreid serve --port 0`) once per
--max-batch value (default 8 and 1, so micro-batching is measured against none), and stopped
afterwards. Clients are threads with one HTTP connection each, uploading the query images in
turn (PNG, the same bytes every time). "direct" is SearchService.embed_batch + search_vector on
batches of `clients` images in this process: what the model and index can do at best. It runs in
a worker thread, as in the service: on a busy CPU, torch called from the main thread was 10-50x
slower here (OpenMP threads spinning against other processes), which is no ceiling at all.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def load_images(folder: Path, n: int) -> list[bytes]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[:n]
    if not files:
        sys.exit(f"no images in {folder}")
    out = []
    for f in files:
        buf = io.BytesIO()
        Image.open(f).convert("RGB").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def run_clients(url: str, images: list[bytes], clients: int, per_client: int, top_k: int) -> dict:
    import httpx

    latencies: list[float] = []
    parts: list[tuple[float, float, float]] = []   # (decode, inference, outside) ms per request
    errors = {"n": 0, "codes": {}}
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            c.get("/healthz")  # open the connection before timing
            for j in range(per_client):
                data = images[(k + j) % len(images)]
                t = time.perf_counter()
                r = c.post(f"/api/search?top_k={top_k}", content=data)
                took = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        latencies.append(took)
                        t_ms = r.json()["took_ms"]
                        parts.append((t_ms["decode"], t_ms["inference"], took * 1000 - t_ms["total"]))
                    else:
                        errors["n"] += 1
                        errors["codes"][r.status_code] = errors["codes"].get(r.status_code, 0) + 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    split = np.mean(parts, axis=0) if parts else (float("nan"),) * 3
    return {"rps": len(latencies) / wall, "p50": p50, "p99": p99, "errors": errors["n"], "codes": errors["codes"],
            "n": len(latencies) + errors["n"], "split": tuple(float(v) for v in split)}


def run_direct(service, images: list[bytes], clients: int, rounds: int, top_k: int) -> dict:
    """Batches of `clients` decoded images through the service's own model + index path."""
    from PIL import Image

    from keyreid.serve.service import SearchOptions

    decoded = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    opts = SearchOptions(top_k=top_k)
    times = []
    for r in range(rounds + 1):
        batch = [decoded[(r + i) % len(decoded)] for i in range(clients)]
        t = time.perf_counter()
        emb, _ = service.embed_batch(batch)
        for v in emb:
            service.search_vector(v, opts)
        if r:  # the first round warms up
            times.append(time.perf_counter() - t)
    p50, p99 = percentiles(times)
    return {"rps": clients * len(times) / sum(times), "p50": p50, "p99": p99, "errors": 0, "codes": {},
            "n": clients * len(times)}


def start_service(index: Path, checkpoint: Path, max_batch: int, queue: int) -> tuple[subprocess.Popen, str]:
    cmd = [str(Path(sys.executable).with_name("keyreid")), "serve", "--index", str(index), "--checkpoint",
           str(checkpoint), "--port", "0", "--max-batch", str(max_batch), "--queue", str(queue)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        m = re.search(r"serving on (http://\S+)", line)
        if m:
            url = m.group(1).rstrip("/")
            import httpx

            for _ in range(300):
                try:
                    if httpx.get(url + "/healthz").status_code == 200:
                        return proc, url
                except httpx.TransportError:
                    time.sleep(0.1)
    proc.kill()
    sys.exit(f"the service did not start: {proc.stderr.read()[-2000:]}")


def build_synthetic(work: Path) -> tuple[Path, Path, Path]:
    """(index, checkpoint, query folder) of the demo's model over a small synthetic gallery."""
    import dataclasses

    import torch

    from keyreid.config import load_config
    from keyreid.data.keypoints import get_skeleton
    from keyreid.data.synthetic import SynthConfig, generate
    from keyreid.inference import card_for, load_model
    from keyreid.models.build import build_model
    from keyreid.search import build_index
    from keyreid.search.extract import extract, list_dataset
    from keyreid.utils.checkpoint import save_checkpoint

    synth = work / "synth"
    generate(synth, SynthConfig(train_identities=10, test_identities=100, cameras=4, distractors=100,
                                junk=0, seed=5), workers=1)
    cfg = load_config(ROOT / "configs" / "demo.yaml", ["model.head=kae", f"data.root={synth}"])
    torch.manual_seed(0)
    skeleton = get_skeleton("coco17")
    model = build_model(cfg.model, 10, skeleton).eval()
    state = model.state_dict()
    ckpt = work / "kae.pt"
    save_checkpoint(ckpt, {"model": state, "config": dataclasses.asdict(cfg),
                           "card": card_for(cfg, model, skeleton, 10, state), "label_map": {}})
    items, source = list_dataset("market1501", synth, "gallery")
    extract(load_model(ckpt, device="cpu"), items, source, work / "features", batch_size=64, checkpoint=str(ckpt))
    build_index(work / "index", [work / "features"]).close()
    print(f"synthetic: {len(items)} gallery images indexed", file=sys.stderr, flush=True)
    return work / "index", ckpt, synth / "query"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true", help="make demo's kae model over data/synth")
    ap.add_argument("--index", type=Path)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--url", help="a running service (then only the HTTP rows are measured)")
    ap.add_argument("--images", type=Path, help="query images [default with --demo: data/synth/query]")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=0, help="requests per client [default: 96 / clients, >= 8]")
    ap.add_argument("--max-batch", default="8,1", help="service --max-batch values to compare")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--synthetic", action="store_true", help="build a gallery and the demo's model here")
    args = ap.parse_args()
    import tempfile

    work = tempfile.TemporaryDirectory()

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "src"))
    if args.demo:
        from keyreid.serve.demo import DEMO_CHECKPOINT, DEMO_DATA, prepare_demo_index

        args.checkpoint = args.checkpoint or DEMO_CHECKPOINT
        args.index = args.index or prepare_demo_index(args.checkpoint)
        args.images = args.images or DEMO_DATA / "query"
    if args.synthetic:
        args.index, args.checkpoint, synth_queries = build_synthetic(Path(work.name))
        args.images = args.images or synth_queries
    if args.images is None or (args.url is None and (args.index is None or args.checkpoint is None)):
        ap.error("give --demo, or --index and --checkpoint (or --url) and --images")
    images = load_images(args.images, 32)
    clients = [int(c) for c in args.clients.split(",")]
    per = (lambda c: args.requests or max(8, 96 // c))

    rows = []
    if args.url:
        for c in clients:
            rows.append(("service", "?", c, run_clients(args.url, images, c, per(c), args.top_k)))
    else:
        for mb in [int(b) for b in args.max_batch.split(",")]:
            proc, url = start_service(args.index, args.checkpoint, mb, queue=64)
            try:
                run_clients(url, images, 1, 4, args.top_k)  # warm-up
                for c in clients:
                    rows.append(("service", mb, c, run_clients(url, images, c, per(c), args.top_k)))
            finally:
                proc.terminate()
                proc.wait(30)
        from keyreid.inference import load_model
        from keyreid.search import open_index
        from keyreid.serve import SearchService

        service = SearchService(load_model(args.checkpoint, device="cpu"), open_index(args.index),
                                uploads_dir=Path("/nonexistent"))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as worker:
            for c in clients:
                rows.append(("direct", c, c, worker.submit(run_direct, service, images, c, max(4, per(c) // 2),
                                                           args.top_k).result()))
        service.close()

    import torch

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; top_k {args.top_k}; {len(images)} query images (PNG)")
    best = max((r["rps"] for kind, _, _, r in rows if kind == "direct"), default=float("nan"))
    print(f"load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}; "
          f"direct at its best: {best:.1f} images/s")
    print("| path | max batch | clients | requests | req/s | x direct best | p50 ms | p99 ms | decode ms "
          "| inference ms | HTTP+JSON ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, mb, c, r in rows:
        err = f"{r['errors']} {r['codes']}" if r["errors"] else "0"
        split = " | ".join(f"{v:.1f}" for v in r["split"]) if "split" in r else "- | - | -"
        print(f"| {kind} | {mb} | {c} | {r['n']} | {r['rps']:.1f} | {r['rps'] / best:.2f} | {r['p50']:.1f} "
              f"| {r['p99']:.1f} | {split} | {err} |")
    work.cleanup()


if __name__ == "__main__":
    main()
