"""Embedding throughput and retrieval parity of the export formats on CPU: torch eager,
onnxruntime fp32, onnx-int8, OpenVINO fp32 and OpenVINO with fp16-compressed weights.

    .venv/bin/python bench/export_speed.py                         # both models, 128x64 and 256x128
    .venv/bin/python bench/export_speed.py --models mobilenetv2-kae --sizes 128x64 --epochs 4

Models: a MobileNetV2 with the kae head (ImageNet weights shipped offline, as the demo) and a
ResNet-50 with the BoT head (bnneck, last stride 1; no offline ImageNet weights, so trained from
scratch), each TRAINED for --epochs on a small synthetic Market-layout set (keyreid.data.synthetic,
--identities train and test identities) at each input size: retrieval parity is only meaningful
on a model whose embeddings separate people (an untrained one puts the whole gallery within
float noise of each other, and any runtime reorders those ties). The set is small and the
budget short, so mAP is low in absolute terms; what the table compares is each export against
its own torch model on the same images.

Each checkpoint is exported with `keyreid export`'s own code in every format (int8 calibrated on
the set's training images); the export's retrieval parity (mAP and rank-1 against the fp32
torch model, mean top-10 overlap, max embedding difference on the set's query/gallery split) is
what the last columns show; the benchmark asks for the files whatever the numbers (limits off)
and says in "gate" whether the default limits (mAP drop <= 0.5 points, overlap >= 0.95) would
have let each export through.

Speed: the same preprocessed tensors (generated images) embedded at batch 1 (--single images)
and in batches of 64 (--images images); one untimed warm-up batch per backend and batch size.
torch runs the export's graph (keyreid.export.graph) so the rows compare runtimes on one
computation; onnxruntime and OpenVINO run as load_model opens them (keyreid's session / compile
options, the backend's run()).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keyreid.data.synthetic import SynthConfig, generate  # noqa: E402
from keyreid.export import export_onnx  # noqa: E402
from keyreid.export.graph import EmbeddingGraph  # noqa: E402
from keyreid.export.parity import MAX_MAP_DROP, MIN_TOP10_OVERLAP, generated_images  # noqa: E402
from keyreid.inference import load_model  # noqa: E402
from keyreid.viz.report import markdown_table  # noqa: E402

MODELS = {"mobilenetv2-kae": ("mobilenetv2", "kae"), "resnet50-bnneck": ("resnet50", "bnneck")}
HEADERS = ["model", "input", "format", "img/s batch 1", "img/s batch 64", "x eager (64)", "mAP", "rank-1",
           "top-10 overlap", "max emb diff", "gate"]


def train_checkpoint(run: Path, backbone: str, head: str, synth: Path, height: int, width: int,
                     epochs: int) -> tuple[Path, float]:
    """A short BoT-style training on the synthetic set (the demo's recipe, fewer epochs);
    (checkpoint, seconds)."""
    from keyreid.config import load_config
    from keyreid.engine.trainer import Trainer

    over = {"data.root": str(synth), "data.height": height, "data.width": width, "data.p": 8, "data.k": 4,
            "data.workers": 0, "data.val_identities": 0, "model.backbone": backbone,
            "model.pretrained": "offline" if backbone == "mobilenetv2" else "null", "model.head": head,
            "model.last_stride": 1, "optim.epochs": epochs, "optim.warmup_epochs": 1, "optim.milestones": "[]",
            "eval.every": 0, "output_dir": str(run), "device": "cpu", "seed": 0}
    t0 = time.perf_counter()
    Trainer(load_config(None, [f"{k}={v}" for k, v in over.items()]), resume=False, show_progress=False).fit()
    return run / "last.pt", time.perf_counter() - t0


def timed(run, batches) -> float:
    """images/s over all batches after one untimed warm-up batch."""
    run(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        run(b)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def speeds(run, x: torch.Tensor, single: int) -> tuple[float, float]:
    return timed(run, list(torch.split(x[:single], 1))), timed(run, list(torch.split(x, 64)))


FORMATS = {"onnx": ("onnx", "onnxruntime fp32"), "onnx-int8": ("onnx", "onnxruntime int8"),
           "openvino": ("xml", "OpenVINO fp32"), "openvino-fp16": ("xml", "OpenVINO fp16 weights")}


def bench(name: str, work: Path, synth: Path, n: int, single: int, height: int, width: int,
          epochs: int) -> list[list]:
    backbone, head = MODELS[name]
    size = f"{height}x{width}"
    ckpt, train_s = train_checkpoint(work / f"{name}-{size}", backbone, head, synth, height, width, epochs)
    print(f"{name} {size}: trained {epochs} epochs in {train_s:.0f} s", file=sys.stderr, flush=True)
    loaded = load_model(ckpt, device="cpu")
    x = loaded.preprocess(generated_images(n, height, width, seed=1))
    graph = EmbeddingGraph(loaded.model, normalize=False).eval()

    @torch.inference_mode()
    def eager(b):
        return graph(b)[1].numpy()

    rows = []
    b1, b64 = speeds(eager, x, single)
    rows.append([name, size, "torch eager (fp32)", f"{b1:.1f}", f"{b64:.1f}", "1.00", "", "", "", "", ""])
    base = b64
    for fmt, (suffix, label) in FORMATS.items():
        out = work / f"{name}-{size}.{fmt}.{suffix}"
        t0 = time.perf_counter()
        meta = export_onnx(ckpt, out, format=fmt, log=lambda s: None, max_map_drop=float("inf"),
                           min_overlap=0.0)
        seconds = time.perf_counter() - t0
        model = load_model(out)
        s1, s64 = speeds(lambda b: model.backend.run(b), x, single)
        p = meta["parity"]["retrieval"]
        ok = p["map_drop"] <= MAX_MAP_DROP and p["top10_overlap"] >= MIN_TOP10_OVERLAP
        size_mib = (out.stat().st_size + (out.with_suffix(".bin").stat().st_size if suffix == "xml" else 0)) / 2**20
        rows.append([name, size, label, f"{s1:.1f}", f"{s64:.1f}",
                     f"{s64 / base:.2f}",
                     f"{p['torch']['mAP']:.2f} -> {p['export']['mAP']:.2f}",
                     f"{p['torch']['rank1']:.2f} -> {p['export']['rank1']:.2f}",
                     f"{p['top10_overlap']:.3f}", f"{p['max_abs_diff']:.2g}",
                     ("pass" if ok else "refused") + f" (export {seconds:.0f} s, {size_mib:.1f} MiB)"])
        queries, gallery = p["queries"], p["gallery"]
    print(f"{name}: parity set {queries} queries x {gallery} gallery", file=sys.stderr, flush=True)
    return rows


def machine() -> str:
    import onnxruntime as ort
    import openvino as ov

    return describe(f"onnxruntime {ort.__version__}", f"openvino {ov.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="images timed at batch 64")
    ap.add_argument("--single", type=int, default=32, help="images timed at batch 1")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--identities", type=int, default=40, help="synthetic train and test identities")
    ap.add_argument("--sizes", default="128x64,256x128")
    ap.add_argument("--epochs", type=int, default=6, help="training epochs of each model")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synth = work / "synth"
        generate(synth, SynthConfig(train_identities=args.identities, test_identities=args.identities,
                                    cameras=3, distractors=40, junk=0, train_images=(4, 6),
                                    train_cameras=(2, 3), test_cameras=(2, 3), seed=3), workers=1)
        for name in args.models.split(","):
            for size in args.sizes.split(","):
                h, w = (int(v) for v in size.split("x"))
                done = bench(name, work, synth, args.images, args.single, h, w, args.epochs)
                rows += done
            # each block as soon as it is measured: a long run killed midway still reports
            print(markdown_table(HEADERS, done), file=sys.stderr, flush=True)
    print(f"models trained {args.epochs} epochs on the synthetic set; speed: "
          f"{args.single} images at batch 1, {args.images} in batches of 64; retrieval: the export's "
          f"own parity check on a synthetic Market-layout test split ({args.identities} identities)\n")
    print(markdown_table(HEADERS, rows))
    print(f"\n{machine()}")


if __name__ == "__main__":
    main()
