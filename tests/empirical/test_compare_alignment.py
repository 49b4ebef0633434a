"""empirical.compare_alignment: aligned layers score 1, random ones near chance."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import compare_alignment as ca  # noqa: E402
from theory import effective_rank  # noqa: E402


def test_alignment_of_aligned_and_random_layers():
    rng = np.random.default_rng(0)
    d = 16
    q = [np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(3)]
    s1, s2 = np.exp(-0.3 * np.arange(d)), np.exp(-0.2 * np.arange(d))
    w1 = q[1] @ np.diag(s1) @ q[0].T
    aligned = ca.pair_alignment(w1, q[2] @ np.diag(s2) @ q[1].T)  # V2 = U1 (Theorem 2's limit)
    assert all(v > 0.999 for v in aligned["scores"].values())
    assert aligned["subspace_overlap_top_k"] > 0.999 and not aligned["w2_degenerate"]
    np.testing.assert_allclose(aligned["sigma2"], s2)
    rand = ca.pair_alignment(w1, rng.standard_normal((d, d)))
    assert rand["scores"]["16"] < 0.5 and abs(rand["erank1"] - effective_rank(s1)) < 1e-12
