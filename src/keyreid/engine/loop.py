"""The one training loop. Re-ID training (engine/trainer.py), the image generators
(generation/trainer.py) and unsupervised adaptation are *methods* it runs: a method owns its
networks, optimizers, data and the update of one batch; the loop owns everything around them.

What the loop does, the same for every method:
- stages (a method has one or more, e.g. FD-GAN's three) of epochs, each epoch a sequence of steps;
- the exact position (stage, epoch, step in the epoch, running sums of the epoch in progress), so a
  run killed anywhere and resumed from last.pt gives bit-identical weights: all RNG states
  (torch, CUDA, numpy, python) travel in the checkpoint and are restored when training restarts;
- last.pt (atomic) at the end of each epoch and every `checkpoint_every_steps` steps, best.pt when
  the method's validation score improves; weights are checked finite before a last.pt is written,
  so a diverged model never overwrites a good one;
- divergence stop: a non-finite loss (averaged over DDP ranks, so every rank stops together) or a
  running loss far above its early value (methods that set `divergence_factor`);
- metrics.csv (a row per epoch; rows written after the checkpoint a resume starts from are
  dropped), TensorBoard scalars, rich progress bars or one plain line per epoch without a terminal.

The run folder (config diff on resume, --no-resume set-aside) is engine/run_folder.py; DDP's
process group is set up by `distributed_device`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist

from keyreid.engine.logs import CSVLog, TensorBoard
from keyreid.errors import KeyreidError
from keyreid.inference.device import resolve_device
from keyreid.utils.checkpoint import save_checkpoint
from keyreid.utils.progress import progress_bar, progress_mode


class TrainingDiverged(KeyreidError):
    """The loss or the weights left the finite range, or the loss grew far above its early value."""


@dataclass
class Stage:
    """One phase of training: `epochs` at the optimizers' base LR, then `decay_epochs` (methods
    with a decaying schedule; see keyreid.generation.method.lr_factor)."""

    name: str
    epochs: int
    decay_epochs: int = 0

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs


@dataclass
class LoopState:
    stage_index: int = 0        # the stage in progress
    epoch: int = 0              # epochs of that stage trained (= the epoch in progress, 0-based)
    step_in_epoch: int = 0      # batches of that epoch already taken
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    history: list = field(default_factory=list)
    # the epoch in progress, summed so far: a resume in mid-epoch still logs the whole epoch's mean
    epoch_sums: dict = field(default_factory=dict)
    epoch_count: int = 0
    epoch_seconds: float = 0.0
    epoch_lr: float = float("nan")
    # an epoch trained and checkpointed but not yet finished (validated / logged): {"row", ...}
    pending: Optional[dict] = None
    # divergence: the mean loss of the run's first steps, and a running mean since
    loss_ref_sum: float = 0.0
    loss_ref_count: int = 0
    loss_ema: Optional[float] = None

    @classmethod
    def from_dict(cls, values: dict) -> "LoopState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


REFERENCE_STEPS = 10   # steps whose mean loss is the reference for divergence
EMA_WEIGHT = 0.1       # running loss: ~10-step memory, so one noisy batch is not a divergence


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def distributed_device(name: str) -> tuple[torch.device, int, int]:
    """(device, rank, world size): under torchrun (WORLD_SIZE > 1) the process group is set up
    (nccl on GPU, gloo on CPU) and each rank takes its LOCAL_RANK GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(name)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, rank, world_size


class TrainingMethod:
    """What the loop runs. A subclass implements training_stages, epoch_batches, step, epoch_row,
    checkpoint / restore and the divergence message; the other hooks have defaults."""

    #: > 0: stop when the running "loss" passes this many times its early value
    divergence_factor: float = 0.0
    #: TensorBoard scalars of each epoch's row under OUT/tb
    tensorboard: bool = True
    #: per-step values that may be NaN without a divergence (an accuracy without logits)
    unwatched: tuple[str, ...] = ()

    def training_stages(self) -> list[Stage]:
        raise NotImplementedError

    def begin_stage(self, stage: Stage, resumed: bool) -> None:
        """A stage starts (resumed: in its middle, from a checkpoint): new optimizers, freezing."""

    def end_stage(self, stage: Stage) -> None:
        """A stage's last epoch is trained (called before that epoch's checkpoint)."""

    def epoch_batches(self, stage: Stage, epoch: int, epochs_done: int, start_step: int
                      ) -> tuple[Iterable, int]:
        """(the epoch's batches from `start_step` on, the epoch's number of steps)."""
        raise NotImplementedError

    def step(self, batch: Any, stage: Stage, epoch: int, step: int, n_steps: int) -> dict[str, float]:
        """One update on one batch; returns its losses (and other per-step means) as floats."""
        raise NotImplementedError

    def epoch_row(self, means: dict[str, float], steps: int, seconds: float, stage: Stage, epoch: int,
                  epochs_done: int) -> dict:
        """The metrics.csv row of the epoch just trained (epochs_done counts the ones before it)."""
        raise NotImplementedError

    def row_epoch(self, epochs_done: int) -> int:
        """The "epoch" column's value of the epoch after `epochs_done` trained ones."""
        return epochs_done

    def finish_is_costly(self, epochs_done: int) -> bool:
        """True when finish_epoch will take long (validation): the epoch is checkpointed first."""
        return False

    def finish_epoch(self, row: dict, epochs_done: int) -> Optional[float]:
        """Validation and the like after an epoch; a score (higher is better) writes best.pt."""
        return None

    def after_logged(self, row: dict, epochs_done: int, tb: TensorBoard) -> None:
        """After the row is logged and last.pt written: sample grids and the like."""

    def tb_scalars(self, row: dict) -> tuple[dict, int]:
        return {f"train/{k}": v for k, v in row.items() if isinstance(v, float)}, int(row["epoch"])

    def step_info(self, parts: dict[str, float]) -> str:
        return "  ".join(f"{k} {v:.3f}" for k, v in list(parts.items())[:4])

    def plain_line(self, row: dict, total_epochs: int) -> str:
        raise NotImplementedError

    def bad_weights(self) -> list[str]:
        """Names of weight tensors holding NaN or inf."""
        return []

    def checkpoint(self, loop: "TrainingLoop") -> dict:
        """The checkpoint's content (the loop adds "rng")."""
        raise NotImplementedError

    def divergence_message(self, what: str, loop: "TrainingLoop") -> str:
        raise NotImplementedError

    def before_fit(self) -> None:
        """Run before the RNG of a resumed run is restored (draws here never reach training)."""


class TrainingLoop:
    def __init__(self, method: TrainingMethod, out_dir: Path, device: torch.device, rank: int = 0,
                 world_size: int = 1, show_progress: bool = True, checkpoint_every_steps: int = 0):
        self.method = method
        self.out_dir = Path(out_dir)
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.show_progress = show_progress
        self.checkpoint_every_steps = checkpoint_every_steps
        self.stages: list[Stage] = list(method.training_stages())
        self.state = LoopState()
        self.rng: Optional[dict] = None              # a resumed run's RNG, restored when fit starts
        self.last_saved: Optional[tuple[int, int]] = None   # (epochs done, step) of this run's last.pt
        self.metrics_log: Optional[CSVLog] = None

    # ------------------------------------------------------------------ position
    @property
    def total_epochs(self) -> int:
        return sum(s.total_epochs for s in self.stages)

    @property
    def epochs_done(self) -> int:
        """Epochs trained over all stages."""
        before = sum(s.total_epochs for s in self.stages[:self.state.stage_index])
        return before + (self.state.epoch if self.state.stage_index < len(self.stages) else 0)

    @property
    def done(self) -> bool:
        st = self.state
        return st.stage_index >= len(self.stages) or (
            st.stage_index == len(self.stages) - 1 and st.epoch >= self.stages[-1].total_epochs)

    def resumed_from(self, state: LoopState, rng: Optional[dict]) -> None:
        """Take a checkpoint's position; a stage the config now makes shorter ends there."""
        self.state, self.rng = state, rng
        st = self.state
        while st.stage_index < len(self.stages) - 1 and st.epoch >= self.stages[st.stage_index].total_epochs \
                and st.step_in_epoch == 0:
            st.stage_index, st.epoch = st.stage_index + 1, 0
        self.last_saved = (self.epochs_done, st.step_in_epoch)

    def open_logs(self, resumed: bool) -> None:
        if not self.is_main:
            return
        self.metrics_log = CSVLog(self.out_dir / "metrics.csv")
        if resumed:  # rows written after the checkpoint belong to the run that died
            self.metrics_log.truncate_after("epoch", self.method.row_epoch(self.logged_epochs() - 1))

    def logged_epochs(self) -> int:
        return self.epochs_done - (1 if self.state.pending else 0)

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str) -> Path:
        path = self.out_dir / name
        content = {**self.method.checkpoint(self), "rng": rng_state()}   # every rank; rank 0 writes
        if self.is_main:
            save_checkpoint(path, content)
        return path

    def save_last(self) -> None:
        bad = self.method.bad_weights()
        if bad:  # never overwrite a good last.pt with a diverged model
            self.diverged(f"{len(bad)} weight tensors hold NaN or inf (first: {bad[0]})")
        self.save("last.pt")
        self.last_saved = (self.epochs_done, self.state.step_in_epoch)

    # ------------------------------------------------------------------ divergence
    def diverged(self, what: str) -> None:
        raise TrainingDiverged(self.method.divergence_message(what, self))

    def _reduce(self, parts: dict[str, float]) -> dict[str, float]:
        """Plain floats; under DDP the mean over ranks (so every rank sees a NaN any rank has)."""
        parts = {k: float(v) for k, v in parts.items()}
        if self.world_size > 1 and parts:
            keys = sorted(parts)
            t = torch.tensor([parts[k] for k in keys], dtype=torch.float64,
                             device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t)
            parts = {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}
        return parts

    def _watch(self, parts: dict[str, float]) -> None:
        bad = [k for k, v in parts.items() if not math.isfinite(v) and k not in self.method.unwatched]
        if bad:
            self.diverged(f"loss {bad[0]!r} is {parts[bad[0]]}")
        factor = self.method.divergence_factor
        if not factor or "loss" not in parts:
            return
        # a running loss (~10-step memory) above factor x the mean loss of the run's first steps is
        # a diverging run even while finite: Adam at lr 1e6 reaches 1e13 at its second step
        st, loss = self.state, parts["loss"]
        st.loss_ema = loss if st.loss_ema is None else (1 - EMA_WEIGHT) * st.loss_ema + EMA_WEIGHT * loss
        if st.loss_ref_count:
            reference = max(st.loss_ref_sum / st.loss_ref_count, 1e-3)
            if st.loss_ema > factor * reference:
                self.diverged(f"the running loss {st.loss_ema:.4g} is over {factor:g}x its early value "
                              f"{reference:.4g} (optim.divergence_factor)")
        if st.loss_ref_count < REFERENCE_STEPS:
            st.loss_ref_sum += loss
            st.loss_ref_count += 1

    # ------------------------------------------------------------------ epochs
    def _train_epoch(self, stage: Stage, bar) -> None:
        """One epoch from state.step_in_epoch on; ends with the epoch pending (trained, not yet
        finished or logged). Running sums live in the state, so an epoch resumed in the middle is
        logged as the mean of all its steps."""
        st, m = self.state, self.method
        done_before = self.epochs_done
        batches, n_steps = m.epoch_batches(stage, st.epoch, done_before, st.step_in_epoch)
        label = f"epoch {done_before + 1}" if len(self.stages) == 1 else \
            f"{stage.name} epoch {st.epoch + 1}/{stage.total_epochs}"
        task = bar.add_task(label, total=n_steps, completed=st.step_in_epoch)
        tick = time.time()
        for batch in batches:
            parts = self._reduce(m.step(batch, stage, st.epoch, st.step_in_epoch, n_steps))
            self._watch(parts)
            st.step_in_epoch += 1
            st.global_step += 1
            st.epoch_count += 1
            for k, v in parts.items():
                st.epoch_sums[k] = st.epoch_sums.get(k, 0.0) + v
            now = time.time()
            st.epoch_seconds += now - tick
            tick = now
            bar.update(task, advance=1, info=m.step_info(parts))
            if self.checkpoint_every_steps and st.global_step % self.checkpoint_every_steps == 0:
                self.save_last()
        bar.update(task, visible=False)
        count = st.epoch_count
        means = {k: v / max(1, count) for k, v in st.epoch_sums.items()}
        row = m.epoch_row(means, count, st.epoch_seconds, stage, st.epoch, done_before)
        st.epoch += 1
        st.step_in_epoch = 0
        st.epoch_sums, st.epoch_count, st.epoch_seconds = {}, 0, 0.0
        st.pending = {"row": row}
        if st.epoch >= stage.total_epochs:
            m.end_stage(stage)
            if st.stage_index < len(self.stages) - 1:
                st.stage_index, st.epoch = st.stage_index + 1, 0
        if m.finish_is_costly(self.epochs_done):
            # saved before finishing: a crash in validation loses no training, a resume validates
            self.save_last()

    def _finish_epoch(self, tb: TensorBoard) -> None:
        st, m = self.state, self.method
        row = dict(st.pending["row"])
        done = self.epochs_done
        score = m.finish_epoch(row, done) if self.is_main else None
        if score is not None and score > st.best_score:
            st.best_score, st.best_epoch = score, int(row["epoch"])
            self.save("best.pt")
        if self.metrics_log is not None:
            self.metrics_log.write(row)
        scalars, step = m.tb_scalars(row)
        tb.scalars(scalars, step)
        st.history.append(row)
        st.pending = None
        self.save_last()
        m.after_logged(row, done, tb)
        if self.plain_lines:
            print(m.plain_line(row, self.total_epochs), flush=True)

    def fit(self) -> None:
        st, m = self.state, self.method
        tb = TensorBoard(self.out_dir / "tb", enabled=self.is_main and m.tensorboard)
        mode = progress_mode(self.show_progress and self.is_main)
        self.plain_lines = mode == "plain"   # without a terminal: one plain line per epoch
        m.before_fit()
        if self.rng is not None:  # resumed: the RNG exactly as the killed run left it
            set_rng_state(self.rng)
            self.rng = None
        begun: Optional[int] = None
        try:
            with progress_bar(mode == "rich") as bar:
                epochs = bar.add_task("epochs", total=self.total_epochs, completed=self.logged_epochs())
                while True:
                    if st.pending is not None:
                        self._finish_epoch(tb)
                        bar.update(epochs, completed=self.epochs_done)
                        if self.world_size > 1:
                            dist.barrier()  # the other ranks wait for rank 0's validation
                    if self.done:
                        break
                    stage = self.stages[st.stage_index]
                    if st.epoch >= stage.total_epochs:   # an empty stage
                        st.stage_index, st.epoch = st.stage_index + 1, 0
                        continue
                    if begun != st.stage_index:
                        m.begin_stage(stage, resumed=st.epoch > 0 or st.step_in_epoch > 0)
                        begun = st.stage_index
                    self._train_epoch(stage, bar)
        finally:
            tb.close()


__all__ = ["LoopState", "Stage", "TrainingDiverged", "TrainingLoop", "TrainingMethod", "distributed_device",
           "rng_state", "seed_everything", "set_rng_state"]
