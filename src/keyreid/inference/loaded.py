"""The one way to load a trained model and embed images: validation, `keyreid eval`, `extract`,
`export`, `search`, `explain` and the HTTP service all come through here, for a torch
checkpoint and an ONNX export alike (told apart by the file's content, not its name)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from keyreid.config import Config, ModelConfig, _build, load_config
from keyreid.data.keypoints import Skeleton, get_skeleton
from keyreid.data.images import read_image, to_rgb
from keyreid.data.transforms import KeypointTransform, TransformConfig
from keyreid.errors import KeyreidError
from keyreid.inference.backends import Backend, OnnxBackend, OpenVinoBackend, TorchBackend, Unsupported
from keyreid.inference.card import CARD_FORMAT, make_card
from keyreid.inference.device import resolve_device
from keyreid.inference.onnx_model import looks_like_onnx, open_onnx
from keyreid.inference.openvino_model import looks_like_ir, open_openvino

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
        pil = read_image(str(image))
    elif isinstance(image, Image.Image):
        pil = to_rgb(image)
    elif isinstance(image, np.ndarray):
        if image.size == 0:  # PIL accepts a 0x0 array, the resize then fails deep in torchvision
            raise KeyreidError(f"array image of shape {image.shape} has no pixels; nothing to embed")
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise KeyreidError(f"array image must be uint8 HxW or HxWx3 RGB, got {image.dtype} {image.shape}")
        pil = Image.fromarray(image).convert("RGB")
    else:
        raise KeyreidError(f"cannot embed an object of type {type(image).__name__}: give a path, "
                           "a PIL image or a numpy array")
    if pil.width == 0 or pil.height == 0:
        name = f"{image}: " if isinstance(image, (str, Path)) else ""
        raise KeyreidError(f"{name}image of {pil.width}x{pil.height} pixels; nothing to embed")
    return pil


class LoadedModel:
    """A trained model ready to embed images, whatever runtime runs it.

    `embed(images)` -> float32 [N, D] (L2-normalised when the model's distance is cosine, as the
    index expects); `fingerprint` names the weights; `card` holds input size, mean/std, skeleton.
    Preprocessing, flip averaging, normalisation and batching happen here, once for every
    runtime; `backend` (keyreid.inference.backends) only turns a preprocessed batch into raw
    embeddings. `model` (the torch module) and `forward` (the full output, with heatmaps) exist
    only where the backend has them: `hasattr(loaded, "forward")` tells."""

    def __init__(self, backend: Backend, card: dict, config: Optional[Config] = None,
                 path: Optional[Path] = None):
        self.backend = backend
        self.card = card
        self.config = config      # the training config (torch checkpoints); None for exports
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
        return int(self.card["input"]["height"]), int(self.card["input"]["width"])

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (gradients, Grad-CAM, fine-tuning)."""
        if self.backend.module is None:
            raise Unsupported(f"{self.path or 'this model'}: the {self.backend.name} backend has no "
                              "torch module (no gradients); load the torch checkpoint (.pt)")
        return self.backend.module

    @property
    def forward(self):
        """forward(batch) -> the full ModelOutput of a preprocessed batch (heatmaps for keypoint
        heads); an attribute only where the backend gives more than embeddings."""
        if self.backend.module is None:
            raise Unsupported(f"{self.path or 'this model'}: the {self.backend.name} backend gives "
                              "embeddings only (no heatmaps); load the torch checkpoint (.pt)")
        return self.backend.forward

    # ---------------------------------------------------------------- embedding
    def preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """float32 [N, 3, H, W]: each image resized to the card's input size and normalised."""
        if not len(images):
            return torch.zeros((0, 3, *self.input_size))
        return torch.stack([self.transform(to_pil(im))[0] for im in images])

    @torch.no_grad()
    def embed_tensor(self, batch: Union[torch.Tensor, np.ndarray], flip: bool = False,
                     normalize: Optional[bool] = None) -> np.ndarray:
        """float32 [N, D] of a preprocessed batch; with flip, the mean of each image's and its
        mirror's raw embeddings (BoT's flip test), normalised after averaging."""
        x = torch.as_tensor(batch)
        if not len(x):
            return np.zeros((0, self.dim), np.float32)
        f = self.backend.run(x)
        if flip:
            f = (f + self.backend.run(torch.flip(x, dims=[3]))) / 2
        if self.normalized if normalize is None else normalize:
            f = torch.nn.functional.normalize(f, dim=1)
        return f.float().cpu().numpy()

    def embed(self, images: Union[ImageLike, Iterable[ImageLike]], batch_size: int = 64,
              flip: bool = False, normalize: Optional[bool] = None) -> np.ndarray:
        """float32 [N, D] for paths, PIL images or uint8 arrays (one image gives [1, D])."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        images = list(images)
        if batch_size < 1:
            raise KeyreidError(f"batch_size must be at least 1, got {batch_size}")
        out = [self.embed_tensor(self.preprocess(images[i:i + batch_size]), flip, normalize)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def _legacy_config(path: Path, config: Optional[Union[str, Path, Config]]) -> Config:
    if config is None:
        # only `keyreid eval` hands a training config to load_model; no other command takes one
        raise KeyreidError(f"{path}: checkpoint written before keyreid stored a model card; only "
                           f"`keyreid eval CONFIG.yaml --checkpoint {path}` (with the YAML it was "
                           "trained with) or, from Python, load_model(CKPT, config=CONFIG.yaml) can read it")
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


def model_format(path: Union[str, Path]) -> str:
    """"torch", "onnx" or "openvino", from the file's first bytes: a torch checkpoint is a zip
    (or, from old torch versions, a pickle), an ONNX model a protobuf, an OpenVINO IR an XML
    <net>. Anything else is one clear error."""
    path = Path(path)
    if path.is_dir():
        raise KeyreidError(f"{path}: a folder, not a model file (best.pt, last.pt or MODEL.onnx)")
    if not path.is_file():
        kind = "ONNX model" if path.suffix.lower() == ".onnx" else "checkpoint"
        raise KeyreidError(f"{path}: {kind} not found")
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as e:
        raise KeyreidError(f"{path}: cannot read it ({e.strerror or e})") from None
    if head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch"
    if looks_like_onnx(head):
        return "onnx"
    if looks_like_ir(head):
        return "openvino"
    what = "an empty file" if not head else "neither a torch checkpoint nor an exported model"
    raise KeyreidError(f"{path}: {what}; give a checkpoint (best.pt, last.pt) or an exported "
                       "MODEL.onnx or MODEL.xml")


RUNTIMES = ("torch", "onnx", "onnx-int8", "openvino")


def runtime_of(path: Union[str, Path]) -> str:
    """What runs the model file: "torch", "onnx" (onnxruntime, fp32), "onnx-int8" (onnxruntime,
    an int8 export: its sidecar says) or "openvino" -- what `extract --backend` names."""
    kind = model_format(path)
    if kind == "onnx":
        from keyreid.inference.onnx_model import read_sidecar

        try:
            return "onnx-int8" if read_sidecar(Path(path)).get("precision") == "int8" else "onnx"
        except KeyreidError:
            return "onnx"   # loading it says what is wrong with the sidecar
    return kind


def load_model(checkpoint: Union[str, Path], device: str = "auto",
               config: Optional[Union[str, Path, Config]] = None) -> LoadedModel:
    """Load `best.pt` / `last.pt` (torch backend) or an exported MODEL.onnx (onnxruntime
    backend, CPU) as a LoadedModel; the file's content decides which, whatever its name.

    The checkpoint's own card decides the architecture and preprocessing; `config` is only
    consulted for checkpoints written before cards existed. A missing or damaged file is an
    error: there is no silent fallback to ImageNet or random weights."""
    path = Path(checkpoint)
    kind = model_format(path)
    if kind in ("onnx", "openvino"):
        if device not in ("auto", "cpu"):
            runtime = "onnxruntime" if kind == "onnx" else "OpenVINO"
            raise KeyreidError(f"{path}: an {'ONNX' if kind == 'onnx' else 'OpenVINO'} model runs on "
                               f"CPU here ({runtime}); use device cpu or auto, not {device!r}")
        return load_onnx_model(path) if kind == "onnx" else load_openvino_model(path)
    return _load_torch(path, device, config)


def _load_torch(path: Path, device: str, config: Optional[Union[str, Path, Config]]) -> LoadedModel:
    from keyreid.utils.checkpoint import load_checkpoint
    from keyreid.models.build import build_model

    dev = resolve_device(device)
    ck = load_checkpoint(path, "cpu")
    if not isinstance(ck, dict) or "model" not in ck:
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
    return LoadedModel(TorchBackend(model.to(dev), dev), card, cfg, path)



def load_onnx_model(path: Union[str, Path], threads: Optional[int] = None) -> LoadedModel:
    """MODEL.onnx (with its sidecar) as a LoadedModel with the onnxruntime backend (CPU)."""
    meta, session = open_onnx(path, threads)
    return LoadedModel(OnnxBackend(session), meta["card"], config=None, path=Path(path))


def load_openvino_model(path: Union[str, Path], threads: Optional[int] = None) -> LoadedModel:
    """MODEL.xml (with MODEL.bin and its sidecar) as a LoadedModel with the OpenVINO backend (CPU)."""
    meta, compiled = open_openvino(path, threads)
    return LoadedModel(OpenVinoBackend(compiled), meta["card"], config=None, path=Path(path))


OnnxModel = LoadedModel   # was a class of its own; an ONNX model is a LoadedModel with OnnxBackend

__all__ = ["RUNTIMES", "LoadedModel", "card_for", "load_model", "runtime_of", "load_onnx_model", "load_openvino_model", "model_format", "to_pil"]
