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
