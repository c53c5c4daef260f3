"""Image generation training: the methods of keyreid.generation (PN-GAN, FD-GAN, IP-GAN) run as
methods of the one training loop (keyreid.engine.loop), which owns the exact resume, checkpoints,
divergence stop, logs and progress. This module adds what generation needs around a method's
train_step: pair data, several optimizers made per stage, a CycleGAN LR decay per epoch, DDP
wrappers per stage, and sample grids.

Seeded and exact: a run killed anywhere and resumed gives bit-identical weights to a run that was
never stopped (CPU, same workers): last.pt (atomic, every epoch and every `checkpoint_every_steps`)
holds the method's and every optimizer's state, the GradScaler, the loop's position and all RNG
states, and nothing random depends on how the run got there (the pair order comes from a generator
seeded by (seed, stage, epoch), flips from PairDataset's (seed, item, sample) rule, sample grids
run under forked RNG).

Stages (method.stages()): the stage index and the epoch within it are in the checkpoint, so a kill
in stage 2 resumes in stage 2; each stage starts with method.begin_stage and new optimizers, whose
lr follows lr_factor (constant, then linear decay to 0) from param_group["initial_lr"].

Files in OUTPUT: config.yaml, last.pt, metrics.csv (a row per epoch), tb/ (TensorBoard, when
log.tensorboard), samples/epoch_NNN.png (fixed pairs, every log.sample_every epochs and the last).
Re-running into OUTPUT resumes with the same config (a per-key diff otherwise, unless
allow_config_change) or, with resume=False, sets the old run's files aside in OUTPUT/previous-N.

DDP through torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU; ddp_modules() wrapped in
DistributedDataParallel for each stage (re-wrapped when a stage changes what trains), a seeded
disjoint split of the epoch's pairs per rank, losses averaged over ranks, only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from keyreid.config import Config, ConfigError, DataConfig
from keyreid.data.datasets.base import relabel
from keyreid.data.records import Sample
from keyreid.engine.data import prepare_data
from keyreid.engine.logs import CSVLog, TensorBoard
from keyreid.engine.loop import (LoopState, TrainingDiverged, TrainingLoop, TrainingMethod, distributed_device,
                                 seed_everything)
from keyreid.engine.run_folder import config_diff, flat_values, refuse_changes, set_aside_previous_run
from keyreid.errors import DataError
from keyreid.generation.config import GenConfig, _build, gen_to_dict, save_gen_config
from keyreid.generation.load import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_generator  # noqa: F401
from keyreid.generation.method import (GENERATION_METHODS, DataInfo, GenerationMethod, Stage, StepContext,
                                       lr_factor)
from keyreid.generation.pairs import PairDataset
from keyreid.generation.pose import pose_skeleton
from keyreid.generation.samples import save_sample_grid

# settings that do not change what is computed: they may differ freely on resume
IGNORED = {"output_dir", "device", "data.workers", "log", "name"}
# settings that decide which weights exist: a run never resumes across them
ARCHITECTURE = {"method", "data.height", "data.width", "data.dataset", "data.root"}


class GenerationDiverged(TrainingDiverged):
    """A loss of train_step or a weight left the finite range."""


GanState = LoopState   # the loop's position (stage, epoch, step) is the generation run's too


def _seed_of(*parts: int) -> int:
    """A 63-bit seed from integers (seed, stage, epoch, ...): unrelated streams for nearby inputs."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@contextlib.contextmanager
def _rng_untouched(device: torch.device):
    """Run a block (sample grids, the sample pairs) without moving any RNG training draws from,
    so that how often grids are drawn never changes the trained weights."""
    devices = [device.index or 0] if device.type == "cuda" else []
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _flat_gen(values: dict) -> dict:
    """A generation config's flat values, method_options completed with the method's defaults."""
    values = dict(values)
    try:
        method_cls = GENERATION_METHODS.get(values.get("method"))
        values["method_options"] = method_cls.resolved_options(values.get("method_options") or {})
    except Exception:  # an unknown method: its options compare as written (the method key differs anyway)
        pass
    return flat_values(values)


def check_gen_resume_config(saved: Optional[dict], cfg: GenConfig, checkpoint: Path,
                            allow_change: bool) -> list[str]:
    """Refuse to resume `checkpoint` with a config that differs from the one it was trained with
    (a diff, one `key: old (checkpoint) -> new (now)` line per key, method_options key by key,
    each side completed with the method's defaults so an override equal to the run's own value is
    no change), unless allow_change and no key decides what the networks are. Returns the
    accepted changes. The rule is keyreid.engine.run_folder's, as for re-ID runs."""
    if saved is None:
        return []
    old = _flat_gen(gen_to_dict(_build(GenConfig, saved, f"{checkpoint}: stored config")))
    new = _flat_gen(gen_to_dict(cfg))
    arch, other = config_diff(old, new, IGNORED, ARCHITECTURE)
    return refuse_changes(checkpoint, cfg.output_dir, arch, other, allow_change,
                          what="the method or data differ from the ones this run trained")


def set_aside_generation_run(out_dir: Path) -> Optional[Path]:
    """The run folder's set-aside (config, checkpoints, logs, tb, samples -> previous-N)."""
    return set_aside_previous_run(out_dir)


class EpochSampler(Sampler):
    """Batches of one epoch: a permutation seeded by (seed, stage, epoch), padded by wrapping to a
    multiple of the world size and dealt to ranks (DistributedSampler's rule), cut into batches;
    the last short batch is dropped when the rank has at least one full batch (a batch of 1 breaks
    BatchNorm)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g).tolist()
        if world_size > 1:
            per_rank = math.ceil(n / world_size)
            order = (order * math.ceil(per_rank * world_size / max(1, n)))[:per_rank * world_size]
            order = order[rank::world_size]
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if len(batches) > 1 and len(batches[-1]) < batch_size:
            batches.pop()
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class GanTrainer(TrainingMethod):
    def __init__(self, cfg: GenConfig, resume: bool = True, show_progress: bool = True,
                 allow_config_change: bool = False, checkpoint_every_steps: int = 0):
        """Everything a user can get wrong is checked before any file is written: device, data,
        method options, and on resume the config against the one the run was trained with."""
        self.cfg = cfg
        self.tensorboard = cfg.log.tensorboard
        method_cls = GENERATION_METHODS.get(cfg.method)  # an unknown name first: the plainest mistake
        self.device, self.rank, self.world_size = distributed_device(cfg.device)
        self.is_main = self.rank == 0
        seed_everything(cfg.seed)
        self.out_dir = Path(cfg.output_dir)
        last = self.out_dir / "last.pt"
        from keyreid.utils.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(last, "cpu") if resume and last.is_file() else None
        if checkpoint is not None and checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{last}: not a generation checkpoint (format "
                              f"{checkpoint.get('format')!r}); use another output_dir or --no-resume")
        self.config_changes = check_gen_resume_config(checkpoint.get("config") if checkpoint else None,
                                                      cfg, last, allow_config_change)

        self._prepare_data(method_cls)
        self.method: GenerationMethod = method_cls(cfg, self.info)
        self.stages: list[Stage] = list(self.method.stages())
        if not self.stages or sum(s.epochs + s.decay_epochs for s in self.stages) < 1:
            raise ConfigError(f"method {cfg.method!r} has no epoch to train with this config "
                              f"(optim.epochs={cfg.optim.epochs}, optim.decay_epochs={cfg.optim.decay_epochs})")
        self.method.to(self.device)

        amp = cfg.optim.amp and self.device.type == "cuda"
        self.amp_dtype = getattr(torch, cfg.optim.amp_dtype) if amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp and cfg.optim.amp_dtype == "float16")
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._optimizer_states: Optional[dict] = None   # from the checkpoint, for the stage in progress
        self._ddp: dict[str, nn.parallel.DistributedDataParallel] = {}
        self._samples: Optional[dict] = None
        self._epoch_pairs, self._lr_factor = 0, 1.0
        self.loop = TrainingLoop(self, self.out_dir, self.device, self.rank, self.world_size, show_progress,
                                 checkpoint_every_steps)
        self.set_aside: Optional[Path] = None
        if checkpoint is not None:
            self._restore(checkpoint, last)
        elif self.is_main and self.out_dir.is_dir():
            self.set_aside = set_aside_previous_run(self.out_dir)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_gen_config(cfg, self.out_dir / "config.yaml")
        self.loop.open_logs(resumed=checkpoint is not None)

    @property
    def state(self) -> LoopState:
        return self.loop.state

    @property
    def metrics_log(self) -> Optional[CSVLog]:
        return self.loop.metrics_log

    @property
    def epochs_done(self) -> int:
        """Epochs trained over all stages (the CSV's and the sample files' epoch number)."""
        return self.loop.epochs_done

    @property
    def total_epochs(self) -> int:
        return self.loop.total_epochs

    # ------------------------------------------------------------------ setup
    def _prepare_data(self, method_cls) -> None:
        """keyreid's own data preparation (dataset, image checks, sidecar, validation split) on a
        re-ID Config made from cfg.data, then the generation skeleton and the fixed sample pairs."""
        d = self.cfg.data
        rc = Config(name=self.cfg.name, seed=self.cfg.seed, output_dir=self.cfg.output_dir, device="cpu",
                    data=DataConfig(dataset=d.dataset, root=d.root, options=dict(d.options),
                                    sidecar=d.sidecar, min_keypoint_confidence=d.min_keypoint_confidence,
                                    allow_missing_keypoints=d.allow_missing_keypoints,
                                    height=d.height, width=d.width, flip_prob=d.flip_prob, workers=d.workers,
                                    val_identities=d.val_identities))
        # the method's need decides the sidecar checks: coverage of the training images, visible
        # keypoints outside their image turned invisible
        need = bool(getattr(method_cls, "needs_keypoints", True))
        data = prepare_data(rc, need_keypoints=need, needed_by=f"method={self.cfg.method!r}")
        if data.skeleton is None:
            raise DataError(None, f"data.dataset={d.dataset!r} declares no keypoint skeleton; "
                                  "generation needs the person's pose")
        self.data = data
        self.train_samples: list[Sample] = data.train
        self.label_map = {int(k): int(v) for k, v in data.label_map.items()}
        gen_skeleton, _ = pose_skeleton(data.skeleton)
        self.info = DataInfo(skeleton=gen_skeleton, num_classes=len(self.label_map), height=d.height,
                             width=d.width, train_pids=[self.label_map[s.pid] for s in data.train])
        self.sigma = d.sigma  # None: PairDataset's default (5 * height / 256)

    def _pair_dataset(self, samples: list[Sample], items: list[dict], flip_prob: float, seed: int) -> PairDataset:
        m = self.method
        return PairDataset(samples, items, self.data.skeleton, self.cfg.data.height, self.cfg.data.width,
                           sigma=self.sigma, flip_prob=flip_prob, seed=seed,
                           maps=getattr(m, "uses_pose_maps", True),
                           skeletons=getattr(m, "uses_skeleton_images", True))

    def sample_batch(self) -> Optional[dict]:
        """The fixed pairs of the sample grids: the method's pairs over held-out identities
        (data.val_identities) or else over the training identities, in a fixed seeded order that
        puts different source identities first; the first log.sample_count of them, unflipped."""
        held_out = self.data.val_query + self.data.val_gallery
        samples = held_out or self.train_samples
        labels = relabel(samples)[1]
        pids = [labels[s.pid] for s in samples]
        items = self.method.pairs(pids, 0, self.cfg.seed, None)
        if not items:
            return None
        order = np.random.default_rng(_seed_of(self.cfg.seed, 7)).permutation(len(items))
        first_role = next(iter(items[0]))
        seen, firsts, rest = set(), [], []
        for k in order:
            pid = pids[items[k][first_role]]
            (rest if pid in seen else firsts).append(int(k))
            seen.add(pid)
        chosen = [items[k] for k in (firsts + rest)[:self.cfg.log.sample_count]]
        ds = self._pair_dataset(samples, chosen, 0.0, self.cfg.seed)
        return torch.utils.data.default_collate([ds[i] for i in range(len(ds))])

    # ------------------------------------------------------------------ DDP
    @contextlib.contextmanager
    def bare_networks(self):
        """The method's networks without their DDP wrappers (state dicts with the plain keys,
        sampling on rank 0 alone without collective calls)."""
        for name, wrapper in self._ddp.items():
            setattr(self.method, name, wrapper.module)
        try:
            yield self.method
        finally:
            for name, wrapper in self._ddp.items():
                setattr(self.method, name, wrapper)

    def _wrap_ddp(self) -> None:
        for name, wrapper in self._ddp.items():
            setattr(self.method, name, wrapper.module)
        self._ddp = {}
        if self.world_size <= 1:
            return
        for name in self.method.ddp_modules():
            module = getattr(self.method, name)
            if not any(p.requires_grad for p in module.parameters()):
                continue  # frozen in this stage: nothing to synchronise (DDP refuses it)
            wrapper = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=getattr(self.method, "ddp_find_unused_parameters", True))
            setattr(self.method, name, wrapper)
            self._ddp[name] = wrapper

    # ------------------------------------------------------------------ stages and LR
    def training_stages(self) -> list[Stage]:
        return self.stages

    def begin_stage(self, stage: Stage, resumed: bool) -> None:
        self.method.begin_stage(stage)
        self._wrap_ddp()
        self.optimizers = dict(self.method.optimizers(stage))
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])
        if resumed and self._optimizer_states is not None:
            self._load_optimizers(self._optimizer_states)
        self._optimizer_states = None

    def end_stage(self, stage: Stage) -> None:
        self.optimizers = {}   # the next stage makes its own; none is kept past a stage's end

    def _load_optimizers(self, states: dict) -> None:
        """Moments from the checkpoint, hyper-parameters (lr, betas, ...) from the method as it is
        built now, so an lr changed with --allow-config-change takes effect."""
        if set(states) != set(self.optimizers):
            raise ConfigError(f"{self.out_dir / 'last.pt'}: cannot resume, its optimizers "
                              f"{sorted(states)} are not the method's {sorted(self.optimizers)}; "
                              "use another output_dir or --no-resume")
        for name, opt in self.optimizers.items():
            fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            try:
                opt.load_state_dict(states[name])
            except (ValueError, KeyError, RuntimeError) as e:
                raise ConfigError(f"{self.out_dir / 'last.pt'}: cannot resume optimizer {name!r} "
                                  f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                                  "use another output_dir or --no-resume") from None
            for g, settings in zip(opt.param_groups, fresh):
                g.update(settings)

    def _set_lr(self, stage: Stage, epoch: int) -> float:
        f = lr_factor(stage, epoch)
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * f
        return f

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, loop: TrainingLoop) -> dict:
        with self.bare_networks():
            method_state = self.method.state_dict()
            card = self.method.card()
        st = loop.state
        finished = loop.done
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "method": self.cfg.method, "config": gen_to_dict(self.cfg),
            # as checkpoints always held them: a finished run at (number of stages, 0)
            "stage_index": len(self.stages) if finished else st.stage_index,
            "epoch": 0 if finished else st.epoch,
            "stage_names": [s.name for s in self.stages],
            "history": list(st.history),
            "loop": vars(st).copy(),    # the position in the epoch and its running sums
            "method_state": method_state,
            # the optimizers of the stage in progress: None at a stage boundary (the next stage
            # makes new ones)
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()} if self.optimizers else None,
            "scaler": self.scaler.state_dict(),
            "data_info": self.info.to_dict(),
            "data_skeleton": self.data.skeleton.name,
            "label_map": self.label_map,
            "card": card,
        }

    def _restore(self, ck: dict, path: Path) -> None:
        saved_map = {int(k): int(v) for k, v in (ck.get("label_map") or {}).items()}
        if saved_map and saved_map != self.label_map:
            raise ConfigError(f"{path}: cannot resume, the training identities differ from the ones this "
                              f"run was trained on ({len(saved_map)} then, {len(self.label_map)} now: "
                              "another data.root, split or seed?); use another output_dir or --no-resume")
        try:
            self.method.load_state_dict(ck["method_state"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{path}: cannot resume, its weights do not fit the networks this config "
                              f"builds ({first}); use another output_dir or --no-resume") from None
        self.method.to(self.device)
        # checkpoints before the one loop hold only (stage_index, epoch, history)
        state = LoopState.from_dict(ck.get("loop") or {})
        state.stage_index, state.epoch = int(ck["stage_index"]), int(ck["epoch"])
        state.history = list(ck.get("history") or [])
        if ck.get("loop") is None or state.stage_index >= len(self.stages):
            state.step_in_epoch, state.pending = 0, None
        optimizers = ck.get("optimizers")
        if state.stage_index < len(self.stages) and state.step_in_epoch == 0 and \
                state.epoch >= self.stages[state.stage_index].total_epochs:
            # the config now gives this stage fewer epochs (--allow-config-change): go on with the next
            state.stage_index, state.epoch = state.stage_index + 1, 0
            optimizers = None
        if self.stages and state.stage_index >= len(self.stages):
            last = self.stages[-1]
            done = sum(1 for row in state.history if row.get("stage") == last.name)
            state.stage_index, state.epoch = len(self.stages) - 1, min(done, last.total_epochs)
            optimizers = None
            if done < last.total_epochs and self.is_main:
                # a finished run given more epochs (--allow-config-change): its last stage goes on.
                # The optimizers' moments are not kept past a stage's end, so they start afresh.
                print(f"{path}: the finished run goes on with {last.total_epochs - done} "
                      f"more epoch(s) of stage {last.name!r} (optimizer moments start afresh)", flush=True)
        self._optimizer_states = optimizers if (state.epoch > 0 or state.step_in_epoch > 0) else None
        self.scaler.load_state_dict(ck["scaler"])
        self.loop.resumed_from(state, ck["rng"])

    def save(self, name: str = "last.pt") -> Path:
        return self.loop.save(name)

    # ------------------------------------------------------------------ the method's steps
    def epoch_batches(self, stage: Stage, epoch: int, epochs_done: int, start_step: int):
        cfg = self.cfg
        seed = _seed_of(cfg.seed, self.state.stage_index, epoch)
        items = self.method.pairs(self.info.train_pids, epochs_done, cfg.seed, cfg.data.max_pairs_per_epoch)
        if not items:
            raise DataError(None, f"method {cfg.method!r} made no training pairs from {cfg.data.root} "
                                  f"({len(self.train_samples)} training images of {self.info.num_classes} "
                                  "identities): it needs identities with two or more images")
        dataset = self._pair_dataset(self.train_samples, items, cfg.data.flip_prob, seed)
        sampler = EpochSampler(len(dataset), cfg.data.batch_size, seed, self.rank, self.world_size)
        n_steps = len(sampler)
        sampler.batches = sampler.batches[start_step:]   # a resume in mid-epoch: the batches not taken
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed))
        self._epoch_pairs = len(items)
        self._lr_factor = self._set_lr(stage, epoch)
        self.method.train()
        return loader, n_steps

    def step(self, batch: dict, stage: Stage, epoch: int, step: int, n_steps: int) -> dict[str, float]:
        ctx = StepContext(self.device, self.optimizers, self.scaler, self.amp_dtype, self.cfg.optim.grad_clip,
                          stage, epoch, step)
        losses = self.method.train_step(batch, ctx)
        ctx.update()
        return losses

    def epoch_row(self, means: dict, steps: int, seconds: float, stage: Stage, epoch: int,
                  epochs_done: int) -> dict:
        row = {"epoch": epochs_done + 1, "stage": stage.name, "stage_epoch": epoch + 1,
               "steps": steps, "pairs": self._epoch_pairs}
        row.update(means)
        row["seconds"] = round(seconds, 3)
        row["lr_factor"] = self._lr_factor
        for name, opt in self.optimizers.items():
            row[f"lr_{name}"] = opt.param_groups[0]["lr"]
        return row

    def row_epoch(self, epochs_done: int) -> int:
        return epochs_done + 1     # the CSV counts generation epochs from 1

    def tb_scalars(self, row: dict) -> tuple[dict, int]:
        return ({f"train/{k}": v for k, v in row.items() if isinstance(v, float) and k != "seconds"},
                int(row["epoch"]))

    def plain_line(self, row: dict, total_epochs: int) -> str:
        return epoch_line(row, total_epochs)

    def bad_weights(self) -> list[str]:
        return [n for n, p in self.method.named_parameters() if not torch.isfinite(p).all()]

    def divergence_message(self, what: str, loop: TrainingLoop) -> str:
        path = self.out_dir / "last.pt"
        if loop.last_saved is not None:
            done, step = loop.last_saved
            kept = (f"{path} holds the last good state (after epoch {done}"
                    + (f", step {step} of the next)" if step else ")")
                    if done or step else f"{path} holds the state before training")
            then = "run again with --allow-config-change to resume from it, or --no-resume to start over"
        else:
            kept, then = "no checkpoint was written by this run", "run again"
        st = loop.state
        stage = self.stages[min(st.stage_index, len(self.stages) - 1)]
        return (f"training diverged at epoch {loop.epochs_done + 1} (stage {stage.name!r}, epoch "
                f"{st.epoch + 1}, step {st.step_in_epoch + 1}): {what}; {kept}. Lower the "
                f"method's learning rates or set optim.grad_clip, then {then}")

    def after_logged(self, row: dict, epochs_done: int, tb: TensorBoard) -> None:
        if self._sample_due():
            self._write_samples(tb, self._samples)

    def before_fit(self) -> None:
        with _rng_untouched(self.device):  # a method's pairs() may draw: training must not see it
            self._samples = self.sample_batch() if self.cfg.log.sample_every and self.is_main else None

    def fit(self) -> dict:
        self.loop.fit()
        return {"epochs": self.epochs_done, "stages": [s.name for s in self.stages],
                "last": str(self.out_dir / "last.pt"), "history": list(self.state.history)}


    def _write_samples(self, tb: TensorBoard, batch: Optional[dict]) -> Optional[Path]:
        if batch is None or not self.is_main:
            return None
        was_training = self.method.training
        with self.bare_networks(), _rng_untouched(self.device):
            try:
                self.method.eval()
                with torch.no_grad():
                    columns = self.method.sample(batch)
            finally:
                self.method.train(was_training)
        path = save_sample_grid(columns, self.out_dir / "samples" / f"epoch_{self.epochs_done:03d}.png")
        if tb.writer is not None:
            from PIL import Image

            tb.writer.add_image("samples", np.asarray(Image.open(path).convert("RGB")), self.epochs_done,
                                dataformats="HWC")
        return path

    def _sample_due(self) -> bool:
        every = self.cfg.log.sample_every
        done = self.epochs_done
        return bool(every) and (done % every == 0 or done == self.total_epochs)


def epoch_line(row: dict, total_epochs: int) -> str:
    """`epoch 3/20 [main 3/20]  g_gan 0.4812  l1 0.2210  d 0.2400  lr x1.00  12.3 s` for logs."""
    skip = {"epoch", "stage", "stage_epoch", "steps", "pairs", "seconds", "lr_factor"}
    parts = [f"epoch {row['epoch']}/{total_epochs} [{row['stage']} {row['stage_epoch']}]"]
    parts += [f"{k} {v:.4f}" for k, v in row.items() if k not in skip and not k.startswith("lr_")
              and isinstance(v, float)]
    parts.append(f"lr x{row['lr_factor']:.3f}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)
