"""empirical.compare_x: X from features is theory's X, batch by batch, in the features' support."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import compare_x as cx  # noqa: E402
from empirical import linear_maps as lm  # noqa: E402
from theory import contrastive_covariance  # noqa: E402


def _views(n=256, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ np.diag(np.linspace(1.0, 2.0, d))
    return x, x + 0.5 * rng.standard_normal((n, d))


def test_linear_projector_x_is_theory_x():
    x, x_aug = _views()
    proj = torch.nn.Linear(6, 4, bias=False)
    w = np.random.default_rng(1).standard_normal((4, 6)) * 0.3
    proj.weight.data = torch.as_tensor(w, dtype=torch.float32)
    weight, info = lm.projector_map(proj, "linear", x)
    np.testing.assert_allclose(weight, proj.weight.detach().double().numpy())
    assert info["kind"] == "exact"
    samples = cx.batched_x(x, x_aug, weight, 64)  # 256 pairs: batches of 8, so that there are 32 for the test
    assert cx.x_batch(64, 256) == 8 and len(samples) == cx.MIN_BATCHES == 32
    direct = [contrastive_covariance(x[s : s + 8], x_aug[s : s + 8], weight)[0] for s in range(0, 256, 8)]
    np.testing.assert_allclose(samples, np.stack(direct), rtol=1e-12, atol=1e-12)
    # full-rank features: the support basis is a rotation, so X's eigenvalues are those of theory's X in r-space
    res = cx.x_analysis(x, x_aug, x @ weight.T, weight, 64, 0.1)
    assert res["support_dim"] == 6
    np.testing.assert_allclose(
        res["trained"]["eigenvalues"], np.linalg.eigvalsh(np.mean(direct, 0))[::-1], rtol=1e-9, atol=1e-12
    )
    apriori = np.mean(
        [contrastive_covariance(x[s : s + 8], x_aug[s : s + 8], 0 * weight)[0] for s in range(0, 256, 8)], 0
    )
    np.testing.assert_allclose(res["apriori"]["eigenvalues"], np.linalg.eigvalsh(apriori)[::-1], atol=1e-12)
