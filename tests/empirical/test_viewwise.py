"""View-wise BatchNorm: both views in one call equal two separate calls (outputs, gradients, running
statistics), in one process and on 2 gloo ranks with synchronized BN (float64, ~1e-12)."""

import copy
import os

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from empirical.models import SSLModel  # noqa: E402
from empirical.syncbn import convert_sync_batchnorm  # noqa: E402
from empirical.train import contrastive, wrap_ddp  # noqa: E402
from empirical.viewwise import make_viewwise, stack_views  # noqa: E402

B, SIZE = 8, 16
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _setup(projector: str = "mlp"):
    torch.manual_seed(0)
    model = SSLModel("tiny", projector, 10, True, num_classes=3, seed=0).double()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, B, 3, SIZE, SIZE, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (B,), generator=g)
    return model, x1, x2, labels


def _step(model, x1, x2, labels, loss="info_nce", gather=None):
    model.zero_grad(set_to_none=True)
    out = model(x1, x2)
    r1, z1, r2, z2, logits = out
    ssl = contrastive(loss, z1, z2, 0.1, gather)
    (ssl + F.cross_entropy(logits, labels)).backward()
    return [o.detach() for o in out], ssl.detach()


def _assert_same(a: nn.Module, b: nn.Module, msg: str) -> None:
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, **TOL, msg=f"{msg} grad {n}")
    for (n, u), v in zip(a.named_buffers(), b.buffers(), strict=True):
        torch.testing.assert_close(u, v, **TOL, msg=f"{msg} buffer {n}")


@pytest.mark.parametrize("projector", ["mlp", "linear", "random-subset"])
def test_one_call_equals_two_calls(projector):
    ref, x1, x2, labels = _setup(projector)
    one = stack_views(copy.deepcopy(ref))
    assert one.state_dict().keys() == ref.state_dict().keys()
    for step in range(2):  # the second step starts from running statistics updated by the first
        if projector == "random-subset":
            ref.projector.set_step(step)
            one.projector.set_step(step)
        out_ref, loss_ref = _step(ref, x1 + step, x2, labels)
        out_one, loss_one = _step(one, x1 + step, x2, labels)
        for a, b in zip(out_one, out_ref, strict=True):
            torch.testing.assert_close(a, b, **TOL)
        torch.testing.assert_close(loss_one, loss_ref, **TOL)
        _assert_same(one, ref, f"{projector} step {step}")
        with torch.no_grad():  # the same weights for the next step
            for p, q in zip(one.parameters(), ref.parameters(), strict=True):
                p.copy_(q)
    ref.eval()
    one.eval()
    for a, b in zip(one(x1, x2), ref(x1, x2), strict=True):  # eval: running statistics, unchanged path
        torch.testing.assert_close(a, b, **TOL)


def test_running_statistics_follow_the_official_order():
    """Two updates in order, view 1 first, also with cumulative averaging (momentum None); not one update
    with the 2B-row batch's statistics."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2 * B, 5, 3, 3, generator=g, dtype=torch.float64) * torch.arange(1.0, 2 * B + 1).view(-1, 1, 1, 1)
    for momentum in (0.1, None):
        ref = nn.BatchNorm2d(5, momentum=momentum).double()
        with torch.no_grad():
            ref.running_mean.normal_(generator=g)
        one = make_viewwise(copy.deepcopy(ref))
        joint = copy.deepcopy(ref)
        y = one(x)
        y_ref = torch.cat([ref(x[:B]), ref(x[B:])])
        joint(x)
        torch.testing.assert_close(y, y_ref, **TOL)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(one, name), getattr(ref, name), **TOL)
        assert int(one.num_batches_tracked) == 2
        assert not torch.allclose(one.running_var, joint.running_var)  # the check can fail


def _worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    from empirical.losses import all_gather_with_grad

    model, x1, x2, labels = _setup("mlp")
    model = stack_views(convert_sync_batchnorm(model, "cpu"))
    ddp = wrap_ddp(model, torch.device("cpu"))
    sl = slice(rank * B // world, (rank + 1) * B // world)
    _, ssl = _step(ddp, x1[sl], x2[sl], labels[sl], gather=all_gather_with_grad)
    dist.all_reduce(ssl)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.save({"loss": ssl / world, "grads": grads, "buffers": dict(model.named_buffers())}, f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_one_call_under_synchronized_bn_on_two_gloo_ranks(tmp_path):
    """2 ranks, CPU-synchronized BN made view-wise, one call: the loss, gradients and running statistics of
    one process running the views in two calls on the global batch."""
    out = tmp_path / "res.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    ref, x1, x2, labels = _setup("mlp")
    _, loss = _step(ref, x1, x2, labels)
    grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        torch.testing.assert_close(got["loss"], loss, **TOL)
        assert got["grads"].keys() == grads.keys()
        for n, g in grads.items():
            torch.testing.assert_close(got["grads"][n], g, rtol=1e-9, atol=1e-12, msg=n)
        for n, b in ref.named_buffers():
            torch.testing.assert_close(got["buffers"][n], b, rtol=1e-9, atol=1e-12, msg=n)


def test_one_call_model_traces_as_one_graph():
    """No graph break in the view-wise BatchNorm: the one-call model can be compiled or captured whole."""
    model, x1, x2, _ = _setup("mlp")
    one = stack_views(model)
    ref = copy.deepcopy(one)
    traced = torch.compile(one, backend="eager", fullgraph=True)
    for a, b in zip(traced(x1, x2), ref(x1, x2), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    _assert_same(one, ref, "traced")
