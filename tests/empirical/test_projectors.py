"""Backbones and every projector of Tables 1-2 / appendix F: shapes and rank behaviour."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical.models import EMBED_DIM, SSLModel, build_backbone, build_projector, default_d0  # noqa: E402
from theory.spectrum import embedding_spectrum  # noqa: E402

W, D0, N = 32, 6, 200


def _r(n=N, w=W, seed=0):
    return torch.randn(n, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    "name,out_dim,rank",
    [
        ("none", W, W),
        ("linear", EMBED_DIM, W),
        ("mlp", EMBED_DIM, None),
        ("diagonal", W, W),
        ("orthogonal", W, W),
        ("fixed-lowrank", W, D0),
        ("directclr", D0, D0),
        ("random-subset", D0, D0),
    ],
)
def test_projector_shape_and_rank(name, out_dim, rank):
    torch.manual_seed(0)
    proj = build_projector(name, W, D0, seed=1).double().train()
    if name == "random-subset":
        proj.set_step(0)
    z = proj(_r())
    assert z.shape == (N, out_dim)
    if rank is not None:
        s = embedding_spectrum(z.detach().numpy(), normalize=False)
        assert s.singular_values.size - s.n_collapsed == rank


def test_default_d0_is_paper_ratio():
    assert default_d0(2048) == 360 and default_d0(512) == 90 and default_d0(128) == 22


def test_fixed_lowrank_matrix_has_d0_unit_singular_values_and_is_fixed():
    proj = build_projector("fixed-lowrank", W, D0, seed=5)
    s = torch.linalg.svdvals(proj.matrix)
    assert torch.allclose(s[:D0], torch.ones(D0, dtype=s.dtype), atol=1e-10)
    assert torch.all(s[D0:] < 1e-10)
    assert list(proj.parameters()) == []  # a buffer, not trained
    assert torch.equal(build_projector("fixed-lowrank", W, D0, seed=5).matrix, proj.matrix)


def test_directclr_is_first_d0_channels():
    r = _r()
    assert torch.equal(build_projector("directclr", W, D0)(r), r[:, :D0])


def test_diagonal_starts_as_identity_and_scales_channels():
    proj = build_projector("diagonal", W, D0)
    r = _r()
    assert torch.equal(proj(r), r)
    with torch.no_grad():
        proj.weight.copy_(torch.arange(W, dtype=torch.float32))
    assert torch.allclose(proj(r.float()), r.float() * torch.arange(W))


def test_orthogonal_stays_orthogonal_after_training_steps():
    torch.manual_seed(0)
    proj = build_projector("orthogonal", W, D0).double()
    opt = torch.optim.SGD(proj.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        (proj(_r()) ** 3).sum().backward()
        opt.step()
    q = proj.weight
    assert torch.allclose(q @ q.T, torch.eye(W, dtype=q.dtype), atol=1e-5)  # built in float32
    assert not torch.allclose(q, torch.eye(W, dtype=q.dtype))


def test_random_subset_per_step_reproducible_and_rank_consistent():
    a = build_projector("random-subset", W, D0, seed=3)
    b = build_projector("random-subset", W, D0, seed=3)  # another rank
    seen = set()
    for step in range(5):
        a.set_step(step)
        b.set_step(step)
        assert torch.equal(a.index, b.index)
        assert len(set(a.index.tolist())) == D0 and int(a.index.max()) < W
        seen.add(tuple(a.index.tolist()))
    assert len(seen) == 5  # a fresh subset each step
    a.eval()
    r = _r()
    assert torch.equal(a(r), r)  # eval: the whole representation is measured


def test_bad_d0_and_name():
    with pytest.raises(ValueError, match="d0"):
        build_projector("directclr", W, W + 1)
    with pytest.raises(ValueError, match="unknown projector"):
        build_projector("deep", W, D0)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vit", True)


@pytest.mark.parametrize("name,width", [("tiny", 128), ("resnet18", 512), ("resnet50", 2048)])
def test_backbones(name, width):
    torch.manual_seed(0)
    net, w = build_backbone(name, cifar_stem=True)
    assert w == width
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, width)
    # zero_init_residual: the last BN of every residual branch starts at 0.
    last_bn = [m.bn3 if hasattr(m, "bn3") else m.bn2 for m in net.modules() if hasattr(m, "bn2")]
    assert last_bn and all(float(bn.weight.detach().abs().sum()) == 0 for bn in last_bn)


def test_cifar_stem_keeps_resolution():
    x = torch.randn(1, 3, 32, 32)
    for stem, expected in ((True, 32), (False, 8)):
        net, _ = build_backbone("resnet18", cifar_stem=stem)
        assert net.maxpool.__class__.__name__ == ("Identity" if stem else "MaxPool2d")
        assert net.relu(net.bn1(net.conv1(x))).shape[-1] == (32 if stem else 16)
        assert net.maxpool(net.relu(net.bn1(net.conv1(x)))).shape[-1] == (expected if stem else 8)


def test_ssl_model_outputs_and_detached_probe():
    torch.manual_seed(0)
    m = SSLModel("tiny", "directclr", None, True, num_classes=7)
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    r1, z1, r2, z2, logits = m(x1, x2)
    assert r1.shape == (4, 128) and z1.shape == (4, 22) and logits.shape == (4, 7)
    logits.sum().backward()  # the probe must not train the backbone
    assert all(p.grad is None for p in m.backbone.parameters())
    assert m.probe.weight.grad is not None
    assert np.isfinite(z2.detach().numpy()).all()


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_deep_linear_projector_and_its_weights(layers):
    """L bias-free layers width -> 128 -> ... -> 128; projector_weights() input side first, z = W_L ... W_1 r."""
    m = SSLModel("tiny", "linear", None, True, num_classes=3, projector_layers=layers).double()
    ws = m.projector_weights()
    assert [tuple(w.shape) for w in ws] == [(EMBED_DIM, 128)] + [(EMBED_DIM, EMBED_DIM)] * (layers - 1)
    r = torch.randn(5, 128, dtype=torch.float64)
    total = ws[0]
    for w in ws[1:]:
        total = w @ total
    torch.testing.assert_close(m.projector(r), r @ total.T, rtol=1e-12, atol=1e-12)
    if layers == 1:  # the one-layer projector is the plain Linear, as before (same checkpoint keys)
        assert "projector.weight" in m.state_dict()


def test_projector_layers_only_for_linear():
    with pytest.raises(ValueError, match="only the linear projector"):
        build_projector("mlp", W, D0, layers=2)
    with pytest.raises(ValueError, match="linear projector"):
        SSLModel("tiny", "mlp").projector_weights()
