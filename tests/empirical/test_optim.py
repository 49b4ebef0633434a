"""Vectorized LARS (torch._foreach_*) against the per-parameter reference loop, float64, several steps."""

import copy

import pytest

torch = pytest.importorskip("torch")

from empirical.optim import LARS, build_optimizer, set_lr  # noqa: E402


def _params(seed: int) -> list[torch.nn.Parameter]:
    """Mixed shapes, including an all-zero weight (||p|| = 0) and a weight that will get a zero gradient."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (7,), (3, 2, 2, 2), (4,), (5, 5), (2, 3)]
    ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64)) for s in shapes]
    with torch.no_grad():
        ps[4].zero_()
    return ps


def _groups(ps, wd):
    return [
        {"params": [ps[0], ps[2], ps[4], ps[5]], "weight_decay": wd, "lars_exclude": False},
        {"params": [ps[1], ps[3]], "weight_decay": 0.0, "lars_exclude": True},
    ]


def _grads(ps, step: int) -> None:
    g = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
    ps[5].grad.zero_()  # ||g|| = 0 (with wd = 0 the trust ratio must fall back to 1)
    if step == 2:
        ps[2].grad = None  # a parameter without a gradient this step is left alone


@pytest.mark.parametrize("wd", [0.0, 1e-2])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_foreach_equals_reference_loop(wd, tensor_lr):
    ref_ps, vec_ps = _params(0), _params(0)
    lr0 = torch.tensor(0.5, dtype=torch.float64) if tensor_lr else 0.5
    ref = LARS(_groups(ref_ps, wd), lr=copy.deepcopy(lr0), weight_decay=wd, foreach=False)
    vec = LARS(_groups(vec_ps, wd), lr=copy.deepcopy(lr0), weight_decay=wd, foreach=True)
    for step in range(5):
        for ps in (ref_ps, vec_ps):
            _grads(ps, step)
        for opt in (ref, vec):
            set_lr(opt, 0.5 / (step + 1))
            opt.step()
    for a, b in zip(ref_ps, vec_ps, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        torch.testing.assert_close(ref.state[a]["mu"], vec.state[b]["mu"], rtol=0, atol=1e-10)
    assert not torch.equal(vec_ps[0], _params(0)[0])  # the steps moved the weights
    assert torch.isfinite(vec_ps[4]).all() and torch.isfinite(vec_ps[5]).all()


def test_foreach_zero_norms_use_trust_one():
    """||p|| = 0 and ||g|| = 0 each give q = 1, as the official code (no nan from 0 / 0)."""
    p = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = LARS([p, q], lr=1.0, weight_decay=0.0, foreach=True)
    p.grad = torch.ones(2, 2, dtype=torch.float64)
    q.grad = torch.zeros(3, dtype=torch.float64)
    opt.step()
    assert torch.equal(p.detach(), -torch.ones(2, 2, dtype=torch.float64))
    assert torch.equal(q.detach(), torch.ones(3, dtype=torch.float64))


def test_build_optimizer_foreach_switch_and_model_equality():
    """On a real model (ResNet blocks, BN, the diagonal projector) both paths give the same weights."""
    from empirical.models import SSLModel

    torch.manual_seed(0)
    base = SSLModel("tiny", "diagonal", None, True, num_classes=10).double()
    models = [copy.deepcopy(base), copy.deepcopy(base)]
    opts = [build_optimizer("lars", m, 4.8, 1e-6, foreach=f) for m, f in zip(models, (False, True), strict=True)]
    assert [o.foreach for o in opts] == [False, True]
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        for m, o in zip(models, opts, strict=True):
            o.zero_grad()
            _, z1, _, z2, logits = m(x, x.flip(-1))
            ((z1 - z2.roll(1, 0)).square().mean() + logits.square().mean()).backward()
            o.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_default_is_the_loop_on_cpu():
    """foreach=None picks the loop on the CPU (faster there), bit for bit the reference."""
    ps = [_params(0), _params(0)]
    opts = [
        LARS(_groups(p, 1e-2), lr=0.5, weight_decay=1e-2, foreach=f) for p, f in zip(ps, (None, False), strict=True)
    ]
    for step in range(3):
        for p, o in zip(ps, opts, strict=True):
            _grads(p, step)
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(*ps, strict=True))
    assert build_optimizer("lars", torch.nn.Linear(2, 2), 0.1, 0.0).foreach is None
