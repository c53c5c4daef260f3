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
    from keyreid.engine.checkpoint import load_checkpoint

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
