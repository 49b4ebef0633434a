"""Batched augmentation with per-sample parameters (paper.md 3.1 recipe), each op against a direct route."""

import math

import pytest

torch = pytest.importorskip("torch")

from empirical.augment import augment, recipe, sample_params, two_views, view_params  # noqa: E402


def _images(n=8, size=16, seed=0):
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def _identity(n):
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    no = torch.zeros(n, dtype=torch.bool)
    return {
        "w": one,
        "h": one,
        "cx": one / 2,
        "cy": one / 2,
        "flip": no,
        "jitter": no,
        "bright": one,
        "contrast": one,
        "sat": one,
        "hue": zero,
        "gray": no,
        "blur": no,
        "sigma": one,
        "solarize": no,
    }


def test_identity_params_reproduce_the_image():
    x = _images()
    out = augment(x, _identity(len(x)), 16, normalize=False)
    assert torch.allclose(out, x.float() / 255, atol=1e-5)


def test_flip_and_crop_geometry():
    x = _images()
    p = _identity(len(x))
    p["flip"] = torch.tensor([True, False] * 4)
    out = augment(x, p, 16, normalize=False)
    ref = x.float() / 255
    assert torch.allclose(out[0], ref[0].flip(-1), atol=1e-5) and torch.allclose(out[1], ref[1], atol=1e-5)
    # Crop the top-left quarter (w = h = 1/2, centre 1/4) and resize 8 -> 8: exactly those pixels.
    p = _identity(len(x))
    p["w"] = p["h"] = torch.full((len(x),), 0.5, dtype=torch.float64)
    p["cx"] = p["cy"] = torch.full((len(x),), 0.25, dtype=torch.float64)
    out = augment(x, p, 8, normalize=False)
    assert torch.allclose(out, ref[:, :, :8, :8], atol=1e-5)


def test_colour_ops_by_hand():
    x = _images(4)
    ref = x.float() / 255
    p = _identity(4)
    p["jitter"] = torch.ones(4, dtype=torch.bool)
    p["bright"] = torch.full((4,), 0.5, dtype=torch.float64)
    assert torch.allclose(augment(x, p, 16, normalize=False), ref * 0.5, atol=1e-5)
    p = _identity(4)
    p["jitter"] = torch.ones(4, dtype=torch.bool)
    p["sat"] = torch.zeros(4, dtype=torch.float64)
    gray = (ref * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(augment(x, p, 16, normalize=False), gray.expand_as(ref), atol=1e-5)
    p = _identity(4)
    p["gray"] = torch.ones(4, dtype=torch.bool)
    assert torch.allclose(augment(x, p, 16, normalize=False), gray.expand_as(ref), atol=1e-5)
    p = _identity(4)
    p["solarize"] = torch.ones(4, dtype=torch.bool)
    assert torch.allclose(
        augment(x, p, 16, normalize=False), torch.where(ref >= 0.5, 1 - ref, ref), atol=1e-6
    )


def test_hue_rotation_keeps_luma_and_full_turn_is_identity():
    x = _images(2)
    ref = x.float() / 255
    p = _identity(2)
    p["jitter"] = torch.ones(2, dtype=torch.bool)
    p["hue"] = torch.tensor([0.5, 1.0], dtype=torch.float64)  # half turn, full turn
    ref_c = torch.full_like(ref, 0.5)
    ref_c[:, 0] = 0.6  # an unsaturated colour: the rotation stays inside [0, 1], no clamping
    out = augment((ref_c * 255).round().to(torch.uint8), p, 16, normalize=False)
    base = (ref_c * 255).round() / 255
    luma = lambda t: (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)  # noqa: E731
    assert torch.allclose(luma(out), luma(base), atol=1e-5)
    assert torch.allclose(out[1], base[1], atol=1e-5)
    assert not torch.allclose(out[0], base[0], atol=1e-2)


def test_blur_keeps_constants_and_smooths():
    n = 4
    x = _images(n, 32)
    p = _identity(n)
    p["blur"] = torch.tensor([True, True, False, False])
    p["sigma"] = torch.full((n,), 2.0 * 224 / 32, dtype=torch.float64)  # sigma 2 px at 32 px
    out = augment(x, p, 32, normalize=False)
    ref = x.float() / 255
    assert torch.allclose(out[2:], ref[2:], atol=1e-6)  # unblurred samples untouched
    assert out[:2].var() < 0.5 * ref[:2].var()
    const = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    q = {k: v[:1] for k, v in p.items()}
    assert torch.allclose(
        augment(const, q, 32, normalize=False), torch.full((1, 3, 32, 32), 100 / 255), atol=1e-5
    )


def test_per_sample_parameters_differ_and_seed_reproduces():
    x = _images(1).expand(16, -1, -1, -1)  # the same image 16 times
    rec = recipe("paper", 1.0, 16)
    v1, v2 = two_views(x, rec, 16, seed=0, step=3)
    flat = v1.reshape(16, -1)
    assert torch.cdist(flat, flat).add(torch.eye(16) * 1e9).min() > 1e-3  # every sample its own draw
    w1, w2 = two_views(x, rec, 16, seed=0, step=3)
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    u1, _ = two_views(x, rec, 16, seed=0, step=4)
    assert not torch.allclose(u1, v1)


def test_rank_slices_equal_the_global_batch():
    """A rank augments rows [offset, offset+n) exactly as a single process would (DDP equivalence)."""
    x = _images(8)
    rec = recipe("simclr", 1.0, 16)
    full = two_views(x, rec, 16, seed=1, step=7)
    parts = [two_views(x[o : o + 4], rec, 16, seed=1, step=7, global_batch=8, offset=o) for o in (0, 4)]
    for v in (0, 1):
        assert torch.equal(torch.cat([parts[0][v], parts[1][v]]), full[v])


def test_paper_recipe_probabilities():
    v1, v2 = recipe("paper", 1.0, 224)
    g = torch.Generator().manual_seed(0)
    p1, p2 = sample_params(v1, 20000, g), sample_params(v2, 20000, g)
    assert p1["blur"].all() and not p1["solarize"].any()
    assert p2["blur"].float().mean() == pytest.approx(0.1, abs=0.01)
    assert p2["solarize"].float().mean() == pytest.approx(0.2, abs=0.01)
    for p in (p1, p2):
        assert p["jitter"].float().mean() == pytest.approx(0.8, abs=0.01)
        assert p["gray"].float().mean() == pytest.approx(0.2, abs=0.01)
        assert p["flip"].float().mean() == pytest.approx(0.5, abs=0.015)
        area = p["w"] * p["h"]
        assert area.min() >= 0.08 - 1e-9 and area.max() <= 1
        assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    s1, s2 = recipe("simclr", 1.0, 32)
    assert s1.p_blur == s2.p_blur == 0.0 and s1.jitter == s2.jitter == (0.4, 0.4, 0.4, 0.1)


def test_strength_scales_jitter_and_crop():
    base, _ = recipe("paper", 1.0)
    strong, _ = recipe("paper", 2.0)
    none, _ = recipe("paper", 0.0)
    assert strong.jitter[:3] == tuple(2 * j for j in base.jitter[:3]) and strong.jitter[3] == pytest.approx(
        0.2
    )
    assert 1 - strong.scale_min == pytest.approx(min(2 * 0.92, 0.99))
    assert none.scale_min == 1.0 and none.jitter == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        recipe("paper", -1.0)
    with pytest.raises(ValueError):
        recipe("byol")


def test_view_params_depend_only_on_seed_step_row():
    rec = recipe("paper", 1.0, 32)
    a = view_params(rec, 5, 9, 12, 0, 12)
    b = view_params(rec, 5, 9, 12, 6, 6)
    for pa, pb in zip(a, b, strict=True):
        assert all(torch.equal(pa[k][6:], pb[k]) for k in pa)
    assert math.isfinite(float(a[0]["w"].sum()))
