"""IP-GAN's four trainable networks (Bao et al., CVPR 2018); the identity encoder is a keyreid
re-ID model (keyreid.generation.methods.ipgan).

The paper gives no sizes, so these are DCGAN-style stacks sized to the input: every network
works on an 8 x (8 * W / H) grid at its narrowest, reached by log2(H / 8) stride-2 steps (2 at
32x16, 4 at 128x64, 5 at 256x128). H must be 8 * 2^n and W divisible by the same 2^n.

- AttributeEncoder (the VAE encoder A): conv stack -> flatten -> (mu, logvar) of z.
- IPGenerator (G): linear from [identity vector, z] to the 8-row map, then nearest upsampling +
  3x3 conv + BN + ReLU per step (no transposed convs: they draw checkerboards), 3x3 conv, tanh.
- FeatureClassifier (C): conv stack, global average pool -> f_C, linear -> identity logits.
  f_C is pooled: C only has to say WHO, and the generator matches it to the identity image's.
- FeatureDiscriminator (D): conv stack -> f_D (the whole 8-row map, flattened: spatial, so
  matching it to the attribute image's carries pose and background), linear -> one logit.

C and D have no normalisation layers: the generator matches their features of real and
generated images computed in separate passes, and per-batch BatchNorm statistics would
normalise away exactly the differences the matching should see.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def grid_steps(height: int, width: int) -> int:
    """Number of stride-2 steps between the image and the 8-row map (ValueError if none fits)."""
    n = int(round(math.log2(height / 8))) if height >= 8 else -1
    if n < 1 or 8 * 2 ** n != height or width % 2 ** n:
        raise ValueError(f"IP-GAN needs a height of 8 * 2^n (n >= 1) and a width divisible by 2^n; "
                         f"got {height}x{width}")
    return n


def _channels(base: int, step: int, cap: int) -> int:
    return min(base * 2 ** step, cap)


def _down_stack(in_channels: int, base: int, steps: int, cap: int, norm: bool) -> tuple[nn.Sequential, int]:
    """4x4 stride-2 convs with LeakyReLU(0.2) (BN after all but the first when `norm`)."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for i in range(steps):
        c_out = _channels(base, i, cap)
        layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not (norm and i > 0)))
        if norm and i > 0:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = c_out
    return nn.Sequential(*layers), c_in


def _init(module: nn.Module) -> None:
    # DCGAN's N(0, 0.02) for convs and linears; BN weights N(1, 0.02)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class AttributeEncoder(nn.Module):
    """x [B,3,H,W] in [-1,1] -> (mu, logvar), each [B, z_dim]."""

    def __init__(self, height: int, width: int, z_dim: int = 128, channels: int = 32, cap: int = 256):
        super().__init__()
        steps = grid_steps(height, width)
        self.features, c = _down_stack(3, channels, steps, cap, norm=True)
        flat = c * (height >> steps) * (width >> steps)
        self.mu = nn.Linear(flat, z_dim)
        self.logvar = nn.Linear(flat, z_dim)
        _init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        return self.mu(h), self.logvar(h)


class IPGenerator(nn.Module):
    """(identity [B, id_dim], z [B, z_dim]) -> image [B,3,H,W] in [-1,1]."""

    def __init__(self, height: int, width: int, id_dim: int, z_dim: int = 128, channels: int = 32,
                 cap: int = 256):
        super().__init__()
        steps = grid_steps(height, width)
        self.shape0 = (_channels(channels, steps, cap), height >> steps, width >> steps)
        self.project = nn.Sequential(nn.Linear(id_dim + z_dim, math.prod(self.shape0)))
        self.bn0 = nn.Sequential(nn.BatchNorm2d(self.shape0[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c_in = self.shape0[0]
        for i in reversed(range(steps)):
            c_out = _channels(channels, i, cap)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers += [nn.Conv2d(c_in, 3, 3, padding=1), nn.Tanh()]
        self.decode = nn.Sequential(*layers)
        _init(self)

    def forward(self, identity: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([identity, z], dim=1)).view(-1, *self.shape0)
        return self.decode(self.bn0(h))


class FeatureClassifier(nn.Module):
    """x -> (f_C [B, C], logits [B, num_classes])."""

    def __init__(self, height: int, width: int, num_classes: int, channels: int = 32, cap: int = 256):
        super().__init__()
        self.features, c = _down_stack(3, channels, grid_steps(height, width), cap, norm=False)
        self.classifier = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x).mean(dim=(2, 3))
        return f, self.classifier(f)


class FeatureDiscriminator(nn.Module):
    """x -> (f_D [B, C * h * w], real/fake logit [B])."""

    def __init__(self, height: int, width: int, channels: int = 32, cap: int = 256):
        super().__init__()
        steps = grid_steps(height, width)
        self.features, c = _down_stack(3, channels, steps, cap, norm=False)
        self.logit = nn.Linear(c * (height >> steps) * (width >> steps), 1)
        _init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x).flatten(1)
        return f, self.logit(f).squeeze(1)


__all__ = ["AttributeEncoder", "FeatureClassifier", "FeatureDiscriminator", "IPGenerator", "grid_steps"]
