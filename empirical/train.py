"""Train SimCLR / DirectCLR ResNets with any projector of the paper (paper.md 1.12, 2 Tables 1-2, 3.1).

    python -m empirical.train --help
    torchrun --nproc_per_node K -m empirical.train ...      (DDP, SyncBatchNorm, gathered negatives)

Each step: per-sample augmentation of the global batch (this rank's slice), both views through the
backbone, projector, contrastive loss with negatives gathered over ranks, plus the online linear probe on the
detached representation (monitor only). Outputs in --out: config.json, metrics.jsonl, spectra.jsonl,
ckpt-*.pt (last 2), final.pt (model weights). Exit status: 0 done, 2 bad input, 3 non-finite loss.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from empirical import checkpoint
from empirical.augment import augment, recipe, view_params
from empirical.config import TRAJECTORY_KEYS, UsageError, build_parser, check_out_dir, resolve
from empirical.data import (
    DataError,
    FolderPairs,
    folder_batches,
    folder_heldout,
    load_memory_dataset,
    memory_batches,
)
from empirical.losses import all_gather_with_grad, info_nce, nt_xent
from empirical.models import SSLModel
from empirical.monitor import spectrum_metrics
from empirical.optim import build_optimizer, lr_at, set_lr
from empirical.syncbn import convert_sync_batchnorm

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


class NonFiniteLoss(Exception):
    pass


def step_loss(model, x1, x2, labels, loss: str, temperature: float, gather=None):
    """(contrastive loss, probe loss, probe correct, probe count) of one step; minimize loss + probe."""
    r1, z1, r2, z2, logits = model(x1, x2)
    fn = info_nce if loss == "infonce" else nt_xent
    ssl = fn(z1, z2, temperature, gather=gather)
    known = labels >= 0  # stl10's unlabeled images carry -1
    ce = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    count = known.sum()
    probe = (ce * known).sum() / count.clamp(min=1)
    correct = ((logits.argmax(1) == labels) & known).sum()
    return ssl, probe, correct, count


def make_views(batch, recipes, size: int, seed: int, global_batch: int, offset: int, channels_last: bool):
    """Both augmented views; parameters drawn for the global batch, this rank keeps [offset, offset+n)."""
    params = view_params(recipes, seed, batch.step, global_batch, offset, len(batch.x1))
    views = []
    for p, x in zip(params, (batch.x1, batch.x2), strict=True):
        v = augment(x, p, size, crop=not batch.cropped)
        views.append(v.contiguous(memory_format=torch.channels_last) if channels_last else v)
    return views


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _fault(name: str) -> int:
    """Test hooks (fault injection): DIMCOLLAPSE_SIGKILL_AT_STEP, DIMCOLLAPSE_NAN_AT_STEP; -1 when unset."""
    return int(os.environ.get(name, "-1"))


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world, local_rank = _dist_env()
    args = resolve(args, world)
    main_rank = rank == 0
    if main_rank:
        check_out_dir(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ---- data ----
    scale_min = recipe(args.augment, args.augment_strength, args.image_size)[0].scale_min
    if args.dataset == "imagefolder":
        train_root = os.path.join(args.data_dir, "train")
        folder = FolderPairs(train_root, args.image_size, scale_min)
        val_root = os.path.join(args.data_dir, "val")
        heldout = folder_heldout(
            val_root if os.path.isdir(val_root) else train_root, args.image_size, args.spectrum_samples
        )
        n_train, num_classes = len(folder), folder.num_classes
    else:
        train, test, num_classes = load_memory_dataset(args.dataset, args.data_dir, args.image_size)
        train.images, train.labels = train.images.to(device), train.labels.to(device)
        heldout = test
        n_train = len(train.images)
    heldout.images = heldout.images[: args.spectrum_samples]
    heldout.labels = heldout.labels[: args.spectrum_samples]
    steps_per_epoch = n_train // args.batch_size
    if steps_per_epoch < 1:
        raise UsageError(f"--batch-size {args.batch_size} is larger than the {n_train} training images")
    total = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total = min(total, args.max_steps)
    warmup = min(round(args.warmup_epochs * steps_per_epoch), total)

    # ---- model, optimizer ----
    model = SSLModel(args.backbone, args.projector, args.d0, args.cifar_stem, num_classes, args.seed).to(
        device
    )
    if world > 1:
        model = convert_sync_batchnorm(model, device.type)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(args.optimizer, model, args.lr, args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    start = 0
    if args.resume:
        found = checkpoint.latest(args.out)
        if found is None:
            if main_rank:
                print(f"no checkpoint in {args.out}: starting from scratch", file=sys.stderr)
        else:
            path, ckpt = found
            old = ckpt["config"]
            diff = [k for k in TRAJECTORY_KEYS if old.get(k) != getattr(args, k)]
            if diff:
                raise UsageError(
                    "--resume with different settings than the checkpoint: "
                    + ", ".join(f"--{k.replace('_', '-')} {old.get(k)} -> {getattr(args, k)}" for k in diff)
                )
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            checkpoint.set_rng_state(ckpt["rng"])
            start = ckpt["step"]
            if main_rank:
                print(f"resumed from {path} at step {start}", file=sys.stderr)
    raw = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd = torch.compile(model) if args.compile else model

    # ---- logging ----
    config = {
        **vars(args),
        "world_size": world,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "warmup_steps": warmup,
        "n_train": n_train,
        "width": raw.width,
        "torch": torch.__version__,
    }
    writer = None
    if main_rank:
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        if not args.no_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(os.path.join(args.out, "tb"))
            except ImportError:
                pass
    metrics_f = open(os.path.join(args.out, "metrics.jsonl"), "a") if main_rank else None
    spectra_f = open(os.path.join(args.out, "spectra.jsonl"), "a") if main_rank else None
    amp = AMP[args.precision]

    def log(row: dict) -> None:
        metrics_f.write(json.dumps(row) + "\n")
        metrics_f.flush()
        if writer is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k != "step":
                    writer.add_scalar(k, v, row["step"])

    def spectrum_row(step: int) -> dict:
        scalars, spectra = spectrum_metrics(raw, heldout.images, heldout.labels, amp, args.channels_last)
        spectra_f.write(json.dumps({"step": step, **spectra}) + "\n")
        spectra_f.flush()
        return scalars

    def save(step: int) -> None:
        if main_rank:
            payload = {
                "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": checkpoint.rng_state(),
                "config": config,
                "epoch": step // steps_per_epoch,
            }
            checkpoint.save(args.out, step, payload)

    # ---- loop ----
    from tqdm import tqdm

    recipes = recipe(args.augment, args.augment_strength, args.image_size)
    local = args.batch_size // world
    gather = all_gather_with_grad if world > 1 else None
    if args.dataset == "imagefolder":
        batches = folder_batches(
            folder, start, total, args.batch_size, rank, world, args.seed, args.workers, device
        )
    else:
        batches = memory_batches(train, start, total, args.batch_size, rank, world, args.seed)
    bar = tqdm(
        total=total,
        initial=start,
        disable=not main_rank or args.no_progress,
        dynamic_ncols=True,
        desc=f"{args.projector}/{args.loss}",
    )
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    acc_sum = torch.zeros(3, device=device)  # loss sum, probe correct, probe count since the last log row
    last_log_t, last_log_step, last_ckpt_t = time.time(), start, time.time()
    kill_at, nan_at = _fault("DIMCOLLAPSE_SIGKILL_AT_STEP"), _fault("DIMCOLLAPSE_NAN_AT_STEP")
    fwd.train()

    def check_finite(step_done: int) -> None:
        b = int(bad_step)
        if b >= 0:
            good = checkpoint.list_checkpoints(args.out)
            keep = f"; last good checkpoint: {good[0]}" if good else ""
            raise NonFiniteLoss(
                f"non-finite loss at step {b} (lr {lr_at(b, args.lr, warmup, total):.3g}); "
                f"stopped before step {step_done}{keep}. Try a lower --lr or --precision bf16/fp32"
            )

    for batch in batches:
        step = batch.step
        lr = lr_at(step, args.lr, warmup, total)
        set_lr(optimizer, lr)
        if args.projector == "random-subset":
            raw.projector.set_step(step)
        v1, v2 = make_views(
            batch, recipes, args.image_size, args.seed, args.batch_size, rank * local, args.channels_last
        )
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            ssl, probe, correct, count = step_loss(
                fwd, v1, v2, batch.labels, args.loss, args.temperature, gather
            )
        if step == nan_at:
            ssl = ssl * float("nan")
        finite = torch.isfinite(ssl.detach())
        bad_step = torch.where(~finite & (bad_step < 0), torch.full_like(bad_step, step), bad_step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(ssl + probe).backward()
        scaler.step(optimizer)
        scaler.update()
        acc_sum += torch.stack([ssl.detach().float(), correct.float(), count.float()])
        done = step + 1
        bar.update(1)
        end_epoch = done % steps_per_epoch == 0
        if done % args.log_every == 0 or done == total or end_epoch:
            check_finite(done)
            if main_rank:
                now = time.time()
                s = acc_sum.tolist()
                n_steps = done - last_log_step
                img_s = n_steps * args.batch_size / max(now - last_log_t, 1e-9)
                row = {
                    "step": done,
                    "epoch": done / steps_per_epoch,
                    "loss": s[0] / n_steps,
                    "lr": lr,
                    "probe_acc": s[1] / s[2] if s[2] else None,
                    "img_per_s": img_s,
                    "views_per_s": 2 * img_s,
                    "peak_mem_mb": _peak_mem_mb(device),
                }
                if (args.spectrum_every and done % args.spectrum_every == 0) or done == total:
                    row.update(spectrum_row(done))
                log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{img_s:.0f}")
                last_log_t = time.time()
            acc_sum.zero_()
            last_log_step = done
        elif main_rank and args.spectrum_every and done % args.spectrum_every == 0:
            log({"step": done, "epoch": done / steps_per_epoch, **spectrum_row(done)})
        timed = time.time() - last_ckpt_t > 60 * args.ckpt_minutes
        if end_epoch or done == total or timed or (args.ckpt_every and done % args.ckpt_every == 0):
            check_finite(done)
            save(done)
            last_ckpt_t = time.time()
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    check_finite(total)
    if main_rank:
        torch.save(raw.state_dict(), os.path.join(args.out, "final.pt"))
        metrics_f.close()
        spectra_f.close()
        if writer is not None:
            writer.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except SystemExit as e:  # argparse: --help (0) or one-line usage error (2)
        return int(e.code or 0)
    except (UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
