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
