"""Ground truth the pose-transfer papers never had: any person of a synthetic set, re-rendered
in any other image's pose.

A generated set is re-planned from ROOT/synth.json's config (plan_dataset is deterministic), so
nothing but the set itself is needed: every image's random draws (render.sample_scene) come back
from its seed, and render.paint draws any person's attributes into any scene.

Masks: the person's visible pixels, i.e. every shape the person is painted with (body, skin,
hair, and the accessories, which belong to the person: hat, bag and its strap, wrist band), minus
the occluder box when the image has one; box-downsampled like the image (True where more than
half of an output pixel is covered), taken before the camera blur, so the blurred fringe of the
person (about one pixel) lies just outside the mask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyreid.data.synthetic.config import SPLIT_DIRS, SynthConfig
from keyreid.data.synthetic.render import Scene, paint, sample_scene
from keyreid.data.synthetic.writer import load_synth, plan_dataset
from keyreid.errors import DataError


@dataclass
class Rendered:
    image: np.ndarray  # uint8 [H, W, 3] RGB, the dataset's pipeline (camera blur, gain, noise) before JPEG
    keypoints: np.ndarray  # float32 [17, 3] COCO-17 (x, y, visibility) in pixels
    mask: np.ndarray  # bool [H, W]: the person's visible pixels (see the module docstring)


class SynthScenes:
    """Re-plans a generated set from ROOT/synth.json (deterministic) and re-renders any of its
    people in any of its scenes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        where = self.root / "synth.json"
        try:
            meta = load_synth(self.root)
        except (OSError, ValueError) as e:  # missing, unreadable, not JSON, not ours
            raise DataError(where, f"not a readable keyreid synthetic description ({e.__class__.__name__}); "
                                   f"generate the set with `keyreid synth`") from None
        self.config = SynthConfig.from_dict(meta["config"])
        plan = plan_dataset(self.config)
        self._items = {it["path"]: it for it in plan.items}
        # a set written by another version of the generator re-plans into other images: refuse
        # rather than hand out ground truth for images the set does not hold
        if set(self._items) != set(meta.get("images", {})) or plan.cameras != meta.get("cameras"):
            raise DataError(where, "its config re-plans into other images or cameras than the set holds "
                                   "(written by another version of the generator?); regenerate the set")
        self._cameras = {c["camera"]: c for c in plan.cameras}

    def _item(self, rel_path: str) -> dict:
        item = self._items.get(rel_path)
        if item is None:
            raise DataError(self.root, f"{rel_path}: not an image of this synthetic set")
        return item

    def _scene(self, item: dict) -> Scene:
        return sample_scene(item, self._cameras[item["camera"]], self.config)

    def paths(self, split: str) -> list[str]:
        """Relative paths (sorted) of the labelled people of a split ("train", "query", "gallery"):
        no distractors (pid 0), junk (pid -1) or clutter; render() also takes those."""
        if split not in SPLIT_DIRS:
            raise DataError(self.root, f"unknown split {split!r}; one of {', '.join(SPLIT_DIRS)}")
        return sorted(p for p, it in self._items.items()
                      if it["split"] == split and it["kind"] == "person" and it["pid"] > 0)

    def pid(self, rel_path: str) -> int:
        return int(self._item(rel_path)["pid"])

    def render(self, rel_path: str) -> Rendered:
        """The image exactly as the dataset has it before JPEG (occluder included), its
        keypoints as in keypoints.jsonl, and the mask of the person's visible pixels."""
        item = self._item(rel_path)
        image, kp, _, mask = paint(item["attributes"], self._scene(item), self.config, with_mask=True)
        return Rendered(image, kp.astype(np.float32), mask)

    def transfer(self, source: str, target: str) -> Rendered:
        """The person of `source` (attributes) in the pose geometry of `target` (3D pose, yaw,
        elevation, scale, position, crop), on the SOURCE's background and camera (window, clutter,
        blur, gain and flicker, colour cast, the very same noise) and without occluder: what an
        ideal generator given (source image, target pose) should output.

        Keypoints are the target's coordinates; their visibility is computed without occluder,
        so a joint the target's occluder hid is visible here (everything else as in the target).
        transfer(s, s) == render(s) for a source without occluder."""
        src, tgt = self._item(source), self._item(target)
        for rel, it in ((source, src), (target, tgt)):
            if it["kind"] == "clutter":
                raise DataError(self.root, f"{rel}: a clutter image has no person to transfer")
        scene = dataclasses.replace(self._scene(src), kind="person", person=self._scene(tgt).person, occluder=None)
        image, kp, _, mask = paint(src["attributes"], scene, self.config, with_mask=True)
        return Rendered(image, kp.astype(np.float32), mask)
