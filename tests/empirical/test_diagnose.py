"""empirical.diagnose: quality scores against closed forms, planted toy answers, real networks end to end, the CLI."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical.diagnose import (  # noqa: E402
    alpha_req,
    diagnose,
    diagnose_features,
    lidar,
    recipe_steps,
    split_projector,
)
from tests.empirical._emp_helpers import REPO, TINY_RUN, cli_env, run_cli  # noqa: E402
from theory.covariance import VERDICTS, x_verdict  # noqa: E402
from theory.spectrum import rankme, singular_values  # noqa: E402
from theory.toy import toy_views  # noqa: E402


def _orthonormal_centred(rng, n, d):
    """n x d with orthonormal columns, each summing to zero."""
    a = rng.standard_normal((n, d))
    a -= a.mean(axis=0)
    return np.linalg.qr(a)[0]


# ---- the scores against independent routes ----------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 32])
def test_rankme_of_k_equal_singular_values_is_k(k):
    rng = np.random.default_rng(k)
    u = np.linalg.qr(rng.standard_normal((200, 64)))[0][:, :k]
    v = np.linalg.qr(rng.standard_normal((64, 64)))[0][:k]
    eps, d = 1e-7, 64  # RankMe's eps on every one of the d singular values, 64 - k of them zero
    closed = np.exp(-(k * (1 / k + eps) * np.log(1 / k + eps) + (d - k) * eps * np.log(eps)))
    assert rankme(3.0 * u @ v) == pytest.approx(closed, rel=1e-9)
    assert abs(closed - k) < 2e-3


@pytest.mark.parametrize("alpha, d, top", [(1.0, 32, 32), (2.0, 64, 31), (0.5, 48, 48)])
def test_alpha_req_recovers_an_exact_power_law_and_its_fit_range(alpha, d, top):
    rng = np.random.default_rng(0)
    n = 400
    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    f = np.sqrt(n) * _orthonormal_centred(rng, n, d) * np.sqrt(lam) @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    assert np.allclose(singular_values(f), lam, rtol=1e-8)
    fit = alpha_req(singular_values(f))
    # the range ends at the last value the collapse rule keeps (k^-2 <= 1e-3 from k = 32 on)
    assert fit["fit_range"] == [1, top]
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-8)
    assert fit["r2"] == pytest.approx(1.0)


def test_lidar_on_classes_with_known_within_and_between_covariance():
    rng = np.random.default_rng(1)
    n, d = 300, 6
    b = np.array([4.0, 2.0, 1.0, 0.5, 0.1, 0.0])  # between-class variances (one direction carries no class)
    w = np.array([1.0, 0.5, 2.0, 1.0, 0.25, 3.0])  # within-class variances
    q = _orthonormal_centred(rng, n, 2 * d)
    rot = np.linalg.qr(rng.standard_normal((d, d)))[0]
    mu = np.sqrt(n) * q[:, :d] * np.sqrt(b)
    a = np.sqrt(n) * q[:, d:] * np.sqrt(w)
    views = np.stack([mu + a, mu - a], axis=1) @ rot  # members mu_i +- a_i: within covariance diag(w) exactly
    out = lidar(views)
    delta = 1e-4 * w.sum() / d
    assert out["delta"] == pytest.approx(delta)
    lam = np.sort(b / (w + delta))[::-1]  # Sigma_w^-1/2 Sigma_b Sigma_w^-1/2 in the shared eigenbasis
    assert np.allclose(out["eigenvalues"], lam, atol=1e-10)
    p = lam / lam.sum() + 1e-7
    assert out["value"] == pytest.approx(float(np.exp(-np.sum(p * np.log(p)))), rel=1e-10)


# ---- planted toy answers ---------------------------------------------------------------------------------------------


def _noise(lo, hi, strength):
    def fn(batch, gen):
        batch = batch.clone()
        batch[:, lo:hi] += strength * torch.randn(len(batch), hi - lo, generator=gen, dtype=batch.dtype)
        return batch

    return fn


STRONG, WEAK = ("strong", _noise(8, 16, 2.0)), ("weak", _noise(0, 8, 0.1))


def _projector(scales=None):
    """16 x 16 linear projector near zero: 1e-3 x a rotation, columns scaled by ``scales``."""
    rot = np.linalg.qr(np.random.default_rng(3).standard_normal((16, 16)))[0]
    w = 1e-3 * rot * (np.ones(16) if scales is None else scales)
    lin = torch.nn.Linear(16, 16, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w))
    return lin


@pytest.fixture(scope="module")
def gaussian():
    return torch.randn(4096, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def one_noisy(gaussian):
    return diagnose(torch.nn.Identity(), gaussian, ([], [WEAK, STRONG]), _projector(), loss="paper").to_json()


def test_one_noisy_view_matches_the_toy_prediction(one_noisy):
    rep = one_noisy
    # python -m theory.simulate --augment-strength 2 (16-d, 8 coordinates, one noisy view) at W -> 0:
    toy, _ = x_verdict(lambda rng: toy_views(rng, 256, strength=2.0, noisy_views=1), None, "paper", batches=16)
    assert toy.verdict == "not psd" and toy.n_negative == 8
    assert rep["x"]["verdict"] == "not psd" and rep["x"]["n_negative"] == 8
    assert rep["x"]["detectable"] is not None and rep["x"]["detectable"] < 1.0
    predicted = rep["attribution"]["predicted"]
    assert len(predicted) == 8 and all(p["cause"] == "strong augmentation" for p in predicted)
    effects = {e["left_out"]: e for e in rep["augmentation_effects"]}
    assert effects["strong"]["n_negative"] == 0 and effects["strong"]["verdict"] == "psd"
    assert effects["weak"]["n_negative"] == 8 and effects["weak"]["verdict"] == "not psd"
    assert any("Leaving out strong turns X PSD" in t for t in rep["what_to_try"])
    assert rep["baselines"]["gaussian"]["z"]["n_collapsed"] == 0
    assert rep["spectrum_z"]["n_collapsed"] == 0 and rep["spectrum_z"]["samples"] == 4096
    json.dumps(rep, allow_nan=False)


def test_the_negative_eigenvalues_are_the_toys(one_noisy, gaussian):
    # W -> 0: X = 2 Cov(x) - Cov(x' - x) = 2 - 0.01 on coordinates 0-7 and 2 - 4 on 8-15
    eig = np.asarray(one_noisy["x"]["eigenvalues"])
    assert np.all(np.abs(eig[:8] - 1.99) < 0.3) and np.all(np.abs(eig[-8:] + 2.0) < 0.4)
    rep = diagnose(torch.nn.Identity(), gaussian, ([], [WEAK, STRONG]), None, loss="paper")
    assert rep.x["space"] == "r (W = I)" and rep.x["n_negative"] == 8


def test_only_the_weak_noise_attributes_nothing_to_strong_augmentation(gaussian):
    # the projector collapses coordinates 8-15 (variance 1e-8 of the others): collapse X does not explain
    proj = _projector(np.r_[np.ones(8), np.full(8, 1e-4)])
    rep = diagnose(torch.nn.Identity(), gaussian, ([], [WEAK]), proj, loss="paper").to_json()
    assert rep["x"]["verdict"] == "psd" and rep["x"]["n_negative"] == 0
    att = rep["attribution"]
    assert len(att["collapsed_z"]) == 8 and att["counts"]["strong augmentation"] == 0
    assert att["counts"]["not strong augmentation"] == 8 and att["predicted"] == []
    assert any("not explained by X" in t for t in rep["what_to_try"])


def test_collapsed_directions_inside_and_outside_the_negative_subspace(gaussian):
    inside = diagnose(torch.nn.Identity(), gaussian, ([], [WEAK, STRONG]),
                      _projector(np.r_[np.ones(8), np.full(8, 1e-4)]), loss="paper").to_json()["attribution"]
    assert inside["counts"]["strong augmentation"] == 8
    assert all(p["collapsed_in_z"] for p in inside["predicted"])
    outside = diagnose(torch.nn.Identity(), gaussian, ([], [WEAK, STRONG]),
                       _projector(np.r_[np.full(8, 1e-4), np.ones(8)]), loss="paper").to_json()["attribution"]
    assert outside["complement_verdict"] == "psd"
    assert outside["counts"]["not strong augmentation"] == 8 and outside["counts"]["strong augmentation"] == 0
    assert not any(p["collapsed_in_z"] for p in outside["predicted"])


def test_both_views_noisy_agrees_with_the_two_noisy_view_toy(gaussian):
    toy, _ = x_verdict(lambda rng: toy_views(rng, 256, strength=2.0, noisy_views=2), None, "paper", batches=16)
    rep = diagnose(torch.nn.Identity(), gaussian, [WEAK, STRONG], _projector(), loss="paper").to_json()
    assert toy.verdict == rep["x"]["verdict"] == "psd"
    assert toy.n_negative == rep["x"]["n_negative"] == 0


def test_leave_one_out_keeps_the_other_draws(gaussian):
    """Without the strong noise, view 2 is exactly view 1 plus the same weak noise as with it."""
    from empirical.diagnose import _Passes

    passes = _Passes(torch.nn.Identity(), None, None, gaussian[:512], 256, 0, None, None)
    full = passes.view(2, [WEAK, STRONG])[0]
    weak_only = passes.view(2, [WEAK])[0]
    assert np.array_equal(full[:, :8], weak_only[:, :8])
    assert not np.allclose(full[:, 8:], weak_only[:, 8:])


def test_dot_and_info_nce_forms_run_and_are_deterministic(gaussian):
    x = gaussian[:1024]
    a = diagnose(torch.nn.Identity(), x, ([], [WEAK, STRONG]), _projector(), loss="info_nce", batch_size=64)
    b = diagnose(torch.nn.Identity(), x, ([], [WEAK, STRONG]), _projector(), loss="info_nce", batch_size=64)
    ja, jb = a.to_json(), b.to_json()
    ja.pop("seconds"), jb.pop("seconds")
    assert ja == jb
    assert a.x["verdict"] in VERDICTS and a.spectrum_z["normalized"]
    d = diagnose(torch.nn.Identity(), x, ([], [WEAK, STRONG]), _projector(), loss="dot", batch_size=64)
    assert d.x["verdict"] in VERDICTS
    with pytest.raises(ValueError, match="loss must be one of"):
        diagnose(torch.nn.Identity(), x, [WEAK], None, loss="nt_xent")


def test_projector_must_end_in_a_linear_layer():
    with pytest.raises(ValueError, match="last layer must be nn.Linear"):
        split_projector(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    # refused inside diagnose: the caller's modules keep their training mode
    encoder, bad = torch.nn.Linear(4, 4).train(), torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).train()
    with pytest.raises(ValueError, match="last layer must be nn.Linear"):
        diagnose(encoder, torch.randn(64, 4), [WEAK], bad, loss="paper", batch_size=16)
    assert encoder.training and bad.training
    bn = torch.nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        bn.running_var.fill_(4.0)
        bn.weight.fill_(3.0)
    lin = torch.nn.Linear(2, 3, bias=False)
    head, w, notes = split_projector(torch.nn.Sequential(torch.nn.ReLU(), lin, bn))
    assert isinstance(head, torch.nn.Sequential) and len(notes) == 1
    assert np.allclose(w, 3.0 / np.sqrt(4.0 + bn.eps) * lin.weight.detach().numpy())


# ---- real networks -------------------------------------------------------------------------------------------------


def test_resnet18_at_random_init_on_random_images_end_to_end():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = torch.nn.Identity()
    projector = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 32))
    images = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    steps = recipe_steps("simclr", 1.0, 32)
    rep = diagnose(net, images, steps, projector, batch_size=16, pairs=64).to_json()
    assert rep["x"]["verdict"] in VERDICTS and rep["x"]["batches"] == 4 and rep["x"]["dim"] == 64
    assert rep["spectrum_r"]["dim"] == 512 and rep["spectrum_z"]["dim"] == 32
    assert rep["baselines"]["random_init"]["r"]["samples"] == 64
    assert [e["left_out"] for e in rep["augmentation_effects"]] == ["crop", "flip", "jitter", "grayscale"]
    assert rep["lidar"]["z"]["value"] > 0 and rep["alpha_req"]["r"]["fit_range"][0] == 1
    assert net.training and projector.training  # modes restored
    json.dumps(rep, allow_nan=False)


def test_recipe_steps_reproduce_the_training_augmentation():
    """All named steps in order = empirical.augment on the same draws (the paper recipe, view 2)."""
    from empirical import augment as A

    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    steps = recipe_steps("paper", 1.0, 16)
    assert [n for n, _ in steps[0]] == ["crop", "flip", "jitter", "grayscale", "blur"]
    assert [n for n, _ in steps[1]] == ["crop", "flip", "jitter", "grayscale", "blur", "solarize"]
    rec = A.recipe("paper", 1.0, 16)[1]
    gen = {name: torch.Generator().manual_seed(i) for i, (name, _) in enumerate(steps[1])}
    y = x
    for name, fn in steps[1]:
        y = fn(y, gen[name])
    p = {}
    for i, key in enumerate(["crop", "flip", "jitter", "grayscale", "blur", "solarize"]):
        g = torch.Generator().manual_seed(i)
        if key in ("crop", "jitter", "blur"):
            draw = A.sample_params(rec, 8, g)
            p.update({k: draw[k] for k in {"crop": ("area", "log_ratio", "top", "left"),
                                           "jitter": ("jitter", "bright", "contrast", "sat", "hue", "order"),
                                           "blur": ("blur", "sigma")}[key]})
        else:
            prob = {"flip": rec.p_flip, "grayscale": rec.p_gray, "solarize": rec.p_solarize}[key]
            p[{"flip": "flip", "grayscale": "gray", "solarize": "solarize"}[key]] = (
                torch.rand(8, generator=g, dtype=torch.float64) < prob)
    ref = A.augment(x, p, 16, crop=True, normalize=False)
    assert torch.allclose(y, ref, atol=1e-5)


# ---- the command line ------------------------------------------------------------------------------------------------


def _cli(*args, cwd=REPO):
    cmd = [sys.executable, "-m", "empirical.diagnose", "--no-progress", *args]
    return subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600)


def test_features_cli_two_views(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 8))
    b = a.copy()
    b[:, 4:] += 2.0 * rng.standard_normal((512, 4))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    res = _cli("--features", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--loss", "paper",
               "--batch-size", "32")
    assert res.returncode == 0, res.stderr
    assert "X (the features (W = I)" in res.stdout and "LiDAR" in res.stdout
    rep = json.loads((tmp_path / "diagnose.json").read_text())
    assert rep["x"]["verdict"] == "not psd" and rep["x"]["n_negative"] == 4
    assert rep["augmentation_effects"] == []
    assert all(not os.path.isabs(p) for p in rep["setup"]["source"]["features"] + rep["figures"])
    assert (tmp_path / "diagnose.png").stat().st_size > 0 and (tmp_path / "diagnose.pdf").stat().st_size > 0


def test_features_api_one_array():
    rep = diagnose_features(np.random.default_rng(0).standard_normal((300, 10)) @ np.diag([1] * 9 + [1e-3]))
    assert rep.x is None and rep.lidar is None
    assert rep.spectrum_z["n_collapsed"] == 1 and rep.baselines["gaussian"]["z"]["n_collapsed"] == 0


@pytest.mark.parametrize("args, message", [
    ([], "give either RUN or --features"),
    (["--features", "missing.npy"], "not found"),
    (["runs/none", "--features", "a.npy"], "give either RUN or --features"),
    (["no/such/run"], "not found"),
    (["--features", "a.npy", "--pairs", "1"], "--pairs 1 must be at least 2"),
    (["--features", "a.npy", "--temperature", "nan"], "--temperature"),
    (["--features", "a.npy", "--loss", "nt_xent"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    np.save(tmp_path / "a.npy", np.zeros((4, 2)))
    res = _cli(*[str(tmp_path / a) if a.endswith(".npy") and a != "missing.npy" else a for a in args])
    assert res.returncode == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_help_states_definitions_and_defaults():
    res = _cli("--help")
    assert res.returncode == 0
    for word in ("RankMe", "LiDAR", "alpha-ReQ", "centred", "reset_parameters", "default 4096", "default 0"):
        assert word in res.stdout
    flags = re.findall(r"^\s+(--[a-z-]+)", res.stdout, flags=re.M)
    assert {"--features", "--loss", "--pairs", "--batch-size", "--temperature", "--seed", "--out"} <= set(flags)


def test_run_cli_on_a_tiny_training_run(tmp_path):
    out = tmp_path / "run"
    res = run_cli([*TINY_RUN, "--max-steps", "2", "--projector", "mlp", "--out", str(out)])
    assert res.returncode == 0, res.stderr
    res = _cli(str(out), "--pairs", "128", "--batch-size", "32", "--split", "test")
    assert res.returncode == 0, res.stderr
    rep = json.loads((out / "diagnose.json").read_text())
    assert rep["setup"]["source"]["projector"] == "mlp" and rep["setup"]["pairs"] == 128
    names = [e["left_out"] for e in rep["augmentation_effects"]]
    assert names == ["crop", "flip", "jitter", "grayscale", "blur", "solarize"]
    assert rep["baselines"]["random_init"] is not None and rep["x"]["batches"] == 4


# ---- the README example -------------------------------------------------------------------------------------


def test_readme_example_runs(capsys):
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Diagnose your own model"):]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "collapsed dimensions" in out and "X (" in out and "leave one out" in out
