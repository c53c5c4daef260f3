"""A keyreid model as a tracker's appearance encoder.

`KeyreidEncoder` takes frames and boxes and returns unit embeddings through the one inference
path (`keyreid.load_model`: a torch checkpoint, an ONNX export or an OpenVINO IR; the same
preprocessing as every other consumer: each box is cropped from the frame and handed to
`LoadedModel.embed`). It implements BoxMOT's `AppearanceEncoder` protocol
(`boxmot.reid.protocols`, BoxMOT 25.x: `embedding_dim`, `requirements`, `encode(frames,
detections)`), so a BoxMOT user passes it as `TrackingPipeline(reid=KeyreidEncoder(...))`; and
BoxMOT's older per-tracker hook, `get_features(boxes, bgr_image)`, so it can also be handed to a
tracker directly (`BotSort(reid_model=KeyreidEncoder(...))`).
BoxMOT is imported only when a BoxMOT structure is asked for: `embed_boxes` needs none of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from keyreid.errors import KeyreidError
from keyreid.inference import LoadedModel, load_model

MIN_CROP = 2  # pixels: a thinner box is widened to this before cropping (a 0-px crop has no pixels)


def _graph_input_size(model: LoadedModel):
    """(H, W) fixed in an ONNX graph's input, or None when dynamic / not an ONNX model."""
    session = getattr(model.backend, "session", None)
    if session is None:
        return None
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        return int(shape[2]), int(shape[3])
    return None


def crop_boxes(image: Image.Image, boxes: np.ndarray) -> list[Image.Image]:
    """Crops of 0-based xyxy boxes, clipped to the image; boxes thinner than MIN_CROP widened."""
    w, h = image.size
    crops = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        x1, x2 = sorted((min(max(x1, 0.0), w), min(max(x2, 0.0), w)))
        y1, y2 = sorted((min(max(y1, 0.0), h), min(max(y2, 0.0), h)))
        if x2 - x1 < MIN_CROP:
            x1 = max(0.0, min(x1, w - MIN_CROP))
            x2 = x1 + MIN_CROP
        if y2 - y1 < MIN_CROP:
            y1 = max(0.0, min(y1, h - MIN_CROP))
            y2 = y1 + MIN_CROP
        crops.append(image.crop((int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2)))))
    return crops


def frame_image(frame) -> Image.Image:
    """A PIL RGB image of a BoxMOT Frame ([3, H, W] uint8 tensor), a uint8 HWC array or a PIL image."""
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, np.ndarray):
        return Image.fromarray(frame)
    image = getattr(frame, "image", frame)
    if isinstance(image, torch.Tensor):
        return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    raise KeyreidError(f"cannot read a frame of type {type(frame).__name__}")


class KeyreidEncoder:
    """Unit embeddings of detection boxes from any keyreid model (BoxMOT AppearanceEncoder)."""

    def __init__(self, model: Union[str, Path, LoadedModel], batch_size: int = 64, flip: bool = False,
                 device: str = "auto"):
        self.model = model if isinstance(model, LoadedModel) else load_model(model, device=device)
        fixed = _graph_input_size(self.model)
        if fixed is not None and fixed != self.model.input_size:
            raise KeyreidError(f"{self.model.path}: the graph takes {fixed[0]}x{fixed[1]} crops but its "
                               f"model card says {self.model.input_size[0]}x{self.model.input_size[1]}; "
                               "export it again with keyreid export")
        self.batch_size = batch_size
        self.flip = flip

    @property
    def embedding_dim(self) -> int:
        return self.model.dim

    @property
    def requirements(self):
        from boxmot.reid.protocols import EncoderRequirements

        return EncoderRequirements(masks=False)  # boxes are enough

    def embed_boxes(self, frame, boxes: np.ndarray) -> np.ndarray:
        """float32 [N, D] unit embeddings of one frame's 0-based xyxy boxes."""
        crops = crop_boxes(frame_image(frame), boxes)
        return self.embed_crops(crops)

    def get_features(self, boxes: np.ndarray, image: np.ndarray) -> np.ndarray:
        """BoxMOT's `reid_model` hook: xyxy boxes of a uint8 HWC image in OpenCV's BGR order."""
        return self.embed_boxes(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), boxes)

    def embed_crops(self, crops: list) -> np.ndarray:
        """float32 [N, D] unit embeddings of PIL crops."""
        if not crops:
            return np.zeros((0, self.embedding_dim), np.float32)
        f = self.model.embed(crops, batch_size=self.batch_size, flip=self.flip, normalize=True)
        return np.ascontiguousarray(f, dtype=np.float32)

    def encode(self, frames: Sequence, detections: Sequence) -> list[torch.Tensor]:
        """BoxMOT's call: one float32 [N_i, D] CPU tensor per frame, all crops in one batch."""
        crops, counts = [], []
        for frame, dets in zip(frames, detections):
            boxes = dets.geometry.values.detach().cpu().numpy() if len(dets) else np.zeros((0, 4))
            crops += crop_boxes(frame_image(frame), boxes)
            counts.append(len(boxes))
        feats = torch.from_numpy(self.embed_crops(crops))
        return list(torch.split(feats, counts)) if counts else []
