"""info_nce / nt_xent against explicit loops in numpy float64."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import info_nce, nt_xent  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ref_info_nce(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """Official code: l(a, b) = mean_i -log softmax_j(a_i . b_j / t)[i]; symmetrized."""

    def one_way(a, b):
        total = 0.0
        for i in range(len(a)):
            logits = [a[i] @ b[j] / t for j in range(len(b))]
            total += -(logits[i] - np.log(np.sum(np.exp(logits))))
        return total / len(a)

    a, b = _unit(z1), _unit(z2)
    return one_way(a, b) / 2 + one_way(b, a) / 2


def ref_nt_xent(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """SimCLR: anchor k of the 2N, positive its other view, denominator over all j != k."""
    e = np.concatenate([_unit(z1), _unit(z2)])
    n = len(z1)
    total = 0.0
    for k in range(2 * n):
        pos = (k + n) % (2 * n)
        denom = sum(np.exp(e[k] @ e[j] / t) for j in range(2 * n) if j != k)
        total += -np.log(np.exp(e[k] @ e[pos] / t) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.1), (7, 5, 0.5), (16, 32, 0.1)])
def test_losses_match_loops(n, d, t):
    rng = np.random.default_rng(n * 100 + d)
    z1, z2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    got_i = info_nce(torch.tensor(z1), torch.tensor(z2), t)
    got_n = nt_xent(torch.tensor(z1), torch.tensor(z2), t)
    assert got_i.dtype == torch.float64 and got_n.dtype == torch.float64
    assert got_i.item() == pytest.approx(ref_info_nce(z1, z2, t), rel=1e-12)
    assert got_n.item() == pytest.approx(ref_nt_xent(z1, z2, t), rel=1e-12)
    # Same anchors and positives, but nt_xent adds the same-view negatives to every denominator.
    assert got_n.item() > got_i.item()


def test_losses_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(6, 4, generator=g, dtype=torch.float64),
        torch.randn(6, 4, generator=g, dtype=torch.float64),
    )
    for fn in (info_nce, nt_xent):
        assert fn(z1, z2) == pytest.approx(fn(3 * z1, 0.5 * z2).item(), rel=1e-12)
        assert fn(z1, z2) == pytest.approx(fn(z2, z1).item(), rel=1e-12)


def test_perfect_alignment_limits():
    """Orthogonal one-hot pairs with z1 = z2: info_nce -> log(1 + (N-1) e^{-1/t}) per anchor, by hand."""
    n, t = 4, 0.1
    z = torch.eye(n, dtype=torch.float64)
    expected = np.log(1 + (n - 1) * np.exp(-1 / t))
    assert info_nce(z, z, t).item() == pytest.approx(expected, rel=1e-12)
    # nt_xent: the other 2N-2 keys are 2(N-1) orthogonal vectors: log(1 + 2(N-1) e^{-1/t}).
    assert nt_xent(z, z, t).item() == pytest.approx(np.log(1 + 2 * (n - 1) * np.exp(-1 / t)), rel=1e-12)


@pytest.mark.parametrize("fn", [info_nce, nt_xent])
def test_low_precision_inputs_computed_in_float32(fn):
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    for dt in (torch.bfloat16, torch.float16):
        out = fn(z1.to(dt), z2.to(dt))
        assert out.dtype == torch.float32
        ref = fn(z1.to(dt).float(), z2.to(dt).float())
        assert out.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("fn", [info_nce, nt_xent])
def test_gradcheck(fn):
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, 0.3), (z1, z2))


@pytest.mark.parametrize("fn", [info_nce, nt_xent])
def test_gather_mean_over_ranks_equals_global_loss(fn):
    """Local anchors vs gathered keys: the mean of the per-rank losses is the global-batch loss."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = (
        torch.randn(8, 5, generator=g, dtype=torch.float64),
        torch.randn(8, 5, generator=g, dtype=torch.float64),
    )
    full = [torch.nn.functional.normalize(z, dim=1) for z in (z1, z2)]
    world, local = 4, 2
    losses = []
    for rank in range(world):
        sl = slice(rank * local, (rank + 1) * local)
        calls = iter(full)

        def fake_gather(x, sl=sl, calls=calls):
            f = next(calls)
            assert torch.allclose(f[sl], x)
            return torch.cat([f[: sl.start], x, f[sl.stop :]]), sl.start

        losses.append(fn(z1[sl], z2[sl], 0.1, gather=fake_gather))
    assert torch.stack(losses).mean().item() == pytest.approx(fn(z1, z2, 0.1).item(), rel=1e-12)


def test_shape_errors():
    with pytest.raises(ValueError, match="equal shape"):
        info_nce(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="equal shape"):
        nt_xent(torch.zeros(3), torch.zeros(3))


# ---- the theory's forms on unnormalized z: paper (Eqn 2) and dot ------------------------------------------------


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.1), (9, 4, 0.5), (32, 16, 0.2)])
def test_paper_and_dot_equal_theory_losses(n, d, t):
    """empirical.losses.paper_loss / dot_loss are theory.losses' paper_loss / dot_loss in float64."""
    from empirical.losses import dot_loss, paper_loss
    from theory import losses as tl

    rng = np.random.default_rng(10 * n + d)
    z1, z2 = 1.5 * rng.normal(size=(n, d)), 1.5 * rng.normal(size=(n, d))
    assert paper_loss(torch.tensor(z1), torch.tensor(z2)).item() == pytest.approx(
        float(tl.paper_loss(z1, z2)[0]), rel=1e-10, abs=1e-10
    )
    assert dot_loss(torch.tensor(z1), torch.tensor(z2), t).item() == pytest.approx(
        float(tl.dot_loss(z1, z2, t)[0]), rel=1e-10, abs=1e-10
    )


@pytest.mark.parametrize("form", ["paper", "dot"])
def test_linear_projector_gradient_is_minus_w_x(form):
    """Lemma 2 through autograd: for z = W r, dL/dW = -W X(r; W) with X from theory.contrastive_covariance."""
    from empirical.losses import dot_loss, paper_loss
    from theory.covariance import contrastive_covariance

    rng = np.random.default_rng(5)
    r1 = rng.normal(size=(24, 6))
    r2 = r1 + 0.7 * rng.normal(size=r1.shape)
    w0 = 0.5 * rng.normal(size=(4, 6))
    w = torch.tensor(w0, requires_grad=True)
    z1, z2 = torch.tensor(r1) @ w.T, torch.tensor(r2) @ w.T
    loss = paper_loss(z1, z2) if form == "paper" else dot_loss(z1, z2, 0.3)
    loss.backward()
    x = contrastive_covariance(r1, r2, w0, form, 0.3)[0]
    np.testing.assert_allclose(w.grad.numpy(), -w0 @ x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["paper", "dot"])
def test_paper_and_dot_gather_mean_over_ranks_equals_global_loss(name):
    from empirical.losses import dot_loss, paper_loss

    fn = paper_loss if name == "paper" else (lambda a, b, gather=None: dot_loss(a, b, 0.2, gather=gather))
    g = torch.Generator().manual_seed(4)
    z1, z2 = (torch.randn(8, 5, generator=g, dtype=torch.float64) for _ in range(2))
    key = z1 if name == "paper" else z2  # paper: negatives from the anchors' own view; dot: the other view
    losses = []
    for rank in range(4):
        sl = slice(2 * rank, 2 * rank + 2)

        def fake_gather(x, sl=sl):
            assert torch.equal(key[sl], x)
            return key, sl.start

        losses.append(fn(z1[sl], z2[sl], gather=fake_gather))
    assert torch.stack(losses).mean().item() == pytest.approx(fn(z1, z2).item(), rel=1e-12)


@pytest.mark.parametrize("name", ["info_nce", "nt_xent", "paper", "dot"])
def test_registry_losses_and_their_x_forms(name):
    """Each registry loss is its function, and its X form is the one its weight gradient takes: -dL/dW = W X for
    paper and dot (the monitor's X), the exact normalized gradient for info_nce's cosine form, none for nt_xent."""
    from empirical.losses import REGISTRY, canonical
    from empirical.xmonitor import contrastive_x, cosine_neg_grad

    loss = REGISTRY[name]
    rng = np.random.default_rng(7)
    r1 = rng.normal(size=(16, 5))
    r2 = r1 + 0.6 * rng.normal(size=r1.shape)
    w0 = 0.7 * rng.normal(size=(3, 5))
    w = torch.tensor(w0, requires_grad=True)
    value = loss.fn(torch.tensor(r1) @ w.T, torch.tensor(r2) @ w.T, 0.3)
    value.backward()
    if loss.x_form is None:
        assert name == "nt_xent"
    elif loss.x_form == "cosine":
        np.testing.assert_allclose(-w.grad.numpy(), cosine_neg_grad(r1, r2, w0, 0.3), rtol=1e-9, atol=1e-12)
        assert loss.symmetric
    else:
        x, _ = contrastive_x(r1, r2, w0, loss.x_form, 0.3, loss.symmetric)
        np.testing.assert_allclose(-w.grad.numpy(), w0 @ x, rtol=1e-9, atol=1e-12)
    assert canonical({"info_nce": "infonce", "nt_xent": "ntxent"}.get(name, name)) == name


def test_diagnose_names_the_registry_losses_that_have_an_x():
    from empirical.diagnose import LOSSES
    from empirical.losses import REGISTRY

    assert set(LOSSES) == {name for name, loss in REGISTRY.items() if loss.x_form}
