"""Person image generation for re-ID: pose-guided generators (PN-GAN, FD-GAN) and identity /
attribute disentangling (IP-GAN), trained and measured on keyreid's data.

Rooms (import the module you need; this package file imports nothing heavy):

- pose:     the pose inputs generators see: COCO-17 -> OpenPose-18, left/right-aware flips,
            Gaussian pose maps, coloured skeleton images, uint8 <-> [-1, 1] images.
- pairs:    PairDataset (items of roles -> sample index) and the pair samplers of each method.
- losses:   GAN losses (BCE with label smoothing, LSGAN), KL, feature matching, masked means.
- nets:     the shared networks (CycleGAN-style ResNet generator, PatchGAN discriminator).
- config, method, trainer: the typed config, the method registry and the training loop.
- methods:  the registered methods (pngan, fdgan, ipgan).
- metrics:  paired L1 / SSIM, keypoint and identity checks against the synthetic ground truth.
"""
