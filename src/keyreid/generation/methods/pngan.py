"""PN-GAN (Qian et al., "Pose-Normalized Image Generation for Person Re-identification", ECCV 2018).

G maps (source image, target skeleton image) to the source person in the target pose; D is an
unconditional PatchGAN that only judges whether an image looks real. From the authors' code
(naiq/PN_GAN, read for facts; methods.md section 7):

- G: CycleGAN-style ResNet generator on the 6-channel concat(source, target skeleton image),
  ngf 64, 9 residual blocks, non-affine instance norm, Tanh.
- D: PatchGAN, 4x4 convs 64-128-256-512-1, instance norm, LeakyReLU 0.2; no pose input.
- Losses: least squares GAN + 10 x L1(G(x, p), target). D's REAL sample is the SOURCE image
  (`d_real: source`, the default, as in the code; `d_real: target` uses the target image, the
  pair's ground truth, which is what the paper's text suggests). The target image is always the
  L1 reference.
- Updates per batch: G first (LSGAN towards "real" + 10 L1), then D on the real sample and the
  same generated batch, detached. D's loss is keyreid's 0.5 (real + fake), the code's sum at half
  scale (Adam is invariant to that scale apart from eps).
- Adam 2e-4, betas (0.5, 0.999), batch 32, 10 epochs constant + 10 decaying linearly to 0.
- Pairs: every ordered pair of two images of one training identity (same_identity_pairs), a
  seeded subsample of max_pairs per epoch (a different one each epoch).

Rendering: render(source, target_kp) draws the target keypoints (generation skeleton, pixels at
the model's size) as a skeleton image the way the training data draws them and runs G.
`method_options.canonical`: a canonical.json (`keyreid generate poses`) or its content; it goes
into card() so `generate render --pose canonical:K` and the re-ID use (generation.pngan_reid)
find the poses in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from keyreid.config import ConfigError, _build
from keyreid.generation.canonical import Canonical, canonical_from_dict, read_canonical
from keyreid.generation.losses import GANLoss, discriminator_loss
from keyreid.generation.method import DataInfo, GenerationMethod, Stage, StepContext, register_method
from keyreid.generation.nets.patchgan import PatchDiscriminator
from keyreid.generation.nets.resnet_generator import ResnetGenerator
from keyreid.generation.pairs import same_identity_pairs
from keyreid.generation.pose import skeleton_image, to_unit_range

D_REAL = ("source", "target")


@dataclass
class PNGANOptions:
    """cfg.method_options for method "pngan" (defaults: the authors' code)."""

    ngf: int = 64                    # G's first width
    n_blocks: int = 9                # G's residual blocks
    ndf: int = 64                    # D's first width
    n_layers: int = 3                # D's stride-2 layers (70x70 patches at 256x128)
    lr: float = 2e-4                 # Adam, G and D
    betas: list = field(default_factory=lambda: [0.5, 0.999])
    l1_weight: float = 10.0
    gan: str = "lsgan"               # lsgan (the code) | bce (the paper's log loss)
    d_real: str = "source"           # D's real sample: source (the code) | target
    canonical: Any = None            # canonical.json path, or its content (a dict) -> card()

    def check(self) -> None:
        if self.d_real not in D_REAL:
            raise ConfigError(f"method_options.d_real: expected one of {', '.join(D_REAL)}, got {self.d_real!r}")
        if self.gan not in ("lsgan", "bce"):
            raise ConfigError(f"method_options.gan: expected lsgan or bce, got {self.gan!r}")
        if min(self.ngf, self.ndf, self.n_layers) < 1 or self.n_blocks < 0:
            raise ConfigError("method_options.ngf, ndf and n_layers must be positive, n_blocks >= 0")
        if len(self.betas) != 2:
            raise ConfigError(f"method_options.betas: expected two numbers, got {self.betas!r}")
        if self.l1_weight < 0:
            raise ConfigError(f"method_options.l1_weight must be >= 0, got {self.l1_weight}")


def _load_canonical(value) -> Optional[Canonical]:
    if value is None:
        return None
    if isinstance(value, dict):
        return canonical_from_dict(value, "method_options.canonical")
    return read_canonical(value)


@register_method("pngan")
class PNGAN(GenerationMethod):
    """Networks: `generator` (ResnetGenerator 6 -> 3) and `discriminator` (PatchDiscriminator 3)."""

    options_class = PNGANOptions

    uses_pose_maps = False          # G sees the skeleton image only
    uses_skeleton_images = True

    def __init__(self, cfg, info: DataInfo):
        super().__init__(cfg, info)
        self.opts = _build(PNGANOptions, dict(cfg.method_options or {}), "method_options")
        self.opts.check()
        o = self.opts
        self.skeleton = info.skeleton
        self.height, self.width = info.height, info.width
        self.generator = ResnetGenerator(6, 3, ngf=o.ngf, n_blocks=o.n_blocks, norm="instance")
        self.discriminator = PatchDiscriminator(3, ndf=o.ndf, n_layers=o.n_layers, norm="instance")
        self.gan = GANLoss(o.gan)
        # read now: a wrong path is an error before training, not at the first checkpoint
        self.canonical = _load_canonical(o.canonical)
        if self.canonical is not None and self.canonical.skeleton != info.skeleton.name:
            raise ConfigError(f"method_options.canonical: poses of skeleton {self.canonical.skeleton!r}, "
                              f"the data's generation skeleton is {info.skeleton.name!r}")

    # ------------------------------------------------------------------ plumbing
    def ddp_modules(self) -> list[str]:
        return ["generator", "discriminator"]

    def optimizers(self, stage: Stage) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(float(b) for b in self.opts.betas)
        return {"generator": torch.optim.Adam(self.generator.parameters(), lr=self.opts.lr, betas=betas),
                "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.opts.lr,
                                                  betas=betas)}

    def pairs(self, pids: Sequence[int], epoch: int, seed: int, max_pairs: Optional[int]) -> list[dict]:
        # a fresh subsample every epoch, reproducible from (seed, epoch)
        sub_seed = int(np.random.SeedSequence([seed, epoch, 1801]).generate_state(1)[0])
        return same_identity_pairs(pids, sub_seed, max_pairs)

    def card(self) -> dict:
        out = {"render_inputs": ["source (the person)", "pose (target keypoints; canonical:K)"],
               "d_real": self.opts.d_real}
        if self.canonical is not None:
            out["canonical"] = self.canonical.to_dict()
        return out

    # ------------------------------------------------------------------ the model
    def generate(self, source: Tensor, target_skeleton: Tensor) -> Tensor:
        return self.generator(torch.cat([source, target_skeleton], dim=1))

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        dev = ctx.device
        source = batch["source"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        pose = batch["target_skeleton"].to(dev, non_blocking=True)
        real = source if self.opts.d_real == "source" else target

        # G: look real to D and match the target image
        with ctx.autocast():
            fake = self.generate(source, pose)
            g_gan = self.gan(self.discriminator(fake), True)
        l1 = F.l1_loss(fake.float(), target.float())
        loss_g = g_gan + self.opts.l1_weight * l1
        ctx.backward(loss_g)
        ctx.step("generator")

        # D: real sample vs the same generated batch, detached (one pass over both; instance
        # norm is per image, so concatenating changes nothing). G's backward left gradients in D.
        self.discriminator.zero_grad(set_to_none=True)
        with ctx.autocast():
            pred = self.discriminator(torch.cat([real, fake.detach()], dim=0))
        pred_real, pred_fake = pred.split(real.shape[0], dim=0)
        loss_d = discriminator_loss(self.gan, pred_real, pred_fake)
        ctx.backward(loss_d)
        ctx.step("discriminator")
        return {"g_gan": float(g_gan.detach()), "l1": float(l1.detach()),
                "g_total": float(loss_g.detach()), "d": float(loss_d.detach()),
                "d_real": float(pred_real.detach().float().mean()),
                "d_fake": float(pred_fake.detach().float().mean())}

    @torch.no_grad()
    def sample(self, batch: dict) -> dict[str, Tensor]:
        dev = next(self.generator.parameters()).device
        source = batch["source"].to(dev)
        pose = batch["target_skeleton"].to(dev)
        return {"source": source, "target pose": pose, "generated": self.generate(source, pose),
                "ground truth": batch["target"].to(dev)}

    def skeleton_images(self, target_kp: Tensor | np.ndarray) -> Tensor:
        """[B, K, 3] keypoints (generation skeleton, pixels at the model's size) -> [B, 3, H, W]
        skeleton images in [-1, 1], drawn exactly as PairDataset draws training targets."""
        kp = np.asarray(target_kp.detach().cpu() if isinstance(target_kp, Tensor) else target_kp,
                        dtype=np.float32)
        if kp.ndim != 3 or kp.shape[1:] != (self.skeleton.num_keypoints, 3):
            raise ValueError(f"target_kp must be [B, {self.skeleton.num_keypoints}, 3] keypoints of "
                             f"skeleton {self.skeleton.name}, got {list(kp.shape)}")
        return torch.stack([to_unit_range(skeleton_image(k, self.skeleton, self.height, self.width)) for k in kp])

    @torch.no_grad()
    def render(self, source: Tensor, target_kp: Tensor | None = None, other: Tensor | None = None) -> Tensor:
        """source [B,3,H,W] in [-1,1] (the model's size); target_kp [B,K,3] (or [K,3] for all)."""
        if target_kp is None:
            raise ValueError("PN-GAN renders a source image in a target pose: give target_kp "
                             "(keypoints, or canonical:K from the checkpoint card)")
        if source.dim() != 4 or tuple(source.shape[1:]) != (3, self.height, self.width):
            raise ValueError(f"source must be [B, 3, {self.height}, {self.width}], got {list(source.shape)}")
        target_kp = torch.as_tensor(np.asarray(target_kp.cpu() if isinstance(target_kp, Tensor) else target_kp))
        if target_kp.dim() == 2:
            target_kp = target_kp.unsqueeze(0).expand(source.shape[0], -1, -1)
        if target_kp.shape[0] != source.shape[0]:
            raise ValueError(f"{target_kp.shape[0]} poses for {source.shape[0]} source images")
        dev = next(self.generator.parameters()).device
        pose = self.skeleton_images(target_kp).to(dev)
        return self.generate(source.to(dev), pose).clamp(-1, 1)


__all__ = ["PNGAN", "PNGANOptions"]
