"""Batched per-sample augmentation against torchvision.transforms.v2.functional on the same parameters.

Tolerance: 1e-5 absolute on [0, 1] float32 pixels for every operation and for the whole pipeline (measured
<= 2e-6: float32 round-off of differently ordered sums; a uint8 level is 3.9e-3).
"""

import math

import pytest

torch = pytest.importorskip("torch")
TF = pytest.importorskip("torchvision.transforms.v2.functional")

from empirical.augment import (  # noqa: E402
    SOLARIZE_THRESHOLD,
    Prefetcher,
    augment,
    augment_packed,
    blur_kernel_size,
    crop_boxes,
    pack,
    random_resized_crop_box,
    recipe,
    sample_params,
    two_views,
    view_params,
)

ATOL = 1e-5


def _images(n=8, size=16, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, width or size), generator=g, dtype=torch.uint8)


def _smooth_images(n=8, size=16, seed=0):
    """Natural-ish images: smooth colour fields (hue/saturation well defined), as uint8."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear") * 255).round().to(torch.uint8)


def _identity(n, trials=10):
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    no = torch.zeros(n, dtype=torch.bool)
    return {
        "area": torch.ones(n, trials, dtype=torch.float64),
        "log_ratio": torch.zeros(n, trials, dtype=torch.float64),
        "top": torch.zeros(n, trials, dtype=torch.float64),
        "left": torch.zeros(n, trials, dtype=torch.float64),
        "flip": no,
        "jitter": no,
        "bright": one,
        "contrast": one,
        "sat": one,
        "hue": zero,
        "order": torch.arange(4).expand(n, 4),
        "gray": no,
        "blur": no,
        "sigma": one,
        "solarize": no,
    }


def _params(n, rec=None, seed=0):
    rec = rec or recipe("paper", 1.0, 224)[1]
    return sample_params(rec, n, torch.Generator().manual_seed(seed))


def _reference(x: torch.Tensor, p: dict, size: int) -> torch.Tensor:
    """One sample at a time with torchvision's functional ops, on the same parameters."""
    f = x.float() / 255
    box = crop_boxes(p, x.shape[-2], x.shape[-1]).long()
    out = []
    for i in range(len(f)):
        top, left, h, w = box[i].tolist()
        y = TF.resized_crop(
            f[i], top, left, h, w, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True
        ).clamp(0, 1)
        if p["flip"][i]:
            y = TF.horizontal_flip(y)
        if p["jitter"][i]:
            for op in p["order"][i].tolist():
                if op == 0:
                    y = TF.adjust_brightness(y, float(p["bright"][i]))
                elif op == 1:
                    y = TF.adjust_contrast(y, float(p["contrast"][i]))
                elif op == 2:
                    y = TF.adjust_saturation(y, float(p["sat"][i]))
                else:
                    y = TF.adjust_hue(y, float(p["hue"][i]))
        if p["gray"][i]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p["blur"][i]:
            k = blur_kernel_size(size)
            y = TF.gaussian_blur(y, [k, k], [float(p["sigma"][i])] * 2)
        if p["solarize"][i]:
            y = TF.solarize(y, SOLARIZE_THRESHOLD)
        out.append(y)
    return torch.stack(out)


def test_identity_params_reproduce_the_image():
    x = _images()
    out = augment(x, _identity(len(x)), 16, normalize=False)
    assert torch.allclose(out, x.float() / 255, atol=1e-6)


def test_resized_crop_and_flip_match_torchvision():
    """Non-square source, boxes both smaller and larger than the output (up- and antialiased downsampling)."""
    x = _images(24, 20, width=28)
    p = _identity(24)
    p.update({k: v for k, v in _params(24).items() if k in ("area", "log_ratio", "top", "left", "flip")})
    for size in (12, 16, 32):
        out = augment(x, p, size, normalize=False)
        assert (out - _reference(x, p, size)).abs().max() < ATOL
    assert p["flip"].any() and not p["flip"].all()


def test_precropped_input_is_only_resized():
    """crop=False (an image folder's loader already cropped and flipped): no crop, no flip, a plain resize."""
    x = _images(4, 16)
    p = _identity(4)
    p["flip"] = torch.ones(4, dtype=torch.bool)
    assert torch.equal(augment(x, p, 16, crop=False, normalize=False), x.float() / 255)
    ref = TF.resize(x.float() / 255, [12, 12], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    assert (augment(x, p, 12, crop=False, normalize=False) - ref.clamp(0, 1)).abs().max() < ATOL


def test_crop_boxes_follow_torchvision_get_params():
    """Same distribution as RandomResizedCrop.get_params (two-sample KS on h, w, top, left), fallback by hand."""
    stats = pytest.importorskip("scipy.stats")
    from torchvision.transforms import v2

    hgt, wid, n = 24, 40, 3000
    ours = crop_boxes(_params(n, recipe("paper", 1.0, 32)[0], seed=1), hgt, wid).numpy()
    torch.manual_seed(0)
    img = torch.zeros(3, hgt, wid)
    theirs = [v2.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    theirs = torch.tensor(theirs).numpy()  # (top, left, h, w)
    for k in range(4):
        assert stats.ks_2samp(ours[:, k], theirs[:, k]).pvalue > 1e-3, k
    assert ((ours[:, 2] <= hgt) & (ours[:, 3] <= wid) & (ours[:, 0] + ours[:, 2] <= hgt)).all()
    # No candidate fits (area 1, aspect 4/3 on a square / 3/4 on a wide image): the centred fallback crop.
    p = _identity(2)
    p["log_ratio"] = torch.full((2, 10), math.log(4 / 3), dtype=torch.float64)
    assert crop_boxes(p, 16, 16).tolist() == [[0, 0, 16, 16]] * 2
    p["log_ratio"] = torch.full((2, 10), math.log(3 / 4), dtype=torch.float64)
    assert crop_boxes(p, 10, 30).tolist() == [[0, (30 - 13) // 2, 10, 13]] * 2  # w = round(10 * 4/3)
    # The first fitting candidate wins: candidate 0 too large, candidate 1 fits.
    p = _identity(1)
    p["area"][0, 1] = 0.25
    p["log_ratio"][0, 0] = math.log(4 / 3)
    assert crop_boxes(p, 16, 16).tolist() == [[0, 0, 8, 8]]


def test_single_image_crop_box_for_loaders():
    """The per-image helper (for image-folder loaders) draws from the same distribution as get_params."""
    stats = pytest.importorskip("scipy.stats")
    from torchvision.transforms import v2

    g = torch.Generator().manual_seed(3)
    ours = torch.tensor([random_resized_crop_box(g, 30, 20, 0.08) for _ in range(2000)]).numpy()
    torch.manual_seed(1)
    img = torch.zeros(3, 30, 20)
    theirs = torch.tensor([v2.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)])
    for k in range(4):
        assert stats.ks_2samp(ours[:, k], theirs.numpy()[:, k]).pvalue > 1e-3, k


@pytest.mark.parametrize("op", ["bright", "contrast", "sat", "hue"])
def test_each_jitter_op_matches_torchvision(op):
    x = _smooth_images(6)
    p = _identity(6)
    p["jitter"] = torch.ones(6, dtype=torch.bool)
    values = {"bright": [0.2, 0.6, 1.3, 1.4, 1.8, 0.0], "hue": [-0.5, -0.3, -0.05, 0.1, 0.25, 0.5]}
    p[op] = torch.tensor(values.get(op, values["bright"]), dtype=torch.float64)
    out = augment(x, p, 16, normalize=False)
    assert (out - _reference(x, p, 16)).abs().max() < ATOL
    assert (out - x.float() / 255).abs().amax(dim=(1, 2, 3))[:5].min() > 1e-2  # the op did something


def test_jitter_order_is_per_sample_and_matches_torchvision():
    x = _smooth_images(8).repeat(3, 1, 1, 1)
    p = _identity(24)
    p["jitter"] = torch.ones(24, dtype=torch.bool)
    p["bright"] = torch.full((24,), 1.6, dtype=torch.float64)
    p["contrast"] = torch.full((24,), 0.5, dtype=torch.float64)
    p["sat"] = torch.full((24,), 1.8, dtype=torch.float64)
    p["hue"] = torch.full((24,), 0.2, dtype=torch.float64)
    p["order"] = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(24)])
    out = augment(x, p, 16, normalize=False)
    assert (out - _reference(x, p, 16)).abs().max() < ATOL
    # The order matters: the same image with another order gives another result.
    diff = [(out[i] - out[i + 8]).abs().max() for i in range(8) if not torch.equal(p["order"][i], p["order"][i + 8])]
    assert diff and max(diff) > 1e-2
    # Drawn orders are uniform over the 24 permutations.
    orders = _params(24000)["order"]
    assert torch.equal(orders.sort(1).values, torch.arange(4).expand(24000, 4))
    counts = torch.unique(orders, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 850 and counts.max() < 1150


def test_gray_blur_solarize_match_torchvision():
    x = _images(6, 32)
    p = _identity(6)
    p["gray"] = torch.tensor([True, False, True, False, False, False])
    p["blur"] = torch.tensor([True, True, False, True, True, False])
    p["sigma"] = torch.tensor([0.1, 0.5, 1.0, 1.3, 2.0, 2.0], dtype=torch.float64)
    p["solarize"] = torch.tensor([False, True, True, False, False, True])
    out = augment(x, p, 32, normalize=False)
    assert (out - _reference(x, p, 32)).abs().max() < ATOL


def test_whole_pipeline_matches_torchvision():
    x = _smooth_images(16, 24)
    for view, p in enumerate(view_params(recipe("paper", 1.0, 20), 3, 5, 16, 0, 16)):
        out = augment(x, p, 20, normalize=False)
        assert (out - _reference(x, p, 20)).abs().max() < ATOL, view


def test_delta_kernel_blur_is_the_identity():
    x = _images(4, 16)
    p = _identity(4)
    p["sigma"] = torch.tensor([0.1, 1.0, 2.0, 5.0], dtype=torch.float64)  # ignored: blur off
    packed = pack(p, 16, 16)
    assert packed.shape == pack(_params(4), 16, 16).shape  # shape-static: the same columns either way
    assert torch.equal(augment_packed(x, packed, 16, normalize=False), x.float() / 255)


def test_paper_blur_changes_a_32px_image():
    """The paper recipe's view-1 blur (p = 1) measurably smooths 32 px images; view 2 blurs rarely."""
    x = _images(64, 32)
    p1, _ = view_params(recipe("paper", 1.0, 32), 0, 0, 64, 0, 64)
    assert p1["blur"].all()
    off = dict(p1, blur=torch.zeros(64, dtype=torch.bool))
    blurred, sharp = augment(x, p1, 32, normalize=False), augment(x, off, 32, normalize=False)
    change = (blurred - sharp).abs().mean(dim=(1, 2, 3))
    assert (change > 0.02).float().mean() > 0.6  # sigma >= ~0.5 px for ~80% of the draws
    assert (change[p1["sigma"] > 1.0] > 0.03).all()


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


def test_prefetched_views_equal_drawn_views():
    x1, x2 = _images(6, 16, seed=1), _images(6, 16, seed=2)
    rec = recipe("paper", 1.0, 16)
    pre = Prefetcher(rec, 4, 12, 6, 6, (16, 16), True, "cpu", start=3)
    try:
        for step in (3, 4, 5, 9, 10, 2):  # in order, then a jump forward and back (resume)
            q1, q2 = pre.get(step)
            p1, p2 = view_params(rec, 4, step, 12, 6, 6)
            assert torch.equal(augment_packed(x1, q1, 16), augment(x1, p1, 16))
            assert torch.equal(augment_packed(x2, q2, 16), augment(x2, p2, 16))
    finally:
        pre.close()


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
        assert p["area"].min() >= 0.08 and p["area"].max() <= 1
        assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    assert recipe("paper", 1.0, 32) == (v1, v2)  # the same recipe at every size


def test_simclr_colour_strength_and_blur_by_resolution():
    small, large = recipe("simclr", 1.0, 32), recipe("simclr", 1.0, 224)
    assert all(v.jitter == (0.4, 0.4, 0.4, 0.1) and v.p_blur == 0.0 for v in small)
    assert all(v.jitter == (0.8, 0.8, 0.8, 0.2) and v.p_blur == 0.5 for v in large)
    assert all(v.p_solarize == 0.0 for v in small + large)


def test_strength_scales_jitter_and_crop():
    base, _ = recipe("paper", 1.0)
    strong, _ = recipe("paper", 2.0)
    none, _ = recipe("paper", 0.0)
    assert strong.jitter[:3] == tuple(2 * j for j in base.jitter[:3]) and strong.jitter[3] == pytest.approx(0.2)
    assert 1 - strong.scale_min == pytest.approx(min(2 * 0.92, 0.99))
    assert none.scale_min == 1.0 and none.jitter == (0, 0, 0, 0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError):
            recipe("paper", bad)
    with pytest.raises(ValueError):
        recipe("byol")


def test_view_params_depend_only_on_seed_step_row():
    rec = recipe("paper", 1.0, 32)
    a = view_params(rec, 5, 9, 12, 0, 12)
    b = view_params(rec, 5, 9, 12, 6, 6)
    for pa, pb in zip(a, b, strict=True):
        assert all(torch.equal(pa[k][6:], pb[k]) for k in pa)
    assert math.isfinite(float(a[0]["area"].sum()))


def test_pipeline_is_shape_static_and_captures_whole():
    """One graph for every draw (no graph breaks, no recompiles after the first step): capturable with the step."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    x = _images(8, 16)
    rec = recipe("paper", 1.0, 16)
    compiled = torch.compile(augment_packed, backend="eager", fullgraph=True, dynamic=False)
    graphs = []
    for step in range(3):
        for p in view_params(rec, 0, step, 8, 0, 8):
            q = pack(p, 16, 16)
            assert torch.equal(compiled(x, q, 16), augment_packed(x, q, 16))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1] == graphs[2] == graphs[0] <= 2, graphs  # the first call may fill the constant cache
    torch._dynamo.reset()
