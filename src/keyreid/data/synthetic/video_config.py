"""What decides a synthetic video set: VideoConfig (saved in scene.json) and the layout's names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from keyreid.data.synthetic.config import lists_to_tuples

VIDEO_FORMAT = "keyreid-synth-video"
VIDEO_VERSION = 1
VIDEO_MARKER = ".keyreid-synth-video"  # keyreid's mark on a video folder it wrote: only those are overwritten
KEYPOINTS_FORMAT = "keyreid-video-keypoints"


def _range(name: str, v, lo: float, hi: float | None = None) -> None:
    if len(v) != 2 or not v[0] <= v[1] or v[0] < lo or (hi is not None and v[1] > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be a range (low, high) with low <= high, both {bound}; got {list(v)}")


@dataclass
class VideoConfig:
    """Everything that decides a synthetic video set; ranges are (low, high), inclusive."""

    cameras: int = 4  # c1 and c2 share the plaza; c3.. lie further along the route
    seconds: float = 30.0
    fps: int = 10
    width: int = 384
    height: int = 216
    identities: int = 40
    max_in_view: int = 10  # people scheduled so that no camera sees more at once (about)
    seed: int = 0
    transit_seconds: tuple[float, float] = (4.0, 10.0)  # walking time between neighbouring fields of view
    speed: tuple[float, float] = (0.9, 1.6)  # walking speed, m/s
    person_height: tuple[float, float] = (1.55, 1.95)  # metres
    door_prob: float = 0.3  # chance a person enters (and, separately, leaves) by a side door
    pause_prob: float = 0.3  # chance a person stops once (a shop window, a phone) where a camera sees it
    pause_seconds: tuple[float, float] = (1.0, 4.0)
    turn_prob: float = 0.15  # chance a person turns back half-way and leaves the way they came
    group_prob: float = 0.3  # chance a person walks beside the one before (friends: same pace, a lane apart)
    occluders: tuple[int, int] = (3, 5)  # static occluders placed in each camera's field of view
    gain: tuple[float, float] = (0.7, 1.25)  # per camera brightness (as the still cameras)
    colour_cast: float = 0.12
    blur: tuple[float, float] = (0.0, 0.8)  # output pixels
    noise: tuple[float, float] = (1.0, 4.0)  # std on the 0..255 scale
    det_jitter: float = 0.05  # box noise std as a fraction of the box width / height
    det_miss_base: float = 0.03  # miss probability of a fully visible person
    det_miss_occlusion: float = 0.8  # added miss probability at visibility 0 (grows as (1 - vis)^2)
    det_min_height: float = 12.0  # boxes lower than this (pixels) are missed half the time
    det_false_positives: float = 0.4  # false detections per frame (Poisson mean)
    det_partial_fraction: float = 0.5  # of the false detections: part of a person rather than background
    supersample: int = 2
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        lists_to_tuples(self)
        if not 1 <= self.cameras <= 9:
            raise ValueError(f"cameras must be in 1..9; got {self.cameras}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be > 0; got {self.seconds}")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be in 1..60; got {self.fps}")
        if not 1 <= self.frames <= 999999:
            raise ValueError(f"seconds * fps must give 1..999999 frames (six-digit names); got {self.frames}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"frames must be at least 32x32 pixels; got {self.width}x{self.height}")
        if not 1 <= self.identities <= 9999:
            raise ValueError(f"identities must be in 1..9999; got {self.identities}")
        if self.max_in_view < 1:
            raise ValueError(f"max_in_view must be >= 1; got {self.max_in_view}")
        _range("transit_seconds", self.transit_seconds, 0.5)
        _range("speed", self.speed, 0.2, 3.0)
        _range("person_height", self.person_height, 0.5, 2.5)
        _range("occluders", self.occluders, 0)
        _range("pause_seconds", self.pause_seconds, 0.0)
        _range("gain", self.gain, 0.05)
        _range("blur", self.blur, 0.0)
        _range("noise", self.noise, 0.0)
        for name in ("door_prob", "pause_prob", "turn_prob", "group_prob", "det_miss_base", "det_miss_occlusion", "det_partial_fraction", "colour_cast"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]; got {getattr(self, name)}")
        for name in ("det_jitter", "det_min_height", "det_false_positives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"supersample must be in 1..4; got {self.supersample}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100; got {self.jpeg_quality}")

    @property
    def frames(self) -> int:
        """Frames per camera (seqLength)."""
        return int(round(self.seconds * self.fps))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "VideoConfig":
        """Fields of `d` this version knows (scene.json of a later version may hold more)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
