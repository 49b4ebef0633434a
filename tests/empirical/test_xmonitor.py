"""The monitor's X and growth rates against independent routes: theory's X, and finite differences of
log sigma under one tiny plain-SGD step of autograd on losses written here from the paper (Eqn 2, dot/tau)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical.xmonitor import MonitorLog, monitor  # noqa: E402
from theory.covariance import contrastive_covariance  # noqa: E402
from theory.toy import toy_views  # noqa: E402


def eqn2_loss(z, za):
    """Eqn 2 divided by N: logits -|z_i - z_j|^2/2 for j != i (same branch), -|z_i - z_i'|^2/2 positive."""
    d2 = torch.cdist(z, z) ** 2
    pos = ((z - za) ** 2).sum(1)
    logits = -0.5 * d2
    logits = logits - torch.diag(torch.diag(logits)) + torch.diag(-0.5 * pos)  # positive on the diagonal
    return (torch.logsumexp(logits, 1) + 0.5 * pos).mean()


def dot_loss(z, za, tau=0.1):
    return torch.nn.functional.cross_entropy(z @ za.T / tau, torch.arange(len(z)))


def sym_dot_loss(z, za, tau=0.1):
    return 0.5 * dot_loss(z, za, tau) + 0.5 * dot_loss(za, z, tau)


def views(n=48, d=6, seed=0):
    return toy_views(np.random.default_rng(seed), n, dim=d, augmented_dims=3, strength=1.5)


def test_x_is_theory_x_per_batch_mean():
    r1, r2 = views(64)
    w = np.random.default_rng(1).standard_normal((4, 6)) * 0.5
    one = monitor(r1, r2, w, batch_size=64)
    np.testing.assert_allclose(one.x, contrastive_covariance(r1, r2, w)[0], rtol=1e-12, atol=1e-14)
    four = monitor(torch.tensor(r1), torch.tensor(r2), torch.tensor(w), batch_size=16)
    want = np.mean([contrastive_covariance(r1[b:b + 16], r2[b:b + 16], w)[0] for b in range(0, 64, 16)], axis=0)
    np.testing.assert_allclose(four.x, want, rtol=1e-12, atol=1e-14)
    assert four.x_eigenvalues.shape == (6,) and four.to_json()["n_batches"] == 4


def sgd_log_sigma_change(weights, r1, r2, loss_fn, lr):
    """(per-layer, end-to-end) d log sigma / dt from a plain-SGD step of size lr: (f(W - lr g) - f(W + lr g))
    / (2 lr), the central difference along the SGD direction (second-order terms cancel)."""
    ws = [torch.tensor(w, requires_grad=True) for w in weights]
    x1, x2 = torch.tensor(r1), torch.tensor(r2)

    def embed(x, mats):
        for m in mats:
            x = x @ m.T
        return x

    loss_fn(embed(x1, ws), embed(x2, ws)).backward()
    ahead = [(w - lr * w.grad).detach().numpy() for w in ws]
    behind = [(w + lr * w.grad).detach().numpy() for w in ws]

    def logs(mats):
        total = mats[0]
        for m in mats[1:]:
            total = m @ total
        return [np.log(np.linalg.svd(m, compute_uv=False)) for m in mats], np.log(
            np.linalg.svd(total, compute_uv=False))

    (l0, e0), (l1, e1) = logs(behind), logs(ahead)
    return [(b - a) / (2 * lr) for a, b in zip(l0, l1, strict=True)], (e1 - e0) / (2 * lr)


@pytest.mark.parametrize(
    "loss, symmetric, fn",
    [("paper", False, eqn2_loss), ("dot", False, dot_loss), ("dot", True, sym_dot_loss)],
)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_growth_rates_match_sgd_finite_difference(loss, symmetric, fn, depth):
    rng = np.random.default_rng(depth)
    r1, r2 = views(40, seed=depth)
    shapes = [(6, 6), (5, 6), (5, 5)][:depth] if depth > 1 else [(4, 6)]
    weights = [rng.standard_normal(s) * 0.6 for s in shapes]
    res = monitor(r1, r2, weights, loss=loss, batch_size=40, symmetric=symmetric)
    observed_layers, observed_e2e = sgd_log_sigma_change(weights, r1, r2, fn, lr=1e-6)
    for layer, obs in zip(res.layers, observed_layers, strict=True):
        np.testing.assert_allclose(obs, layer["rate"], rtol=1e-4, atol=1e-6 * np.max(np.abs(layer["rate"])))
    np.testing.assert_allclose(observed_e2e, res.end_to_end["rate"], rtol=1e-4,
                               atol=1e-6 * np.max(np.abs(res.end_to_end["rate"])))
    if depth == 1:  # Lemma 2 in its plain form: d log sigma_i / dt = v_i^T X v_i
        v = res.layers[0]["v"]
        np.testing.assert_allclose(res.layers[0]["rate"], np.einsum("ki,kj,ji->i", v, res.x, v), rtol=1e-10)


@pytest.mark.parametrize("depth", [1, 2])
def test_cosine_exact_rates_and_first_order_x(depth):
    """Cosine InfoNCE: ``rate_exact`` is the true rate (finite differences of autograd); the frozen-norm W X
    prediction only tracks it (rank correlation), it is not exact."""
    from scipy.stats import spearmanr

    def cos_loss(z, za):
        return sym_dot_loss(torch.nn.functional.normalize(z, dim=1), torch.nn.functional.normalize(za, dim=1))

    rng = np.random.default_rng(5)
    r1, r2 = views(64, d=8, seed=5)
    weights = [rng.standard_normal((8, 8)) * 0.5 for _ in range(depth)]
    res = monitor(r1, r2, weights, loss="cosine", batch_size=64)
    observed, observed_e2e = sgd_log_sigma_change(weights, r1, r2, cos_loss, lr=1e-6)
    for layer, obs in zip(res.layers, observed, strict=True):
        np.testing.assert_allclose(obs, layer["rate_exact"], rtol=1e-4, atol=1e-6 * np.max(np.abs(obs)))
    np.testing.assert_allclose(observed_e2e, res.end_to_end["rate_exact_by_layer"].sum(0), rtol=1e-4,
                               atol=1e-6 * np.max(np.abs(observed_e2e)))
    assert res.cosine_c2 > 0 and res.symmetric and "rate_exact" in res.to_json()["layers"][0]
    obs, first = observed[0], res.layers[0]["rate"]
    rho = spearmanr(obs, first).statistic
    print(f"cosine, depth {depth}: first-order Spearman {rho:.2f}, max relative error "
          f"{np.max(np.abs(obs - first) / np.abs(obs)):.1f}")
    if depth == 1:
        assert rho > 0.5


def test_row_is_strict_json_and_log_resumes(tmp_path):
    r1, r2 = views(64)
    rng = np.random.default_rng(2)
    ws = [rng.standard_normal((6, 6)), rng.standard_normal((4, 6))]
    log = MonitorLog(str(tmp_path))
    for step in (10, 20, 30):
        res = monitor(r1, r2, ws, batch_size=16)
        log.write(step, res, lr=0.1, trust_ratio=[0.5, 0.4])
    rows = [json.loads(line) for line in open(tmp_path / "monitor.jsonl")]
    assert [r["step"] for r in rows] == [10, 20, 30]
    row = rows[0]
    assert len(row["layers"]) == 2 and len(row["alignment"]) == 1 and row["trust_ratio"] == [0.5, 0.4]
    assert 0 <= row["alignment"][0]["chance"] <= 1 and row["x"]["n_significant"] is not None
    arrays = np.load(tmp_path / row["arrays"])
    assert arrays["x"].shape == (6, 6) and arrays["w1"].shape == (4, 6)
    MonitorLog(str(tmp_path), resume_step=20)
    assert [json.loads(line)["step"] for line in open(tmp_path / "monitor.jsonl")] == [10, 20]


def test_resume_drops_a_torn_last_row(tmp_path):
    """A crash mid-write leaves half a row at the end of monitor.jsonl: the resumed log keeps the rows up to
    the resume step, drops the torn one, and the next row starts a line of its own."""
    r1, r2 = views(64)
    ws = [np.random.default_rng(2).standard_normal((4, 6))]
    log = MonitorLog(str(tmp_path))
    for step in (10, 20):
        log.write(step, monitor(r1, r2, ws, batch_size=16))
    path = tmp_path / "monitor.jsonl"
    good = path.read_text()
    with open(path, "a") as f:
        f.write(good.splitlines()[-1][: len(good) // 4])  # half a row of step 20's size, no newline
    log = MonitorLog(str(tmp_path), resume_step=20)
    assert path.read_text() == good
    log.write(30, monitor(r1, r2, ws, batch_size=16))
    assert [json.loads(line)["step"] for line in open(path)] == [10, 20, 30]
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "monitor", "monitor.jsonl", "step_00000010.npz", "step_00000020.npz", "step_00000030.npz"]


def test_bad_input_is_a_clear_error():
    r1, r2 = views(16)
    with pytest.raises(ValueError, match="inputs"):
        monitor(r1, r2, np.ones((3, 5)))
    with pytest.raises(ValueError, match="loss must be"):
        monitor(r1, r2, np.ones((3, 6)), loss="ntxent")


def test_docs_example_runs(tmp_path, monkeypatch, capsys):
    """The generic-loop example in docs/bridge.md runs as written and logs its rows."""
    import os
    import re

    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "bridge.md")).read()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/bridge.md", "exec"), {})
    rows = [json.loads(line) for line in open(tmp_path / "runs" / "example" / "monitor.jsonl")]
    assert [r["step"] for r in rows] == [0, 50, 100] and rows[0]["n_batches"] == 4
    assert "X negative directions" in capsys.readouterr().out


def test_default_x_batches_give_the_psd_test_its_power():
    """Without a batch size the monitor cuts the pairs into 32 batches (the PSD test's power: docs/psd_test.md);
    one batch of all the pairs is exact (full-batch training on them) and 2-3 batches are undetermined."""
    import numpy as np

    from empirical.xmonitor import monitor
    from theory.toy import toy_views

    r1, r2 = toy_views(np.random.default_rng(0), 1024, 8, 4, 2.0)
    w = np.eye(8) * 0.1
    res = monitor(r1, r2, w)
    assert res.batch_size == 32 and res.to_json()["n_batches"] == 32
    assert res.x_verdict == "not psd" and res.x_n_negative == 4
    assert monitor(r1, r2, w, batch_size=1024).x_verdict == "not psd"  # exact: the relative rule
    assert monitor(r1, r2, w, batch_size=400).x_verdict == "undetermined"  # 2 batches cannot be tested
