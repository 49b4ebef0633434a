"""Predictions: Theorem 3 (Eqn 10) closed form, blow-up time, subspace overlap, alignment, conservation law."""

from __future__ import annotations

import numpy as np
import pytest
from _theory_helpers import random_orthogonal, random_views
from scipy.integrate import solve_ivp
from scipy.linalg import subspace_angles

from theory.dynamics import loss_and_gradients, run_gd, run_ode
from theory.predict import (
    adjacent_alignments,
    alignment_matrix,
    alignment_score,
    blowup_time,
    collapsed_input_subspace,
    conservation_drift,
    conservation_drifts,
    conserved_quantities,
    gd_conservation_increment,
    layer_alignment,
    mode_groups,
    negative_subspace,
    predicted_collapsed_modes,
    sigma_trajectory,
    subspace_overlap,
    theorem3_check,
)
from theory.spectrum import COLLAPSE_RTOL

SIGMA0 = np.array([0.9, 0.5, 0.2, 0.7])
LAM = np.array([0.8, 1.5, -0.6, 0.0])


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_sigma_trajectory_solves_eqn10_residual(layers):
    """d sigma/dt = lambda sigma^(2L-1) (Eqn 10 for L aligned, balanced layers), by central differences."""
    t_end = 0.8 * np.min(blowup_time(SIGMA0, LAM, layers)) if layers > 1 else 1.0
    times = np.linspace(0.0, t_end, 9)[1:-1]
    h = 1e-6
    sig = sigma_trajectory(SIGMA0, LAM, times, layers)
    deriv = (sigma_trajectory(SIGMA0, LAM, times + h, layers) - sigma_trajectory(SIGMA0, LAM, times - h, layers)) / (
        2 * h
    )
    np.testing.assert_allclose(deriv, LAM * sig ** (2 * layers - 1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sigma_trajectory(SIGMA0, LAM, np.array([0.0]), layers)[0], SIGMA0, rtol=1e-14)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_sigma_trajectory_matches_numerical_ode(layers):
    t_end = 0.9 * np.min(blowup_time(SIGMA0, LAM, layers)) if layers > 1 else 1.5
    times = np.linspace(0.0, t_end, 6)
    sol = solve_ivp(lambda _t, s: LAM * s ** (2 * layers - 1), (0.0, t_end), SIGMA0, t_eval=times,
                    method="DOP853", rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sigma_trajectory(SIGMA0, LAM, times, layers), sol.y.T, rtol=1e-8)


def test_sigma_trajectory_one_layer_is_exponential():
    times = np.array([0.0, 0.3, 2.0])
    np.testing.assert_allclose(sigma_trajectory(SIGMA0, LAM, times, 1),
                               SIGMA0[None, :] * np.exp(np.outer(times, LAM)), rtol=1e-13)


@pytest.mark.parametrize("layers", [2, 3, 4])
def test_blowup_time_formula_and_trajectory_infinite_past_it(layers):
    p = 2 * layers - 2
    t_star = blowup_time(SIGMA0, LAM, layers)
    expected = np.where(LAM > 0, 1.0 / (p * np.where(LAM > 0, LAM, 1.0) * SIGMA0**p), np.inf)
    np.testing.assert_allclose(t_star, expected, rtol=1e-14)
    assert np.isinf(t_star[2]) and np.isinf(t_star[3])  # lambda < 0 and lambda = 0 never blow up
    for k in (0, 1):
        before = sigma_trajectory(SIGMA0[k : k + 1], LAM[k : k + 1], np.array([0.999 * t_star[k]]), layers)
        after = sigma_trajectory(SIGMA0[k : k + 1], LAM[k : k + 1], np.array([1.001 * t_star[k]]), layers)
        assert np.isfinite(before).all() and before[0, 0] > 3 * SIGMA0[k]
        assert np.isinf(after).all()
    np.testing.assert_array_equal(blowup_time(SIGMA0, LAM, 1), np.inf)


def test_blowup_time_two_layers_is_theorem3():
    """Theorem 3: sigma = sigma0 / sqrt(1 - 2 lambda sigma0^2 t) blows up at t* = 1 / (2 lambda sigma0^2)."""
    assert blowup_time(np.array([0.5]), np.array([2.0]), 2)[0] == pytest.approx(1.0)
    t = np.array([0.0, 0.5, 0.75])
    np.testing.assert_allclose(sigma_trajectory(np.array([0.5]), np.array([2.0]), t, 2)[:, 0],
                               0.5 / np.sqrt(1 - 2 * 2.0 * 0.25 * t), rtol=1e-13)


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_theorem3_check_closed_form_matches_simulation(layers, seed):
    rng = np.random.default_rng(seed)
    q = random_orthogonal(rng, 4)
    lam = np.array([1.2, 0.7, 0.3, 0.1])
    cov = q @ np.diag(lam) @ q.T
    sigma0 = rng.uniform(0.3, 0.8, 4)
    out = theorem3_check(cov, sigma0, layers, records=20)
    assert out["max_relative_error"] < 1e-5
    np.testing.assert_allclose(out["lambda"], lam, rtol=1e-12)
    # 90% of the earliest blow-up time by default: the leading mode must have grown visibly
    assert out["times"][-1] == pytest.approx(0.9 * np.min(blowup_time(sigma0, lam, layers)))
    assert np.max(out["simulated"][-1] / sigma0) > 1.3
    np.testing.assert_array_equal(out["predicted_collapsed"], out["observed_collapsed"])


def test_predicted_collapsed_modes_rule():
    sigma0 = np.array([1.0, 0.5, 0.05, 0.01])
    lam = np.array([1.0, 1.0, 1.0, 1.0])
    time = 0.45
    got = predicted_collapsed_modes(sigma0, lam, time, layers=2)
    sig = sigma0 / np.sqrt(1 - 2 * lam * sigma0**2 * time)
    var = sig**4
    np.testing.assert_array_equal(got, var <= COLLAPSE_RTOL * var.max())
    assert got.tolist() == [False, False, True, True]


def test_subspace_overlap_identity_orthogonal_and_principal_angles():
    rng = np.random.default_rng(3)
    q = random_orthogonal(rng, 6)
    a, b = q[:, :2], q[:, 2:4]
    assert subspace_overlap(a, a) == pytest.approx(1.0)
    assert subspace_overlap(a, b) == pytest.approx(0.0, abs=1e-14)
    assert subspace_overlap(np.zeros((6, 0)), np.zeros((6, 0))) == 1.0
    # a generic pair: mean squared cosine of the principal angles (scipy, independent route)
    c = np.linalg.qr(rng.standard_normal((6, 2)))[0]
    d = np.linalg.qr(rng.standard_normal((6, 2)))[0]
    assert subspace_overlap(c, d) == pytest.approx(np.mean(np.cos(subspace_angles(c, d)) ** 2), rel=1e-12)
    # invariance: a common rotation, and a change of basis inside each subspace
    r = random_orthogonal(rng, 6)
    rot = random_orthogonal(rng, 2)
    assert subspace_overlap(r @ c, r @ d) == pytest.approx(subspace_overlap(c, d), rel=1e-12)
    assert subspace_overlap(c @ rot, d) == pytest.approx(subspace_overlap(c, d), rel=1e-12)
    # different dimensions: a subspace contained in a bigger one
    assert subspace_overlap(q[:, :1], q[:, :2]) == pytest.approx(0.5)


def test_negative_subspace_and_collapsed_input_subspace():
    rng = np.random.default_rng(4)
    q = random_orthogonal(rng, 5)
    cov = q @ np.diag([2.0, 1.0, 0.001, -0.5, -1.5]) @ q.T
    neg = negative_subspace(cov)
    assert neg.shape == (5, 2)
    assert subspace_overlap(neg, q[:, 3:]) == pytest.approx(1.0)
    u = random_orthogonal(rng, 5)
    w = u @ np.diag([3.0, 2.0, 1.0, 1e-3, 1e-5]) @ q.T
    assert subspace_overlap(collapsed_input_subspace(w, 2), q[:, 3:]) == pytest.approx(1.0)
    assert collapsed_input_subspace(w, 0).shape == (5, 0)


def test_alignment_matrix_of_constructed_aligned_layers_is_identity():
    """W1 = U1 S1 V1^T, W2 = Q S2 U1^T (V2 = U1, descending distinct S) gives |V2^T U1| = I (Theorem 2)."""
    rng = np.random.default_rng(5)
    d = 5
    u1, v1, q = (random_orthogonal(rng, d) for _ in range(3))
    s1 = np.diag([3.0, 2.0, 1.0, 0.5, 0.1])
    s2 = np.diag([4.0, 1.5, 0.9, 0.3, 0.2])
    w1 = u1 @ s1 @ v1.T
    a = alignment_matrix(w1, q @ s2 @ u1.T)
    np.testing.assert_allclose(a, np.eye(d), atol=1e-10)
    assert alignment_score(a) == pytest.approx(1.0)
    # a permutation of W2's right singular vectors shows up as the permutation in A
    perm = np.eye(d)[[1, 0, 2, 4, 3]]
    a_perm = alignment_matrix(w1, q @ s2 @ (u1 @ perm).T)
    np.testing.assert_allclose(a_perm, perm.T, atol=1e-10)
    assert alignment_score(a_perm) == pytest.approx(1 / 5)
    assert alignment_score(a_perm, modes=3) == pytest.approx(1 / 3)


def test_conserved_quantities_constant_under_infonce_flow():
    rng = np.random.default_rng(6)
    x, xa = random_views(rng, 10, 3)
    w0 = [0.8 * rng.standard_normal((3, 3)), 0.8 * rng.standard_normal((3, 3))]
    traj = run_ode(w0, 3.0, views=(x, xa), records=6, rtol=1e-10, atol=1e-12)
    c0 = conserved_quantities(w0)[0]
    grew = np.linalg.norm(traj.final[0]) / np.linalg.norm(w0[0])
    assert grew > 1.2  # the flow actually moved the weights
    for k in range(len(traj.times)):
        ck = conserved_quantities([traj.weights[0][k], traj.weights[1][k]])[0]
        np.testing.assert_allclose(ck, c0, atol=1e-7 * np.linalg.norm(traj.weights[0][k]) ** 2)
    assert conservation_drift(w0, traj.final) < 1e-7


def test_conserved_quantities_three_layers_and_drift_definition():
    rng = np.random.default_rng(7)
    ws = [rng.standard_normal((3, 3)) for _ in range(3)]
    cq = conserved_quantities(ws)
    assert len(cq) == 2
    np.testing.assert_allclose(cq[1], ws[1] @ ws[1].T - ws[2].T @ ws[2])
    assert conservation_drift(ws, ws) == 0.0
    moved = [ws[0] + 0.1, ws[1], ws[2]]
    c_old, c_new = conserved_quantities(ws)[0], conserved_quantities(moved)[0]
    assert conservation_drift(ws, moved) == pytest.approx(
        np.linalg.norm(c_new - c_old) / np.linalg.norm(moved[0] @ moved[0].T))


def test_conservation_drift_of_gd_is_first_order_in_lr():
    """R0.3: small-lr full-batch gd keeps W1W1^T - W2^TW2 constant up to O(lr) drift."""
    rng = np.random.default_rng(8)
    x, xa = random_views(rng, 10, 3)
    w0 = [0.8 * rng.standard_normal((3, 3)), 0.8 * rng.standard_normal((3, 3))]
    drifts = [conservation_drift(w0, run_gd(w0, round(1.0 / lr), lr, (x, xa), record_every=10**6).final)
              for lr in (4e-3, 2e-3)]
    assert drifts[1] < 1e-2
    assert 1.6 < drifts[0] / drifts[1] < 2.4


def test_predicted_collapsed_modes_past_blowup_keeps_blown_up_mode():
    sigma0 = np.array([1.0, 0.5, 0.1])
    lam = np.ones(3)
    time = 0.6  # past t* = 0.5 of mode 0, before t* = 2 of mode 1
    assert np.isinf(sigma_trajectory(sigma0, lam, np.array([time]), 2)[0, 0])
    got = predicted_collapsed_modes(sigma0, lam, time, layers=2)
    assert not got[0]  # an infinite mode is not collapsed
    assert got[2]


def test_sigma_trajectory_zero_mode_stays_zero_without_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sigma_trajectory(np.array([0.0, 0.5]), np.array([1.0, 1.0]), np.array([0.0, 0.1]), 2)
    assert out[1, 0] == 0.0


def aligned_pair(rng, s1, s2, perm=None, d_in=None, d_out=None):
    """W1 = U1 S1 V1^T, W2 = Q S2 V2^T with V2 = U1 (columns permuted by ``perm``): Theorem 2's limit."""
    h = len(s1)
    u1 = random_orthogonal(rng, h)
    v1 = random_orthogonal(rng, d_in or h)[:, :h]
    q = random_orthogonal(rng, d_out or h)[:, :h]
    v2 = u1 if perm is None else u1[:, perm]
    return u1, u1 @ np.diag(s1) @ v1.T, q @ np.diag(s2) @ v2.T


def test_layer_alignment_survives_a_swapped_degenerate_pair():
    """sigma 2.68 / 2.60 in W1 and swapped in W2 (the 2-layer paper-init case): the rank-order diagonal
    reads 0.6, the group measure 1, with the pair in one group; the von Neumann score loses only the swap's
    (x_1 - x_2)(y_1 - y_2) / sum x~ y~ (squared singular values, centred)."""
    rng = np.random.default_rng(11)
    s = np.array([4.0, 2.68, 2.60, 1.5, 0.9, 1e-4, 1e-5, 1e-6])
    _, w1, w2 = aligned_pair(rng, s, s, perm=[0, 2, 1, 3, 4, 5, 6, 7])
    al = layer_alignment(w1, w2, surviving=5)
    assert al.groups == [(0, 1), (1, 2), (3, 1), (4, 1)]
    assert al.grouped_score == pytest.approx(1.0, abs=1e-10)
    x = np.where(np.arange(8) < 5, s**2, 0.0)
    xc = x - x.mean()
    assert al.score >= 0.99 and al.score == pytest.approx(1 - (x[1] - x[2]) ** 2 / (xc @ xc), abs=1e-10)
    assert al.diagonal_score == pytest.approx(alignment_score(alignment_matrix(w1, w2), 5))
    assert al.diagonal_score < 0.65
    np.testing.assert_allclose(al.matrix, alignment_matrix(w1, w2), atol=1e-12)
    # the chance level for these group sizes: (1 + 4 + 1 + 1) / (8 * 5)
    assert al.grouped_chance == pytest.approx(7 / 40) and al.chance == 0.0
    for cos in al.cut_cosines:
        np.testing.assert_allclose(cos, 1.0, atol=1e-10)
    # a rotation inside the degenerate pair (not just a swap) changes nothing
    u1, w1, _ = aligned_pair(np.random.default_rng(12), s, s)
    c, t = np.cos(0.7), np.sin(0.7)
    v2 = u1.copy()
    v2[:, 1], v2[:, 2] = c * u1[:, 1] + t * u1[:, 2], -t * u1[:, 1] + c * u1[:, 2]
    w2 = random_orthogonal(rng, 8) @ np.diag(s) @ v2.T
    assert layer_alignment(w1, w2, 5).grouped_score == pytest.approx(1.0, abs=1e-10)
    # the von Neumann score is continuous there: the near-degenerate mix costs sin^2 (x_1 - x_2)^2 / sum x~^2
    assert layer_alignment(w1, w2, 5).score == pytest.approx(1 - t**2 * (x[1] - x[2]) ** 2 / (xc @ xc), abs=1e-10)


@pytest.mark.parametrize("theta", [0.0, 0.3, 0.9, np.pi / 2])
def test_layer_alignment_of_a_rotated_surviving_subspace_is_cos_squared(theta):
    """V2[:, k] = cos(theta) u1_k + sin(theta) u1_{m+k} for the m surviving modes: every principal angle
    between the surviving subspaces is theta, so the grouped score = cos^2(theta) exactly, and so is the von
    Neumann score (the truncated layers' product keeps cos^2(theta) of its energy, and mean x~ y~ terms
    cancel: sum_k x~_k y~_k cos^2 + the cross terms, all with the collapsed entries equal)."""
    rng = np.random.default_rng(13)
    m, h = 3, 7
    s1 = np.array([3.0, 2.0, 1.2, 1e-3, 5e-4, 2e-4, 1e-4])
    u1, w1, _ = aligned_pair(rng, s1, s1)
    v2 = u1.copy()
    for k in range(m):
        v2[:, k] = np.cos(theta) * u1[:, k] + np.sin(theta) * u1[:, m + k]
        v2[:, m + k] = -np.sin(theta) * u1[:, k] + np.cos(theta) * u1[:, m + k]
    w2 = random_orthogonal(rng, h) @ np.diag(s1) @ v2.T
    al = layer_alignment(w1, w2, surviving=m)
    assert al.groups == [(0, 1), (1, 1), (2, 1)]
    assert al.grouped_score == pytest.approx(np.cos(theta) ** 2, abs=1e-10)
    # von Neumann score by the closed form for this coupling: the m surviving modes keep cos^2 of their
    # diagonal pairing and send sin^2 to collapsed modes, where x~ = -mean x
    x = np.where(np.arange(h) < m, s1**2, 0.0)
    xc = x - x.mean()
    top = xc @ xc
    coupled = np.cos(theta) ** 2 * np.sum(xc[:m] ** 2) + 2 * np.sin(theta) ** 2 * np.sum(xc[:m]) * xc[-1] \
        + np.cos(theta) ** 2 * m * xc[-1] ** 2 + (h - 2 * m) * xc[-1] ** 2
    assert al.score == pytest.approx(coupled / top, abs=1e-10)
    np.testing.assert_allclose(al.cut_cosines[-1], abs(np.cos(theta)), atol=1e-10)
    # and against scipy's principal angles between the top-m spans
    cos_scipy = np.cos(subspace_angles(u1[:, :m], np.linalg.svd(w2)[2][:m].T))
    np.testing.assert_allclose(np.sort(al.cut_cosines[-1]), np.sort(cos_scipy), atol=1e-8)


def test_layer_alignment_chance_level_by_monte_carlo():
    """Independent Haar factors with fixed singular values (groups of 3, 2, 1, 1 in h = 10): the mean grouped
    score over 3000 draws matches sum_g |g|^2 / (h m) = 15 / 70 within 4 standard errors; the von Neumann
    score's mean is 0 and its spread the closed-form chance_sd."""
    rng = np.random.default_rng(14)
    h = 10
    s = np.array([5.0, 5.0, 5.0, 3.0, 3.0, 2.0, 1.0, 0.1, 0.05, 0.01])
    scores = []
    for _ in range(3000):
        w1 = random_orthogonal(rng, h) @ np.diag(s) @ random_orthogonal(rng, h).T
        w2 = random_orthogonal(rng, h) @ np.diag(s) @ random_orthogonal(rng, h).T
        al = layer_alignment(w1, w2, surviving=7)
        scores.append((al.grouped_score, al.score))
    grouped, vn = np.array(scores).T
    assert al.groups == [(0, 3), (3, 2), (5, 1), (6, 1)]
    assert al.grouped_chance == pytest.approx(15 / 70)
    se = np.std(grouped) / np.sqrt(len(grouped))
    assert abs(np.mean(grouped) - al.grouped_chance) < 4 * se
    assert se < 0.005
    assert al.chance == 0.0 and abs(np.mean(vn)) < 4 * np.std(vn) / np.sqrt(len(vn))
    assert np.std(vn) == pytest.approx(al.chance_sd, rel=0.08)


def test_gaussian_random_layers_score_chance_on_average():
    """Gaussian layers have Haar singular vectors independent of their singular values, so E[score - chance]
    = 0 whatever groups each draw has (600 draws, 4 standard errors)."""
    rng = np.random.default_rng(15)
    diff = []
    for _ in range(600):
        al = layer_alignment(rng.standard_normal((6, 6)), rng.standard_normal((6, 6)))
        diff.append(al.score - al.chance)
    assert abs(np.mean(diff)) < 4 * np.std(diff) / np.sqrt(len(diff))
    assert np.std(diff) > 0.05  # the groups and scores did vary


def test_mode_groups_needs_a_gap_in_both_layers():
    s1 = np.array([4.0, 2.0, 1.95, 1.0])
    s2 = np.array([4.0, 3.9, 1.0, 0.5])
    assert mode_groups(s1, s2, 4, 1.1) == [(0, 3), (3, 1)]  # 4 -> 2 is a gap in W1 only, 2 -> 1.95 in neither
    assert mode_groups(s1, s2, 2, 1.1) == [(0, 2)]
    assert mode_groups(s1, s1, 4, 1.0) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert mode_groups(np.zeros(3), np.zeros(3), 3) == [(0, 3)]


def test_layer_alignment_rectangular_and_errors():
    rng = np.random.default_rng(16)
    s = np.array([3.0, 2.0, 1.0])
    _, w1, w2 = aligned_pair(rng, s, s[::-1] + 3.0, d_in=5, d_out=4)
    assert w1.shape == (3, 5) and w2.shape == (4, 3)
    al = layer_alignment(w1, w2)
    assert al.surviving == 3 and al.matrix.shape == (3, 3)
    with pytest.raises(ValueError, match="chain"):
        layer_alignment(w1, w1)
    with pytest.raises(ValueError, match="surviving"):
        layer_alignment(w1, w2, surviving=4)
    assert layer_alignment(w1, w2, surviving=0).score == 1.0


def test_adjacent_alignments_of_a_four_layer_chain():
    rng = np.random.default_rng(17)
    s = np.array([3.0, 2.0, 1.0, 0.5])
    bases = [random_orthogonal(rng, 4) for _ in range(5)]
    layers = [bases[k + 1] @ np.diag(s) @ bases[k].T for k in range(4)]  # V_{l+1} = U_l: aligned
    layers[3] = random_orthogonal(rng, 4) @ np.diag(s) @ random_orthogonal(rng, 4).T  # last pair is not
    out = adjacent_alignments(layers, surviving=[4, 3, 4])
    assert [a.surviving for a in out] == [4, 3, 4]
    assert out[0].score == pytest.approx(1.0) and out[1].score == pytest.approx(1.0)
    assert out[2].score < 0.9
    with pytest.raises(ValueError, match="adjacent pairs"):
        adjacent_alignments(layers, surviving=[4, 4])


def three_layer_problem(seed: int):
    rng = np.random.default_rng(seed)
    x, xa = random_views(rng, 12, 4, 0.6)
    ws = [0.7 * rng.standard_normal((5, 4)), 0.7 * rng.standard_normal((3, 5)), 0.7 * rng.standard_normal((4, 3))]
    return x, xa, ws


@pytest.mark.parametrize("seed", [0, 1])
def test_gd_conservation_increment_is_the_exact_change_of_one_step(seed):
    x, xa, ws = three_layer_problem(seed)
    _, grads = loss_and_gradients(ws, x, xa)
    lr = 0.05
    stepped = [w - lr * g for w, g in zip(ws, grads, strict=True)]
    actual = [c1 - c0 for c0, c1 in zip(conserved_quantities(ws), conserved_quantities(stepped), strict=True)]
    predicted = gd_conservation_increment(grads, lr)
    assert len(predicted) == 2
    for a, p in zip(actual, predicted, strict=True):
        np.testing.assert_allclose(a, p, rtol=0, atol=1e-12 * max(np.abs(p).max(), 1.0))
        assert np.abs(p).max() > 1e-6  # a real second-order change, not two zeros


@pytest.mark.parametrize("seed", [0, 1])
def test_first_order_terms_cancel_with_autograd_gradients(seed):
    """G_l W_l^T = W_{l+1}^T G_{l+1}, the reason the O(lr) terms cancel, with torch's gradients."""
    torch = pytest.importorskip("torch")
    from _theory_helpers import torch_losses

    _, reference = torch_losses()
    x, xa, ws = three_layer_problem(seed)
    tw = [torch.tensor(w, requires_grad=True) for w in ws]

    def embed(v):
        return torch.tensor(v) @ tw[0].T @ tw[1].T @ tw[2].T

    reference["paper"](embed(x), embed(xa)).backward()
    g = [t.grad.numpy() for t in tw]
    for layer in range(2):
        lhs, rhs = g[layer] @ ws[layer].T, ws[layer + 1].T @ g[layer + 1]
        np.testing.assert_allclose(lhs, rhs, atol=1e-12 * np.abs(lhs).max())
        assert np.abs(lhs).max() > 1e-3


def test_accumulated_increments_predict_the_gd_drift_of_a_run():
    """Summing lr^2 (G_l G_l^T - G_{l+1}^T G_{l+1}) over 200 fixed-sample gd steps gives D_l(T) - D_l(0) to
    rounding, and the drift at a fixed time T = lr * steps halves with lr."""
    x, xa, ws0 = three_layer_problem(2)
    drifts = {}
    for lr in (0.01, 0.005):
        ws = [w.copy() for w in ws0]
        total = [np.zeros((5, 5)), np.zeros((3, 3))]
        for _ in range(round(1.0 / lr)):
            _, grads = loss_and_gradients(ws, x, xa)
            total = [t + inc for t, inc in zip(total, gd_conservation_increment(grads, lr), strict=True)]
            ws = [w - lr * g for w, g in zip(ws, grads, strict=True)]
        for c0, c1, t in zip(conserved_quantities(ws0), conserved_quantities(ws), total, strict=True):
            np.testing.assert_allclose(c1 - c0, t, atol=1e-10 * np.abs(c1).max())
        drifts[lr] = conservation_drifts(ws0, ws)
        assert len(drifts[lr]) == 2
        assert conservation_drift(ws0, ws) == max(drifts[lr])
    ratio = np.array(drifts[0.01]) / np.array(drifts[0.005])
    assert np.all((1.6 < ratio) & (ratio < 2.4))
