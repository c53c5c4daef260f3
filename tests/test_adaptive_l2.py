"""Adaptive L2 against hand-computed values (methods.md section 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from keyreid.regularizers import AdaptiveL2, keras_hard_sigmoid, param_groups

A = 0.005


def tiny_model() -> nn.Module:
    """Known weights: sum of squares per tensor is given next to each."""
    m = nn.Sequential(
        nn.Conv2d(1, 2, 1),              # 0.weight [1, 2] -> 5;  0.bias [3, -1] -> 10
        nn.BatchNorm2d(2),               # 1.weight [1, 1] -> 2;  1.bias [0, 0] -> 0
        nn.Flatten(),
        nn.Linear(2, 1, bias=False),     # 3.weight [1, 1] -> 2 (no bias tensor)
        nn.Embedding(3, 2),              # not covered by default
        nn.LayerNorm(2),                 # not covered by default
    )
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        m[0].bias.copy_(torch.tensor([3.0, -1.0]))
        m[1].weight.fill_(1.0)
        m[1].bias.fill_(0.0)
        m[3].weight.fill_(1.0)
        m[4].weight.fill_(7.0)
    return m


SUMSQ = {"0.weight": 5.0, "0.bias": 10.0, "1.weight": 2.0, "1.bias": 0.0, "3.weight": 2.0}


def test_keras_hard_sigmoid_is_not_torch_hardsigmoid():
    x = torch.tensor([-3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0])
    assert torch.allclose(keras_hard_sigmoid(x),
                          torch.tensor([0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0]))
    assert F.hardsigmoid(torch.tensor(1.0)).item() == pytest.approx(4 / 6)  # differs: 1/6 slope


def test_covered_parameters_default():
    reg = AdaptiveL2(tiny_model())
    assert reg.names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight"]
    assert sorted(reg.thetas.keys()) == sorted(n.replace(".", "__") for n in reg.names)


def test_covered_parameters_configurable():
    reg = AdaptiveL2(tiny_model(), module_types=(nn.Embedding, nn.LayerNorm))
    assert reg.names == ["4.weight", "5.weight", "5.bias"]
    reg = AdaptiveL2(tiny_model(), param_names=("weight",))
    assert reg.names == ["0.weight", "1.weight", "3.weight"]


def test_shared_tensor_counted_once():
    lin = nn.Linear(2, 2)
    reg = AdaptiveL2(nn.Sequential(lin, lin))
    assert reg.names == ["0.weight", "0.bias"]


def test_lambda_at_init_is_half_of_A():
    for omega in (1.0, 3.0):
        lams = AdaptiveL2(tiny_model(), A=A, omega=omega).lambdas()
        assert set(lams) == set(SUMSQ)
        assert all(v == pytest.approx(0.0025) for v in lams.values())
    assert all(t.item() == 0.0 for t in AdaptiveL2(tiny_model()).thetas.values())


def test_penalty_hand_value():
    reg = AdaptiveL2(tiny_model())
    # 0.0025 * (5 + 10 + 2 + 0 + 2)
    assert reg.penalty().item() == pytest.approx(0.0025 * 19, rel=1e-6)
    assert reg().item() == pytest.approx(0.0475, rel=1e-6)


def test_penalty_gradient_wrt_weights_is_two_lambda_w():
    model = tiny_model()
    reg = AdaptiveL2(model)
    with torch.no_grad():
        reg.thetas["0__weight"].fill_(1.0)  # lambda = A * 0.7
    reg.penalty().backward()
    assert torch.allclose(model[0].weight.grad, 2 * A * 0.7 * model[0].weight.detach())
    assert torch.allclose(model[0].bias.grad, 2 * 0.0025 * model[0].bias.detach())
    assert torch.allclose(model[3].weight.grad, 2 * 0.0025 * model[3].weight.detach())
    assert model[4].weight.grad is None  # embedding not covered


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_penalty_equals_the_plain_expression_in_value_and_gradients(dtype):
    """penalty() is one autograd node with a hand-written backward; hold it to autograd of
    sum_w A * hs(omega * theta_w) * sum(w^2) on a model whose thetas sit in all three regions
    of the hard sigmoid (inside, clipped at 0, clipped at 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2)).to(dtype)
    reg = AdaptiveL2(model, A=0.01, omega=2.0).to(dtype)
    with torch.no_grad():
        for i, theta in enumerate(reg.thetas.values()):
            theta.fill_([0.3, -4.0, 4.0, -0.7][i % 4])
    fused = reg.penalty()
    fused.backward()
    got = [p.grad.clone() for p in [*model.parameters(), *reg.thetas.values()]]
    for p in [*model.parameters(), *reg.thetas.values()]:
        p.grad = None
    plain = sum(0.01 * keras_hard_sigmoid(2.0 * reg.thetas[name.replace(".", "__")]) * w.pow(2).sum()
                for name, w in model.named_parameters())
    plain.backward()
    want = [p.grad for p in [*model.parameters(), *reg.thetas.values()]]
    torch.testing.assert_close(fused, plain)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    assert any(float(g) == 0.0 for g in got[-len(reg.thetas):])  # clipped thetas get no gradient


@pytest.mark.parametrize("omega", [1.0, 2.0])
def test_sgd_step_lowers_theta_by_hand_computed_amount(omega):
    model = tiny_model()
    reg = AdaptiveL2(model, A=A, omega=omega)
    lr = 10.0
    opt = torch.optim.SGD(reg.param_groups(model, lr=lr))
    opt.zero_grad()
    reg.penalty().backward()
    opt.step()
    for name, s in SUMSQ.items():
        theta = reg.thetas[name.replace(".", "__")].item()
        # dR/dtheta = A * omega * 0.2 * sum(w^2) in the linear region
        assert theta == pytest.approx(-lr * A * omega * 0.2 * s, rel=1e-6, abs=1e-12)
    assert reg.thetas["0__bias"].item() < 0 and reg.thetas["1__bias"].item() == 0.0


@pytest.mark.parametrize("omega", [1.0, 2.0])
def test_clipping_at_and_beyond_the_knees(omega):
    model = tiny_model()
    reg = AdaptiveL2(model, A=A, omega=omega)
    with torch.no_grad():
        reg.thetas["0__weight"].fill_(2.5 / omega)   # top knee: lambda = A
        reg.thetas["0__bias"].fill_(-2.5 / omega)    # bottom knee: lambda = 0
        reg.thetas["1__weight"].fill_(4.0 / omega)   # beyond: still A
        reg.thetas["3__weight"].fill_(-4.0 / omega)  # beyond: still 0
    lams = reg.lambdas()
    assert lams["0.weight"] == pytest.approx(A)
    assert lams["0.bias"] == pytest.approx(0.0, abs=1e-12)
    assert lams["1.weight"] == pytest.approx(A)
    assert lams["3.weight"] == 0.0
    assert lams["1.bias"] == pytest.approx(0.0025)
    reg.penalty().backward()
    g = {k: v.grad.item() for k, v in reg.thetas.items()}
    # Clipped region: no gradient, theta stays put.
    assert g["1__weight"] == 0.0 and g["3__weight"] == 0.0
    # Penalty: A * 5 + 0 * 10 + A * 2 + 0.0025 * 0 + 0 * 2
    assert reg.penalty().item() == pytest.approx(A * 7, rel=1e-6)


def test_theta_gradient_inside_linear_region():
    model = tiny_model()
    reg = AdaptiveL2(model, omega=2.0)
    with torch.no_grad():
        reg.thetas["0__bias"].fill_(-1.0)  # 0.2 * 2 * -1 + 0.5 = 0.1: inside
    reg.penalty().backward()
    assert reg.thetas["0__bias"].grad.item() == pytest.approx(A * 2.0 * 0.2 * 10.0, rel=1e-6)
    assert reg.lambdas()["0.bias"] == pytest.approx(A * 0.1, rel=1e-6)


def test_param_groups_no_weight_decay_and_complete():
    model = tiny_model()
    head = nn.Linear(2, 3)
    reg = AdaptiveL2(model)
    groups = param_groups(model, lr=1e-3, regularizer=reg, theta_lr=1e-2,
                          extra=head.parameters())
    assert all(g["weight_decay"] == 0.0 for g in groups)
    assert len(groups) == 2 and groups[1]["lr"] == 1e-2 and groups[0]["lr"] == 1e-3
    ids0 = {id(p) for p in groups[0]["params"]}
    assert ids0 == {id(p) for p in [*model.parameters(), *head.parameters()]}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in reg.thetas.values()}
    # thetas belong to the regularizer only: never in the model's own parameters
    assert not ids0 & {id(p) for p in reg.thetas.values()}
    # The model's parameters are not the regularizer's
    assert {n for n, _ in reg.named_parameters()} == {f"thetas.{k}" for k in reg.thetas}
    torch.optim.Adam(groups)  # accepted as is


def test_state_dict_round_trip():
    model = tiny_model()
    reg = AdaptiveL2(model)
    with torch.no_grad():
        reg.thetas["0__weight"].fill_(-1.25)
    sd = reg.state_dict()
    assert set(sd) == {f"thetas.{k}" for k in ("0__weight", "0__bias", "1__weight",
                                                "1__bias", "3__weight")}
    fresh = AdaptiveL2(tiny_model())
    fresh.load_state_dict(sd)
    assert fresh.lambdas()["0.weight"] == pytest.approx(A * 0.25)
    assert fresh.lambdas() == reg.lambdas()


def test_fixed_mode():
    model = tiny_model()
    reg = AdaptiveL2(model, mode="fixed", fixed_lambda=0.01)
    assert len(reg.thetas) == 0 and reg.state_dict() == {}
    assert reg.penalty().item() == pytest.approx(0.01 * 19, rel=1e-6)
    assert set(reg.lambdas().values()) == {0.01}
    assert len(param_groups(model, 1e-3, reg)) == 1
    default = AdaptiveL2(model, mode="fixed")
    assert default.penalty().item() == pytest.approx(0.0025 * 19, rel=1e-6)


def test_adam_training_step_lowers_thetas_and_trains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    reg = AdaptiveL2(model)
    opt = torch.optim.Adam(reg.param_groups(model, lr=1e-2))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        (F.cross_entropy(model(x), y) + reg.penalty()).backward()
        opt.step()
    assert all(t.item() < 0 for t in reg.thetas.values())
    assert all(0.0 <= v < 0.0025 for v in reg.lambdas().values())


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        AdaptiveL2(tiny_model(), mode="sometimes")
    with pytest.raises(ValueError):
        AdaptiveL2(tiny_model(), A=-1.0)
