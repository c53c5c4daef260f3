"""PK batch sampling: P identities x K images per batch, deterministic by seed, shardable."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[int]]):
    """Yields batches of P identities with K images each (indices into the dataset).

    An epoch is built like the BoT / torchreid identity sampler: each identity's images are
    shuffled and cut into groups of K (an identity with fewer than K images is filled up by
    sampling its images again), then batches draw P identities that still have groups left.
    The whole epoch is a pure function of (seed, epoch), so every distributed rank builds the same
    list and takes batches rank, rank + world_size, ...; `start_batch` skips batches already
    consumed, for an exact resume in the middle of an epoch.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, item_seeds: bool = False):
        if p < 2 or k < 1:
            raise ValueError(f"PK sampling needs P >= 2 and K >= 1, got P={p}, K={k}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(i)
        if len(self.index_by_pid) < p:
            raise ValueError(f"PK sampling with P={p} needs at least {p} identities, "
                             f"the training set has {len(self.index_by_pid)}")
        self.p, self.k, self.seed = p, k, seed
        self.item_seeds = item_seeds  # yield (index, seed) pairs: augmentation fixed by position
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.start_batch = 0
        self._len = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idx = np.array(self.index_by_pid[pid])
            if len(idx) < self.k:
                idx = rng.choice(idx, size=self.k, replace=True)
            idx = rng.permutation(idx)
            n = len(idx) // self.k
            groups[pid] = [idx[j * self.k:(j + 1) * self.k].tolist() for j in range(n)]
        batches = []
        available = [pid for pid in groups if groups[pid]]
        while len(available) >= self.p:
            chosen = rng.choice(len(available), size=self.p, replace=False)
            batch = []
            for c in sorted(chosen):
                batch.extend(groups[available[c]].pop())
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches(self.epoch)
        usable = len(batches) - len(batches) % self.num_replicas
        mine = batches[self.rank:usable:self.num_replicas]
        for b in range(self.start_batch, len(mine)):
            if self.item_seeds:
                # one seed per (seed, epoch, global batch, position): identical on resume
                global_batch = self.rank + b * self.num_replicas
                base = (self.seed * 1_000_003 + self.epoch) * 1_000_003 + global_batch
                yield [(i, (base * 1024 + pos) % 2**63) for pos, i in enumerate(mine[b])]
            else:
                yield mine[b]

    def __len__(self) -> int:
        # Batches stop when fewer than P identities have groups left, which depends on the
        # epoch's draws: compute (and cache) the length of the current epoch.
        if self._len is None or self._len[0] != self.epoch:
            self._len = (self.epoch, len(self._epoch_batches(self.epoch)) // self.num_replicas)
        return self._len[1] - self.start_batch
