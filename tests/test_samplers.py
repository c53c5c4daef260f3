"""PK sampler: batch composition, determinism, sharding and resume."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyreid.data.samplers import PKBatchSampler


def _pids(counts):
    return [pid for pid, n in enumerate(counts) for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=4, max_size=30), p=st.integers(2, 4),
       k=st.integers(1, 4), seed=st.integers(0, 1000))
def test_every_batch_is_p_identities_by_k_images(counts, p, k, seed):
    pids = _pids(counts)
    sampler = PKBatchSampler(pids, p, k, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for b in batches:
        assert len(b) == p * k
        ids = [pids[i] for i in b]
        assert len(set(ids)) == p
        assert all(ids.count(i) == k for i in set(ids))
    # without replacement within an epoch, except for identities that have fewer than K images
    used = [i for b in batches for i in b]
    rich = {pid for pid, n in enumerate(counts) if n >= k}
    rich_used = [i for i in used if pids[i] in rich]
    assert len(rich_used) == len(set(rich_used))


def test_deterministic_by_seed_and_epoch():
    pids = _pids([5, 7, 3, 9, 4, 6, 8])
    a = PKBatchSampler(pids, 3, 2, seed=1)
    b = PKBatchSampler(pids, 3, 2, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(PKBatchSampler(pids, 3, 2, seed=2)) != list(b)


def test_shards_are_disjoint_and_cover_the_epoch():
    pids = _pids([8] * 20)
    full = list(PKBatchSampler(pids, 4, 2, seed=3))
    shards = [list(PKBatchSampler(pids, 4, 2, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(full) // 2
    assert shards[0] == full[0:len(full) - len(full) % 2:2]
    assert shards[1] == full[1:len(full) - len(full) % 2:2]


def test_resume_skips_consumed_batches():
    pids = _pids([6] * 10)
    s = PKBatchSampler(pids, 2, 3, seed=0)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, start_batch=3)
    assert list(s) == full[3:] and len(s) == len(full) - 3


def test_too_few_identities_is_a_clear_error():
    with pytest.raises(ValueError, match="needs at least 4 identities"):
        PKBatchSampler(_pids([3, 3, 3]), 4, 2)
