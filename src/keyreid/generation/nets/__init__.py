"""Networks shared by the generation methods."""

from keyreid.generation.nets.patchgan import PatchDiscriminator
from keyreid.generation.nets.resnet_generator import ResnetGenerator

__all__ = ["PatchDiscriminator", "ResnetGenerator"]
