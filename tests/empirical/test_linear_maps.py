"""empirical.linear_maps: every projector's matrix against its own forward pass (autograd, identity inputs)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical import linear_maps as lm  # noqa: E402
from empirical.models import TinyResNet, build_projector  # noqa: E402


def _randomize_bn(module, gen):
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=m.running_var.dtype) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


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
