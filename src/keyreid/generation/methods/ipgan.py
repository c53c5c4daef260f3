"""IP-GAN (Bao et al., "Towards open-set identity preserving face synthesis", CVPR 2018) for people.

x' = G([f_I(x_s), z_a]): the identity of the SOURCE image x_s, everything else (pose, background,
camera) from the ATTRIBUTE image x_a (role "target"), whose attribute encoder A is a VAE encoder.
There is no official code; the losses are the slides' (methods.md section 7):

    l_I  = CE(I(x_s), c)                           only when the identity encoder trains
    l_KL = 1/2 (mu^T mu + sum_j (exp(e_j) - e_j - 1))    per image, mean over the batch
    l_GR = 1/2 ||x_a - x'||^2 (sum over pixels) x 1 when x_s = x_a, x 0.1 otherwise
    l_C  = CE(C(x), c) on real images (x_s and x_a)
    l_D  = BCE(D(x_a), real) + BCE(D(x'), fake)  (times 1/2, generation.losses.discriminator_loss)
    l_GC = 1/2 ||f_C(x_s) - f_C(x')||^2,  l_GD = 1/2 ||f_D(x_a) - f_D(x')||^2   (feature matching)

G and A minimise kl_weight l_KL + rec_weight l_GR + gd_weight l_GD + gc_weight l_GC (+ l_I); the
weights start from the CVAE-GAN recipe of the same authors (KL 3, GR 1, GD = GC = 1e-3, Adam 2e-4,
betas (0.5, 0.999)). The generator never sees D's real/fake decision directly: its only GAN
signal is matching D's features of the attribute image, as in the paper.

Identity encoder I: a trained keyreid re-ID checkpoint (cfg.reid_checkpoint), loaded through
keyreid.load_model (the one loading path), frozen by default (eval mode, no gradient, BN
statistics untouched; reimplementations report oscillating losses without a frozen pretrained I).
The identity vector is the model's `embedding` (ModelOutput), not the pre-BN `feature`: it is
exactly what the re-ID model compares at retrieval time, and its BN has put every dimension on a
unit scale, which a linear layer of G digests whatever the backbone; for a cosine-distance model
it is L2-normalised (times sqrt(D), back to unit scale per dimension) because its norm carries no
identity there. `identity_vector: feature` switches to the pre-BN feature. The images reach I
as its own card says: [-1, 1] -> [0, 1] -> (x - mean) / std, resized to its input size.

Pairs (roles "source" = identity image, "target" = attribute image): every training image is a
source once per epoch; a share `same_ratio` (default 1/2) of the pairs use the same image as
attribute image, the rest a uniformly random OTHER image (any identity, possibly the same one).
A same-image pair is made pixel-identical in train_step (x_a := x_s) because PairDataset flips
each role on its own.

Rendering (`keyreid generate render CKPT IDENTITY.png --other ATTRIBUTES.png`):
render(source=identity image, other=attribute image), z = mu of A(other) (no sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from keyreid.config import ConfigError, _build
from keyreid.errors import KeyreidError
from keyreid.generation.losses import GANLoss, discriminator_loss, feature_matching, kl_divergence
from keyreid.generation.method import DataInfo, GenerationMethod, Stage, StepContext, register_method
from keyreid.generation.nets.ipgan_nets import (AttributeEncoder, FeatureClassifier, FeatureDiscriminator,
                                                IPGenerator)


@dataclass
class IPGANOptions:
    """cfg.method_options for method "ipgan" (defaults: the CVAE-GAN recipe, methods.md section 7)."""

    z_dim: int = 128                 # attribute code
    channels: int = 32               # base width of A, G, C and D (doubling per step, capped at 256)
    identity_vector: str = "embedding"   # "embedding" (post-BN, what retrieval compares) | "feature" (pre-BN)
    train_identity: bool = False     # fine-tune I with l_I (a new linear classifier over the training ids)
    same_ratio: float = 0.5          # share of pairs whose attribute image is the identity image itself
    same_weight: float = 1.0         # l_GR weight of a same-image pair
    other_weight: float = 0.1        # l_GR weight of a pair of two images
    kl_weight: float = 3.0
    rec_weight: float = 1.0
    gd_weight: float = 1e-3
    gc_weight: float = 1e-3
    id_weight: float = 1.0           # l_I (train_identity only)
    lr: float = 2e-4                 # Adam for every network
    betas: list = field(default_factory=lambda: [0.5, 0.999])

    def check(self) -> None:
        if self.identity_vector not in ("embedding", "feature"):
            raise ConfigError(f"method_options.identity_vector: expected embedding or feature, "
                              f"got {self.identity_vector!r}")
        if not 0.0 <= self.same_ratio <= 1.0:
            raise ConfigError(f"method_options.same_ratio: expected a share in [0, 1], got {self.same_ratio}")
        if self.z_dim < 1 or self.channels < 1:
            raise ConfigError("method_options.z_dim and channels must be positive")
        if len(self.betas) != 2:
            raise ConfigError(f"method_options.betas: expected two numbers, got {self.betas!r}")


class IdentityEncoder(nn.Module):
    """A keyreid re-ID model as IP-GAN's I: generation images in, identity vectors out."""

    def __init__(self, checkpoint: str, vector: str):
        super().__init__()
        from keyreid.inference.loaded import load_model

        loaded = load_model(checkpoint, device="cpu")
        self.model = loaded.model
        self.vector = vector
        self.normalize = loaded.normalized and vector == "embedding"
        self.input_size = loaded.input_size
        self.fingerprint = loaded.fingerprint
        inp = loaded.card["input"]
        self.register_buffer("mean", torch.tensor(inp["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(inp["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.zeros(2, 3, *self.input_size))
        self.model.train(was_training)
        self.dim = int(getattr(out, vector).shape[1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x [B,3,H,W] in [-1,1] -> (identity vector [B, D], the re-ID model's logits or None)."""
        x = (x + 1) / 2
        if tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        out = self.model((x - self.mean) / self.std)
        v = getattr(out, self.vector)
        if self.normalize:
            v = F.normalize(v.float(), dim=1) * math.sqrt(v.shape[1])
        return v, out.logits


def ipgan_pairs(n: int, epoch: int, seed: int, same_ratio: float, max_pairs: Optional[int] = None
                ) -> list[dict]:
    """Every sample a source once (a seeded subsample of max_pairs), round(same_ratio * m) of them
    with itself as attribute image, the others with a uniformly random other sample."""
    if n < 2:
        raise KeyreidError("IP-GAN needs at least two training images")
    rng = np.random.default_rng([seed, epoch, 13])
    sources = rng.permutation(n)
    if max_pairs is not None:
        sources = sources[:max_pairs]
    m = len(sources)
    same = np.zeros(m, dtype=bool)
    same[rng.permutation(m)[: int(round(same_ratio * m))]] = True
    offsets = rng.integers(1, n, size=m)          # 1..n-1: never the source itself
    targets = np.where(same, sources, (sources + offsets) % n)
    return [{"source": int(s), "target": int(t)} for s, t in zip(sources, targets)]


@register_method("ipgan")
class IPGAN(GenerationMethod):
    options_class = IPGANOptions
    # images only: no pose maps, no skeleton images, and data without keypoints is fine
    uses_pose_maps = False
    uses_skeleton_images = False
    needs_keypoints = False

    def __init__(self, cfg, info: DataInfo):
        super().__init__(cfg, info)
        self.opts = _build(IPGANOptions, dict(cfg.method_options or {}), "method_options")
        self.opts.check()
        if not cfg.reid_checkpoint:
            raise ConfigError("reid_checkpoint: IP-GAN needs a trained keyreid re-ID checkpoint as its "
                              "identity encoder (set reid_checkpoint=PATH/best.pt)")
        if not Path(cfg.reid_checkpoint).is_file():
            # also when a trained IP-GAN is loaded: the encoder's architecture comes from this file
            # (its weights from the GAN checkpoint)
            raise ConfigError(f"reid_checkpoint: {cfg.reid_checkpoint} not found; IP-GAN builds its identity "
                              "encoder from this keyreid re-ID checkpoint (configs/generation/ipgan_demo.yaml "
                              "uses the kae model `make demo` trains)")
        o, h, w = self.opts, info.height, info.width
        self.identity = IdentityEncoder(cfg.reid_checkpoint, o.identity_vector)
        self.attr = AttributeEncoder(h, w, o.z_dim, o.channels)
        self.gen = IPGenerator(h, w, self.identity.dim, o.z_dim, o.channels)
        self.cls = FeatureClassifier(h, w, info.num_classes, o.channels)
        self.disc = FeatureDiscriminator(h, w, o.channels)
        # l_I needs logits over OUR training identities; the checkpoint's classifier knows its own
        self.id_classifier = nn.Linear(self.identity.dim, info.num_classes) if o.train_identity else None
        self.identity.requires_grad_(o.train_identity)
        self.gan = GANLoss("bce")
        self.register_buffer("labels", torch.as_tensor(info.train_pids, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ plumbing
    def train(self, mode: bool = True):
        super().train(mode)
        if not self.opts.train_identity:
            self.identity.eval()   # frozen I: no BN statistics update either
        return self

    def ddp_modules(self) -> list[str]:
        names = ["attr", "gen", "cls", "disc"]
        return names + (["identity", "id_classifier"] if self.opts.train_identity else [])

    def optimizers(self, stage: Stage) -> dict[str, torch.optim.Optimizer]:
        o = self.opts
        g_params = [*self.gen.parameters(), *self.attr.parameters()]
        if o.train_identity:
            g_params += [*self.identity.parameters(), *self.id_classifier.parameters()]

        def adam(params):
            return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas))

        return {"generator": adam(g_params), "classifier": adam(self.cls.parameters()),
                "discriminator": adam(self.disc.parameters())}

    def pairs(self, pids: Sequence[int], epoch: int, seed: int, max_pairs: Optional[int]) -> list[dict]:
        return ipgan_pairs(len(pids), epoch, seed, self.opts.same_ratio, max_pairs)

    def card(self) -> dict:
        return {"render_inputs": ["source (identity image)", "other (attribute image: pose, background)"],
                "identity_encoder": {"checkpoint": str(self.cfg.reid_checkpoint),
                                     "fingerprint": self.identity.fingerprint,
                                     "vector": self.opts.identity_vector}}

    # ------------------------------------------------------------------ the model
    def identity_vector(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.opts.train_identity:
            return self.identity(x)
        with torch.no_grad():
            v, _ = self.identity(x)
        return v.detach(), None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, mu, logvar) of attribute images; z = mu + eps * sigma in training, mu in eval."""
        mu, logvar = self.attr(x)
        if not self.training:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), mu, logvar

    @staticmethod
    def pair_images(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_s, x_a, same [B] bool): same-image pairs made pixel-identical (x_a := x_s)."""
        x_s = batch["source"].to(device, non_blocking=True)
        x_a = batch["target"].to(device, non_blocking=True)
        same = torch.as_tensor(batch["source_index"]) == torch.as_tensor(batch["target_index"])
        same = same.to(device)
        return x_s, torch.where(same.view(-1, 1, 1, 1), x_s, x_a), same

    def reconstruction_loss(self, fake: torch.Tensor, x_a: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """l_GR: 1/2 ||x_a - x'||^2 summed over pixels, weighted per pair, mean over the batch."""
        per = 0.5 * (fake.float() - x_a.float()).pow(2).flatten(1).sum(1)
        w = torch.where(same, torch.full_like(per, self.opts.same_weight),
                        torch.full_like(per, self.opts.other_weight))
        return (w * per).mean()

    def generator_losses(self, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        """Every loss of G and A (the terms, unweighted, plus "total") and what the D / C steps
        reuse ("fake", "x_s", "x_a", labels). Exposed for tests: the numbers of one forward."""
        o = self.opts
        x_s, x_a, same = self.pair_images(batch, device)
        ident, logits_i = self.identity_vector(x_s)
        z, mu, logvar = self.encode(x_a)
        fake = self.gen(ident.to(z.dtype), z)
        lab_s = self.labels[torch.as_tensor(batch["source_index"]).to(device)]
        lab_a = self.labels[torch.as_tensor(batch["target_index"]).to(device)]
        b = x_s.shape[0]
        f_d, _ = self.disc(torch.cat([x_a, fake]))     # one pass (no BN in D: same as two)
        f_c, _ = self.cls(torch.cat([x_s, fake]))
        out = {
            "kl": kl_divergence(mu.float(), logvar.float()),
            "reconstruction": self.reconstruction_loss(fake, x_a, same),
            "gd": feature_matching(f_d[b:].float(), f_d[:b].detach().float()),
            "gc": feature_matching(f_c[b:].float(), f_c[:b].detach().float()),
        }
        total = (o.kl_weight * out["kl"] + o.rec_weight * out["reconstruction"]
                 + o.gd_weight * out["gd"] + o.gc_weight * out["gc"])
        if o.train_identity:
            out["identity"] = F.cross_entropy(self.id_classifier(ident.float()), lab_s)
            total = total + o.id_weight * out["identity"]
        out["total"] = total
        out.update(fake=fake, x_s=x_s, x_a=x_a, lab_s=lab_s, lab_a=lab_a)
        return out

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        # G and A first (their losses see D and C as they are now), then D and C on the same
        # generated images (detached): one forward of G per batch.
        with ctx.autocast():
            g = self.generator_losses(batch, ctx.device)
        ctx.backward(g["total"])
        ctx.step("generator")
        # The G step's backward also filled D's and C's gradients: drop them before their own.
        self.disc.zero_grad(set_to_none=True)
        self.cls.zero_grad(set_to_none=True)
        b = g["x_s"].shape[0]
        with ctx.autocast():
            _, d_logit = self.disc(torch.cat([g["x_a"], g["fake"].detach()]))
            d_loss = discriminator_loss(self.gan, d_logit[:b].float(), d_logit[b:].float())
        ctx.backward(d_loss)
        ctx.step("discriminator")
        with ctx.autocast():
            _, c_logits = self.cls(torch.cat([g["x_s"], g["x_a"]]))
            c_loss = F.cross_entropy(c_logits.float(), torch.cat([g["lab_s"], g["lab_a"]]))
        ctx.backward(c_loss)
        ctx.step("classifier")
        losses = {k: float(g[k].detach()) for k in ("total", "kl", "reconstruction", "gd", "gc", "identity")
                  if k in g}
        losses.update(d=float(d_loss.detach()), c=float(c_loss.detach()))
        return losses

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def swap(self, identity_images: torch.Tensor, attribute_images: torch.Tensor) -> torch.Tensor:
        """G(f_I(identity image), mu of A(attribute image)) in eval mode semantics (z = mu)."""
        ident, _ = self.identity(identity_images)
        mu, _ = self.attr(attribute_images)
        return self.gen(ident.to(mu.dtype), mu)

    @torch.no_grad()
    def sample(self, batch: dict) -> dict[str, torch.Tensor]:
        device = next(self.gen.parameters()).device
        x_s, x_a, _ = self.pair_images(batch, device)
        was_training = self.training
        self.eval()   # running BN statistics, and none of them updated by a sample grid
        try:
            return {"identity": x_s, "attributes": x_a, "generated": self.swap(x_s, x_a),
                    "self-reconstruction": self.swap(x_a, x_a)}
        finally:
            self.train(was_training)

    @torch.no_grad()
    def render(self, source: torch.Tensor, target_kp: Optional[torch.Tensor] = None,
               other: Optional[torch.Tensor] = None) -> torch.Tensor:
        """source: identity images; other: attribute images (pose, background). target_kp unused:
        IP-GAN has no keypoint input."""
        if other is None:
            raise KeyreidError("IP-GAN renders the identity of IMAGE with the pose and background of "
                               "another image: pass it with --other IMAGE2")
        if other.shape[0] != source.shape[0]:
            raise KeyreidError(f"IP-GAN render: {source.shape[0]} identity image(s) but "
                               f"{other.shape[0]} attribute image(s)")
        return self.swap(source, other)


__all__ = ["IPGAN", "IPGANOptions", "IdentityEncoder", "ipgan_pairs"]
