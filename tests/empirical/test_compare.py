"""empirical.compare (theory vs the trained network): every path against theory on synthetic inputs,
then the CLI end to end on a 4-step checkpoint."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import compare as cmp  # noqa: E402
from empirical import linear_maps as lm  # noqa: E402
from empirical.models import SSLModel, TinyResNet, build_projector  # noqa: E402
from theory import contrastive_covariance  # noqa: E402


def _views(n=256, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ np.diag(np.linspace(1.0, 2.0, d))
    return x, x + 0.5 * rng.standard_normal((n, d))


def _randomize_bn(module, gen):
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=m.running_var.dtype) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


def test_linear_projector_x_is_theory_x():
    x, x_aug = _views()
    proj = torch.nn.Linear(6, 4, bias=False)
    w = np.random.default_rng(1).standard_normal((4, 6)) * 0.3
    proj.weight.data = torch.as_tensor(w, dtype=torch.float32)
    weight, info = lm.projector_map(proj, "linear", x)
    np.testing.assert_allclose(weight, proj.weight.detach().double().numpy())
    assert info["kind"] == "exact"
    samples = cmp.batched_x(x, x_aug, weight, 64)
    direct = [contrastive_covariance(x[s : s + 64], x_aug[s : s + 64], weight)[0] for s in range(0, 256, 64)]
    np.testing.assert_allclose(samples, np.stack(direct), rtol=1e-12, atol=1e-12)
    # full-rank features: the support basis is a rotation, so X's eigenvalues are those of theory's X in r-space
    res = cmp.x_analysis(x, x_aug, x @ weight.T, weight, 64, 0.1)
    assert res["support_dim"] == 6
    np.testing.assert_allclose(
        res["trained"]["eigenvalues"], np.linalg.eigvalsh(np.mean(direct, 0))[::-1], rtol=1e-9, atol=1e-12
    )
    apriori = np.mean(
        [contrastive_covariance(x[s : s + 64], x_aug[s : s + 64], 0 * weight)[0] for s in range(0, 256, 64)], 0
    )
    np.testing.assert_allclose(res["apriori"]["eigenvalues"], np.linalg.eigvalsh(apriori)[::-1], atol=1e-12)


@pytest.mark.parametrize("name", ["none", "linear", "diagonal", "orthogonal", "fixed-lowrank", "directclr"])
def test_exact_projectors_end_to_end_matrix(name):
    torch.manual_seed(0)
    proj = build_projector(name, 8, 3, seed=2).double().eval()
    if name == "diagonal":
        proj.weight.data = torch.randn(8, dtype=torch.float64)
    if name == "orthogonal":
        torch.nn.init.normal_(proj.parametrizations.weight.original)
    weight, _ = lm.projector_map(proj, name, np.zeros((4, 8)))
    with torch.no_grad():  # a linear map's action on the identity is M^T
        np.testing.assert_allclose(weight, proj(torch.eye(8, dtype=torch.float64)).numpy().T, atol=1e-12)
    if name == "directclr":
        np.testing.assert_array_equal(weight, np.eye(8)[:3])
    if name == "fixed-lowrank":
        np.testing.assert_allclose(np.linalg.svd(weight, compute_uv=False), [1, 1, 1, 0, 0, 0, 0, 0], atol=1e-12)


def test_unsupported_projector_is_a_usage_error():
    with pytest.raises(ValueError, match="random-subset"):
        lm.projector_map(build_projector("random-subset", 8, 3), "random-subset", np.zeros((4, 8)))


def test_mlp_linearization_is_the_batch_averaged_jacobian():
    gen = torch.Generator().manual_seed(0)
    proj = build_projector("mlp", 6, 3).double()
    _randomize_bn(proj, gen)
    proj.eval()
    r = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    weight, info = lm.projector_map(proj, "mlp", r.numpy())
    # eval mode: z_i depends on r_i only, so d(sum_i z_i)/d r_i is the Jacobian at r_i
    jac = torch.autograd.functional.jacobian(lambda v: proj(v).sum(0), r)  # (128, N, 6)
    np.testing.assert_allclose(weight, jac.mean(1).numpy(), rtol=1e-10, atol=1e-12)
    # BN folding: the eval-mode MLP is exactly A2 ReLU(A1 r + b1) + b2
    a1, b1, a2, b2 = lm.mlp_layers(proj)
    with torch.no_grad():
        np.testing.assert_allclose(np.maximum(r.numpy() @ a1.T + b1, 0) @ a2.T + b2, proj(r).numpy(), atol=1e-10)
    assert 0 < info["active_fraction_mean"] < 1


def test_frozen_experiment_collapses_the_strongly_augmented_directions():
    """Isotropic features, one noisy view with std 3 > sqrt(2) on k = 3 of 8 directions: X(W -> 0) has exactly
    those 3 negative directions (Theorem 1) and one trained linear layer collapses them."""
    rng = np.random.default_rng(0)
    d, k = 8, 3
    x = rng.standard_normal((2048, d))
    noise = np.zeros((2048, d))
    noise[:, d - k :] = 3.0 * rng.standard_normal((2048, k))
    res = cmp.frozen_experiment(x, x + noise, depths=(1,), steps=1500, lr=0.02)
    assert res["apriori_n_negative"] == k
    one = res["depths"]["1"]
    assert one["observed_collapsed"] == k
    assert one["overlap_apriori_vs_observed"] > 0.95
    assert one["embedding_variance_history"].shape == (len(one["times"]), d)


def test_whiten_gives_isotropic_view_one():
    rng = np.random.default_rng(3)
    r1 = rng.standard_normal((500, 10)) @ rng.standard_normal((10, 10))
    x, x_aug, lam = cmp.whiten(r1, r1 + 0.1, 4)
    np.testing.assert_allclose(np.cov(x, rowvar=False), np.eye(4), atol=1e-10)
    np.testing.assert_allclose(x_aug - x, np.broadcast_to(x_aug[0] - x[0], x.shape), atol=1e-10)
    assert np.all(np.diff(lam) <= 0)


def test_alignment_of_aligned_and_random_layers():
    rng = np.random.default_rng(0)
    d = 16
    q = [np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(3)]
    s1, s2 = np.exp(-0.3 * np.arange(d)), np.exp(-0.2 * np.arange(d))
    w1 = q[1] @ np.diag(s1) @ q[0].T
    aligned = cmp.pair_alignment(w1, q[2] @ np.diag(s2) @ q[1].T)  # V2 = U1 (Theorem 2's limit)
    assert all(v > 0.999 for v in aligned["scores"].values())
    assert aligned["subspace_overlap_top_k"] > 0.999 and not aligned["w2_degenerate"]
    np.testing.assert_allclose(aligned["sigma2"], s2)
    rand = cmp.pair_alignment(w1, rng.standard_normal((d, d)))
    assert rand["scores"]["16"] < 0.5 and abs(rand["erank1"] - cmp.effective_rank(s1)) < 1e-12


def test_backbone_shortcut_matrix_acts_on_constant_inputs():
    net = TinyResNet().double()
    _randomize_bn(net, torch.Generator().manual_seed(1))
    net.eval()
    mats = lm.backbone_last_layers(net, 128)
    assert mats["main"].shape == (128, 128) and mats["shortcut"].shape == (128, 64)
    down = net.blocks[-1].downsample
    c = torch.randn(64, dtype=torch.float64)
    with torch.no_grad():
        out = down(c.view(1, 64, 1, 1).expand(1, 64, 4, 4))[0, :, 1, 1].numpy()
    shift = down(torch.zeros(1, 64, 4, 4, dtype=torch.float64))[0, :, 1, 1].detach().numpy()
    np.testing.assert_allclose(out - shift, mats["shortcut"] @ c.numpy(), atol=1e-10)


# ---- CLI end to end --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("sklearn")
    from empirical.train import main as train

    out = tmp_path_factory.mktemp("run")
    args = [
        "--dataset",
        "digits",
        "--backbone",
        "tiny",
        "--projector",
        "mlp",
        "--max-steps",
        "4",
        "--batch-size",
        "32",
        "--image-size",
        "16",
        "--spectrum-every",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        "--no-tensorboard",
    ]
    assert train(args) == 0
    return out


def test_cli_end_to_end(tiny_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cmp.main(
        [
            "--checkpoint",
            str(tiny_run),
            "--out",
            str(out),
            "--samples",
            "96",
            "--frozen-dim",
            "4",
            "--frozen-steps",
            "30",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "[1]" in text and "[2]" in text and "[3] mlp_layer1_vs_layer2" in text
    res = json.load(open(out / "compare.json"))
    assert res["samples"] == 96 and res["config"]["projector"] == "mlp" and res["trained_steps"] == 4
    xf = res["x_from_features"]
    assert {"trained", "matched", "apriori"} <= set(xf) and xf["batch"] == 24  # 96 samples: 4 batches
    assert len(xf["trained"]["eigenvalues"]) == xf["support_dim"] <= 128
    assert set(res["frozen"]["depths"]) == {"1", "2", "3"}
    assert {"mlp_layer1_vs_layer2", "backbone_main_vs_projector"} <= set(res["alignment"])
    assert 0.0 < res["projector_map"]["r2_of_linear_map"] <= 1.0


def test_cli_bad_input_exits_2_with_one_line(tiny_run, tmp_path, capsys):
    assert cmp.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and "\n" not in err
    # a random-subset run has no fixed projector map for X
    cfg = json.load(open(tiny_run / "config.json"))
    bad = tmp_path / "rs"
    bad.mkdir()
    json.dump({**cfg, "projector": "random-subset"}, open(bad / "config.json", "w"))
    torch.save(SSLModel("tiny", "random-subset", cfg["d0"], cfg["cifar_stem"]).state_dict(), bad / "final.pt")
    assert cmp.main(["--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "random-subset" in err and "\n" not in err
    assert cmp.main(["--checkpoint", str(tiny_run), "--samples", "1"]) == 2
    assert "--samples 1 must be between 8 and 8192" in capsys.readouterr().err


def test_cli_missing_dataset_and_unwritable_out(tiny_run, tmp_path, capsys, monkeypatch):
    """A run whose dataset is not where its config says: one line naming the folder; --data-dir fixes it.
    --out is checked before any work, and a read error is not reported as a write error."""
    cfg = json.load(open(tiny_run / "config.json"))
    moved = tmp_path / "moved"
    moved.mkdir()
    json.dump({**cfg, "dataset": "cifar10", "data_dir": str(tmp_path / "nowhere")}, open(moved / "config.json", "w"))
    torch.save(torch.load(tiny_run / "final.pt"), moved / "final.pt")
    assert cmp.main([str(moved), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere" in err and "cannot write" not in err
    assert cmp.main([str(moved), "--data-dir", str(tmp_path / "elsewhere"), "--no-progress"]) == 2
    assert "elsewhere" in capsys.readouterr().err
    monkeypatch.setattr(cmp, "compare", lambda *a, **k: pytest.fail("worked before checking --out"))
    assert cmp.main([str(tiny_run), "--out", "/proc/nope"]) == 2
    assert "--out '/proc/nope' is not writable" in capsys.readouterr().err
