"""What decides a synthetic set: the config (saved in synth.json) and the shared palette."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

SYNTH_FORMAT = "keyreid-synth"
SYNTH_VERSION = 1
MARKER = ".keyreid-synth"  # keyreid's own mark on a folder it generated: only such folders are overwritten

# One shared palette for clothes, accessories, occluders and backgrounds.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (35, 35, 40)),
    ("white", (235, 235, 230)),
    ("red", (200, 35, 40)),
    ("yellow", (235, 205, 45)),
    ("green", (40, 150, 65)),
    ("blue", (40, 75, 195)),
    ("purple", (130, 60, 165)),
    ("orange", (235, 125, 30)),
)
SKIN = (222, 176, 140)  # one skin tone for everybody: skin is not an identity cue here
PARTS = ("hair", "torso", "upper_arms", "lower_arms", "thighs", "shins", "shoes")
TEXTURED_PARTS = ("torso", "upper_arms", "lower_arms", "thighs", "shins")
TEXTURES = ("solid", "stripes", "dots", "checks")
SIDES = ("left", "right")
BACKGROUND_STYLES = ("tiles", "bands", "blobs", "bricks")  # the default benchmark's
# every style the renderer knows: the target-site config (configs/synth/target_site.yaml) draws
# from the last two, which the default benchmark never shows
ALL_BACKGROUND_STYLES = BACKGROUND_STYLES + ("foliage", "glass")
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def lists_to_tuples(cfg) -> None:
    """YAML / JSON give lists; a config dataclass keeps tuples, so that it stays hashable and
    compares equal to the one it was written from."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, list):
            setattr(cfg, f.name, tuple(v))


def palette_rgb(c: int) -> tuple[int, int, int]:
    """RGB of palette colour number c."""
    return PALETTE[c][1]


# fields added after synth.json version 1 (the target site's): recorded only when not default
ADDED_FIELDS = ("background_styles", "background_mute", "occluder_low")


@dataclass
class SynthConfig:
    """Everything that decides the generated set; saved in synth.json. Ranges are inclusive."""

    train_identities: int = 300
    test_identities: int = 300
    cameras: int = 6
    seed: int = 0
    height: int = 128
    width: int = 64
    train_images: tuple[int, int] = (6, 10)  # images per training identity
    train_cameras: tuple[int, int] = (2, 6)  # cameras a training identity is seen in (<= cameras)
    test_cameras: tuple[int, int] = (2, 6)  # cameras a test identity is seen in (>= 2)
    test_images_per_camera: tuple[int, int] = (2, 3)  # one becomes the query, the rest gallery
    distractors: int = 500  # gallery images with pid 0
    clutter_fraction: float = 0.25  # of the distractors: no person, only clutter
    junk: int = 60  # gallery images with pid -1 (bad detections)
    texture_probs: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)  # TEXTURES order
    hat_prob: float = 0.3
    bag_prob: float = 0.35
    band_prob: float = 0.3
    occlusion_prob: tuple[float, float] = (0.05, 0.3)  # per camera: chance of an occluder box
    crop_prob: tuple[float, float] = (0.0, 0.15)  # per camera: chance the person is cut by the frame
    gain: tuple[float, float] = (0.7, 1.25)  # per camera brightness
    colour_cast: float = 0.12  # per camera, per channel multiplier in 1 +- this
    blur: tuple[float, float] = (0.0, 1.0)  # per camera Gaussian blur radius (output pixels)
    noise: tuple[float, float] = (1.0, 4.0)  # per camera pixel noise std (0..255 scale)
    elevation_deg: tuple[float, float] = (0.0, 20.0)  # per camera: looking down on people
    background_styles: tuple[str, ...] = BACKGROUND_STYLES  # per camera, one of these (ALL_BACKGROUND_STYLES)
    background_mute: tuple[float, float] = (0.15, 0.45)  # per camera: background colours mixed toward grey
    occluder_low: float = 0.6  # of the occluders: low ones (bench, car, bin); the rest poles / passers-by
    path_fraction: float = 0.7  # chance a person walks along the camera's main path direction
    person_height: tuple[float, float] = (0.8, 0.95)  # of the image height
    shift: tuple[float, float] = (0.08, 0.05)  # max centre jitter, fraction of (width, height)
    supersample: int = 2  # render at this factor and box-downsample (anti-aliasing); 1 = off
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        lists_to_tuples(self)
        if not 2 <= self.cameras <= 9:  # Market names hold one camera digit
            raise ValueError("cameras must be in 2..9 (queries are matched across cameras)")
        if self.train_identities < 1 or self.test_identities < 1:
            raise ValueError("need at least one training and one test identity")
        if self.train_identities + self.test_identities > 9999:
            raise ValueError("at most 9999 identities fit the 4-digit Market pid")
        if self.test_cameras[0] < 2:
            raise ValueError("test identities must be seen in >= 2 cameras")
        if self.test_images_per_camera[0] < 2:
            raise ValueError("test_images_per_camera must start at >= 2 (one query + gallery)")
        if len(PALETTE) < len(PARTS):
            raise ValueError("palette must have at least one colour per part")
        if abs(sum(self.texture_probs) - 1.0) > 1e-6 or len(self.texture_probs) != len(TEXTURES):
            raise ValueError(f"texture_probs must be {len(TEXTURES)} probabilities summing to 1")
        if not self.background_styles or any(s not in ALL_BACKGROUND_STYLES for s in self.background_styles):
            raise ValueError(f"background_styles must be some of {', '.join(ALL_BACKGROUND_STYLES)}")
        if not 0.0 <= self.occluder_low <= 1.0:
            raise ValueError("occluder_low must lie in [0, 1]")
        if self.supersample < 1:
            raise ValueError("supersample must be >= 1")

    def to_dict(self) -> dict:
        """What synth.json records: every field, except the ones added after version 1 while they
        hold their default (a default set's synth.json stays byte-identical to older ones; from_dict
        fills them back in)."""
        values = asdict(self)
        defaults = SynthConfig()
        return {k: v for k, v in values.items() if k not in ADDED_FIELDS or v != getattr(defaults, k)}

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
