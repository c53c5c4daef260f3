"""The pix2pix PatchGAN discriminator ("NLayerDiscriminator"): PN-GAN's D and FD-GAN's pose D.

4x4 convs: ndf (stride 2, no norm), then n_layers - 1 more stride-2 convs doubling the width up to
8 ndf, one stride-1 conv (width min(2^n_layers, 8) ndf), and a stride-1 conv to one logit per
patch; LeakyReLU 0.2 after every conv but the last. With n_layers = 3 each logit sees a 70x70
receptive field. The output is H/8 - 2 by W/8 - 2 for n_layers = 3, so inputs must be at least
24 px on each side; smaller ones are refused with the size they give.

forward(x, return_features=True) also returns the activation after each LeakyReLU (IP-GAN's
feature-matching loss matches D's intermediate features of real and generated images).

Parameters (counted): PatchDiscriminator(6, 64, 3, "batch") (pix2pix's conditional D) has
2,768,705, the 2.769 M pix2pix's code prints; PatchDiscriminator(3, 64, 3, "instance") (PN-GAN's
D) 2,764,737; PatchDiscriminator(21, 64, 3, "batch") (FD-GAN's Dp: 18 maps + image) 2,784,065.
"""

from __future__ import annotations

from torch import Tensor, nn

from keyreid.generation.nets.resnet_generator import norm_layer


class PatchDiscriminator(nn.Module):
    """[B, in_channels, H, W] -> patch logits [B, 1, H', W'] (raw: use GANLoss)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator needs n_layers >= 1, got {n_layers}")
        norm_layer(norm, 1)  # refuse an unknown norm now
        bias = norm == "instance"
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                                nn.LeakyReLU(0.2, inplace=True))]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=bias),
                                        norm_layer(norm, out), nn.LeakyReLU(0.2, inplace=True)))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, 1, 4, stride=1, padding=1)
        self.in_channels = in_channels
        self.n_layers = n_layers

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the logits for an input of height x width."""
        def conv(s: int, stride: int) -> int:  # 4x4 kernel, padding 1
            return (s + 2 - 4) // stride + 1
        for _ in range(self.n_layers):
            height, width = conv(height, 2), conv(width, 2)
        for _ in range(2):
            height, width = conv(height, 1), conv(width, 1)
        return height, width

    def forward(self, x: Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchDiscriminator expects [B, {self.in_channels}, H, W], got {list(x.shape)}")
        oh, ow = self.output_size(*x.shape[-2:])
        if oh < 1 or ow < 1:
            raise ValueError(f"PatchDiscriminator with {self.n_layers} layers is too deep for a "
                             f"{x.shape[-2]}x{x.shape[-1]} input (its output would be {oh}x{ow})")
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        logits = self.head(x)
        return (logits, features) if return_features else logits
