"""What a generation method is to the trainer: a registered nn.Module that owns its networks, makes
its optimizers per stage, picks its training pairs and does all its D / G updates in train_step.

The trainer (generation/trainer.py) owns everything around it: data, devices, AMP, DDP, LR
schedule, checkpoints, logs and sample grids. A method registers itself with
`@register_method("name")`; the built-in ones are imported on first look-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ContextManager, Optional, Sequence

import torch
from torch import Tensor, nn

from keyreid.data.keypoints import Skeleton
from keyreid.engine.loop import Stage  # noqa: F401  (a stage of the one training loop)
from keyreid.utils.registry import Registry

if TYPE_CHECKING:  # the config imports nothing of this module; kept a type only to stay light
    from keyreid.generation.config import GenConfig

GENERATION_METHODS = Registry("generation method", builtin=["keyreid.generation.methods.pngan",
                                                            "keyreid.generation.methods.fdgan",
                                                            "keyreid.generation.methods.ipgan"])
register_method = GENERATION_METHODS.register


def lr_factor(stage: Stage, epoch: int) -> float:
    """LR factor of `epoch` (0-based, within the stage): 1 for the first `epochs` epochs, then
    1 - (e - epochs + 1) / (decay_epochs + 1): the CycleGAN / pix2pix rule (their
    `1 - max(0, e + count - n_epochs) / (n_epochs_decay + 1)` with epoch_count 1), so the last
    decay epoch still trains at 1 / (decay_epochs + 1) of the base LR and 0 is never used."""
    if epoch < stage.epochs:
        return 1.0
    return 1.0 - (epoch - stage.epochs + 1) / (stage.decay_epochs + 1)


@dataclass
class DataInfo:
    """What a method learns about the data before it builds its networks."""

    skeleton: Skeleton              # the generation skeleton (OPENPOSE18 for people)
    num_classes: int                # training identities
    height: int
    width: int
    train_pids: list[int] = field(default_factory=list)   # per training sample, labels 0..num_classes-1

    def to_dict(self) -> dict:
        return {"skeleton": self.skeleton.name, "num_classes": self.num_classes, "height": self.height,
                "width": self.width, "train_pids": list(self.train_pids)}


class StepContext:
    """Built by the trainer and handed to train_step: the device, where training is, and the three
    calls a method uses for each of its updates:

        with ctx.autocast(): loss = ...     # fp16 / bf16 autocast on GPU when optim.amp, no-op on CPU
        ctx.backward(loss)                  # through the GradScaler when fp16 AMP is on
        ctx.step("generator")               # grad clip (optim.grad_clip), scaler.step, zero_grad

    The scaler's update() runs once after train_step (torch's rule for several optimizers sharing a
    scaler); an optimizer stepped twice in one train_step gets an update() in between."""

    def __init__(self, device: torch.device, optimizers: dict[str, torch.optim.Optimizer],
                 scaler: Optional[torch.amp.GradScaler] = None, amp_dtype: Optional[torch.dtype] = None,
                 grad_clip: Optional[float] = None, stage: Optional[Stage] = None, epoch: int = 0,
                 step: int = 0):
        self.device = device
        self.optimizers = optimizers
        self.scaler = scaler
        self.amp_dtype = amp_dtype          # None: no autocast
        self.grad_clip = grad_clip
        self.stage = stage
        self.epoch = epoch                  # within the stage, 0-based
        self.step_index = step              # batches already taken this epoch
        self._stepped: set[str] = set()

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: Tensor) -> None:
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer_name: str) -> None:
        if optimizer_name not in self.optimizers:
            raise KeyError(f"train_step stepped optimizer {optimizer_name!r}; the method's optimizers "
                           f"for this stage are {sorted(self.optimizers)}")
        opt = self.optimizers[optimizer_name]
        scaling = self.scaler is not None and self.scaler.is_enabled()
        if optimizer_name in self._stepped and scaling:
            self.update()
        if self.grad_clip:
            if scaling:
                self.scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if scaling:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        self._stepped.add(optimizer_name)

    def update(self) -> None:
        """End of a step: the scaler adapts its scale once for all optimizers stepped."""
        if self.scaler is not None and self.scaler.is_enabled() and self._stepped:
            self.scaler.update()
        self._stepped.clear()


class GenerationMethod(nn.Module):
    """Networks are attributes (nn.Modules); the trainer moves the method to the device, wraps each
    attribute named by `ddp_modules()` in DistributedDataParallel under torchrun (so call those
    networks through their forward; reach their sub-modules through `unwrap(self.net)`), and saves /
    loads the method's state_dict() and every optimizer's.

    A subclass implements optimizers, train_step, sample and render, and usually pairs and card."""

    #: PairDataset options: which per-role extras the method reads (they cost CPU time)
    uses_pose_maps: bool = True
    uses_skeleton_images: bool = True
    #: the trainer refuses data whose training images have no keypoints at all when True
    needs_keypoints: bool = True
    #: DistributedDataParallel(find_unused_parameters=...) for the wrapped networks: True is safe
    #: when a backward reaches only some of a network's weights (a D used as G's critic)
    ddp_find_unused_parameters: bool = True
    #: the dataclass cfg.method_options is read into (its field defaults complete a config's options)
    options_class: Optional[type] = None

    @classmethod
    def resolved_options(cls, options: dict) -> dict:
        """cfg.method_options with the options class's defaults filled in, as raw values: what a
        run was really trained with, so `--set method_options.x=V` with V the default is no change."""
        if cls.options_class is None or not dataclasses.is_dataclass(cls.options_class):
            return dict(options or {})
        out = {}
        for f in dataclasses.fields(cls.options_class):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        out.update(options or {})
        return out

    def __init__(self, cfg: "GenConfig", info: DataInfo):
        super().__init__()
        self.cfg = cfg
        self.info = info

    def stages(self) -> list[Stage]:
        return [Stage("main", self.cfg.optim.epochs, self.cfg.optim.decay_epochs)]

    def optimizers(self, stage: Stage) -> dict[str, torch.optim.Optimizer]:
        """Made when a stage begins (also on resume, then loaded from the checkpoint). The trainer
        scales every param group's lr by the stage's LR factor each epoch, from the base lr it keeps
        in param_group["initial_lr"] (set it yourself for a group whose base lr is not group["lr"])."""
        raise NotImplementedError

    def begin_stage(self, stage: Stage) -> None:
        """Freeze / unfreeze networks for the stage. Called when the stage starts, and on a resume
        AFTER the checkpoint's weights are loaded: a one-time initialisation (FD-GAN's Di := E) must
        be guarded by state the method saves (a buffer), or a resume in mid-stage redoes it."""

    def pairs(self, pids: Sequence[int], epoch: int, seed: int, max_pairs: Optional[int]) -> list[dict]:
        """PairDataset items for this epoch. Default: every ordered same-identity pair
        ("source", "target"), a subsample seeded by (seed, epoch) when max_pairs is set."""
        from keyreid.generation.pairs import same_identity_pairs

        return same_identity_pairs(pids, seed=seed * 1000003 + epoch, max_pairs=max_pairs)

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        """All the method's D / G updates on one batch (through ctx); returns its losses as floats."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, batch: dict) -> dict[str, Tensor]:
        """Ordered columns of the sample grid, each [B,3,H,W] in [-1,1]."""
        raise NotImplementedError

    def ddp_modules(self) -> list[str]:
        """Attribute names of the networks DDP wraps. Default: every child with trainable weights."""
        return [name for name, m in self.named_children()
                if any(p.requires_grad for p in m.parameters())]

    def card(self) -> dict:
        """What `keyreid generate render` needs besides the config (e.g. canonical poses)."""
        return {}

    @torch.no_grad()
    def render(self, source: Tensor, target_kp: Optional[Tensor] = None, other: Optional[Tensor] = None) -> Tensor:
        """source [B,3,H,W] in [-1,1]; target_kp [B,K,3] in the generation skeleton, pixels at (H, W);
        other [B,3,H,W] (e.g. IP-GAN's attribute image). Returns [B,3,H,W] in [-1,1]."""
        raise NotImplementedError


def unwrap(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
