"""Pose estimation for datasets without keypoint annotations, and keypoint quality checks.

    from keyreid.pose import build_estimator, estimate_dataset, pck
    with build_estimator("mediapipe") as est:
        estimate_dataset(ds, "keypoints.jsonl", est)
    print(pck("keypoints.jsonl", "reference.jsonl").overall)

The estimators' heavy packages (mediapipe, rtmlib) load only when one is built.
"""

from keyreid.pose.estimators import (PREPROCESS, CanvasGeometry, EstimatorUnavailable,
                                     PoseEstimator, Preprocess, build_estimator, estimator_names,
                                     get_preprocess, plan_canvas, register_estimator,
                                     render_canvas)
from keyreid.pose.quality import implausible_reason, is_plausible
from keyreid.pose.workflow import (EstimateSummary, PCKResult, SidecarReport, check_sidecar,
                                   dataset_images, estimate_dataset, missing_list_path,
                                   nobody_found, pck)

__all__ = [
    "PREPROCESS", "CanvasGeometry", "EstimatorUnavailable", "PoseEstimator", "Preprocess",
    "build_estimator", "estimator_names", "get_preprocess", "plan_canvas", "register_estimator",
    "render_canvas", "implausible_reason", "is_plausible", "EstimateSummary", "PCKResult",
    "SidecarReport", "check_sidecar", "dataset_images", "estimate_dataset", "missing_list_path",
    "nobody_found", "pck",
]
