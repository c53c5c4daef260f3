"""optim.head_lr_factor: the head's parameters train at factor x lr, the backbone at lr."""

import pytest
import torch

from keyreid.config import ConfigValueError, OptimConfig
from keyreid.engine.trainer import split_head_groups


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 2)


def test_head_parameters_get_the_factor_and_the_rest_keep_the_lr():
    net = _Net()
    extra = torch.nn.Parameter(torch.zeros(2))
    groups = split_head_groups([{"params": [*net.parameters(), extra], "lr": 0.1}], net, 10.0)
    assert len(groups) == 2
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    head_ids = {id(p) for p in net.head.parameters()}
    assert by_lr[0.1] == {id(p) for p in net.backbone.parameters()} | {id(extra)}
    assert {id(p) for p in groups[1]["params"]} == head_ids and groups[1]["lr"] == pytest.approx(1.0)
    opt = torch.optim.Adam(groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == 5


def test_head_lr_factor_defaults_to_one_and_must_be_positive():
    assert OptimConfig().head_lr_factor == 1.0
    with pytest.raises(ConfigValueError, match="head_lr_factor"):
        split_head_groups([{"params": list(_Net().parameters()), "lr": 0.1}], _Net(), 0.0)


def test_the_trainer_gives_the_head_its_factor_and_keeps_it_through_the_schedule(tiny_synth, tmp_path):
    from keyreid.config import load_config
    from keyreid.demo.run import DEMO_CONFIG
    from keyreid.engine.trainer import Trainer

    from conftest import tiny_overrides

    over = tiny_overrides(tiny_synth, tmp_path / "run", head="bnneck", **{"optim.head_lr_factor": 10})
    t = Trainer(load_config(DEMO_CONFIG, over), resume=False, show_progress=False)
    head_ids = {id(p) for p in t.model.head.parameters()}
    t._set_lr(0.5)
    for g in t.optimizer.param_groups:
        in_head = {id(p) in head_ids for p in g["params"]}
        assert len(in_head) == 1
        assert g["initial_lr"] == pytest.approx(t.cfg.optim.lr * (10 if in_head.pop() else 1))
    ratio = {g["lr"] / g["initial_lr"] for g in t.optimizer.param_groups}
    assert len(ratio) == 1   # the warmup / decay factor is the same for both groups
