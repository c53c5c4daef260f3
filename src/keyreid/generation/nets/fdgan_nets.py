"""FD-GAN's networks (Ge et al., NeurIPS 2018), as methods.md section 7 reads the authors' code.

- An image encoder E: a keyreid backbone (or a whole keyreid re-ID model) to one identity feature.
  Generation images are in [-1, 1]; the encoder maps them to the normalisation its weights expect
  ((x + 1) / 2, then (x - mean) / std) itself, so the generator's targets can stay in [-1, 1]
  (a Tanh cannot reach ImageNet-normalised values, one of the pitfalls users reported).
- A verification head: (f1 - f2)^2 -> BatchNorm1d -> Linear(D, classes). With 2 classes it is
  E's "same / different" classifier (class 1 = same); with 1 class it is the identity
  discriminator's real / fake logit, initialised from E's "same" row.
- A pose-guided generator: a conv stack encodes the target pose maps to a 128-d pose code, the
  code is concatenated with the identity feature and 256-d noise, and transposed convolutions
  decode the whole image from that 1x1 bottleneck (no skip connections: the published runs used
  none, so everything the image holds must pass through the identity feature and the pose code).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from keyreid.models.output import ModelOutput

# five stride-2 steps from the image to the bottom of the pose encoder (256x128 -> 8x4)
DOWNSAMPLING = 32


class ImageEncoder(nn.Module):
    """A keyreid backbone and global average pooling: FD-GAN's E (the 2048-d pooled ResNet-50
    feature in the paper). Returns a ModelOutput whose feature and embedding are that vector."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.dim = int(backbone.out_channels)
        self.register_buffer("mean", torch.tensor(backbone.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.input_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f = self.backbone(((x + 1) / 2 - self.mean) / self.std).mean(dim=(2, 3))
        return ModelOutput(embedding=f, feature=f)


class ReidModelEncoder(nn.Module):
    """A keyreid ReIDModel (backbone + head, e.g. bnneck or kae) as E. Its pre-BN `feature` is the
    identity feature (what the head's metric losses use, and unnormalised like the pooled ResNet
    feature FD-GAN feeds its generator); the whole ModelOutput is returned, so the head's own
    losses (identity logits, kae's heatmaps) can be kept."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.dim = int(model.head.dim)
        bb = model.backbone
        self.register_buffer("mean", torch.tensor(bb.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(bb.input_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.model(((x + 1) / 2 - self.mean) / self.std)


class VerificationHead(nn.Module):
    """(f1 - f2)^2 -> BN -> Linear: FD-GAN's Siamese classifier (the authors' EltwiseSubEmbed)."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, classes)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bn((f1 - f2).pow(2)))


class Siamese(nn.Module):
    """An encoder shared by both images and a verification head on their features.

    forward(x1, x2) -> (output of x1, output of x2, logits [B2, classes]). x2 may hold k times as
    many images as x1 (then image i of x2 is paired with image i mod B1 of x1): the identity
    discriminator scores (source, real target) and (source, generated) with ONE pass over the
    sources. Without `first_no_grad` both go through the encoder in one batch (a BN layer in
    training mode then normalises over both, as in any keyreid batch of 2B images; the authors
    ran the halves separately); with it, x1 is encoded without a gradient in a pass of its own
    (for a discriminator with frozen BN whose gradient on the real side is not wanted)."""

    def __init__(self, encoder: nn.Module, head: VerificationHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, first_no_grad: bool = False
                ) -> tuple[ModelOutput, ModelOutput, torch.Tensor]:
        b1, b2 = x1.shape[0], x2.shape[0]
        if b2 % b1:
            raise ValueError(f"Siamese: {b2} second images do not tile {b1} first images")
        if first_no_grad:
            with torch.no_grad():
                o1 = self.encoder(x1)
            o2 = self.encoder(x2)
        else:
            o1, o2 = split_output(self.encoder(torch.cat([x1, x2])), b1)
        f1 = o1.feature.repeat(b2 // b1, 1) if b2 != b1 else o1.feature
        return o1, o2, self.head(f1, o2.feature)


def split_output(out: ModelOutput, b: int) -> tuple[ModelOutput, ModelOutput]:
    """The ModelOutput of a batch [x1; x2] as the outputs of x1 (first b rows) and x2."""
    def part(sl):
        def cut(t):
            return t[sl] if isinstance(t, torch.Tensor) else t
        return ModelOutput(embedding=cut(out.embedding), feature=cut(out.feature), logits=cut(out.logits),
                           heatmaps=cut(out.heatmaps), part_features=cut(out.part_features),
                           part_weights=cut(out.part_weights))
    return part(slice(0, b)), part(slice(b, None))


def gan_init(module: nn.Module) -> None:
    """pix2pix / FD-GAN initialisation: conv and linear weights N(0, 0.02), BN weights N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout))


def _up(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.Dropout(dropout))


class PoseGenerator(nn.Module):
    """G(pose maps [B, K, H, W], identity feature [B, D], noise [B, N]) -> image [B, 3, H, W] in [-1, 1].

    Pose encoder: conv 4x4 s2 to ngf, four [LeakyReLU 0.2, conv 4x4 s2, BN] to 2, 4, 8, 8 x ngf,
    then a conv over the whole (H/32, W/32) map to the pose code (+ BN). Decoder: a transposed conv
    from the 1x1 concatenation [feature, pose code, noise] back to (H/32, W/32) x 8 ngf, four
    [ReLU, transposed conv 4x4 s2, BN, dropout] to 8, 4, 2, 1 x ngf, and [ReLU, transposed conv
    4x4 s2 to 3, Tanh]. H and W must be multiples of 32 (256x128 as published, 128x64 at demo
    scale, 64x32 in tests)."""

    def __init__(self, pose_channels: int, feature_dim: int, height: int, width: int,
                 pose_dim: int = 128, noise_dim: int = 256, ngf: int = 64, dropout: float = 0.2):
        super().__init__()
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise ValueError(f"the FD-GAN generator needs an image size divisible by {DOWNSAMPLING}, "
                             f"got {height}x{width}")
        bottom = (height // DOWNSAMPLING, width // DOWNSAMPLING)
        self.feature_dim, self.noise_dim, self.pose_dim = feature_dim, noise_dim, pose_dim
        self.pose_encoder = nn.Sequential(
            nn.Conv2d(pose_channels, ngf, 4, stride=2, padding=1, bias=False),
            _down(ngf, ngf * 2), _down(ngf * 2, ngf * 4), _down(ngf * 4, ngf * 8), _down(ngf * 8, ngf * 8),
            nn.LeakyReLU(0.2), nn.Conv2d(ngf * 8, pose_dim, bottom, bias=False), nn.BatchNorm2d(pose_dim),
        )
        self.decoder = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(feature_dim + pose_dim + noise_dim, ngf * 8, bottom, bias=False),
            nn.BatchNorm2d(ngf * 8), nn.Dropout(dropout),
            _up(ngf * 8, ngf * 8, dropout), _up(ngf * 8, ngf * 4, dropout), _up(ngf * 4, ngf * 2, dropout),
            _up(ngf * 2, ngf, dropout),
            nn.ReLU(), nn.ConvTranspose2d(ngf, 3, 4, stride=2, padding=1), nn.Tanh(),
        )
        gan_init(self)

    def pose_code(self, pose_maps: torch.Tensor) -> torch.Tensor:
        return self.pose_encoder(pose_maps).flatten(1)

    def forward(self, pose_maps: torch.Tensor, feature: torch.Tensor,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        if noise is None:
            noise = feature.new_zeros(feature.shape[0], self.noise_dim)
        z = torch.cat([feature, self.pose_code(pose_maps), noise], dim=1)
        return self.decoder(z[:, :, None, None])


__all__ = ["ImageEncoder", "PoseGenerator", "ReidModelEncoder", "Siamese", "VerificationHead",
           "gan_init", "split_output"]
