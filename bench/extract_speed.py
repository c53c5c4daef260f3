"""Embedding throughput on CPU: torch eager, torch channels_last and onnxruntime, same images.

    .venv/bin/python bench/extract_speed.py                        # 512 images, both models, both sizes
    .venv/bin/python bench/extract_speed.py --images 128 --sizes 128x64

Models (random weights: speed does not depend on them): a ResNet-50 with the BoT head (bnneck,
last stride 1, 2048-d) and the demo's MobileNetV2 with the kae head (last stride 1, 17 x 32 + 128
= 672-d). Each is saved as a checkpoint with its card and exported with `keyreid export` (which
checks parity at batch 1 and N itself); the images are generated once per size, preprocessed
once, and every backend embeds the same tensors in batches of --batch: the table measures the
model, not JPEG decoding. torch runs the export's graph (keyreid.export.graph: no classifier, no
unused heatmap decoder) so that the rows compare backends on one computation; "full forward" is
the whole model as LoadedModel runs it (kae's decoder included). One warm-up batch per backend is not timed. onnxruntime runs twice:
with its default session options and with keyreid's (all graph optimisations, intra-op threads
= cores), which `load_model("model.onnx")` uses. "max diff" is the largest difference of
L2-normalised embeddings against torch eager.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keyreid.config import Config, ModelConfig  # noqa: E402
from keyreid.data.keypoints import get_skeleton  # noqa: E402
from keyreid.utils.checkpoint import save_checkpoint  # noqa: E402
from keyreid.export import export_onnx  # noqa: E402
from keyreid.export.graph import EmbeddingGraph  # noqa: E402
from keyreid.export.parity import generated_images  # noqa: E402
from keyreid.inference import card_for, load_model  # noqa: E402
from keyreid.inference.onnx_model import RAW_OUTPUT_NAME, session_options  # noqa: E402
from keyreid.models.build import KEYPOINT_HEADS, build_model  # noqa: E402
from keyreid.viz.report import markdown_table  # noqa: E402

MODELS = {"resnet50-bnneck": ("resnet50", "bnneck"), "mobilenetv2-kae": ("mobilenetv2", "kae")}


def make_checkpoint(path: Path, backbone: str, head: str, height: int, width: int) -> Path:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(backbone=backbone, pretrained=None, head=head, last_stride=1)
    cfg.data.height, cfg.data.width = height, width
    skeleton = get_skeleton("coco17") if head in KEYPOINT_HEADS else None
    model = build_model(cfg.model, 10, skeleton).eval()
    state = model.state_dict()
    save_checkpoint(path, {"model": state, "config": dataclasses.asdict(cfg),
                           "card": card_for(cfg, model, skeleton, 10, state), "label_map": {}})
    return path


def timed(run, batches) -> tuple[float, np.ndarray]:
    """images/s over all batches after one untimed warm-up batch, and the embeddings."""
    run(batches[0])
    out = []
    t0 = time.perf_counter()
    for b in batches:
        out.append(run(b))
    seconds = time.perf_counter() - t0
    return sum(len(b) for b in batches) / seconds, np.concatenate(out)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def bench(name: str, height: int, width: int, n: int, batch: int, work: Path) -> list[list]:
    import onnxruntime as ort

    backbone, head = MODELS[name]
    ckpt = make_checkpoint(work / f"{name}-{height}x{width}.pt", backbone, head, height, width)
    onnx_path = work / f"{name}-{height}x{width}.onnx"
    export_onnx(ckpt, onnx_path, log=lambda s: None)
    loaded = load_model(ckpt, device="cpu")
    x = loaded.preprocess(generated_images(n, height, width, seed=1))
    torch_batches = list(torch.split(x, batch))
    np_batches = [b.numpy() for b in torch_batches]

    # torch runs the same inference graph as the export (no classifier, no unused heatmap decoder),
    # so the rows compare backends, not graphs; "full forward" is LoadedModel's whole ModelOutput
    graph = EmbeddingGraph(loaded.model, normalize=False).eval()
    cl_graph = EmbeddingGraph(loaded.model, normalize=False).eval().to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def eager(b):
        return graph(b)[1].numpy()

    @torch.inference_mode()
    def channels_last(b):
        return cl_graph(b.contiguous(memory_format=torch.channels_last))[1].numpy()

    @torch.inference_mode()
    def full(b):
        return loaded.model(b).embedding.numpy()

    speed = {}
    speed["torch eager"], ref = timed(eager, torch_batches)
    speed["torch eager, full forward"], full_out = timed(full, torch_batches)
    speed["torch channels_last"], cl = timed(channels_last, torch_batches)
    outs = {"torch eager, full forward": full_out, "torch channels_last": cl}
    sessions = {"onnxruntime (default options)": ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]),
                "onnxruntime (keyreid options)": ort.InferenceSession(str(onnx_path), session_options(),
                                                                      providers=["CPUExecutionProvider"])}
    for label, sess in sessions.items():
        speed[label], outs[label] = timed(lambda b, s=sess: s.run([RAW_OUTPUT_NAME], {"images": b})[0], np_batches)
    rows = [[name, f"{height}x{width}", "torch eager", f"{speed['torch eager']:.1f}", "1.00", "-"]]
    for label, emb in outs.items():
        diff = float(np.abs(unit(emb) - unit(ref)).max())
        rows.append([name, f"{height}x{width}", label, f"{speed[label]:.1f}",
                     f"{speed[label] / speed['torch eager']:.2f}", f"{diff:.1e}"])
    return rows


def machine() -> str:
    import onnxruntime as ort

    return describe(f"onnxruntime {ort.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sizes", default="128x64,256x128")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.models.split(","):
            for size in args.sizes.split(","):
                h, w = (int(v) for v in size.split("x"))
                done = bench(name, h, w, args.images, args.batch, Path(work))
                rows += done
                # each block as soon as it is measured: a long run killed midway still reports
                print(markdown_table(["model", "input", "backend", "images/s", "x eager", "max diff"], done),
                      file=sys.stderr, flush=True)
    print(f"{args.images} images, batches of {args.batch}\n")
    print(markdown_table(["model", "input", "backend", "images/s", "x eager", "max diff"], rows))
    print(f"\n{machine()}")


if __name__ == "__main__":
    main()
