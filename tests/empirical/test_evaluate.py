"""empirical.evaluate: kNN and linear probe on toy problems, spectra through theory, frozen backbone, the
official probe, the spectrum plot, CLI errors before any work."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import evaluate as ev  # noqa: E402
from empirical.models import SSLModel  # noqa: E402
from theory.spectrum import embedding_spectrum  # noqa: E402


def blobs(n: int, d: int = 16, classes: int = 10, sep: float = 8.0, seed: int = 0):
    """Gaussian blobs with well-separated random means: a linearly separable problem."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, d)) * sep
    y = rng.integers(0, classes, n)
    return means[y] + rng.standard_normal((n, d)), y


def test_knn_and_probe_separable_near_perfect():
    x, y = blobs(900)
    xtr, ytr, xte, yte = x[:600], y[:600], x[600:], y[600:]
    knn = ev.knn_eval(xtr, ytr, xte, yte)
    assert knn["top1"] > 0.98 and knn["top5"] == 1.0 and knn["k"] == 200
    lin = ev.linear_probe(xtr, ytr, xte, yte)
    assert lin["top1"] > 0.98 and lin["top5"] == 1.0


def test_knn_and_probe_shuffled_labels_near_chance():
    x, y = blobs(2000)
    y = np.random.default_rng(1).permutation(y)  # labels no longer depend on x
    xtr, ytr, xte, yte = x[:1500], y[:1500], x[1500:], y[1500:]
    assert ev.knn_eval(xtr, ytr, xte, yte)["top1"] < 0.2  # chance = 0.1
    lin = ev.linear_probe(xtr, ytr, xte, yte)
    assert lin["top1"] < 0.2


def test_per_image_correctness_is_stored_and_matches_top1():
    """The stored mask is the per-image top-1 hits: its mean is top-1, so two rows can be compared image by image."""
    from empirical.paired import unpack_mask

    x, y = blobs(600)
    y[::3] = np.random.default_rng(2).permutation(y[::3])  # some images hard, so both outcomes occur
    xtr, ytr, xte, yte = x[:400], y[:400], x[400:], y[400:]
    for res in (ev.knn_eval(xtr, ytr, xte, yte), ev.linear_probe(xtr, ytr, xte, yte)):
        mask = unpack_mask(res["top1_correct"], len(yte))
        assert 0 < mask.sum() < len(mask) and mask.mean() == pytest.approx(res["top1"])


def test_knn_caps_k_at_train_size():
    x, y = blobs(60)
    assert ev.knn_eval(x[:40], y[:40], x[40:], y[40:])["k"] == 40


def test_known_singular_values_through_theory():
    """z = sqrt(N) Q diag(sqrt(s)), Q orthonormal and orthogonal to 1: covariance (1/N) Z^T Z = diag(s)."""
    n, s = 400, np.array([4.0, 1.0, 0.25, 1e-5])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, len(s) + 1))
    a[:, 0] = 1.0
    q = np.linalg.qr(a)[0][:, 1:]  # orthogonal to the ones vector: zero column means
    z = np.sqrt(n) * q * np.sqrt(s)
    spec = embedding_spectrum(z, normalize=False)
    np.testing.assert_allclose(spec.singular_values, s, rtol=1e-8, atol=1e-12)
    assert spec.n_collapsed == 1  # 1e-5 <= 1e-3 * 4
    # the evaluation goes through the same code with the paper's L2 normalization
    summ = ev.spectrum_summary(z, "z")
    ref = embedding_spectrum(z, normalize=True)
    np.testing.assert_allclose(summ["log10"], ref.log10)
    assert summ["n_collapsed"] == ref.n_collapsed and summ["effective_rank"] == ref.effective_rank


def test_isotropic_cloud_full_rank_and_rank_k_cloud_collapses():
    rng = np.random.default_rng(0)
    d, k = 16, 5
    iso = ev.spectrum_summary(rng.standard_normal((20000, d)), "r")
    assert iso["n_collapsed"] == 0 and iso["effective_rank"] > d - 0.3
    low = rng.standard_normal((5000, k)) @ rng.standard_normal((k, d))
    s = ev.spectrum_summary(low, "r")
    assert s["n_collapsed"] == d - k and s["effective_rank"] < k + 1e-6


def test_features_deterministic_and_backbone_bit_identical():
    torch.manual_seed(0)
    model = SSLModel("tiny", "directclr", d0=8)
    model.train()  # a model left in train mode must come back in train mode, BN statistics untouched
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(48) % 4
    cfg = {"projector": "directclr", "d0": 8}
    f1 = ev.extract_features(model, images, cfg, batch_size=20)
    f2 = ev.extract_features(model, images, cfg, batch_size=48)
    np.testing.assert_array_equal(f1["z"], f1["r"][:, :8])
    np.testing.assert_array_equal(f1["r_rest"], f1["r"][:, 8:])
    np.testing.assert_allclose(f1["r"], f2["r"], rtol=1e-5, atol=1e-6)
    assert f1["r"].dtype == np.float64 and f1["r"].shape == (48, 128)
    ev.linear_probe(f1["r"][:32], labels[:32].numpy(), f1["r"][32:], labels[32:].numpy())
    ev.knn_eval(f1["r"][:32], labels[:32].numpy(), f1["r"][32:], labels[32:].numpy())
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_load_trained_final_and_ckpt_agree(tiny_run):
    m1, c1 = ev.load_trained(os.path.join(tiny_run, "final.pt"))
    ckpt = [f for f in os.listdir(tiny_run) if f.startswith("ckpt-")][0]
    m2, c2 = ev.load_trained(os.path.join(tiny_run, ckpt))
    assert c1["projector"] == c2["projector"] == "directclr" and not m1.training
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    images, labels = ev.load_split(c1, "test")
    assert images.dtype == torch.uint8 and len(images) == len(labels) == 360


def test_cli_writes_json(tiny_run, tmp_path, capsys):
    assert ev.main(["--checkpoint", tiny_run, "--out", str(tmp_path), "--max-train", "400"]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert set(res["spectra"]) == {"r", "z", "r_rest"}
    assert res["spectra"]["z"]["dim"] == 16 and res["spectra"]["r_rest"]["dim"] == 112
    assert res["knn_r"]["k"] == 200 and res["n_train"] == 400
    assert 0 <= res["linear_r"]["top1"] <= 1 and "linear_r_head" in res
    out = capsys.readouterr().out
    assert "kNN on r" in out and "linear probe on frozen r" in out and "embedding" in out


def test_cli_bad_input_exit_2(tmp_path, capsys):
    assert ev.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    garbage = tmp_path / "final.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert ev.main(["--checkpoint", str(garbage)]) == 2
    assert ev.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error:") for line in err)
    assert "not found" in err[0] and "cannot read checkpoint" in err[1] and "which run?" in err[2]


def test_probe_does_not_amplify_a_dead_channel():
    """A nearly dead channel (std 1e-7) that happens to carry the label must stay unreadable: the probe sees
    the features at the network's own relative scale. Per-channel standardization would read it perfectly."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    x = np.stack([rng.standard_normal(2000), rng.standard_normal(2000), (y - 0.5) * 1e-7], axis=1)
    lin = ev.linear_probe(x[:1500], y[:1500], x[1500:], y[1500:])
    assert lin["top1"] < 0.6  # chance 0.5
    std = x / x.std(0)  # what per-channel standardization would hand the probe
    assert ev.linear_probe(std[:1500], y[:1500], std[1500:], y[1500:])["top1"] > 0.99


def test_cli_run_folder_plot(tiny_run, tmp_path, capsys):
    """python -m empirical.evaluate RUN --plot s.png: the spectra figure (PNG + PDF) and eval.json."""
    png = tmp_path / "fig" / "s.png"
    assert ev.main([tiny_run, "--out", str(tmp_path), "--plot", str(png), "--spectra-only"]) == 0
    assert png.stat().st_size > 10_000 and (tmp_path / "fig" / "s.pdf").exists()
    # written through the atomic writer, each in the format its name says, no temporary file left
    assert sorted(p.name for p in png.parent.iterdir()) == ["s.pdf", "s.png"]
    assert png.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "fig" / "s.pdf").read_bytes()[:4] == b"%PDF"
    res = json.loads((tmp_path / "eval.json").read_text())
    assert "knn_r" not in res and res["spectra"]["z"]["dim"] == 16
    assert f"wrote {png}" in capsys.readouterr().out


def test_official_probe_runs_and_reports_every_epoch(tiny_run):
    model, cfg = ev.load_trained(tiny_run)
    images, labels = ev.load_split(cfg, "train", 128)
    test_images, test_labels = ev.load_split(cfg, "test")
    fte = ev.extract_features(model, test_images, cfg)["r"]
    yte = test_labels.numpy()
    res = ev.official_probe(model, images, labels, fte, yte, cfg["image_size"], epochs=2, batch=64)
    assert len(res["top1_per_epoch"]) == 2 and res["best_top1"] == max(res["top1_per_epoch"])
    assert res["top1"] == res["top1_per_epoch"][-1] and res["epochs"] == 2
    # lr 0: the classifier stays at its N(0, 0.01) init; its test accuracy computed here independently
    frozen = ev.official_probe(model, images, labels, fte, yte, cfg["image_size"], epochs=1, batch=64, lr=0.0)
    w = torch.empty(10, fte.shape[1]).normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    expect = float(((torch.as_tensor(fte, dtype=torch.float32) @ w.T).argmax(1).numpy() == yte).mean())
    assert frozen["top1"] == pytest.approx(expect)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--out", "/proc/nope"], "--out '/proc/nope' is not writable"),
        (["--max-train", "0"], "--max-train 0 must be at least 1"),
        (["--max-train", "-5"], "--max-train -5 must be at least 1"),
        (["--temperature", "nan"], "--temperature nan is not a finite number"),
        (["--k", "0"], "--k 0"),
        (["--plot", "/proc/nope/s.png"], "--plot '/proc/nope' is not writable"),
        (["--plot", "s.jpg"], "give a .png name"),
        (["--device", "foo"], "--device 'foo' is not a device (cpu, cuda, cuda:N or mps)"),
        (["--max-train", "1"], "--max-train 1 is too few: the linear probe needs at least 2"),
        (["--plot", ""], "--plot '' is not a file name: give one ending in .png or .pdf"),
        (["--plot", "figs/"], "--plot 'figs/' is not a file name"),
        (["--plot", "figs/.png"], "is not a file name"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_work(tiny_run, capsys, monkeypatch, args, needle):
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the input"))
    assert ev.main([tiny_run, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and needle in err, err


def test_diverged_run_exits_3(tiny_run, tmp_path, capsys):
    import shutil

    state = torch.load(os.path.join(tiny_run, "final.pt"))
    state["backbone.stem.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "final.pt")
    shutil.copy(os.path.join(tiny_run, "config.json"), tmp_path / "config.json")
    assert ev.main([str(tmp_path), "--spectra-only"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not finite" in err and "diverged" in err
