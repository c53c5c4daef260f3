"""FD-GAN (Ge et al., "Pose-guided Feature Distilling GAN", NeurIPS 2018) on keyreid's data.

The point of the method: an image encoder E whose feature must be enough for a generator G to
draw the same person in ANY target pose; the pose comes from G's own pose input, so E's feature
is pushed to hold identity and drop pose. At test time only E is used (no pose, no generator).

Networks (generation/nets/fdgan_nets.py):
  E      Siamese encoder: a keyreid backbone pooled to one feature + the verification head
         (f1 - f2)^2 -> BN -> Linear(D, 2) (class 1 = same identity). `encoder: bnneck | kae`
         puts a whole keyreid re-ID model there instead and uses its pre-BN feature (the
         combination no paper tried: does the GAN supervisor add anything to keypoint alignment?).
  G      pose maps (18 OpenPose channels) -> 128-d code; [feature, code, 256-d noise] -> image.
  Di     identity discriminator: a copy of the stage-I Siamese net (BN frozen, the classifier's
         "same" row kept as its one logit) on (source, real target) vs (source, generated).
  Dp     pose discriminator: PatchGAN (3 layers, 64 filters, BN) on concat(target maps, image).

Losses (G): BCE-GAN(Di) + BCE-GAN(Dp) + 100 L1(G, target) + 10 L1 between the two generated
images of each positive pair (same target pose) + lambda_v CE(verification). D losses are
0.5 (real + fake) with smoothed targets (real U(0.7, 1), fake U(0, 0.3)); G's GAN targets are
not smoothed. The same-pose term is a safe mean: 0 (with a gradient) for a batch without a
positive pair, where the authors' masked mean is NaN.

Pairs (generation.pairs.fdgan_pairs): per anchor 1 positive and 3 negative pairs (roles a, b,
target_a, target_b); a positive pair's two members share one target (same image AND, since
PairDataset flips each role on its own, the same flip: train_step enforces it as the authors'
set_input does), and share one noise vector.

Stages (method.Stage; the trainer makes each stage's optimisers when it begins):
  I    E with the verification loss only (+ the head's own ID / heatmap losses for bnneck / kae):
       SGD 0.01, momentum 0.9, weight decay 5e-4, 100 epochs, /10 every 40.
  II   E frozen (eval mode, no gradient), lambda_v 0: G Adam 1e-4 (0.5, 0.999), Di SGD 1e-5,
       Dp SGD 1e-3 (momentum 0.9, weight decay 1e-4); 50 epochs constant + 50 decaying to 0.
  III  everything trains, lambda_v 10: E and G Adam 1e-5, Di and Dp SGD 1e-4; 25 + 25 epochs.
       E's BatchNorm layers stay in eval mode (running statistics frozen), as the authors ran it.
The trainer's per-stage schedule is "constant, then linear decay to 0"; it cannot express stage
I's step schedule, so stage I is split into sub-stages of `stage1_step` epochs ("I", "I (lr x0.1)",
"I (lr x0.01)", ...), each making its optimiser at lr x gamma^k: the same learning rates, with
one difference: SGD's momentum buffer restarts at each step (it would be 10x too large for the
new rate for a few iterations anyway).
The authors' stage III validates on an undefined loader and crashes; here E's re-ID is measured
on held-out training identities by generation/fdgan_eval.py (data.val_identities), never on the
test split.

Stage I's final encoder is kept inside the method's state (extra state, CPU tensors) when stage II
begins, so one finished checkpoint answers "E after stage I" and "E after stage III"
(fdgan_eval.encoder_features(..., which="stage I")).

Rendering (`keyreid generate render CKPT IMAGE --pose POSE`): G(E(source), maps of the target
keypoints, zero noise): the noise's mean, so a render is deterministic.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from keyreid.config import ConfigError, ModelConfig, _build
from keyreid.errors import KeyreidError
from keyreid.generation.losses import GANLoss, discriminator_loss, safe_mean
from keyreid.generation.method import DataInfo, GenerationMethod, Stage, StepContext, register_method, unwrap
from keyreid.generation.nets.fdgan_nets import (ImageEncoder, PoseGenerator, ReidModelEncoder, Siamese,
                                                VerificationHead, gan_init)
from keyreid.generation.pose import OPENPOSE18, pose_maps

ENCODERS = ("siamese", "bnneck", "kae")
SAME = 1  # verification class of a same-identity pair

# OPENPOSE18 index of each COCO-17 keypoint (the inverse of pose.coco17_to_openpose18 without the neck)
_COCO_FROM_OPENPOSE = np.array([0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10])


def openpose18_to_coco17(kp: torch.Tensor) -> torch.Tensor:
    """[..., 18, 3] OpenPose-order keypoints -> [..., 17, 3] COCO-17 (the neck dropped). Exact
    inverse of coco17_to_openpose18 on the 17 COCO points, so a kae encoder gets back its own
    keypoints from PairDataset's (already flipped and left/right-swapped) generation keypoints."""
    return kp[..., torch.as_tensor(_COCO_FROM_OPENPOSE, device=kp.device), :]


@dataclass
class FDGANOptions:
    """cfg.method_options of method "fdgan". Defaults: the published Market-1501 run (methods.md
    section 7 and the authors' README); cfg.optim.epochs / decay_epochs are not used (the three
    stages have their own)."""

    encoder: str = "siamese"             # siamese | bnneck | kae
    backbone: str = "resnet50"           # any keyreid backbone (mobilenetv2 + pretrained offline at demo scale)
    pretrained: Optional[str] = "imagenet"
    last_stride: int = 2                 # the authors' ResNet-50 keeps ImageNet's stride 32
    head_options: dict = field(default_factory=dict)   # bnneck / kae head options
    pose_dim: int = 128
    noise_dim: int = 256
    ngf: int = 64                        # generator width
    ndf: int = 64                        # pose discriminator width
    dropout: float = 0.2
    negatives_per_positive: int = 3
    gan_pairs_per_epoch: Optional[int] = None   # stages II / III (None: data.max_pairs_per_epoch): a
    #                                     GAN step costs ~8x a stage-I step (Di is a whole encoder)
    # stage I: the Siamese baseline
    stage1_epochs: int = 100
    stage1_step: int = 40                # epochs between /10 steps (0: one constant stage)
    stage1_gamma: float = 0.1
    stage1_lr: float = 0.01
    stage1_momentum: float = 0.9
    stage1_weight_decay: float = 5e-4
    # stage II: E frozen
    stage2_epochs: int = 50
    stage2_decay_epochs: int = 50
    stage2_lr_g: float = 1e-4
    stage2_lr_di: float = 1e-5
    stage2_lr_dp: float = 1e-3
    stage2_lambda_veri: float = 0.0
    # stage III: all together
    stage3_epochs: int = 25
    stage3_decay_epochs: int = 25
    stage3_lr_g: float = 1e-5            # E and G (one Adam)
    stage3_lr_di: float = 1e-4
    stage3_lr_dp: float = 1e-4
    stage3_lambda_veri: float = 10.0
    stage3_freeze_encoder_bn: bool = True
    betas: list = field(default_factory=lambda: [0.5, 0.999])
    d_momentum: float = 0.9
    d_weight_decay: float = 1e-4
    lambda_recon: float = 100.0
    lambda_sp: float = 10.0
    real_label: list = field(default_factory=lambda: [0.7, 1.0])
    fake_label: list = field(default_factory=lambda: [0.0, 0.3])
    # bnneck / kae encoders also keep their own losses in stages I and III
    id_weight: float = 1.0               # CE of the head's identity logits
    label_smoothing: float = 0.1
    heatmap_weight: float = 1.0          # kae's heatmap loss
    heatmap_sigma: float = 1.5           # in heatmap cells (keyreid's loss.heatmap_sigma)

    def check(self) -> None:
        where = "method_options"
        if self.encoder not in ENCODERS:
            raise ConfigError(f"{where}.encoder: expected one of {', '.join(ENCODERS)}, got {self.encoder!r}")
        if self.gan_pairs_per_epoch is not None and self.gan_pairs_per_epoch < 1:
            raise ConfigError(f"{where}.gan_pairs_per_epoch: expected null or >= 1, got {self.gan_pairs_per_epoch}")
        for name in ("ngf", "ndf", "pose_dim", "noise_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("stage1_epochs", "stage1_step", "stage2_epochs", "stage2_decay_epochs",
                     "stage3_epochs", "stage3_decay_epochs", "negatives_per_positive"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 < self.stage1_gamma <= 1.0:
            raise ConfigError(f"{where}.stage1_gamma: expected a factor in (0, 1], got {self.stage1_gamma}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout: expected [0, 1), got {self.dropout}")
        for name in ("betas", "real_label", "fake_label"):
            if len(getattr(self, name)) != 2:
                raise ConfigError(f"{where}.{name}: expected two numbers, got {getattr(self, name)!r}")


def _bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def stage_kind(stage: Stage) -> str:
    """ "I", "II" or "III": the sub-stages of stage I are named "I (lr x0.1)" etc."""
    return stage.name.split()[0]


@register_method("fdgan")
class FDGAN(GenerationMethod):
    options_class = FDGANOptions
    uses_pose_maps = True
    uses_skeleton_images = False     # G reads the 18 maps; the grid draws them itself

    def __init__(self, cfg, info: DataInfo):
        super().__init__(cfg, info)
        self.cfg, self.info = cfg, info
        self.opts = _build(FDGANOptions, dict(cfg.method_options or {}), "method_options")
        self.opts.check()
        o = self.opts
        self.sigma = float(cfg.data.sigma) if cfg.data.sigma is not None else 5.0 * info.height / 256
        encoder = self._build_encoder(o, info)
        dim = encoder.dim
        self.siamese = Siamese(encoder, VerificationHead(dim, 2))
        self.gen = PoseGenerator(info.skeleton.num_keypoints, dim, info.height, info.width,
                                 pose_dim=o.pose_dim, noise_dim=o.noise_dim, ngf=o.ngf, dropout=o.dropout)
        # Di: the same architecture with one logit; its weights come from E when the first GAN
        # stage begins (begin_stage), not now: E is trained in stage I first.
        self.di = Siamese(copy.deepcopy(encoder), VerificationHead(dim, 1))
        from keyreid.generation.nets.patchgan import PatchDiscriminator

        self.dp = PatchDiscriminator(info.skeleton.num_keypoints + 3, ndf=o.ndf, n_layers=3, norm="batch")
        gan_init(self.dp)  # the authors' init_weights(net_Dp)
        self.gan_d = GANLoss("bce", real_label=tuple(o.real_label), fake_label=tuple(o.fake_label))
        self.gan_g = GANLoss("bce")
        self.register_buffer("labels", torch.as_tensor(info.train_pids, dtype=torch.long), persistent=False)
        # 1 once Di has been initialised from E (and E's stage-I weights kept): a resumed run that
        # calls begin_stage again must not redo it
        self.register_buffer("gan_started", torch.zeros((), dtype=torch.long))
        self._stage1_encoder: dict[str, torch.Tensor] = {}
        # what may train at all (BNNeck keeps its BN bias frozen): begin_stage restores these flags
        self._trainable = {n: p.requires_grad for n, p in self.named_parameters()}
        self._kind = "I"
        self._stage_index = 0

    @staticmethod
    def _build_encoder(o: FDGANOptions, info: DataInfo) -> nn.Module:
        if o.encoder == "siamese":
            from keyreid.models.backbones import build_backbone

            return ImageEncoder(build_backbone(o.backbone, pretrained=o.pretrained, last_stride=o.last_stride))
        from keyreid.data.keypoints import COCO17
        from keyreid.models.build import build_model

        if o.encoder == "kae" and info.skeleton.name != OPENPOSE18.name:
            raise ConfigError(f"method_options.encoder=kae: needs COCO-17 people keypoints (generation "
                              f"skeleton openpose18), the data has {info.skeleton.name}")
        mc = ModelConfig(backbone=o.backbone, pretrained=o.pretrained, last_stride=o.last_stride,
                         head=o.encoder, head_options=dict(o.head_options))
        return ReidModelEncoder(build_model(mc, info.num_classes, COCO17 if o.encoder == "kae" else None))

    # ------------------------------------------------------------------ stages
    def stages(self) -> list[Stage]:
        o = self.opts
        out = []
        step = o.stage1_step if 0 < o.stage1_step < o.stage1_epochs else o.stage1_epochs
        done, k = 0, 0
        while done < o.stage1_epochs:
            n = min(step, o.stage1_epochs - done)
            out.append(Stage("I" if k == 0 else f"I (lr x{o.stage1_gamma ** k:g})", n))
            done, k = done + n, k + 1
        if o.stage2_epochs + o.stage2_decay_epochs:
            out.append(Stage("II", o.stage2_epochs, o.stage2_decay_epochs))
        if o.stage3_epochs + o.stage3_decay_epochs:
            out.append(Stage("III", o.stage3_epochs, o.stage3_decay_epochs))
        return out

    def _stage1_step_index(self, stage: Stage) -> int:
        names = [s.name for s in self.stages() if stage_kind(s) == "I"]
        return names.index(stage.name) if stage.name in names else 0

    def begin_stage(self, stage: Stage) -> None:
        kind = stage_kind(stage)
        self._kind = kind
        names = [s.name for s in self.stages()]
        self._stage_index = names.index(stage.name) if stage.name in names else 0
        if kind != "I" and not int(self.gan_started):
            self.init_identity_discriminator()
            self._stage1_encoder = {k: v.detach().cpu().clone()
                                    for k, v in unwrap(self.siamese).state_dict().items()}
            self.gan_started.fill_(1)
        train = {"I": ("siamese",), "II": ("gen", "di", "dp"), "III": ("siamese", "gen", "di", "dp")}[kind]
        for name, p in self.named_parameters():
            p.requires_grad_(self._trainable.get(name, True) and name.split(".")[0] in train)
        self.train(self.training)

    @torch.no_grad()
    def init_identity_discriminator(self) -> None:
        """Di := E: the encoder's and the verification BN's weights, and the classifier's "same"
        row as Di's one logit (the authors' stage-II start)."""
        e, di = unwrap(self.siamese), unwrap(self.di)
        di.encoder.load_state_dict(e.encoder.state_dict())
        di.head.bn.load_state_dict(e.head.bn.state_dict())
        di.head.classifier.weight.copy_(e.head.classifier.weight[SAME:SAME + 1])
        di.head.classifier.bias.copy_(e.head.classifier.bias[SAME:SAME + 1])

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            _bn_eval(self.di)                       # Di's BN always frozen
            if self._kind == "II":
                self.siamese.eval()                 # E frozen: no dropout, no BN update
            elif self._kind == "III" and self.opts.stage3_freeze_encoder_bn:
                _bn_eval(self.siamese)
        return self

    def get_extra_state(self):
        return {"stage1_encoder": self._stage1_encoder, "kind": self._kind, "stage_index": self._stage_index}

    def set_extra_state(self, state) -> None:
        self._stage1_encoder = dict(state.get("stage1_encoder", {}))
        self._kind = state.get("kind", self._kind)
        self._stage_index = int(state.get("stage_index", self._stage_index))

    def ddp_modules(self) -> list[str]:
        return ["siamese", "gen", "di", "dp"]

    def _params(self, *modules: nn.Module) -> list[nn.Parameter]:
        ids = {id(p): n for n, p in self.named_parameters()}
        return [p for m in modules for p in m.parameters() if self._trainable.get(ids.get(id(p)), True)]

    def optimizers(self, stage: Stage) -> dict[str, torch.optim.Optimizer]:
        o, kind = self.opts, stage_kind(stage)
        betas = tuple(o.betas)

        def sgd(params, lr, momentum, wd):
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)

        if kind == "I":
            lr = o.stage1_lr * o.stage1_gamma ** self._stage1_step_index(stage)
            return {"encoder": sgd(self._params(self.siamese), lr, o.stage1_momentum, o.stage1_weight_decay)}
        if kind == "II":
            g = torch.optim.Adam(self._params(self.gen), lr=o.stage2_lr_g, betas=betas)
            lr_di, lr_dp = o.stage2_lr_di, o.stage2_lr_dp
        else:
            g = torch.optim.Adam(self._params(self.siamese, self.gen), lr=o.stage3_lr_g, betas=betas)
            lr_di, lr_dp = o.stage3_lr_di, o.stage3_lr_dp
        return {"generator": g,
                "di": sgd(self._params(self.di), lr_di, o.d_momentum, o.d_weight_decay),
                "dp": sgd(self._params(self.dp), lr_dp, o.d_momentum, o.d_weight_decay)}

    def pairs(self, pids: Sequence[int], epoch: int, seed: int, max_pairs: Optional[int]) -> list[dict]:
        from keyreid.generation.pairs import fdgan_pairs

        if self._kind != "I" and self.opts.gan_pairs_per_epoch is not None:
            max_pairs = self.opts.gan_pairs_per_epoch if max_pairs is None else min(max_pairs,
                                                                                   self.opts.gan_pairs_per_epoch)
        per_anchor = 1 + self.opts.negatives_per_positive
        anchors = None if max_pairs is None else max(1, math.ceil(max_pairs / per_anchor))
        # a different draw every epoch of every stage, the same one after a resume
        mixed = (int(seed) * 1_000_003 + self._stage_index * 10_007 + int(epoch)) % (2 ** 31)
        return fdgan_pairs(pids, mixed, negatives_per_positive=self.opts.negatives_per_positive,
                           max_anchors=anchors)

    def card(self) -> dict:
        return {"render_inputs": ["source (identity image)", "target keypoints (pose)"],
                "encoder": self.opts.encoder, "backbone": self.opts.backbone,
                "feature_dim": int(unwrap(self.siamese).encoder.dim), "sigma": self.sigma,
                "test_time": "encoder only: Euclidean distance on its feature"}

    # ------------------------------------------------------------------ losses
    def _device(self) -> torch.device:
        return next(self.gen.parameters()).device

    def _head_losses(self, outputs, batch: dict, roles: tuple[str, ...], device) -> dict[str, torch.Tensor]:
        """bnneck / kae encoders: the head's own ID (and kae heatmap) losses on both images."""
        o = self.opts
        if o.encoder == "siamese":
            return {}
        losses = {}
        if o.id_weight > 0:
            labels = torch.cat([self.labels[torch.as_tensor(batch[f"{r}_index"]).to(device)] for r in roles])
            logits = torch.cat([out.logits for out in outputs])
            losses["id"] = o.id_weight * F.cross_entropy(logits.float(), labels, label_smoothing=o.label_smoothing)
        if o.encoder == "kae" and o.heatmap_weight > 0:
            model = unwrap(self.siamese).encoder.model
            kp = torch.cat([openpose18_to_coco17(torch.as_tensor(batch[f"{r}_kp"]).to(device).float())
                            for r in roles])
            merged = copy.copy(outputs[0])
            merged.heatmaps = torch.cat([out.heatmaps for out in outputs])
            hm = model.keypoint_losses(merged, kp, (self.info.height, self.info.width), o.heatmap_sigma)
            losses.update({k: o.heatmap_weight * v for k, v in hm.items()})
        return losses

    def verification_losses(self, batch: dict, device) -> dict[str, torch.Tensor]:
        """Stage I: CE of the Siamese classifier on (a, b) with label same/different (+ head losses)."""
        a, b = batch["a"].to(device), batch["b"].to(device)
        same = self.same(batch, device)
        o1, o2, logits = self.siamese(a, b)
        out = {"verification": F.cross_entropy(logits.float(), same.long())}
        out.update(self._head_losses((o1, o2), batch, ("a", "b"), device))
        out["total"] = sum(out.values())
        out["accuracy"] = (logits.argmax(1) == same.long()).float().mean().detach()
        return out

    @staticmethod
    def same(batch: dict, device) -> torch.Tensor:
        from keyreid.generation.pairs import batch_is_same

        return batch_is_same(batch).to(device)

    def gan_inputs(self, batch: dict, device) -> dict[str, torch.Tensor]:
        """origin [a; b], target [target_a; target_b'], maps likewise, noise [z; z]; b' = a's target
        for a positive pair (one target image, one flip, one noise for both members)."""
        same = self.same(batch, device)
        a, b = batch["a"].to(device), batch["b"].to(device)
        ta, tb = batch["target_a"].to(device), batch["target_b"].to(device)
        ma, mb = batch["target_a_maps"].to(device), batch["target_b_maps"].to(device)
        pick = same.view(-1, 1, 1, 1)
        tb, mb = torch.where(pick, ta, tb), torch.where(pick, ma, mb)
        z = torch.randn(a.shape[0], self.opts.noise_dim, device=device)
        return {"a": a, "b": b, "same": same, "origin": torch.cat([a, b]), "target": torch.cat([ta, tb]),
                "maps": torch.cat([ma, mb]), "noise": torch.cat([z, z])}

    def generate(self, inp: dict) -> dict:
        """E on (a, b) (no gradient in stage II), G on the targets' maps: features, logits, fake."""
        if self._kind == "II":
            with torch.no_grad():
                o1, o2, logits = self.siamese(inp["a"], inp["b"])
        else:
            o1, o2, logits = self.siamese(inp["a"], inp["b"])
        feature = torch.cat([o1.feature, o2.feature])
        fake = self.gen(inp["maps"], feature.to(inp["maps"].dtype), inp["noise"])
        return {"o1": o1, "o2": o2, "logits": logits, "fake": fake}

    def discriminator_losses(self, inp: dict, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = fake.detach()
        n = inp["origin"].shape[0]
        # Di's BN is frozen, so one pass over [source; real target; generated] with the source's
        # feature paired with both equals the authors' two passes, at 3/4 of the cost
        _, _, di = self.di(inp["origin"], torch.cat([inp["target"], fake]))
        real_p = self.dp(torch.cat([inp["maps"], inp["target"]], dim=1))
        fake_p = self.dp(torch.cat([inp["maps"], fake], dim=1))
        return {"d_i": discriminator_loss(self.gan_d, di[:n], di[n:]),
                "d_p": discriminator_loss(self.gan_d, real_p, fake_p)}

    def generator_losses(self, batch: dict, inp: dict, gen: dict, lambda_v: float) -> dict[str, torch.Tensor]:
        o = self.opts
        fake = gen["fake"]
        n = inp["a"].shape[0]
        # the source side of Di's pair carries no gradient G needs (and Di's own is dropped)
        _, _, di = self.di(inp["origin"], fake, first_no_grad=True)
        dp = self.dp(torch.cat([inp["maps"], fake], dim=1))
        diff = (fake[:n].float() - fake[n:].float()).abs()
        out = {"g_gan_i": self.gan_g(di, True), "g_gan_p": self.gan_g(dp, True),
               "recon": F.l1_loss(fake.float(), inp["target"].float()),
               "same_pose": safe_mean(diff, inp["same"])}
        total = out["g_gan_i"] + out["g_gan_p"] + o.lambda_recon * out["recon"] + o.lambda_sp * out["same_pose"]
        if lambda_v > 0:
            out["verification"] = F.cross_entropy(gen["logits"].float(), inp["same"].long())
            total = total + lambda_v * out["verification"]
        if self._kind == "III":
            head = self._head_losses((gen["o1"], gen["o2"]), batch, ("a", "b"), inp["a"].device)
            out.update(head)
            total = total + sum(head.values(), torch.zeros((), device=total.device))
        out["total"] = total
        return out

    def train_step(self, batch: dict, ctx: StepContext) -> dict[str, float]:
        device = ctx.device
        if stage_kind(ctx.stage) == "I":
            with ctx.autocast():
                losses = self.verification_losses(batch, device)
            ctx.backward(losses["total"])
            ctx.step("encoder")
            return {k: float(v.detach()) for k, v in losses.items()}
        lambda_v = self.opts.stage2_lambda_veri if self._kind == "II" else self.opts.stage3_lambda_veri
        inp = self.gan_inputs(batch, device)
        with ctx.autocast():
            gen = self.generate(inp)
        # the discriminators first, on this batch's generated images (the authors' order); the
        # previous G step's backward left gradients in Di and Dp: drop them
        self.di.zero_grad(set_to_none=True)
        self.dp.zero_grad(set_to_none=True)
        with ctx.autocast():
            d = self.discriminator_losses(inp, gen["fake"])
        ctx.backward(d["d_i"] + d["d_p"])
        ctx.step("di")
        ctx.step("dp")
        with ctx.autocast():
            g = self.generator_losses(batch, inp, gen, lambda_v)
        ctx.backward(g["total"])
        ctx.step("generator")
        out = {k: float(v.detach()) for k, v in {**g, **d}.items()}
        return out

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """E's identity feature [B, D] of images in [-1, 1] (eval mode): what re-ID compares."""
        return unwrap(self.siamese).encoder(images).feature.float()

    @torch.no_grad()
    def verify(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """P(different identity) [B] of feature pairs: the verification head's distance."""
        return torch.softmax(unwrap(self.siamese).head(f1, f2).float(), dim=1)[:, 1 - SAME]

    def maps_of(self, kp: torch.Tensor) -> torch.Tensor:
        """[B, K, 3] generation-skeleton keypoints -> [B, K, H, W] pose maps (the data's sigma)."""
        h, w = self.info.height, self.info.width
        maps = [pose_maps(k.detach().cpu().numpy(), h, w, self.sigma) for k in kp]
        return torch.from_numpy(np.stack(maps))

    @torch.no_grad()
    def transfer(self, source: torch.Tensor, maps: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            f = self.encode(source)
            return self.gen(maps.to(f.device, f.dtype), f, None if noise is None else noise.to(f.device))
        finally:
            self.train(was)

    @torch.no_grad()
    def sample(self, batch: dict) -> dict[str, torch.Tensor]:
        device = self._device()
        src = batch["a"].to(device)
        maps = batch["target_a_maps"].to(device)
        # the authors' picture of a pose: the maps' maximum over joints, white on black
        cols = {"source": src, "target pose": (maps.amax(dim=1, keepdim=True) * 2 - 1).expand(-1, 3, -1, -1)}
        cols["generated"] = self.transfer(src, batch["target_a_maps"])
        cols["ground truth"] = batch["target_a"].to(device)
        return cols

    @torch.no_grad()
    def render(self, source: torch.Tensor, target_kp: Optional[torch.Tensor] = None,
               other: Optional[torch.Tensor] = None) -> torch.Tensor:
        """source [B, 3, H, W] in [-1, 1], target_kp [B, K, 3] (generation skeleton, pixels at
        (H, W)); `other` is not used by FD-GAN."""
        if target_kp is None:
            raise KeyreidError("FD-GAN renders a person in a target pose: pass it with --pose POSE")
        if target_kp.shape[0] != source.shape[0]:
            raise KeyreidError(f"FD-GAN render: {source.shape[0]} image(s) but {target_kp.shape[0]} pose(s)")
        return self.transfer(source, self.maps_of(target_kp))


__all__ = ["FDGAN", "FDGANOptions", "openpose18_to_coco17", "stage_kind"]
