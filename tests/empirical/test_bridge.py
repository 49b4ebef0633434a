"""The bridge on synthetic runs with a known answer: a linear toy (identity backbone) trained here by plain
SGD (prediction (a) must be exact: Spearman ~ 1, slope ~ 1), with momentum and weight decay (the steady-state
effective step), and the same rows with random predicted rates (Spearman ~ 0: the verdict is calibrated).
Beside them: the momentum buffer's history, LARS's trust ratio over the interval, persistence within an
interval, the early-trend baseline, the comparison in sigma itself at near-zero sigma, and the fork ceiling."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from dimcollapse.io import write_json  # noqa: E402
from empirical import bridge  # noqa: E402
from empirical.optim import lr_at  # noqa: E402
from empirical.xmonitor import MonitorLog, monitor  # noqa: E402
from theory.losses import contrastive_loss  # noqa: E402
from theory.toy import toy_views  # noqa: E402


def toy_run(path, seed=0, depth=1, steps=400, every=5, lr=0.01, momentum=0.0, weight_decay=0.0,
            strength=2.0, loss="paper", n=64, dim=8, optimizer="sgd", eta=0.001, log_trust=False, spread=0.25):
    """Full-batch SGD (torch.optim.SGD's update rule) or LARS (empirical.optim's) on fixed toy pairs,
    monitored every ``every`` steps; the layers start with singular values 0.5 exp(-spread k)."""
    rng = np.random.default_rng(seed)
    r1, r2 = toy_views(rng, n, dim=dim, augmented_dims=dim // 2, strength=strength)
    # well-separated singular values (as the paper's toy init): singular vectors stay identifiable
    # independent bases per layer: adjacent layers start unaligned
    ortho = [np.linalg.qr(rng.standard_normal((dim, dim)))[0] for _ in range(2 * depth)]
    sigma0 = np.diag(0.5 * np.exp(-spread * np.arange(dim)))
    ws = [ortho[2 * k + 1] @ sigma0 @ ortho[2 * k].T for k in range(depth)]
    bufs = [np.zeros_like(w) for w in ws]
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, "config.json"), {
        "dataset": "toy", "projector": "linear", "projector_layers": depth, "loss": loss, "optimizer": optimizer,
        "eta": eta, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "warmup_steps": 0,
        "total_steps": steps, "batch_size": n, "seed": seed})
    log = MonitorLog(path)
    trust = [1.0] * depth
    for step in range(steps + 1):
        total = np.linalg.multi_dot(ws[::-1]) if depth > 1 else ws[0]
        _, g1, g2 = contrastive_loss(r1 @ total.T, r2 @ total.T, loss)
        grad = g1.T @ r1 + g2.T @ r2  # dL/dW of the end-to-end map
        grads = []
        for ell in range(depth):
            p, q = np.eye(dim), np.eye(dim)
            for w in ws[ell + 1:]:
                p = w @ p
            for w in ws[:ell]:
                q = w @ q
            grads.append(p.T @ grad @ q.T + weight_decay * ws[ell])
            if optimizer == "lars":
                trust[ell] = eta * np.linalg.norm(ws[ell]) / np.linalg.norm(grads[ell])
                grads[ell] = trust[ell] * grads[ell]
        if step % every == 0:
            extra = {"trust_ratio": trust} if log_trust else {}
            log.write(step, monitor(r1, r2, ws, loss=loss, batch_size=n), lr=lr_at(step, lr, 0, steps), **extra)
        if step == steps:
            break
        rate = lr_at(step, lr, 0, steps)
        for ell in range(depth):
            bufs[ell] = momentum * bufs[ell] + grads[ell] if step else grads[ell]
            ws[ell] = ws[ell] - rate * bufs[ell]
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge")
    return {
        "sgd": [toy_run(str(root / f"sgd-s{s}"), seed=s) for s in (0, 1)],
        "momentum": toy_run(str(root / "mom"), lr=0.0001, every=10, momentum=0.9, weight_decay=0.05),
        "deep": [toy_run(str(root / f"deep-s{s}"), seed=s, depth=2, strength=0.3) for s in (0, 1)],
        # momentum with rates that change within the buffer's memory (lr 20x the run above, rows every 5)
        "momentum_fast": toy_run(str(root / "momfast"), lr=0.002, every=5, momentum=0.9),
        # two layers whose smallest singular values start near zero (0.5 e^-14): rates divided by them
        "tiny": toy_run(str(root / "tiny"), depth=2, steps=100, spread=2.0, strength=0.3),
    }


def test_plain_sgd_prediction_is_exact(runs):
    res = bridge.analyse(runs["sgd"], progress=False)
    for name, r in res["runs"].items():
        inst = r["instantaneous"]
        print(name, {k: inst[k] for k in ("spearman", "slope", "chance_spearman_95", "baseline_spearman")})
        assert inst["spearman"] > 0.99 and abs(inst["slope"] - 1) < 0.05 and inst["better_than_chance"]
        assert inst["chance_spearman_95"] < 0.3
    group = res["groups"][0]
    assert group["seeds"] == 2 and group["instantaneous"]["slope"]["se"] is not None


def test_momentum_and_weight_decay_effective_step(runs):
    inst = bridge.analyse([runs["momentum"]], progress=False)["runs"]["mom"]["instantaneous"]
    print(inst["effective_step"], inst["spearman"], inst["slope"])
    assert "momentum 0.9" in inst["effective_step"]
    assert inst["spearman"] > 0.98 and abs(inst["slope"] - 1) < 0.05


def test_momentum_kernel_sums_to_the_effective_step(runs):
    """The kernel's weights add up to the one-row effective step; over a 5-step interval with m = 0.9 about 74 %
    of them sit on rows before the interval (steady state: 1 - 10 (5 - 0.9 (1 - 0.9^5) / 0.1) / 50 = 0.737)."""
    run = bridge.load_run(runs["momentum_fast"])
    starts = [r["step"] for r in run.rows]
    for k in (0, 1, 10, 40):
        c = bridge.momentum_kernel(run, starts, k, run.rows[k + 1])
        assert c.sum() == pytest.approx(bridge.effective_step(run, starts[k], starts[k + 1], run.rows[k + 1]), rel=1e-9)
    assert c[:-1].sum() / c.sum() == pytest.approx(1 - 10 * (5 - 9 * (1 - 0.9**5)) / 50, abs=2e-3)
    plain = bridge.load_run(runs["sgd"][0])
    c = bridge.momentum_kernel(plain, [r["step"] for r in plain.rows], 5, plain.rows[6])
    assert np.all(c[:-1] == 0) and c[-1] == pytest.approx(sum(lr_at(s, 0.01, 0, 400) for s in range(25, 30)))


def test_momentum_history_prediction(runs):
    """Momentum 0.9 with rates that change within the buffer's memory: the prediction from the earlier rows'
    gradients beats the one-row one (which puts the current rate in their place) in ranking and in scale;
    without momentum the two are the same."""
    inst = bridge.analyse([runs["momentum_fast"]], progress=False)["runs"]["momfast"]["instantaneous"]
    keys = ("history_share", "spearman", "history_spearman", "surviving_slope", "history_surviving_slope",
            "delta_sigma_slope", "history_delta_sigma_slope")
    print("momentum history", {k: round(inst[k], 3) for k in keys})
    assert 0.70 < inst["history_share"] < 0.74
    assert inst["history_spearman"] > inst["spearman"] + 0.02
    assert abs(inst["history_surviving_slope"] - 1) < 0.5 * abs(inst["surviving_slope"] - 1)
    assert abs(inst["history_delta_sigma_slope"] - 1) < 0.005 < abs(inst["delta_sigma_slope"] - 1)
    plain = bridge.analyse(runs["sgd"][:1], progress=False)["runs"]["sgd-s0"]["instantaneous"]
    assert plain["history_share"] == 0
    assert plain["history_spearman"] == plain["spearman"] and plain["history_slope"] == pytest.approx(plain["slope"])


def test_lars_every_step_history_is_exact(tmp_path):
    """LARS with momentum, a row after every update and the trust ratio logged there: the trust ratio of the
    interval is the logged one, and the history prediction is exact up to the step size (the one-row one is
    not: it puts the current gradient in the buffer's place)."""
    path = toy_run(str(tmp_path / "lars1"), depth=2, steps=60, every=1, lr=0.5, momentum=0.9, weight_decay=0.01,
                   optimizer="lars", log_trust=True)
    inst = bridge.analyse([path], progress=False)["runs"]["lars1"]["instantaneous"]
    print("LARS every step", inst["trust_ratio_interval"],
          {k: round(inst[k], 4) for k in ("spearman", "slope", "history_spearman", "history_slope")})
    assert inst["trust_ratio_interval"] == "logged at every update"
    assert inst["history_spearman"] > 0.9999 and abs(inst["history_slope"] - 1) < 0.002
    assert abs(inst["slope"] - 1) > abs(inst["history_slope"] - 1)


def test_trust_ratio_over_the_interval(runs):
    """The interval's trust ratio: the logged interval mean when a row has it, else the mean of the two ends
    (each logged or estimated), never one value for the whole interval; 1 for SGD."""
    run = bridge.load_run(runs["sgd"][0])
    r0, r1 = run.rows[3], run.rows[4]
    assert bridge.interval_trust(run, r0, r1)[1] == "none (SGD)"
    run.config["optimizer"] = "lars"
    q, how = bridge.interval_trust(run, r0, r1)
    ends = (bridge.estimated_trust(run, r0) + bridge.estimated_trust(run, r1)) / 2
    assert how == "mean of the estimated values at the interval's two ends" and np.allclose(q, ends)
    q, how = bridge.interval_trust(run, {**r0, "trust_ratio": [2.0]}, r1)
    assert how == "mean of the logged or estimated values at the interval's two ends"
    assert q[0] == pytest.approx((2.0 + bridge.estimated_trust(run, r1)[0]) / 2)
    q, how = bridge.interval_trust(run, {**r0, "trust_ratio": [2.0]}, {**r1, "trust_ratio_mean": [3.0]})
    assert how == "interval mean logged" and q[0] == 3.0


def test_within_interval_persistence(runs, tmp_path):
    """Persistence scored within each interval like the prediction's median, on the same intervals and points;
    with mini-batches (mlp_run) the prediction ranks each interval better than persistence does."""
    inst = bridge.analyse(runs["sgd"][:1], progress=False)["runs"]["sgd-s0"]["instantaneous"]
    assert inst["baseline_median_interval_spearman"] == pytest.approx(1.0)
    assert inst["median_interval_spearman_paired"] == pytest.approx(1.0)
    mini = bridge.analyse([mlp_run(str(tmp_path / "mini"), full_batch=False, steps=100)], progress=False)
    mini = mini["runs"]["mini"]["instantaneous"]
    keys = ("median_interval_spearman", "median_interval_spearman_paired", "baseline_median_interval_spearman",
            "spearman", "baseline_spearman")
    print("mini-batch within an interval", {k: round(mini[k], 3) for k in keys})
    assert mini["median_interval_spearman_paired"] > mini["baseline_median_interval_spearman"] + 0.03


def test_no_division_by_near_zero_sigma(runs):
    """Two layers whose smallest singular values start near zero: the log-sigma rates divide by them and
    wreck the pooled slope; the change of sigma itself and the log comparison on the surviving modes do not."""
    inst = bridge.analyse([runs["tiny"]], progress=False)["runs"]["tiny"]["instantaneous"]
    keys = ("slope", "max_abs_predicted", "p99_abs_predicted", "delta_sigma_spearman", "delta_sigma_slope",
            "surviving_spearman", "surviving_slope", "collapsed_slope")
    print("near-zero sigma", inst["surviving_points"], inst["collapsed_points"], {k: round(inst[k], 3) for k in keys})
    assert inst["collapsed_points"] > 0 and inst["surviving_points"] > 0
    assert abs(inst["slope"]) < 0.3 and inst["max_abs_predicted"] > 20
    assert inst["delta_sigma_spearman"] > 0.95 and abs(inst["delta_sigma_slope"] - 1) < 0.05
    assert inst["surviving_spearman"] > 0.99 and abs(inst["surviving_slope"] - 1) < 0.05


def test_early_trend_baseline(runs):
    """The early-trend baseline -Delta log|W v_k| (first row to the early row) beside the level baseline: a rate,
    like X; undefined at the first row itself."""
    ew = bridge.analyse([runs["deep"][0]], progress=False)["runs"]["deep-s0"]["early_warning"]
    at, first = ew["at"]["0.1"], ew["curve"][0]
    print("early trend", {k: round(at[k], 3) for k in ("auc_x", "auc_baseline", "auc_trend", "overlap_x",
                                                       "overlap_baseline", "overlap_trend")})
    assert first["auc_trend"] is None and first["overlap_trend"] is None
    run = bridge.load_run(runs["deep"][0])
    w_end = run.end_to_end(run.rows[-1])[1]
    _, s, vt = np.linalg.svd(w_end)
    collapsed = s**2 <= bridge.COLLAPSE_RTOL * s.max() ** 2
    early = next(r for r in run.rows if r["step"] == at["step"])
    trend = np.log(np.linalg.norm(run.end_to_end(early)[1] @ vt.T, axis=0) /
                   np.linalg.norm(run.end_to_end(run.rows[0])[1] @ vt.T, axis=0))
    assert at["auc_trend"] == pytest.approx(bridge._auc(-trend, collapsed))
    assert 0.5 < at["auc_trend"] and at["overlap_trend"] > ew["chance_overlap"]
    sgd = bridge.analyse(runs["sgd"][:1], progress=False)["runs"]["sgd-s0"]["early_warning"]["at"]["0.1"]
    assert sgd["auc_trend"] == 1.0 and sgd["overlap_trend"] > 0.9


def test_fork_ceiling_spread_and_clip(runs):
    """The noise ceiling from two streams forked from the same weights, on one toy interval with planted noise:
    the estimate recovers the planted share with a bootstrap interval around it; the same streams (no noise)
    give a ceiling of R^2; an estimate above 1 is clipped and flagged; the spread over forks."""
    run = bridge.load_run(runs["sgd"][0])
    r0, r1 = run.rows[2], run.rows[3]
    pred = bridge.effective_step(run, r0["step"], r1["step"], r1) * np.asarray(r0["layers"][0]["rate"])
    true = bridge._matched_change(run.arrays(r0)["w0"], run.arrays(r1)["w0"])
    rng = np.random.default_rng(0)
    f = np.tile(true, 64)  # 512 points: the 8 modes, each with its own noise draws
    p = np.tile(pred, 64)
    forks = []
    for _ in range(5):
        a, b = (f + rng.normal(0, np.std(f), len(f)) for _ in range(2))  # noise share 0.5
        forks.append(bridge.fork_ceiling(p, a, b, rng, draws=200))
    r2 = np.corrcoef(p, f)[0, 1] ** 2
    print("fork ceiling", round(r2, 4), [round(c["ceiling_fraction"], 3) for c in forks], forks[0]["ceiling_ci95"])
    for c in forks:
        assert c["noise_share"] == pytest.approx(0.5, abs=0.1)
        assert c["ceiling_ci95"][0] < r2 < c["ceiling_ci95"][1] + 0.02
    same = bridge.fork_ceiling(p, f, f, rng, draws=50)
    assert same["noise_share"] == 0 and same["ceiling_fraction"] == pytest.approx(r2)
    # streams whose noise happens to anti-correlate (A = p + e, B = p - e, e orthogonal to p): cov(A, B) =
    # var p - var e under-states the explainable variance and the raw estimate is 1 / (1 - 0.09) > 1
    e = rng.normal(0, 1, len(p))
    e -= e.mean()
    e -= (e @ (p - p.mean())) / np.sum((p - p.mean()) ** 2) * (p - p.mean())
    e *= 0.3 * p.std() / e.std()
    over = bridge.fork_ceiling(p, p + e, p - e, rng, draws=200)
    assert over["ceiling_fraction"] == pytest.approx(1 / (1 - 0.09)) and over["above_one"]
    assert over["ceiling_fraction_clipped"] == 1.0 and over["ceiling_p_above_one"] > 0.5
    spread = bridge.ceiling_spread([*forks, over])
    assert spread["above_one"] == 1 and spread["ceiling_fraction_clipped"]["mean"] < spread["ceiling_fraction"]["mean"]
    assert spread["ceiling_range"][1] > 1 and spread["ceiling_fraction"]["se"] > 0
    assert 0 < spread["pooled_ceiling_fraction"] and spread["forks"] == 6


@pytest.mark.parametrize("log_trust", [False, True])
def test_lars_trust_ratio_logged_or_estimated(tmp_path, log_trust):
    """Full-batch LARS: the trust ratio estimated from the row's held-out gradient is the exact one here."""
    path = toy_run(str(tmp_path / "lars"), depth=2, steps=200, every=5, lr=0.5, momentum=0.9, weight_decay=0.01,
                   optimizer="lars", log_trust=log_trust)
    inst = bridge.analyse([path], progress=False)["runs"]["lars"]["instantaneous"]
    print(inst["effective_step"], inst["spearman"], inst["slope"])
    assert ("logged" in inst["effective_step"]) == log_trust
    assert inst["spearman"] > 0.98 and abs(inst["slope"] - 1) < 0.05


def test_random_predictions_are_at_chance(runs, tmp_path):
    """The same observed trajectories, predicted rates replaced by noise: Spearman ~ 0, verdict negative."""
    src = runs["sgd"][0]
    dst = tmp_path / "random"
    os.makedirs(dst / "monitor")
    rng = np.random.default_rng(7)
    with open(dst / "monitor.jsonl", "w") as f:
        for line in open(os.path.join(src, "monitor.jsonl")):
            row = json.loads(line)
            for layer in row["layers"]:
                layer["rate"] = rng.standard_normal(len(layer["rate"])).tolist()
            row["end_to_end"]["rate_by_layer"] = [rng.standard_normal(len(row["end_to_end"]["sigma"])).tolist()]
            f.write(json.dumps(row) + "\n")
            os.link(os.path.join(src, row["arrays"]), dst / row["arrays"])
    os.link(os.path.join(src, "config.json"), dst / "config.json")
    inst = bridge.analyse([str(dst)], progress=False)["runs"]["random"]["instantaneous"]
    print("random", inst["spearman"], inst["chance_spearman_95"])
    assert abs(inst["spearman"]) < inst["chance_spearman_95"] < 0.3 and not inst["better_than_chance"]


def test_early_warning_finds_the_augmented_directions(runs):
    ew = bridge.analyse(runs["sgd"][:1], progress=False)["runs"]["sgd-s0"]["early_warning"]
    at = ew["at"]["0.1"]
    print(ew["n_collapsed_end"], at)
    assert ew["n_collapsed_end"] == 4 and ew["chance_overlap"] == 0.5
    assert at["auc_x"] == 1.0 and at["overlap_x"] > 0.9 and at["x_n_negative"] == 4


def test_depth_and_alignment_and_cli(runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert bridge.main([*runs["sgd"], *runs["deep"], "--out", str(out), "--no-progress"]) == 0
    res = json.load(open(out / "bridge.json"))
    deep = res["runs"]["deep-s0"]["depth"]
    assert deep["depth"] == 2 and deep["alignment"] and 0 <= deep["alignment"][-1]["chance"] <= 1
    # the runs differ only in depth (the toy strength is not in the config): one table with both depths
    assert len(res["depth"]) == 1 and [r["depth"] for r in res["depth"][0]["by_depth"]] == [1, 2]
    align = deep["alignment"]
    assert align[-1]["score"] > align[0]["score"] + 0.1 and align[-1]["score"] > 2 * align[-1]["chance"]
    for name in ("bridge_growth", "bridge_early_warning", "bridge_depth"):
        assert (out / f"{name}.png").exists() and (out / f"{name}.pdf").exists()
    assert "Spearman" in capsys.readouterr().out
    with capsys.disabled():
        print("alignment", align[0], align[-1])
        for g in res["groups"]:
            print(g["settings"]["depth"], "early warning at 10%", g["early_warning"]["0.1"])


@pytest.mark.parametrize("args, message", [
    (["nowhere", "--out", "x"], "does not exist"),
    ([".", "--out", "x"], "no config.json"),
    (["bad", "--out", "x"], "line 2 is not valid JSON"),
    (["short", "--out", "x"], "needs at least 2 monitor steps"),
    (["foreign", "--out", "x"], "row 1 lacks loss, x, layers"),
    (["bad", "--out", "x", "--seed", "z"], "invalid int value"),
])
def test_bad_input_one_line_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in (("bad", '{"step": 0}\n{"step": \n'), ("short", '{"step": 0}\n'),
                       ("foreign", '{"step": 0}\n{"step": 1}\n')):
        os.makedirs(name)
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "monitor.jsonl").write_text(text)
    assert bridge.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_figures_without_results_are_skipped(tmp_path):
    from figures import bridge_growth, style

    with pytest.raises(style.MissingResults, match="empirical.bridge"):
        bridge_growth.load(str(tmp_path))


def mlp_run(path, seed=0, full_batch=True, steps=150, every=5, lr=0.01, batch=64, pairs=256, loss="paper"):
    """A nonlinear backbone (MLP, tanh) trained jointly with a linear projector on Eqn 2 by plain SGD:
    full-batch on the fixed pairs the monitor sees, or mini-batches of fresh augmentations."""
    import torch

    from tests.empirical.test_xmonitor import eqn2_loss, sym_dot_loss

    def cosine(z1, z2):
        return sym_dot_loss(torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1))

    loss_fn = eqn2_loss if loss == "paper" else cosine

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    scale = torch.ones(16, dtype=torch.float64)
    scale[8:] = 2.0  # strong augmentation on half the inputs

    def aug(x):
        return x + scale * torch.randn(x.shape, generator=g, dtype=torch.float64)

    data = torch.randn(2048, 16, generator=g, dtype=torch.float64)
    h1, h2 = aug(data[:pairs]), aug(data[:pairs])
    backbone = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16)).double()
    proj = torch.nn.Linear(16, 16, bias=False).double()
    opt = torch.optim.SGD([*backbone.parameters(), *proj.parameters()], lr=lr)
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, "config.json"), {"optimizer": "sgd", "momentum": 0.0, "lr": lr,
                                                   "schedule": "constant", "weight_decay": 0.0, "seed": seed})
    log = MonitorLog(path)
    for step in range(steps + 1):
        if step % every == 0:
            with torch.no_grad():
                res = monitor(backbone(h1), backbone(h2), proj.weight, loss=loss,
                              batch_size=pairs if full_batch else batch)
            log.write(step, res, lr=lr)
        if step == steps:
            break
        if full_batch:
            x1, x2 = h1, h2
        else:
            x = data[pairs:][torch.randint(0, len(data) - pairs, (batch,), generator=g)]
            x1, x2 = aug(x), aug(x)
        value = loss_fn(proj(backbone(x1)), proj(backbone(x2)))
        opt.zero_grad()
        value.backward()
        opt.step()
    return path


def test_nonlinear_backbone_full_batch_and_minibatch(tmp_path):
    """Lemma 2 holds whatever the backbone does: full-batch, the prediction is exact up to the step size even
    though the backbone co-adapts; with mini-batches the SGD noise between rows weakens it (measured)."""
    full = bridge.analyse([mlp_run(str(tmp_path / "full"))], progress=False)["runs"]["full"]["instantaneous"]
    mini = bridge.analyse([mlp_run(str(tmp_path / "mini"), full_batch=False)], progress=False)
    mini = mini["runs"]["mini"]["instantaneous"]
    for name, i in (("full batch", full), ("mini-batch", mini)):
        print(name, {k: round(i[k], 3) for k in ("spearman", "slope", "chance_spearman_95", "baseline_spearman")})
    assert full["spearman"] > 0.99 and abs(full["slope"] - 1) < 0.05
    assert mini["better_than_chance"] and mini["spearman"] < full["spearman"]


def test_cosine_infonce_first_order_vs_exact_gradient(tmp_path):
    """Full-batch cosine InfoNCE, a row after every step: the exact-gradient rates predict the change
    (slope ~ 1); the frozen-norm W X form is reported beside them (measured, not assumed)."""
    path = mlp_run(str(tmp_path / "cos"), loss="cosine", lr=0.05, every=1, steps=100)
    i = bridge.analyse([path], progress=False)["runs"]["cos"]["instantaneous"]
    print("cosine", {k: round(i[k], 3) for k in ("spearman", "slope", "exact_gradient_spearman",
                                                 "exact_gradient_slope", "chance_spearman_95")})
    assert i["exact_gradient_spearman"] > 0.99 and abs(i["exact_gradient_slope"] - 1) < 0.05


def test_group_label_names_what_tells_groups_apart():
    from empirical.bridge import group_label

    s = {"monitor_loss": "paper", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "full_batch": True,
         "batch_size": 4000, "depth": 1}
    assert group_label(s) == "paper sgd lr 0.01 momentum 0.9 full batch depth 1"
    s = {**s, "full_batch": False, "batch_size": 128, "momentum": 0.0}
    assert group_label(s) == "paper sgd lr 0.01 momentum 0 batch 128 depth 1"
    lars = {"monitor_loss": "cosine", "optimizer": "lars", "depth": 2}
    assert group_label(lars) == "cosine lars momentum 0.9 depth 2"
