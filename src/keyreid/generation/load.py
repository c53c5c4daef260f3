"""A trained generation method back from its checkpoint, for inference (`keyreid generate render`,
the benches): the config and the data facts stored in last.pt rebuild the networks, no data needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from keyreid.errors import KeyreidError

if TYPE_CHECKING:
    from keyreid.generation.config import GenConfig
    from keyreid.generation.method import GenerationMethod

CHECKPOINT_FORMAT = "keyreid-gan"
CHECKPOINT_VERSION = 1


def read_generation_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, refused with one line when it is not a generation checkpoint."""
    from keyreid.utils.checkpoint import load_checkpoint

    ck = load_checkpoint(path, "cpu")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise KeyreidError(f"{path}: not a keyreid generation checkpoint (format {found!r}; "
                           f"`keyreid generate train` writes OUTPUT/last.pt)")
    if int(ck.get("version", 0)) > CHECKPOINT_VERSION:
        raise KeyreidError(f"{path}: generation checkpoint version {ck.get('version')} is newer than this "
                           f"keyreid reads ({CHECKPOINT_VERSION}); update keyreid")
    return ck


def data_info_from_dict(values: dict):
    from keyreid.data.keypoints import get_skeleton
    from keyreid.generation.method import DataInfo
    from keyreid.generation.pose import OPENPOSE18

    name = values["skeleton"]
    skeleton = OPENPOSE18 if name == OPENPOSE18.name else get_skeleton(name)
    return DataInfo(skeleton=skeleton, num_classes=int(values["num_classes"]), height=int(values["height"]),
                    width=int(values["width"]), train_pids=[int(p) for p in values.get("train_pids", [])])


def load_generator(checkpoint: str | Path, device: str | torch.device = "cpu"
                   ) -> tuple["GenerationMethod", "GenConfig"]:
    """(method in eval mode on `device`, its config) from a GanTrainer checkpoint."""
    from keyreid.generation.config import gen_config_from_dict
    from keyreid.generation.method import GENERATION_METHODS

    ck = read_generation_checkpoint(checkpoint)
    cfg = gen_config_from_dict(dict(ck["config"]), f"{checkpoint}: stored config")
    info = data_info_from_dict(ck["data_info"])
    method = GENERATION_METHODS.get(ck.get("method", cfg.method))(cfg, info)
    try:
        method.load_state_dict(ck["method_state"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KeyreidError(f"{checkpoint}: its weights do not fit method {cfg.method!r} as this keyreid "
                           f"builds it ({first})") from None
    method.to(torch.device(device) if isinstance(device, str) else device)
    method.eval()
    return method, cfg


# ---------------------------------------------------------------------------- render inputs

def read_model_image(path: str | Path, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file as the model sees it: RGB, resized (bilinear, as PairDataset) to height x
    width, [1, 3, H, W] in [-1, 1]; and its original (width, height)."""
    import numpy as np
    from PIL import Image

    from keyreid.data.loader import read_image
    from keyreid.generation.pose import to_unit_range

    image = read_image(str(path))
    size = image.size
    if size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return to_unit_range(np.asarray(image, dtype=np.uint8)).unsqueeze(0), size


def read_pose_json(path: str | Path, data_skeleton, image_size: tuple[int, int], height: int,
                   width: int):
    """A JSON file of keypoints [[x, y, v], ...] in the data skeleton (COCO-17 for people) at
    image_size (width, height) -> float32 [K, 3] in the generation skeleton at the model's
    height x width (pixel-centre scaling, as PairDataset). {"keypoints": [...]} is read too."""
    import json

    import numpy as np

    from keyreid.errors import DataError
    from keyreid.generation.pose import pose_skeleton

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "pose file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None
    if isinstance(data, dict) and "keypoints" in data:
        data = data["keypoints"]
    k = data_skeleton.num_keypoints
    if not isinstance(data, list):
        raise DataError(path, f"expected {k} keypoints [x, y, v], got a JSON {type(data).__name__}")
    if len(data) != k:
        raise DataError(path, f"expected {k} keypoints [x, y, v], got {len(data)}")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != 3 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise DataError(path, f"expected {k} keypoints [x, y, v], keypoint {i} is {row!r}")
    rows = data
    kp = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(kp).all():
        raise DataError(path, "keypoints must be finite numbers")
    kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
    _, convert = pose_skeleton(data_skeleton)
    out = convert(kp)
    w0, h0 = image_size
    visible = out[:, 2] > 0
    out[visible, 0] = (out[visible, 0] + 0.5) * (width / w0) - 0.5
    out[visible, 1] = (out[visible, 1] + 0.5) * (height / h0) - 0.5
    return out


def canonical_targets(card: dict, spec: str, height: int, width: int, where: str = "checkpoint"):
    """`canonical:K` or `canonical:all` -> float32 [n, K, 3] keypoints (generation skeleton, pixels at
    height x width) from the checkpoint card's canonical poses (card["canonical"], a canonical.json
    dict, or card["canonical_poses"], the same dict or an array of pixel keypoints)."""
    import numpy as np

    from keyreid.errors import KeyreidError

    data = card.get("canonical", card.get("canonical_poses"))
    if data is None or (isinstance(data, (list, tuple)) and not len(data)):
        raise KeyreidError(f"{where}: its method stores no canonical poses; give --pose POSE.json "
                           "(or train with method_options.canonical: a file of `keyreid generate poses`)")
    if isinstance(data, dict):
        from keyreid.generation.canonical import canonical_from_dict

        poses = canonical_from_dict(data, f"{where}: canonical poses").pixels(height, width)
    else:
        poses = np.asarray(data, dtype=np.float32)
    which = spec.split(":", 1)[1].strip()
    if which == "all":
        return poses
    if not which.isdigit() or int(which) >= len(poses):
        raise KeyreidError(f"--pose {spec}: use canonical:K with K in 0..{len(poses) - 1}, or canonical:all")
    return poses[int(which)][None]
