"""The one way to load a trained model and embed images: validation, `keyreid eval`, `extract`,
`export`, `search`, `explain` and the HTTP service all come through here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from keyreid.config import Config, ModelConfig, _build, load_config
from keyreid.data.keypoints import Skeleton, get_skeleton
from keyreid.data.loader import read_image
from keyreid.data.transforms import KeypointTransform, TransformConfig
from keyreid.errors import KeyreidError
from keyreid.inference.card import CARD_FORMAT, make_card
from keyreid.inference.device import resolve_device

ImageLike = Union[str, Path, Image.Image, np.ndarray]


def card_for(cfg: Config, model: torch.nn.Module, skeleton: Optional[Skeleton], num_classes: int,
             state: Optional[dict] = None) -> dict:
    """The card of a model built from `cfg` (what the trainer stores in every checkpoint)."""
    bare = getattr(model, "module", model)
    model_cfg = dataclasses.replace(cfg.model, pretrained=None)  # weights come from the checkpoint
    return make_card(model_config=dataclasses.asdict(model_cfg), num_classes=num_classes,
                     skeleton=skeleton.name if skeleton else None, height=cfg.data.height,
                     width=cfg.data.width, mean=bare.backbone.input_mean, std=bare.backbone.input_std,
                     embedding_dim=bare.embedding_dim, distance=cfg.eval.distance,
                     state=state if state is not None else bare.state_dict())


def to_pil(image: ImageLike) -> Image.Image:
    """A path, a PIL image or an HxWx3 uint8 RGB array (HxW grey) as an RGB PIL image."""
    if isinstance(image, (str, Path)):
        return read_image(str(image))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise KeyreidError(f"array image must be uint8 HxW or HxWx3 RGB, got {image.dtype} {image.shape}")
        return Image.fromarray(image).convert("RGB")
    raise KeyreidError(f"cannot embed an object of type {type(image).__name__}: give a path, "
                       "a PIL image or a numpy array")


class LoadedModel:
    """A trained model ready to embed images.

    `embed(images)` -> float32 [N, D] (L2-normalised when the model's distance is cosine, as the
    index expects); `fingerprint` names the weights; `card` holds input size, mean/std, skeleton."""

    def __init__(self, model: torch.nn.Module, card: dict, config: Config, device: torch.device,
                 path: Optional[Path] = None):
        self.model = model.eval()
        self.card = card
        self.config = config
        self.device = device
        self.path = path
        self.skeleton = get_skeleton(card["skeleton"]) if card.get("skeleton") else None
        inp = card["input"]
        tcfg = TransformConfig(height=inp["height"], width=inp["width"], flip_prob=0.0, pad=0,
                               erase_prob=0.0, mean=tuple(inp["mean"]), std=tuple(inp["std"]))
        self.transform = KeypointTransform(tcfg, train=False,
                                           flip_permutation=self.skeleton.flip_permutation()
                                           if self.skeleton else None)

    # ---------------------------------------------------------------- description
    @property
    def fingerprint(self) -> str:
        return self.card["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.card["embedding_dim"])

    @property
    def distance(self) -> str:
        return self.card["distance"]

    @property
    def normalized(self) -> bool:
        return bool(self.card["normalized"])

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card["input"]["height"], self.card["input"]["width"]

    # ---------------------------------------------------------------- embedding
    def preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        return torch.stack([self.transform(to_pil(im))[0] for im in images])

    @torch.no_grad()
    def forward(self, batch: torch.Tensor):
        """The full ModelOutput of a preprocessed batch (heatmaps for keypoint heads)."""
        return self.model(batch.to(self.device))

    @torch.no_grad()
    def embed_tensor(self, batch: torch.Tensor, flip: bool = False, normalize: Optional[bool] = None
                     ) -> np.ndarray:
        x = batch.to(self.device)
        f = self.model(x).embedding
        if flip:
            f = (f + self.model(torch.flip(x, dims=[3])).embedding) / 2
        if self.normalized if normalize is None else normalize:
            f = torch.nn.functional.normalize(f, dim=1)
        return f.float().cpu().numpy()

    def embed(self, images: Union[ImageLike, Iterable[ImageLike]], batch_size: int = 64,
              flip: bool = False, normalize: Optional[bool] = None) -> np.ndarray:
        """float32 [N, D] for paths, PIL images or uint8 arrays (one image gives [1, D])."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        images = list(images)
        out = [self.embed_tensor(self.preprocess(images[i:i + batch_size]), flip, normalize)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def _legacy_config(path: Path, config: Optional[Union[str, Path, Config]]) -> Config:
    if config is None:
        raise KeyreidError(f"{path}: checkpoint written before keyreid stored a model card; pass the "
                           "config it was trained with (--config CONFIG.yaml)")
    return config if isinstance(config, Config) else load_config(config)


def _options_from_weights(model_cfg: ModelConfig, state: dict) -> ModelConfig:
    """Head options that the weights decide (a default that changed since the checkpoint was
    written): a head class may say which through options_from_weights(state, options)."""
    from keyreid.models.heads import HEADS

    try:
        hook = getattr(HEADS.get(model_cfg.head), "options_from_weights", None)
    except KeyreidError:  # an unknown head: build_model reports it, with its message
        return model_cfg
    extra = hook(state, dict(model_cfg.head_options or {})) if hook else {}
    if not extra:
        return model_cfg
    return dataclasses.replace(model_cfg, head_options={**(model_cfg.head_options or {}), **extra})


def load_model(checkpoint: Union[str, Path], device: str = "auto",
               config: Optional[Union[str, Path, Config]] = None) -> LoadedModel:
    """Load `best.pt` / `last.pt` (or an exported `.onnx`) as a LoadedModel.

    The checkpoint's own card decides the architecture and preprocessing; `config` is only
    consulted for checkpoints written before cards existed. A missing or damaged file is an
    error: there is no silent fallback to ImageNet or random weights."""
    from keyreid.utils.checkpoint import load_checkpoint
    from keyreid.models.build import build_model

    path = Path(checkpoint)
    if path.suffix == ".onnx":
        from keyreid.inference.onnx_model import load_onnx_model

        return load_onnx_model(path)
    dev = resolve_device(device)
    ck = load_checkpoint(path, "cpu")
    if "model" not in ck:
        raise KeyreidError(f"{path}: not a keyreid checkpoint (no model weights)")
    card = ck.get("card")
    if card is not None and card.get("format") == CARD_FORMAT:
        model_cfg = _options_from_weights(_build(ModelConfig, card["model"], f"{path}:card.model"), ck["model"])
        cfg = _build(Config, ck["config"], f"{path}:config") if ck.get("config") else Config()
        cfg.model = model_cfg
        skeleton = get_skeleton(card["skeleton"]) if card.get("skeleton") else None
        model = build_model(model_cfg, card["num_classes"], skeleton)
    else:
        cfg = _legacy_config(path, config)
        skeleton = get_skeleton(ck["skeleton"]) if ck.get("skeleton") else None
        model_cfg = _options_from_weights(dataclasses.replace(cfg.model, pretrained=None), ck["model"])
        model = build_model(model_cfg, len(ck["label_map"]), skeleton)
        card = None
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise KeyreidError(f"{path}: weights do not fit the model its config describes ({first})") from None
    if card is None:
        card = card_for(cfg, model, skeleton, len(ck["label_map"]), ck["model"])
    return LoadedModel(model.to(dev), card, cfg, dev, path)


__all__ = ["LoadedModel", "card_for", "load_model", "to_pil"]
