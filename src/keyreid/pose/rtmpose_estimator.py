"""RTMPose (COCO-17 top-down, ONNX) through rtmlib: stronger than BlazePose, needs its model.

rtmlib downloads the ONNX model at first use (cached under ~/.cache/rtmlib); offline, pass a
local .onnx file (`--model /path/to/end2end.onnx`, the file inside the zip from the URLs below).
The whole re-ID crop is the person box (rtmlib adds its usual 1.25 box padding).

Install: ``pip install --no-deps rtmlib==0.0.16 && pip install onnxruntime tqdm
"opencv-python-headless<5"`` (rtmlib declares opencv-python and opencv-contrib-python, which
would clash with the headless build; only cv2 itself is needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from keyreid.data.keypoints import COCO17
from keyreid.pose.estimators import (EstimatorUnavailable, PoseEstimator, finish_keypoints,
                                     plan_canvas, register_estimator, render_canvas)

_BASE = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"
# name -> (URL of the zipped ONNX model, model input size (width, height)); body7 = COCO-17 output.
RTMPOSE_MODELS: dict[str, tuple[str, tuple[int, int]]] = {
    "rtmpose-s": (_BASE + "rtmpose-s_simcc-body7_pt-body7_420e-256x192-acd4a1ef_20230504.zip",
                  (192, 256)),
    "rtmpose-m": (_BASE + "rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.zip",
                  (192, 256)),
    "rtmpose-x": (_BASE + "rtmpose-x_simcc-body7_pt-body7_700e-384x288-71d7b7e9_20230629.zip",
                  (288, 384)),
}

_INSTALL = ("pip install --no-deps rtmlib==0.0.16 && pip install onnxruntime tqdm "
            "'opencv-python-headless<5'")


def _import_rtmlib():
    try:
        import rtmlib
        import rtmlib.tools.file as rtm_file
    except ImportError as e:
        raise EstimatorUnavailable(f"the rtmpose estimator needs rtmlib and onnxruntime ({e}); "
                                   f"install them with `{_INSTALL}`") from None
    return rtmlib, rtm_file


def resolve_model(model: str, rtm_file=None) -> tuple[str, Optional[tuple[int, int]]]:
    """Local ONNX path and input size (None = unknown) for a model name, URL or local path.

    Names and URLs are downloaded by rtmlib (or taken from its cache); a failed download becomes
    an EstimatorUnavailable that says how to get going without a network.
    """
    if model in RTMPOSE_MODELS:
        url, size = RTMPOSE_MODELS[model]
    elif "://" in model:
        url, size = model, None
    else:
        path = Path(model).expanduser()
        if not path.is_file():
            raise EstimatorUnavailable(
                f"{model}: no such ONNX model file; give a local .onnx path, a URL, or one of "
                f"{sorted(RTMPOSE_MODELS)}")
        return str(path), None
    if rtm_file is None:
        _, rtm_file = _import_rtmlib()
    try:
        local = rtm_file.download_checkpoint(url)
    except Exception as e:  # URLError, socket timeouts, HTTP errors, a bad zip: all mean "no model"
        raise EstimatorUnavailable(
            f"could not download the RTMPose model {model!r} from {url} "
            f"({type(e).__name__}: {e}). RTMPose needs internet access once to fetch its ONNX "
            f"model (cached under ~/.cache/rtmlib); offline, download the zip elsewhere, unpack "
            f"it and pass the .onnx file: --model /path/to/end2end.onnx "
            f"(or use the offline default, --estimator mediapipe)") from None
    return str(local), size


@register_estimator("rtmpose")
class RTMPoseEstimator(PoseEstimator):
    """RTMPose top-down on the whole crop.

    model: a name in RTMPOSE_MODELS, a URL, or a local .onnx path. input_size: (width, height) of
    the model input (default: the named model's, else 192x256). min_long_side / square / margin:
    optional upscale and padding before rtmlib's own crop (see plan_canvas; off by default).
    """

    name = "rtmpose"
    skeleton = COCO17

    def __init__(self, model: str = "rtmpose-m", input_size: Optional[tuple[int, int]] = None,
                 device: str = "cpu", min_long_side: int = 0, square: bool = False,
                 margin: float = 0.0, batch_size: int = 16):
        rtmlib, rtm_file = _import_rtmlib()
        path, known_size = resolve_model(model, rtm_file)
        self.input_size = tuple(input_size or known_size or (192, 256))
        self.min_long_side, self.square, self.margin = min_long_side, square, margin
        self.batch_size = batch_size
        self.model_path = path
        self._model = rtmlib.RTMPose(onnx_model=path, model_input_size=self.input_size,
                                     backend="onnxruntime", device=device)

    def estimate_one(self, image: Image.Image) -> Optional[np.ndarray]:
        geom = plan_canvas(*image.size, self.min_long_side, "square" if self.square else "plain",
                           self.margin)
        canvas = np.asarray(render_canvas(image, geom))
        # rtmlib is written for cv2.imread images (BGR); feed it what its models were used with.
        bgr = np.ascontiguousarray(canvas[:, :, ::-1])
        box = [geom.offset_x, geom.offset_y, geom.offset_x + geom.scaled_width,
               geom.offset_y + geom.scaled_height]
        keypoints, scores = self._model(bgr, bboxes=[box])
        xy = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)[: self.skeleton.num_keypoints]
        conf = np.asarray(scores, dtype=np.float64).reshape(-1)[: self.skeleton.num_keypoints]
        if xy.shape[0] != self.skeleton.num_keypoints:
            raise RuntimeError(f"RTMPose model returned {xy.shape[0]} keypoints, expected "
                               f"{self.skeleton.num_keypoints} (COCO-17 body model?)")
        # rtmlib returns pixel-centre coordinates of the canvas; +0.5 makes them continuous.
        return finish_keypoints(geom.to_original(xy + 0.5), conf, geom)

    def estimate(self, images: Sequence[Image.Image]) -> list[Optional[np.ndarray]]:
        return [self.estimate_one(im) for im in images]
