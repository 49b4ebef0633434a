"""Symbolic checks with sympy: Lemma 1 (Eqn 4) and -dL/dW = W X (Eqn 5-6) derived from Eqn 2 by sympy.diff,
and Theorem 3's ODE solved by sympy.dsolve, each compared with the package's closed forms numerically."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from theory.covariance import contrastive_covariance
from theory.losses import paper_loss
from theory.predict import sigma_trajectory

N, D = 3, 2


def eqn2_symbolic(z, za):
    """Eqn 2 (divided by N) for embeddings given as lists of sympy row vectors."""
    def logit(a, b):
        return -sum((a[k] - b[k]) ** 2 for k in range(len(a))) / 2

    total = 0
    for i in range(len(z)):
        pos = sp.exp(logit(z[i], za[i]))
        den = sum(sp.exp(logit(z[i], z[j])) for j in range(len(z)) if j != i) + pos
        total += -sp.log(pos / den)
    return total / len(z)


@pytest.fixture(scope="module")
def lemma1_gradients():
    zs = sp.Matrix(N, D, lambda i, k: sp.Symbol(f"z{i}{k}"))
    zas = sp.Matrix(N, D, lambda i, k: sp.Symbol(f"a{i}{k}"))
    loss = eqn2_symbolic([zs.row(i) for i in range(N)], [zas.row(i) for i in range(N)])
    symbols = list(zs) + list(zas)
    grad = [sp.diff(loss, s) for s in symbols]
    return sp.lambdify(symbols, [loss, *grad], "numpy", cse=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lemma1_embedding_gradients_from_sympy_diff(lemma1_gradients, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, D))
    za = z + 0.7 * rng.standard_normal((N, D))
    out = lemma1_gradients(*z.ravel(), *za.ravel())
    value, g, ga = paper_loss(z, za)
    assert float(value) == pytest.approx(float(out[0]), rel=1e-12)
    grad = np.array(out[1:], dtype=float)
    np.testing.assert_allclose(g.ravel(), grad[: N * D], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(ga.ravel(), grad[N * D :], rtol=1e-10, atol=1e-14)


@pytest.fixture(scope="module")
def one_layer_identity():
    """-dL/dW by sympy.diff of Eqn 2 with z = W x, and X of Eqn 6 (App. B.2 sign) with symbolic alpha."""
    rng = np.random.default_rng(42)
    x = sp.Matrix(np.round(rng.standard_normal((N, D)), 3).tolist()).applyfunc(sp.nsimplify)
    xa = sp.Matrix(np.round(rng.standard_normal((N, D)), 3).tolist()).applyfunc(sp.nsimplify)
    w = sp.Matrix(D, D, lambda i, k: sp.Symbol(f"w{i}{k}"))
    z = [(w * x.row(i).T).T for i in range(N)]
    za = [(w * xa.row(i).T).T for i in range(N)]
    loss = eqn2_symbolic(z, za)
    minus_grad = sp.Matrix(D, D, lambda i, k: -sp.diff(loss, w[i, k]))

    def sq(a, b):
        return sum((a[k] - b[k]) ** 2 for k in range(D))

    alpha = sp.zeros(N, N)
    for i in range(N):
        logits = [-sq(z[i], za[i] if j == i else z[j]) / 2 for j in range(N)]
        norm = sum(sp.exp(v) for v in logits)
        for j in range(N):
            alpha[i, j] = sp.exp(logits[j]) / norm
    big_x = sp.zeros(D, D)
    for i in range(N):
        inner = sp.zeros(D, 1)
        for j in range(N):
            if j != i:
                inner += alpha[i, j] * (xa.row(i) - x.row(j)).T + alpha[j, i] * (x.row(i) - x.row(j)).T
        big_x += inner * x.row(i) - (1 - alpha[i, i]) * (xa.row(i) - x.row(i)).T * xa.row(i)
    symbols = list(w)
    fun = sp.lambdify(symbols, [minus_grad, w * big_x / N, big_x / N], "numpy", cse=True)
    return fun, np.array(x, dtype=float), np.array(xa, dtype=float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minus_dl_dw_equals_w_x_symbolically(one_layer_identity, seed):
    fun, x, xa = one_layer_identity
    w = np.random.default_rng(seed).standard_normal((D, D))
    minus_grad, w_x, big_x = (np.array(m, dtype=float) for m in fun(*w.ravel()))
    np.testing.assert_allclose(minus_grad, w_x, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(big_x, contrastive_covariance(x, xa, w)[0], rtol=1e-10, atol=1e-14)


def dsolve_positive_branch(power: int):
    """sigma(t) with sigma' = lambda sigma^power, sigma(0) = sigma0, by sympy.dsolve (positive real branch)."""
    t = sp.Symbol("t", real=True)
    lam, s0 = sp.symbols("lambda sigma0", positive=True)
    f = sp.Function("sigma")
    ode = sp.Eq(f(t).diff(t), lam * f(t) ** power)
    solutions = sp.dsolve(ode, f(t))
    solutions = solutions if isinstance(solutions, list) else [solutions]
    c1 = sp.Symbol("C1")
    candidates = []
    for sol in solutions:
        assert sp.checkodesol(ode, sol)[0]
        for c in sp.solve(sp.Eq(sol.rhs.subs(t, 0), s0), c1):
            expr = sol.rhs.subs(c1, c)
            probe = complex(expr.subs({t: 0.1, lam: 0.7, s0: 0.6}).evalf())
            if abs(probe.imag) < 1e-12 and probe.real > 0 and abs(complex(expr.subs({t: 0, s0: 0.6})) - 0.6) < 1e-12:
                candidates.append(expr)
    assert candidates, "no positive real branch through sigma(0) = sigma0"
    return sp.lambdify((t, lam, s0), candidates[0], "numpy", cse=True)


@pytest.mark.parametrize(("layers", "power"), [(1, 1), (2, 3)])
def test_theorem3_sigma_matches_dsolve(layers, power):
    sol = dsolve_positive_branch(power)
    sigma0 = np.array([0.9, 0.5, 0.3])
    lam = np.array([0.8, 1.5, 0.4])
    t_end = 0.95 * np.min(1 / ((2 * layers - 2) * lam * sigma0 ** (2 * layers - 2))) if layers > 1 else 2.0
    times = np.linspace(0.0, t_end, 7)
    ours = sigma_trajectory(sigma0, lam, times, layers)
    for k in range(3):
        expected = np.array([complex(sol(t, lam[k], sigma0[k])).real for t in times])
        np.testing.assert_allclose(ours[:, k], expected, rtol=1e-10)
