"""Synthetic articulated people in the Market-1501 layout, with COCO-17 keypoints.

What identifies a person here is WHICH body part carries WHICH colour and texture (plus a few
accessories attached to keypoints), never which colours appear: every identity dresses its seven
parts in seven different colours of one shared eight-colour palette, so every colour is used by
every part equally often over the population and every person shows almost the same set of colours.
Backgrounds, occluders and clutter use the same palette. A random 3D pose (gait phase, joint angles,
body yaw over the full circle, camera elevation, scale and translation jitter) is projected
orthographically, so pixel positions and global colour statistics carry little identity; comparing
the same body part with the same body part does.

Layout written under OUT::

    bounding_box_train/PPPP_cCs1_FFFFFF_00.jpg    training identities
    query/PPPP_cCs1_FFFFFF_00.jpg                 one image per test identity per camera it is seen in
    bounding_box_test/...                         the other test images, distractors (pid 0000)
                                                  and junk (pid -1, readers drop them)
    keypoints.jsonl                               COCO-17 sidecar (keyreid.data.keypoints format)
    synth.json                                    config, palette, cameras, true attributes
    .keyreid-synth                                marker: `overwrite` replaces only folders with it

Keypoint visibility: 1 for a keypoint inside the image and not under an occluder; 0 for one outside
the image, under an occluder box, or a face keypoint on the far side of the head (nose and eyes of a
person facing away, the far ear in profile). Body joints hidden by the body itself stay 1, as COCO
annotators label them; their coordinates are always the projected joint position.

Every image is rendered from its own seed (derived from the dataset seed and the image index), so
the output is byte-identical for the same config whatever the number of worker processes.

Rooms: config (SynthConfig, palette), identities (attributes), poses (3D body), cameras
(projection, backgrounds), drawing (painter, person, keypoints), render (one image = a Scene of
random draws + a pure paint), writer (plan, generate, read back), paired (SynthScenes: re-render
any person of a set, or put one into another image's pose: pose-transfer ground truth); video:
video_config (VideoConfig), walk (walk cycle by gait phase), video_camera (pinhole cameras on a
ground plane, static occluders), video_people (identities walking routes), world (the seeded
scene), video_render (one frame: paint far to near, visibility and keypoints from a label map),
video_detect (noisy detections from the truth), video_writer (MOTChallenge layout per camera).
"""

from keyreid.data.synthetic.cameras import Camera, background, sample_camera, scene_strip
from keyreid.data.synthetic.config import (BACKGROUND_STYLES, MARKER, PALETTE, PARTS, SIDES, SKIN, SPLIT_DIRS,
                                           SYNTH_FORMAT, SYNTH_VERSION, TEXTURED_PARTS, TEXTURES, SynthConfig,
                                           palette_rgb)
from keyreid.data.synthetic.drawing import Painter, draw_person, project_keypoints
from keyreid.data.synthetic.identities import attribute_vector, sample_attributes
from keyreid.data.synthetic.paired import Rendered, SynthScenes
from keyreid.data.synthetic.poses import sample_pose
from keyreid.data.synthetic.render import (Occluder, PersonGeometry, Scene, paint, render_array, render_image,
                                           sample_scene)
from keyreid.data.synthetic.video_camera import StaticOccluder, VideoCamera
from keyreid.data.synthetic.video_config import VIDEO_FORMAT, VIDEO_MARKER, VIDEO_VERSION, VideoConfig
from keyreid.data.synthetic.video_detect import make_detections
from keyreid.data.synthetic.video_people import PersonState, Walker
from keyreid.data.synthetic.video_render import Placement, place_person, render_frame, render_view
from keyreid.data.synthetic.video_writer import generate_video
from keyreid.data.synthetic.walk import walk_pose
from keyreid.data.synthetic.world import World, build_world
from keyreid.data.synthetic.writer import (SynthPlan, generate, is_synthetic_tree, load_synth, plan_dataset,
                                           true_attributes)

__all__ = [
    "BACKGROUND_STYLES", "MARKER", "PALETTE", "PARTS", "SIDES", "SKIN", "SPLIT_DIRS", "SYNTH_FORMAT",
    "SYNTH_VERSION", "TEXTURED_PARTS", "TEXTURES", "Camera", "Occluder", "Painter", "PersonGeometry",
    "Rendered", "Scene", "SynthConfig", "SynthPlan", "SynthScenes", "attribute_vector", "background",
    "draw_person", "generate", "is_synthetic_tree", "load_synth", "paint", "palette_rgb", "plan_dataset",
    "project_keypoints", "render_array", "render_image", "sample_attributes", "sample_camera", "sample_pose",
    "sample_scene", "true_attributes",
    # video
    "VIDEO_FORMAT", "VIDEO_MARKER", "VIDEO_VERSION", "PersonState", "Placement", "StaticOccluder", "VideoCamera",
    "VideoConfig", "Walker", "World", "build_world", "generate_video", "make_detections", "place_person",
    "render_frame", "render_view", "scene_strip", "walk_pose",
]
