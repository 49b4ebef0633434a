"""LARS and the warm-up + cosine schedule of the official recipe (paper App. D) against hand computations."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical.optim import LARS, build_optimizer, lr_at, param_groups  # noqa: E402


def test_lars_two_steps_by_hand():
    w0 = np.array([[3.0, 0.0], [0.0, 4.0]])  # ||w|| = 5
    b0 = np.array([1.0, -1.0])
    gw = np.array([[0.0, 0.6], [0.8, 0.0]])
    gb = np.array([0.5, 0.25])
    lr, wd, eta, mom = 0.1, 0.01, 0.001, 0.9
    w = torch.nn.Parameter(torch.tensor(w0))
    b = torch.nn.Parameter(torch.tensor(b0))
    groups = [
        {"params": [w], "lars_exclude": False, "weight_decay": wd},
        {"params": [b], "lars_exclude": True, "weight_decay": 0.0},
    ]
    opt = LARS(groups, lr=lr, weight_decay=wd, eta=eta)
    mu_w, mu_b, w_ref, b_ref = np.zeros((2, 2)), np.zeros(2), w0.copy(), b0.copy()
    for _ in range(2):
        w.grad, b.grad = torch.tensor(gw), torch.tensor(gb)
        opt.step()
        d = gw + wd * w_ref
        q = eta * np.linalg.norm(w_ref) / np.linalg.norm(d)
        mu_w = mom * mu_w + q * d
        w_ref = w_ref - lr * mu_w
        mu_b = mom * mu_b + gb  # excluded: no decay, no trust ratio
        b_ref = b_ref - lr * mu_b
    np.testing.assert_allclose(w.detach().numpy(), w_ref, rtol=1e-14)
    np.testing.assert_allclose(b.detach().numpy(), b_ref, rtol=1e-14)
    # First step by hand: q = 0.001 * 5 / ||gw + 0.01 w0|| exactly.
    d0 = gw + wd * w0
    assert np.linalg.norm(d0) == pytest.approx(math.sqrt(0.03**2 * 1 + 0.6**2 + 0.8**2 + 0.04**2))


def test_lars_zero_norm_uses_trust_one():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = LARS([p], lr=1.0, weight_decay=0.0)
    p.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(p.detach(), -torch.ones(2, 2))


def test_param_groups_exclude_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    decay, plain = param_groups(model, 1e-6)
    assert [tuple(p.shape) for p in decay["params"]] == [(4, 3)]
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0 and plain["lars_exclude"]
    for name in ("lars", "sgd", "adamw"):
        assert build_optimizer(name, model, 0.1, 1e-6).param_groups[1]["weight_decay"] == 0.0


def test_exclusion_is_by_role_not_by_shape():
    """The diagonal projector's 1-D weight is trust-ratio scaled and decayed; every norm parameter and bias is not."""
    from empirical.models import SSLModel
    from empirical.syncbn import convert_sync_batchnorm

    model = SSLModel("tiny", "diagonal", None, True, num_classes=10)
    decay, plain = (set(map(id, g["params"])) for g in param_groups(model, 1e-6))
    assert id(model.projector.weight) in decay and model.projector.weight.ndim == 1
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
    assert norms and all(id(p) in plain for m in norms for p in m.parameters())
    assert id(model.probe.bias) in plain and id(model.probe.weight) in decay
    assert decay.isdisjoint(plain) and len(decay | plain) == len(list(model.parameters()))
    # Other norm types and their synchronized versions, and a parametrized weight (orthogonal projector).
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.GroupNorm(2, 4),
        torch.nn.LayerNorm(4),
        torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(4, 4)),
    )
    net = convert_sync_batchnorm(torch.nn.Sequential(net, torch.nn.BatchNorm1d(4)), "cpu")
    decay, plain = param_groups(net, 1e-6)
    d = {id(p) for p in decay["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in d}
    assert names == {"0.0.weight", "0.3.parametrizations.weight.original"}, names
    opt = build_optimizer("lars", SSLModel("tiny", "diagonal", None, True), 4.8, 1e-6)
    assert opt.param_groups[0]["lars_exclude"] is False and opt.param_groups[0]["weight_decay"] == 1e-6


def test_schedule_values():
    base, warm, total = 4.8, 10, 110
    assert lr_at(0, base, warm, total) == 0.0
    assert lr_at(5, base, warm, total) == pytest.approx(2.4)
    assert lr_at(10, base, warm, total) == pytest.approx(base)
    assert lr_at(60, base, warm, total) == pytest.approx((base + 0.001 * base) / 2)
    assert lr_at(110, base, warm, total) == pytest.approx(0.001 * base)
    assert lr_at(35, base, warm, total) == pytest.approx(
        0.001 * base + (base - 0.001 * base) * (1 + math.cos(math.pi / 4)) / 2
    )
    after = [lr_at(s, base, warm, total) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert lr_at(0, 1.0, 0, 10) == 1.0  # no warm-up
