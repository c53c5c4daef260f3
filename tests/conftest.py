"""Shared fixtures: a tiny synthetic dataset generated once per test session.

Property tests (hypothesis) run derandomized by default, so `make test` draws the same examples
on every machine and a CI run cannot fail by luck; HYPOTHESIS_PROFILE=explore searches afresh
(`HYPOTHESIS_PROFILE=explore .venv/bin/pytest tests/test_keypoints.py`, more examples).
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

from keyreid.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """Market-layout synthetic set with keypoints: 10 train / 6 test identities, 3 cameras."""
    root = tmp_path_factory.mktemp("tiny_synth")
    generate(root, SynthConfig(train_identities=10, test_identities=6, cameras=3, distractors=6,
                               junk=2, train_images=(4, 6), train_cameras=(2, 3), test_cameras=(2, 3),
                               seed=7), workers=1)
    return root


@pytest.fixture(scope="session")
def adapt_source(tiny_synth, tmp_path_factory):
    """A kae model trained two epochs on the tiny set: the source model of the adaptation tests."""
    from keyreid.config import load_config
    from keyreid.engine.trainer import Trainer

    out = tmp_path_factory.mktemp("adapt_source")
    Trainer(load_config(None, tiny_overrides(tiny_synth, out, head="kae")), resume=False, show_progress=False).fit()
    return out / "best.pt"


def tiny_overrides(root, out, head="bnneck", **extra):
    """Config overrides for a seconds-long CPU training run on the tiny set."""
    values = {
        "data.root": str(root), "data.height": 64, "data.width": 32, "data.p": 4, "data.k": 2,
        "data.workers": 0, "model.backbone": "resnet18", "model.pretrained": "null",
        "model.head": head, "optim.epochs": 2, "optim.warmup_epochs": 1, "optim.milestones": "[1]",
        "eval.every": 0, "output_dir": str(out), "device": "cpu",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A test that changes torch's thread count (to run one training single-threaded) must not
    leave it changed: a later test comparing an in-process run with a subprocess run (default
    threads) would then see different conv numerics and fail (test_search_cli's resume test did)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
