"""DDP equivalence: 2 gloo processes with SyncBatchNorm and gathered negatives give
the loss and gradients of 1 process on the same global batch (float64, so the match is to ~1e-12)."""

import os

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from empirical.augment import recipe  # noqa: E402
from empirical.data import Batch  # noqa: E402
from empirical.losses import all_gather_with_grad  # noqa: E402
from empirical.models import SSLModel  # noqa: E402
from empirical.syncbn import convert_sync_batchnorm  # noqa: E402
from empirical.train import make_views, step_loss, wrap_ddp  # noqa: E402

B, SIZE = 8, 16


def _setup(projector: str):
    torch.manual_seed(0)
    model = SSLModel("tiny", projector, 10, True, num_classes=3, seed=0).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (B, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 3, (B,), generator=g)
    return model, x, labels


def _loss_and_grads(model, x, labels, loss, offset, gather):
    batch = Batch(0, x, x, labels, cropped=False)
    v1, v2 = make_views(batch, recipe("paper", 1.0, SIZE), SIZE, 0, B, offset, False)
    ssl, probe, _, _ = step_loss(model, v1.double(), v2.double(), labels, loss, 0.1, gather)
    (ssl + probe).backward()
    return ssl.detach()


CASES = [("mlp", "info_nce"), ("directclr", "nt_xent"), ("linear", "paper"), ("fixed-lowrank", "dot")]


def _worker(rank, world, init_file, out_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results = []
    for projector, loss in CASES:
        model, x, labels = _setup(projector)
        model = convert_sync_batchnorm(model, "cpu")
        ddp = wrap_ddp(model, torch.device("cpu"))  # the trainer's DDP: no buffer broadcast
        local = B // world
        sl = slice(rank * local, (rank + 1) * local)
        ssl = _loss_and_grads(ddp, x[sl], labels[sl], loss, rank * local, all_gather_with_grad)
        dist.all_reduce(ssl)
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        bufs = {n: b.clone() for n, b in model.named_buffers()}
        results.append({"loss": ssl / world, "grads": grads, "buffers": bufs})
    torch.save(results, f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    out = tmp_path / "rank0.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    by_rank = [torch.load(f"{out}.{rank}") for rank in range(2)]
    for k, (projector, loss) in enumerate(CASES):
        got, other = by_rank[0][k], by_rank[1][k]
        model, x, labels = _setup(projector)
        ref_loss = _loss_and_grads(model, x, labels, loss, 0, None)
        ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got["loss"].item() == pytest.approx(ref_loss.item(), rel=1e-12), projector
        assert set(got["grads"]) == set(ref)
        for name, g in ref.items():
            torch.testing.assert_close(
                got["grads"][name], g, rtol=1e-9, atol=1e-12, msg=f"{projector} {name}"
            )
        for name, b in model.named_buffers():  # SyncBN running statistics: the global batch's, on every rank
            for res in (got, other):  # without the buffer broadcast, rank 1 keeps its own buffers
                torch.testing.assert_close(
                    res["buffers"][name], b, rtol=1e-9, atol=1e-12, msg=f"{projector} {name}"
                )
