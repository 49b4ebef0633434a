"""The training step as one callable: eager by default, and a compiler that fails on the first call, even
halfway through the step, falls back to eager with the eager run's weights, statistics and momentum, bit for bit."""

import functools

import pytest

torch = pytest.importorskip("torch")

import empirical.train as tr  # noqa: E402
from empirical.models import SSLModel  # noqa: E402
from empirical.optim import build_optimizer, set_lr  # noqa: E402
from empirical.viewwise import stack_views  # noqa: E402

B, SIZE, STEPS = 8, 16, 3


def _run(compile_mode: str, monkeypatch=None, compile_fn=None):
    torch.manual_seed(0)
    model = stack_views(SSLModel("tiny", "mlp", None, True, num_classes=3, seed=0))
    opt = build_optimizer("lars", model, 0.5, 1e-6)
    for g in opt.param_groups:
        g["lr"] = torch.tensor(float(g["lr"]))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    if compile_fn is not None:
        monkeypatch.setattr(tr.torch, "compile", compile_fn)
    step = functools.partial(tr.train_step, model, opt, scaler, "info_nce", 0.1, None, None)
    step_fn = tr.CompiledOrEager(step, compile_mode, restore=(model, opt, scaler))
    g = torch.Generator().manual_seed(1)
    losses = []
    for k in range(STEPS):
        set_lr(opt, 0.5 / (k + 1))  # the schedule writes into the 0-d tensor the step reads
        v1, v2 = torch.randn(2, B, 3, SIZE, SIZE, generator=g)
        losses.append(step_fn(v1, v2, torch.randint(0, 3, (B,), generator=g))[0].detach())
    momentum = [s["mu"] for s in opt.state.values()]
    return model.state_dict(), momentum, losses


def _assert_identical(a, b):
    (sa, ma, la), (sb, mb, lb) = a, b
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(ma) == len(mb) > 0 and all(torch.equal(x, y) for x, y in zip(ma, mb, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def test_compiler_failing_halfway_falls_back_to_the_eager_step_bit_for_bit(monkeypatch, capsys):
    eager = _run("none")
    assert not torch.equal(eager[2][0], eager[2][-1])  # the step changes the model

    def half_then_fail(fn, mode=None):
        assert mode == "reduce-overhead"

        def compiled(*args):
            fn(*args)  # forward, backward, BN statistics and the LARS update all happen, then the failure
            raise RuntimeError("InductorError: capture failed")

        return compiled

    fallback = _run("reduce-overhead", monkeypatch, half_then_fail)
    assert "torch.compile (mode reduce-overhead) failed (RuntimeError: InductorError" in capsys.readouterr().err
    _assert_identical(fallback, eager)


def test_step_returns_the_extras_only_when_asked():
    torch.manual_seed(0)
    model = stack_views(SSLModel("tiny", "linear", None, True, num_classes=3, seed=0))
    opt = build_optimizer("lars", model, 0.5, 1e-6)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x, y = torch.randn(2, B, 3, SIZE, SIZE), torch.randint(0, 3, (B,))
    w = model.projector_weights()[0]
    before = w.detach().clone()
    seen = []
    out = tr.train_step(model, opt, scaler, "info_nce", 0.1, None, None, *x, y, False,
                        lambda: seen.append(w.detach().clone()) or "ratios")
    assert out[4] == "ratios" and torch.equal(seen[0], before) and not torch.equal(w, before)
    poisoned = tr.train_step(model, opt, scaler, "info_nce", 0.1, None, None, *x, y, True)
    assert torch.isnan(poisoned[0]) and poisoned[4] is None
