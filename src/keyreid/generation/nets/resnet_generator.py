"""The CycleGAN-style ResNet generator (Johnson et al. / Zhu et al.), PN-GAN's G.

reflection pad + 7x7 conv to ngf, two stride-2 3x3 convs to 2ngf and 4ngf, n_blocks residual
blocks at 1/4 resolution, two stride-2 transposed 3x3 convs back, reflection pad + 7x7 conv to
out_channels, Tanh. Non-affine instance norm by default (CycleGAN's choice, which then keeps the
conv biases). Any H, W divisible by 4 works (128x64, 256x128, 64x32); others are refused, since
the transposed convs could not restore the size.

Parameters (counted): ResnetGenerator(6, 3, 64, 9) (PN-GAN: image + skeleton image in) has
11,387,587; ResnetGenerator(3, 3, 64, 9) has 11,378,179, the 11.378 M CycleGAN's code prints.
"""

from __future__ import annotations

from torch import Tensor, nn

NORMS = ("instance", "batch")


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; known: {', '.join(NORMS)}")


class ResidualBlock(nn.Module):
    """x + [pad, 3x3 conv, norm, ReLU, pad, 3x3 conv, norm](x)."""

    def __init__(self, channels: int, norm: str, bias: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """[B, in_channels, H, W] -> [B, out_channels, H, W] in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        norm_layer(norm, 1)  # refuse an unknown norm now, not on first use
        bias = norm == "instance"  # batch norm's shift makes a conv bias redundant
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
            norm_layer(norm, ngf), nn.ReLU(inplace=True),
        ]
        for mult in (1, 2):  # downsample: ngf -> 2ngf -> 4ngf
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=bias),
                       norm_layer(norm, ngf * mult * 2), nn.ReLU(inplace=True)]
        layers += [ResidualBlock(ngf * 4, norm, bias) for _ in range(n_blocks)]
        for mult in (4, 2):  # upsample: 4ngf -> 2ngf -> ngf
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=bias),
                       norm_layer(norm, ngf * mult // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResnetGenerator expects [B, {self.in_channels}, H, W], got {list(x.shape)}")
        h, w = x.shape[-2:]
        if h % 4 or w % 4:
            raise ValueError(f"ResnetGenerator needs height and width divisible by 4, got {h}x{w}")
        return self.model(x)
