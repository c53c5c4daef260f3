"""MediaPipe BlazePose (legacy `solutions.pose`), the offline default for people.

mediapipe 0.10.21 ships the detector and the "full" landmark model in its wheel, so
Pose(static_image_mode=True, model_complexity=1) runs with no network (complexity 0 and 2 fetch
their models at first use). Its 33 landmarks are mapped onto COCO-17; the confidence of a keypoint
is visibility * presence (visible, and inside the frame).

Install (mediapipe declares numpy<2 and protobuf<5, yet the pose solution runs with numpy 2 and
protobuf 7 given the option fix below)::

    pip install --no-deps mediapipe==0.10.21
    pip install flatbuffers attrs "opencv-python-headless<5"
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from keyreid.data.keypoints import COCO17
from keyreid.errors import KeyreidError
from keyreid.pose.estimators import (CanvasGeometry, EstimatorUnavailable, PoseEstimator,
                                     Preprocess, finish_keypoints, get_preprocess,
                                     register_estimator)

# Second layout for images where the first finds nobody: on the synthetic benchmark's first 400
# training crops it finds people in 33 of the 125 that tall-edge misses (square-edge: 16,
# tall 1.75x: 36 but less accurate); bench/keypoints_real.py.
DEFAULT_RETRY = "tall-edge-1.5"

# BlazePose landmark index for each COCO-17 keypoint, in COCO order (eyes: the eye centres).
BLAZEPOSE_TO_COCO17 = (
    0,  # nose
    2, 5,  # left_eye, right_eye
    7, 8,  # left_ear, right_ear
    11, 12,  # shoulders
    13, 14,  # elbows
    15, 16,  # wrists
    23, 24,  # hips
    25, 26,  # knees
    27, 28,  # ankles
)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence native-library chatter on fd 2 (glog lines, a harmless protobuf fallback message
    printed by the C++ bindings); Python exceptions still propagate."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(fd, 2)
    finally:
        os.close(fd)


def _import_pose():
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with _quiet_stderr():
            from mediapipe.python import solution_base
            from mediapipe.python.solutions import pose
    except ImportError as e:
        raise EstimatorUnavailable(
            f"the mediapipe estimator needs mediapipe 0.10.21 ({e}); install it with "
            "`pip install --no-deps mediapipe==0.10.21 && pip install flatbuffers attrs "
            "'opencv-python-headless<5'`") from None
    return pose, solution_base


def _make_pose_class(pose, solution_base):
    class _Pose(pose.Pose):
        # mediapipe's own option setter reads FieldDescriptor.label, which protobuf >= 6 removed;
        # the pose solution only sets scalar thresholds, which this does with any protobuf.
        def _modify_calculator_options(self, graph_config, calculator_params):
            wanted: dict[str, list] = {}
            for key, value in calculator_params.items():
                node_name, field = key.split(".")
                wanted.setdefault(node_name, []).append((field, value))
            for node in graph_config.node:
                fields = wanted.pop(node.name, None)
                if fields is None:
                    continue
                options_type = solution_base.CALCULATOR_TO_OPTIONS[node.calculator]
                options = node.options.Extensions[options_type.ext]
                for field, value in fields:
                    if value is None:
                        options.ClearField(field)
                    else:
                        setattr(options, field, value)
            if wanted:
                raise ValueError(f"calculator(s) not in the pose graph: {sorted(wanted)}")

    return _Pose


@register_estimator("mediapipe")
class MediaPipeEstimator(PoseEstimator):
    """BlazePose full (model_complexity=1) on each crop, laid out on a canvas first.

    preprocess: a Preprocess or a name in PREPROCESS ("tall-edge" by default: upscaled to a long
    side of 256 on a canvas twice the crop's height, borders repeated outwards). retry: a second
    layout tried only on images where the first finds nobody (None: no retry).
    min_long_side / margin override the first layout's fields. min_detection_confidence: the
    person detector's threshold.
    """

    name = "mediapipe"
    skeleton = COCO17

    def __init__(self, preprocess: "str | Preprocess" = "tall-edge",
                 retry: "str | Preprocess | None" = DEFAULT_RETRY,
                 min_long_side: Optional[int] = None, margin: Optional[float] = None,
                 min_detection_confidence: float = 0.5, model_complexity: int = 1,
                 batch_size: int = 16):
        if model_complexity != 1:
            # 0 ("lite") and 2 ("heavy") are not in the wheel and would need a download.
            raise EstimatorUnavailable("only model_complexity=1 ships inside the mediapipe wheel "
                                       "(0 and 2 are downloaded at first use)")
        first = get_preprocess(preprocess)
        if margin is not None and first.canvas == "tall":
            # a tall canvas has no margin: ignoring the value would silently run another layout
            raise KeyreidError(f"--margin applies to square and crop layouts, not to "
                               f"{preprocess if isinstance(preprocess, str) else 'a tall canvas'!r}; "
                               "add --preprocess square-edge (or square-black, the old default)")
        changes = {k: v for k, v in (("min_long_side", min_long_side), ("margin", margin))
                   if v is not None}
        self.preprocess = replace(first, **changes) if changes else first
        self.retry = None if retry is None else get_preprocess(retry)
        self.batch_size = batch_size
        self.retried = self.rescued = 0  # images tried twice / found only on the second try
        pose, solution_base = _import_pose()
        with _quiet_stderr():
            self._pose = _make_pose_class(pose, solution_base)(
                static_image_mode=True, model_complexity=1, smooth_landmarks=False,
                enable_segmentation=False, min_detection_confidence=min_detection_confidence)

    def geometry(self, width: int, height: int) -> CanvasGeometry:
        return self.preprocess.geometry(width, height)

    def estimate_with(self, image: Image.Image, preprocess: Preprocess) -> Optional[np.ndarray]:
        """One try with one layout: [17, 3] in original pixel centres, or None."""
        canvas, geom = preprocess.apply(image)
        with _quiet_stderr():  # glog warnings on the first frames
            result = self._pose.process(np.asarray(canvas))
        if result.pose_landmarks is None:
            return None
        lm = result.pose_landmarks.landmark
        picked = [lm[i] for i in BLAZEPOSE_TO_COCO17]
        # normalised landmark * canvas size = continuous canvas coordinate (0 at the left edge)
        xy = np.array([[p.x * geom.canvas_width, p.y * geom.canvas_height] for p in picked])
        conf = np.array([_prob(p, "visibility") * _prob(p, "presence") for p in picked])
        return finish_keypoints(geom.to_original(xy), conf, geom)

    def estimate_one(self, image: Image.Image) -> Optional[np.ndarray]:
        kp = self.estimate_with(image, self.preprocess)
        if kp is None and self.retry is not None:
            self.retried += 1
            kp = self.estimate_with(image, self.retry)
            self.rescued += kp is not None
        return kp

    def estimate(self, images: Sequence[Image.Image]) -> list[Optional[np.ndarray]]:
        return [self.estimate_one(im) for im in images]

    def close(self) -> None:
        pose = getattr(self, "_pose", None)
        if pose is not None:
            pose.close()
            self._pose = None


def _prob(landmark, field: str) -> float:
    # An unset optional field reads as 0.0 in protobuf; treat "not reported" as certain.
    if hasattr(landmark, "HasField") and not landmark.HasField(field):
        return 1.0
    return float(getattr(landmark, field))
