"""Pose estimation for datasets without keypoint annotations, and keypoint quality checks.

    from keyreid.pose import build_estimator, estimate_dataset, pck
    with build_estimator("mediapipe") as est:
        estimate_dataset(ds, "keypoints.jsonl", est)
    print(pck("keypoints.jsonl", "reference.jsonl").overall)

The estimators' heavy packages (mediapipe, rtmlib) load only when one is built.
"""

from keyreid.pose.estimators import (CanvasGeometry, EstimatorUnavailable, PoseEstimator,
                                     build_estimator, estimator_names, plan_canvas,
                                     register_estimator, render_canvas)
from keyreid.pose.workflow import (EstimateSummary, PCKResult, SidecarReport, check_sidecar,
                                   dataset_images, estimate_dataset, pck)

__all__ = [
    "CanvasGeometry", "EstimatorUnavailable", "PoseEstimator", "build_estimator",
    "estimator_names", "plan_canvas", "register_estimator", "render_canvas", "EstimateSummary",
    "PCKResult", "SidecarReport", "check_sidecar", "dataset_images", "estimate_dataset", "pck",
]
